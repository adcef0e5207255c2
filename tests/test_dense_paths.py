"""The Dense layer's own small-product paths (cpp/src/dense.cpp): a register-tile kernel that
packs only the weight, and a GEMV for a few rows that reads the weight in place. Both must give
the packed GEMM's bits exactly (each element accumulates fma(a_ik, b_kj, acc) over k in order, in
depth blocks of kc), for every shape across their tile edges, with shrunk blocks, on every ISA
path, and through the Model (forward, predict, training)."""
import numpy as np
import pytest

import chainrule as cr
from chainrule import _core, ops

ISAS = ops.supported_isas()
DTYPES = [np.float32, np.float64]
# (B, I, O): rows 1-4 (the GEMV), 5-9 around the 8-row tile, columns around 8 / 16 / 32 lanes,
# products on both sides of the 64^3 and 2^21 limits, one output (the GEMV with roles swapped).
SHAPES = [(1, 1, 1), (1, 5, 3), (1, 17, 33), (1, 1024, 300), (2, 33, 16), (3, 16, 17),
          (4, 70, 33), (5, 9, 31), (7, 31, 8), (8, 64, 32), (9, 40, 9), (17, 100, 65),
          (32, 64, 128), (32, 128, 10), (64, 64, 64), (65, 64, 64), (128, 256, 10),
          (12, 300, 520), (5, 1, 1), (17, 33, 1), (2048, 128, 1)]


def _gemm_reference(x, w, b, dy, dw0):
    """The same products through _core.gemm (the packed GEMM), bias through beta = 1."""
    B, O = dy.shape
    y = np.broadcast_to(b, (B, O)).copy()
    _core.gemm(x, w, y, False, True, 1.0, 1.0)
    dx = np.empty_like(x)
    _core.gemm(dy, w, dx, False, False, 1.0, 0.0)
    dw = dw0.copy()
    _core.gemm(dy, x, dw, True, False, 1.0, 1.0)
    return y, dx, dw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kc", [0, 5, 16, 37])
@pytest.mark.parametrize("B,I,O", SHAPES)
def test_dense_same_bits_as_gemm(dtype, kc, B, I, O):
    _core.gemm_set_blocking(0, kc, 0)
    rng = np.random.default_rng(B * 1000 + I * 10 + O)
    x = rng.standard_normal((B, I)).astype(dtype)
    w = rng.standard_normal((O, I)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    dy = rng.standard_normal((B, O)).astype(dtype)
    dw0 = rng.standard_normal((O, I)).astype(dtype)
    y_ref, dx_ref, dw_ref = _gemm_reference(x, w, b, dy, dw0)
    for isa in ISAS:
        ops.set_isa(isa)
        np.testing.assert_array_equal(ops.dense_forward(x, w, b), y_ref, err_msg=isa)
        dx, dw, db = ops.dense_backward(dy, x, w, dweight=dw0.copy())
        np.testing.assert_array_equal(dx, dx_ref, err_msg=isa)
        np.testing.assert_array_equal(dw, dw_ref, err_msg=isa)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_no_bias_and_non_finite(dtype):
    """Without bias y is not read (beta = 0); NaN and inf propagate as in the GEMM."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 20)).astype(dtype)
    x[1, 4] = np.nan
    x[2, 7] = np.inf
    w = rng.standard_normal((40, 20)).astype(dtype)
    y_ref = np.empty((3, 40), dtype)
    _core.gemm(x, w, y_ref, False, True, 1.0, 0.0)
    for isa in ISAS:
        ops.set_isa(isa)
        np.testing.assert_array_equal(ops.dense_forward(x, w), y_ref, err_msg=isa)


@pytest.mark.parametrize("rows", [1, 3, 32, 1000])
def test_model_predict_and_training_same_bits_on_every_path(rows):
    """predict (GEMV for single rows, the small kernel, or the GEMM) and a few training steps
    give the same bits on every ISA path."""
    rng = np.random.default_rng(rows)
    X = rng.standard_normal((max(rows, 64), 20)).astype(np.float32)
    y = rng.integers(0, 5, len(X))
    results = {}
    for isa in ISAS:
        ops.set_isa(isa)
        m = cr.Model([cr.Dense(20, 48), cr.ReLU(), cr.Dense(48, 5)], loss="cross_entropy",
                     optimizer=cr.SGD(lr=0.1), dtype="float32", seed=0)
        m.fit(X, y, epochs=2, batch_size=16, shuffle=True)
        results[isa] = (m.predict(X[:rows]), m.state_dict())
    first = results[ISAS[0]]
    for isa in ISAS[1:]:
        np.testing.assert_array_equal(results[isa][0], first[0], err_msg=isa)
        for k, v in first[1].items():
            np.testing.assert_array_equal(results[isa][1][k], v, err_msg=f"{isa} {k}")


def _net(seed=0):
    return cr.Model([cr.Dense(6, 24), cr.Tanh(), cr.Dense(24, 3)], loss="cross_entropy",
                    optimizer=cr.SGD(lr=0.1), dtype="float64", seed=seed)


def test_fit_starts_each_step_from_zero_gradients():
    """fit writes the Dense gradients in each step's backward instead of zeroing them first:
    gradients left by an earlier backward must not leak into the first step."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 6))
    y = rng.integers(0, 3, 40)
    dirty, clean = _net(), _net()
    dirty.forward(X[:7])
    dirty.backward(y[:7])
    assert any(np.any(g != 0) for g in dirty.grads.values())
    dirty.fit(X, y, epochs=1, batch_size=8, shuffle=False)
    clean.fit(X, y, epochs=1, batch_size=8, shuffle=False)
    for k, v in clean.state_dict().items():
        np.testing.assert_array_equal(dirty.state_dict()[k], v, err_msg=k)


def test_backward_after_fit_accumulates_again():
    """After fit, backward goes back to accumulating (+=) into the gradients."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((16, 6))
    y = rng.integers(0, 3, 16)
    m = _net()
    m.fit(X, y, epochs=1, batch_size=8, shuffle=False)
    m.zero_grad()
    m.forward(X)
    m.backward(y)
    once = {k: v.copy() for k, v in m.grads.items()}
    m.forward(X)
    m.backward(y)
    for k, v in m.grads.items():
        # The bias gradient adds row by row onto the accumulator, so only close to 2x there.
        np.testing.assert_allclose(v, 2 * once[k], rtol=1e-12, err_msg=k)
        if k.endswith("weight"):
            np.testing.assert_array_equal(v, 2 * once[k], err_msg=k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("B,I,O", [(130, 64, 70), (100, 300, 200), (40, 784, 256), (256, 90, 33),
                                   (256, 16, 512), (600, 12, 100), (1000, 8, 70),
                                   (1, 1000, 700), (4, 300, 500),
                                   (70000, 32, 1), (5003, 450, 1)])  # one output, > 2^21 x*W
def test_dense_larger_products_same_bits_for_any_thread_count(dtype, threads, B, I, O):
    """Products above the small path go over the pool in row blocks with the other operand
    packed once, thin small-path products above 2^19 multiply-adds (BPTT's input projections)
    in row ranges, forwards of 1-4 rows in column ranges, and one-output forwards of any size
    as a GEMV in row ranges: the GEMM's bits for every thread count (shrunk blocks: several kc
    and nc)."""
    before = _core.get_num_threads()
    try:
        for blocking in [(0, 0, 0), (24, 50, 64)]:
            _core.gemm_set_blocking(*blocking)
            rng = np.random.default_rng(B + I + O)
            x = rng.standard_normal((B, I)).astype(dtype)
            w = rng.standard_normal((O, I)).astype(dtype)
            b = rng.standard_normal(O).astype(dtype)
            dy = rng.standard_normal((B, O)).astype(dtype)
            dw0 = rng.standard_normal((O, I)).astype(dtype)
            _core.set_num_threads(1)
            y_ref, dx_ref, dw_ref = _gemm_reference(x, w, b, dy, dw0)
            _core.set_num_threads(threads)
            np.testing.assert_array_equal(ops.dense_forward(x, w, b), y_ref)
            dx, dw, _ = ops.dense_backward(dy, x, w, dweight=dw0.copy())
            np.testing.assert_array_equal(dx, dx_ref)
            np.testing.assert_array_equal(dw, dw_ref)
    finally:
        _core.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("B,O", [(300, 500), (520, 333), (64, 4100), (2000, 1), (300, 10),
                                 (7, 130), (3000, 32), (2100, 63)])
def test_bias_broadcast_and_gradient_split_over_threads(dtype, threads, B, O):
    """Above ~64 K elements the bias rows of the forward and the bias gradient's column sums run
    on the pool; each db_o still adds dy's rows in order: the bits of a row-by-row sum."""
    rng = np.random.default_rng(B * O)
    x = rng.standard_normal((B, 8)).astype(dtype)
    w = rng.standard_normal((O, 8)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    dy = rng.standard_normal((B, O)).astype(dtype)
    db0 = rng.standard_normal(O).astype(dtype)
    _core.set_num_threads(1)
    y1 = ops.dense_forward(x, w, b)
    _core.set_num_threads(threads)
    np.testing.assert_array_equal(ops.dense_forward(x, w, b), y1)
    fresh = np.zeros(O, dtype)
    acc = db0.copy()
    for r in range(B):
        fresh += dy[r]
        acc += dy[r]
    for isa in ISAS:  # the column sums run on each ISA path's vector width
        ops.set_isa(isa)
        _, _, db = ops.dense_backward(dy, x, w, dbias=np.zeros(O, dtype))
        np.testing.assert_array_equal(db, fresh, err_msg=isa)
        _, _, db = ops.dense_backward(dy, x, w, dbias=db0.copy())
        np.testing.assert_array_equal(db, acc, err_msg=isa)
