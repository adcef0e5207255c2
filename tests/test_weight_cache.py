"""A Dense layer keeps its weight laid out for the forward (DenseWeightCache in cpp/src/dense.cpp)
from one write of the weight to the next: predict packs it once, not once per call or chunk.
The first forward after a write runs uncached (training, one forward per write, keeps no copy);
the second makes the copy, and later ones read it, so the checks below predict three times.

What must hold: every forward gives the bits of the uncached kernels (ops.dense_forward), for a
few rows, the small path and the GEMM; and no forward ever reads a stale copy, whatever wrote the
weight last (an optimizer step in fit or step(), load_state_dict, a switch of ISA path or block
sizes, a thread count change)."""
import threading

import numpy as np
import pytest

import chainrule as cr
from chainrule import _core, ops

ISAS = ops.supported_isas()
DTYPES = [np.float32, np.float64]


def _model(I, H, O, dtype, seed=0):
    return cr.Model([cr.Dense(I, H), cr.ReLU(), cr.Dense(H, O)], loss="mse",
                    optimizer=cr.SGD(lr=0.01), dtype=np.dtype(dtype).name, seed=seed)


def _uncached(model, X):
    """The model's forward through ops.dense_forward, which lays the weight out on every call."""
    sd = model.state_dict()
    h = np.maximum(ops.dense_forward(X, sd["0.weight"], sd["0.bias"]), 0)
    return ops.dense_forward(h, sd["2.weight"], sd["2.bias"])


# (I, H, O) with H * I at or above the cache's 16 K elements; rows: 1-4 (panels split over the
# pool), the small path (16 x 128 x 128) and the GEMM (row blocks on packed halves).
SHAPES = [(128, 128, 3), (300, 700, 5), (1024, 1024, 16), (96, 200, 130)]
ROWS = [1, 2, 3, 4, 5, 16, 33, 300]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("I,H,O", SHAPES)
def test_cached_forward_same_bits_as_ops(dtype, I, H, O):
    rng = np.random.default_rng(I + H + O)
    m = _model(I, H, O, dtype)
    for isa in ISAS:
        ops.set_isa(isa)
        for rows in ROWS:
            X = rng.standard_normal((rows, I)).astype(dtype)
            for _ in range(3):  # uncached, then making the copy, then reading it
                np.testing.assert_array_equal(m.predict(X), _uncached(m, X),
                                              err_msg=f"{isa} rows={rows}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 4, 16, 300])
def test_no_stale_weights_after_any_write(dtype, rows):
    """Each way of changing the weights between two predicts is seen by the second."""
    rng = np.random.default_rng(rows)
    X = rng.standard_normal((rows, 128)).astype(dtype)
    Xt = rng.standard_normal((64, 128)).astype(dtype)
    yt = rng.standard_normal((64, 3)).astype(dtype)
    m = _model(128, 256, 3, dtype)

    def check(what):
        expect = _uncached(m, X)
        for call in range(3):  # uncached, then making the copy, then reading it
            np.testing.assert_array_equal(m.predict(X), expect, err_msg=f"{what}, call {call}")

    check("first predict")
    m.fit(Xt, yt, epochs=1, batch_size=16)
    check("after fit")
    m.forward(Xt[:8])
    m.backward(yt[:8])
    m.step()
    check("after step")
    other = _model(128, 256, 3, dtype, seed=7)
    before = m.predict(X)
    m.load_state_dict(other.state_dict())
    check("after load_state_dict")
    np.testing.assert_array_equal(m.predict(X), other.predict(X))
    assert not np.array_equal(m.predict(X), before)
    loaded = cr.io.from_bytes(m.to_bytes())
    np.testing.assert_array_equal(loaded.predict(X), m.predict(X))


def test_training_forward_reads_the_updated_weight():
    """fit's forward after each step must use that step's weights: training with the cache
    gives the same weights as steps through forward/backward/step with fresh models."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 200)).astype(np.float32)
    y = rng.standard_normal((64, 2)).astype(np.float32)
    a = _model(200, 300, 2, np.float32, seed=3)
    a.fit(X, y, epochs=2, batch_size=16, shuffle=False)
    b = _model(200, 300, 2, np.float32, seed=3)
    for _ in range(2):
        for s in range(0, 64, 16):
            fresh = _model(200, 300, 2, np.float32)
            fresh.load_state_dict(b.state_dict())  # a model that has never cached anything
            np.testing.assert_array_equal(b.predict(X[s:s + 16]), fresh.predict(X[s:s + 16]))
            b.zero_grad()
            b.forward(X[s:s + 16])
            b.backward(y[s:s + 16])
            b.step()
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v, err_msg=k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_isa_blocking_and_thread_changes_between_predicts(dtype):
    """The packed copy depends on the ISA path's micro-kernel and the block sizes (kc sets the
    depth blocks, so the bits): a change of either between two predicts must not reuse it."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 256)).astype(dtype)
    x1 = X[:1]
    m = _model(256, 512, 4, dtype)
    m.predict(X), m.predict(x1)
    before = _core.get_num_threads()
    try:
        for isa in ISAS:
            ops.set_isa(isa)
            for blocking in [(24, 50, 64), (0, 0, 0), (0, 37, 0)]:
                _core.gemm_set_blocking(*blocking)
                for threads in (1, 2, 3):
                    _core.set_num_threads(threads)
                    what = f"{isa} {blocking} threads={threads}"
                    expect, expect1 = _uncached(m, X), _uncached(m, x1)
                    for _ in range(2):  # each setting makes its copy: the next must not use it
                        np.testing.assert_array_equal(m.predict(X), expect, err_msg=what)
                        np.testing.assert_array_equal(m.predict(x1), expect1, err_msg=what)
    finally:
        _core.set_num_threads(before)


def test_concurrent_predicts_share_one_packing():
    """Many threads predicting at once on a model whose copy is stale: every result is right."""
    rng = np.random.default_rng(4)
    m = _model(512, 512, 8, np.float32)
    Xs = [rng.standard_normal((n, 512)).astype(np.float32) for n in (1, 3, 20, 200) * 3]
    expect = [_uncached(m, X) for X in Xs]
    for round_ in range(3):
        results = [None] * len(Xs)
        barrier = threading.Barrier(len(Xs))

        def work(i):
            barrier.wait()
            results[i] = m.predict(Xs[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(Xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, r in enumerate(results):
            np.testing.assert_array_equal(r, expect[i], err_msg=f"round {round_} input {i}")
        # a write between rounds: the next round's first predicts all find the copy stale
        sd = m.state_dict()
        sd["0.weight"] = sd["0.weight"] * np.float32(0.5)
        m.load_state_dict(sd)
        expect = [_uncached(m, X) for X in Xs]
