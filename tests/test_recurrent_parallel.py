"""The recurrent time loop runs on several threads (each a slice of the hidden units per step) and
its cell math on every ISA path: the results are the same bits for 1, 2 and 3 threads, on every
path, with "all" and "sqrt" memory, when the pool is busy (two models trained at once), and when
the pool has just been restarted with fresh workers.

Sizes are chosen so that the step GEMM is big enough to be split (B·G·H ≥ 131072 multiply-adds)
and so that the slices (whole 32-float / 16-double vector pairs) have ragged edges: H = 70 gives
slices of 32, 32 and 6 (float) or 16 … 6 (double)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import chainrule as cr
from chainrule import ops

KINDS = {
    "rnn_tanh": lambda I, H: cr.RNN(I, H, nonlinearity="tanh", return_sequences=True),
    "rnn_relu": lambda I, H: cr.RNN(I, H, nonlinearity="relu", return_sequences=True),
    "lstm": lambda I, H: cr.LSTM(I, H, return_sequences=True),
    "gru": lambda I, H: cr.GRU(I, H, return_sequences=True),
}


def _train(kind, dtype, memory="all", H=70, B=32, T=11, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2 * B, T, 5)).astype(dtype)
    Y = rng.standard_normal((2 * B, T, 1)).astype(dtype)
    m = cr.Model([KINDS[kind](5, H), cr.Dense(H, 1)], loss="mse", optimizer=cr.SGD(lr=0.05),
                 dtype=np.dtype(dtype).name, seed=seed)
    hist = m.fit(X, Y, epochs=2, batch_size=B, shuffle=False, bptt_memory=memory,
                 record_grad_norms=True)
    return m.state_dict(), hist.loss, hist.timestep_grad_norms


def _in_threads(work, n):
    """work(0) .. work(n - 1), each on a thread of its own, all started before any is joined."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _assert_same(a, b, what):
    sd_a, loss_a, norms_a = a
    sd_b, loss_b, norms_b = b
    assert loss_a == loss_b, what
    assert norms_a.keys() == norms_b.keys() and len(norms_a[0]) > 0, what
    for layer in norms_a:
        assert np.array_equal(np.asarray(norms_a[layer]), np.asarray(norms_b[layer])), what
    for k in sd_a:
        assert np.array_equal(sd_a[k], sd_b[k]), (what, k)


# B = 32: the time loop in groups of batch rows (each thread every step of its rows); B = 12:
# slices of hidden units, one phase per step.
@pytest.mark.parametrize("B", [12, 32])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", list(KINDS))
def test_same_bits_for_1_2_3_threads_and_both_memory_modes(kind, dtype, B):
    cr.set_num_threads(1)
    ref = _train(kind, dtype, B=B)
    for threads in (2, 3):
        cr.set_num_threads(threads)
        for memory in ("all", "sqrt"):
            _assert_same(ref, _train(kind, dtype, memory, B=B), f"{threads} threads, {memory}")


@pytest.mark.parametrize("B,H", [(40, 1), (40, 31), (40, 33), (40, 130), (17, 70), (16, 64),
                                 (12, 60), (12, 96), (12, 128), (12, 130)])
def test_same_bits_for_any_thread_count_across_slice_and_row_edges(B, H):
    # B >= 16: row groups, uneven for 3 threads (40 = 13 + 13 + 14; 17 = 8 + 9 in two groups);
    # B = 12: slices of hidden units; H = 60: a ragged second slice; 96: 64 + 32 on two threads,
    # three of 32 on three; 130: five slices of float pairs, more than the threads.
    cr.set_num_threads(1)
    ref = _train("lstm", np.float32, H=H, B=B, T=5)
    for threads in (2, 3):
        cr.set_num_threads(threads)
        _assert_same(ref, _train("lstm", np.float32, "sqrt", H=H, B=B, T=5), f"{threads}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_every_isa_path_gives_the_same_bits(kind, dtype):
    cr.set_num_threads(2)
    results = {}
    for isa in ops.supported_isas():
        ops.set_isa(isa)
        results[isa] = _train(kind, dtype, "sqrt")
    for isa, r in results.items():
        _assert_same(results["baseline"], r, isa)


def test_two_models_trained_at_once_equal_serial_training():
    # The second fit finds the pool busy and runs its time loop inline on its own thread.
    cr.set_num_threads(2)
    serial = [_train("lstm", np.float32, seed=s) for s in (0, 1)]
    results, errors = [None, None], []

    def work(i):
        try:
            for _ in range(3):
                results[i] = _train("lstm", np.float32, seed=i)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    _in_threads(work, 2)
    assert not errors
    for i in (0, 1):
        _assert_same(serial[i], results[i], f"model {i}")


@pytest.mark.parametrize("kind", list(KINDS))
def test_concurrent_predicts_equal_serial(kind):
    # Many threads predicting at once on one model, with batches that take the row groups (32,
    # 40) and the hidden-unit slices (12) of the time loop: each finds the pool busy or free.
    cr.set_num_threads(2)
    rng = np.random.default_rng(9)
    m = cr.Model([KINDS[kind](5, 96), cr.Dense(96, 1)], loss="mse", dtype="float32", seed=1)
    Xs = [rng.standard_normal((n, 9, 5)).astype(np.float32) for n in (32, 12, 40, 1) * 2]
    serial = [m.predict(X) for X in Xs]
    results, errors = [None] * len(Xs), []
    barrier = threading.Barrier(len(Xs))

    def work(i):
        try:
            barrier.wait()
            for _ in range(3):
                results[i] = m.predict(Xs[i])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    _in_threads(work, len(Xs))
    assert not errors
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r, serial[i], err_msg=f"input {i}")


def test_time_loop_right_after_the_pool_restarts():
    # Shrinking the pool stops its workers; the next recurrent fit starts fresh ones for its first
    # job. A worker that missed that job (it once read the job's generation as an old one) made
    # the run wait for it forever: run it in a child with a generous deadline.
    code = textwrap.dedent("""
        import numpy as np, chainrule as cr
        rng = np.random.default_rng(0)
        X = rng.standard_normal((64, 8, 16)).astype(np.float32)
        Y = rng.standard_normal((64, 8, 1)).astype(np.float32)
        for _ in range(20):
            cr.set_num_threads(1)
            cr.set_num_threads(2)
            m = cr.Model([cr.LSTM(16, 128, return_sequences=True), cr.Dense(128, 1)],
                         loss="mse", optimizer=cr.SGD(lr=0.01), dtype="float32", seed=0)
            m.fit(X, Y, epochs=1, batch_size=32)
        print("done")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"


@pytest.mark.filterwarnings("ignore:vanishing gradient")  # the diagnostic, on 13 steps of noise
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("sequences", [True, False])
def test_stacked_cells_same_bits_in_both_memory_modes(kind, sequences):
    """Two stacked cells: the lower cell's output sequence is read from its kept states (all) or
    from its own copy (sqrt checkpoints); training gives the same bits either way."""
    results = []
    for memory in ("all", "sqrt"):
        rng = np.random.default_rng(3)
        X = rng.standard_normal((24, 13, 5)).astype(np.float32)
        Y = rng.standard_normal((24, 13, 1) if sequences else (24, 1)).astype(np.float32)
        cell = {"rnn_tanh": lambda **kw: cr.RNN(5, 40, nonlinearity="tanh", **kw),
                "rnn_relu": lambda **kw: cr.RNN(5, 40, nonlinearity="relu", **kw),
                "lstm": lambda **kw: cr.LSTM(5, 40, **kw),
                "gru": lambda **kw: cr.GRU(5, 40, **kw)}[kind]
        m = cr.Model([cell(num_layers=2, return_sequences=sequences), cr.Dense(40, 1)],
                     loss="mse", optimizer=cr.SGD(lr=0.05), seed=4)
        hist = m.fit(X, Y, epochs=2, batch_size=12, shuffle=False, bptt_memory=memory,
                     record_grad_norms=True)
        results.append((m.state_dict(), hist.loss, hist.timestep_grad_norms))
    _assert_same(results[0], results[1], "all vs sqrt")
