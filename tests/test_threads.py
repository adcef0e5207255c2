"""The thread pool: results do not depend on the thread count, and the pool survives fork."""
import multiprocessing as mp
import os
import re

import numpy as np
import pytest

import chainrule as cr
from chainrule import ops


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_same_bits_for_any_thread_count(dtype):
    rng = np.random.default_rng(0)
    for m, n, k in [(300, 257, 190), (33, 700, 64), (700, 40, 80)]:
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((n, k)).astype(dtype)
        outs = []
        for t in (1, 2, 3):
            cr.set_num_threads(t)
            outs.append(ops.gemm(a, b, trans_b=True))
        assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
        np.testing.assert_allclose(outs[0], a.astype(np.float64) @ b.T, rtol=1e-3 if dtype ==
                                   np.float32 else 1e-10, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False),
                                             (True, True)])
def test_tall_gemm_shared_b_panels_same_bits(dtype, trans_a, trans_b):
    """Tall products (more row tiles than column tiles) are split along M, the threads packing
    slices of one shared B panel per depth block. With small blocks there are several column,
    depth and row blocks; a panel with fewer micro-panels than threads (N = 20) leaves a thread
    nothing to pack; M = 30 has fewer row tiles than slabs. Every path and thread count gives
    the bits of one thread, and the values match float64."""
    from chainrule import _core
    rng = np.random.default_rng(5)
    _core.gemm_set_blocking(20, 9, 40)
    # each at least 2^22 multiply-adds, where tall products take the shared path
    for m, n, k in [(400, 100, 110), (600, 45, 160), (2000, 20, 110), (30, 20, 7000)]:
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
        c0 = rng.standard_normal((m, n)).astype(dtype)
        want = 0.75 * ((a.T if trans_a else a).astype(np.float64)
                       @ (b.T if trans_b else b).astype(np.float64)) - 1.5 * c0
        first = None
        for isa in ops.supported_isas():
            ops.set_isa(isa)
            for t in (1, 2, 3, 5):
                cr.set_num_threads(t)
                out = ops.gemm(a, b, trans_a=trans_a, trans_b=trans_b, alpha=0.75, beta=-1.5,
                               out=c0.copy())
                if first is None:
                    first = out
                    tol = 1e-4 if dtype == np.float32 else 1e-12
                    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * k)
                assert np.array_equal(out, first), f"{isa}, {t} threads, M={m} N={n} K={k}"
        first = None


def _train(threads, seed=3):
    cr.set_num_threads(threads)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((512, 96)).astype(np.float32)
    y = rng.integers(0, 5, 512)
    m = cr.Model([cr.Dense(96, 256), cr.ReLU(), cr.Dense(256, 5)], loss="cross_entropy",
                 optimizer=cr.SGD(lr=0.05, momentum=0.9), seed=seed)
    h = m.fit(X, y, epochs=3, batch_size=128)
    return m.state_dict(), h.history


def test_training_same_bits_for_1_2_3_threads():
    results = [_train(t) for t in (1, 2, 3)]
    for sd, hist in results[1:]:
        assert hist == results[0][1]
        for k in sd:
            assert np.array_equal(sd[k], results[0][0][k]), k


@pytest.mark.parametrize("optimizer", [
    lambda: cr.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda: cr.Adam(lr=1e-3, weight_decay=1e-2, amsgrad=True),
])
def test_large_parameters_update_in_slices_with_the_same_bits(optimizer):
    """Parameters of more than 32K elements are zeroed, checked and updated in slices on the
    pool; the weights after training are the same bits for any thread count."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((64, 300)).astype(np.float32)
    y = rng.standard_normal((64, 7)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        cr.set_num_threads(threads)
        m = cr.Model([cr.Dense(300, 333), cr.Tanh(), cr.Dense(333, 7)], loss="mse",
                     optimizer=optimizer(), seed=5)
        m.fit(X, y, epochs=2, batch_size=16, shuffle=False)
        results.append(m.state_dict())
    for sd in results[1:]:
        for k in sd:
            assert np.array_equal(sd[k], results[0][k]), k


def test_set_num_threads_validates():
    with pytest.raises(ValueError):
        cr.set_num_threads(0)
    with pytest.raises(TypeError):
        cr.set_num_threads(1.5)


def _child_work(q):
    try:
        sd, hist = _train(2, seed=4)
        q.put(("ok", float(hist["loss"][-1])))
    except BaseException as e:  # pragma: no cover - reported to the parent
        q.put(("error", repr(e)))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_child_process_can_train_after_parent_used_threads(method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} not available here")
    _train(2)  # the parent's pool has live workers now
    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=_child_work, args=(q,))
    p.start()
    p.join(120)
    if p.is_alive():
        p.kill()
        pytest.fail(f"child started with {method!r} hung")
    status, value = q.get(timeout=5)
    assert status == "ok", value
    assert np.isfinite(value)


def test_wide_regression_history_same_bits_for_1_2_3_threads():
    """A wide output (batches of 256 x 600 targets) gathers its minibatches, sums its R² terms
    and broadcasts and reduces its biases on the pool: history and weights the same bits for any
    thread count."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((600, 40)).astype(np.float32)
    y = (X[:, :1] * rng.standard_normal((1, 600)) + rng.standard_normal((600, 600))).astype(
        np.float32)
    results = []
    for threads in (1, 2, 3):
        cr.set_num_threads(threads)
        m = cr.Model([cr.Dense(40, 64), cr.ReLU(), cr.Dense(64, 600)], loss="mse",
                     optimizer=cr.SGD(lr=0.01), seed=2)
        h = m.fit(X, y, epochs=2, batch_size=256)
        results.append((m.state_dict(), h.history))
    for sd, hist in results[1:]:
        assert hist == results[0][1]
        for k in sd:
            assert np.array_equal(sd[k], results[0][0][k]), k


@pytest.mark.parametrize("env,message", [
    ({"CHAINRULE_NUM_THREADS": "abc"}, "CHAINRULE_NUM_THREADS='abc' is not a whole number"),
    ({"CHAINRULE_NUM_THREADS": "5000"}, r"in \[1, 1024\]; ignored"),
    ({"CHAINRULE_ISA": "AVX2"}, "CHAINRULE_ISA='AVX2' is not one of this CPU's paths"),
])
def test_an_environment_setting_the_core_ignores_is_reported(env, message):
    # the core falls back to its default (always correct); a typo no longer passes silently
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", "import chainrule"], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)
    assert proc.returncode == 0 and re.search(message, proc.stderr), proc.stderr
    ok = subprocess.run([sys.executable, "-c", "import chainrule"], capture_output=True,
                        text=True, timeout=120,
                        env={**os.environ, "CHAINRULE_NUM_THREADS": "1",
                             "CHAINRULE_ISA": "baseline"})
    assert ok.returncode == 0 and "RuntimeWarning" not in ok.stderr, ok.stderr
