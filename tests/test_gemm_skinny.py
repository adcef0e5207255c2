"""The GEMM's skinny path (cpp/src/gemm_skinny.cpp): products with M or N a few take vectors along
the long side instead of a padded register tile. Each element must keep the blocked GEMM's exact
arithmetic (fma over k in order from +0 in depth blocks of kc, then alpha acc + beta C unfused),
so the path is compared bit for bit against the tile path (_core.gemm_set_skinny(0)) on every ISA
path, thread count, transpose, alpha/beta, shrunk depth block and leading dimension, and against
a float64 reference within the rounding bound."""
import itertools

import numpy as np
import pytest

import chainrule as cr
import reference as ref
from chainrule import _core, ops

ISAS = ops.supported_isas()
DTYPES = [np.float32, np.float64]
TRANSPOSES = list(itertools.product([False, True], repeat=2))
# (alpha, beta): the plain product, accumulation onto C, and general scalars; beta = 0 runs with
# NaN in C (it must not be read).
SCALARS = [(1.0, 0.0), (1.0, 1.0), (-0.75, 1.5), (2.0, 0.0)]
# The short side around its thresholds (4, 8, 16 and one past each), the long side around the
# vector widths (4, 8, 16 lanes) and the 64-lane tiles, depths from one step to several blocks.
SHORT = [1, 2, 3, 4, 5, 8, 9, 16, 17]
SHAPES = ([(s, l, k) for s in SHORT for l, k in [(1, 1), (7, 5), (17, 40), (70, 3), (33, 1)]]
          + [(s, 133, 37) for s in [1, 3, 8]] + [(2, 2, 2), (3, 3, 300), (1, 1, 1000)]
          # the tuned rule's depth limits (64 for S <= 8, 256 for S <= 16) and one short of them
          + [(8, 40, 63), (8, 40, 64), (9, 20, 255), (16, 20, 256)])
TILE, SKINNY_ALL = 0, 1 << 20  # gemm_set_skinny: the tile path only; every product skinny


def bits(x: np.ndarray) -> np.ndarray:
    """The raw bits: -0 differs from +0, and every NaN is compared by its payload."""
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint64)


def operands(rng, m, n, k, ta, tb, dtype):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    return a, b, c


def run(setting, a, b, c0, ta, tb, alpha, beta, out=None):
    _core.gemm_set_skinny(setting)
    c = c0.copy() if out is None else out
    _core.gemm(a, b, c, ta, tb, alpha, beta)
    return c


def both_sides(shapes):
    """(M, N, K): each (short, long, depth) as short M and as short N."""
    for s, l, k in shapes:
        yield s, l, k
        if s != l:
            yield l, s, k


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
@pytest.mark.parametrize("kc", [0, 5, 16])
def test_same_bits_as_the_tile_path(isa, dtype, ta, tb, kc):
    ops.set_isa(isa)
    _core.gemm_set_blocking(0, kc, 0)
    rng = np.random.default_rng(1)
    for (m, n, k), (alpha, beta) in itertools.product(both_sides(SHAPES), SCALARS):
        a, b, c0 = operands(rng, m, n, k, ta, tb, dtype)
        if beta == 0.0:
            c0[:] = np.nan
        want = run(TILE, a, b, c0, ta, tb, alpha, beta)
        for setting in (SKINNY_ALL, -1):  # forced, and whatever the tuned rule picks
            got = run(setting, a, b, c0, ta, tb, alpha, beta)
            assert np.array_equal(bits(got), bits(want)), (isa, m, n, k, alpha, beta, setting)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
def test_threads_split_the_long_side_with_the_same_bits(dtype, ta, tb):
    """Above ~64^3 multiply-adds the long side is split over the pool; every element is
    computed whole by one thread, so 1, 2 and 3 threads and the tile path agree bit for bit."""
    rng = np.random.default_rng(2)
    for isa, kc in itertools.product(ISAS, [0, 70]):
        ops.set_isa(isa)
        _core.gemm_set_blocking(0, kc, 0)
        for m, n, k in both_sides([(1, 3000, 200), (3, 1100, 150), (8, 700, 90), (13, 515, 64)]):
            a, b, c0 = operands(rng, m, n, k, ta, tb, dtype)
            cr.set_num_threads(1)
            want = run(TILE, a, b, c0, ta, tb, 0.5, -1.0)
            for threads in (1, 2, 3):
                cr.set_num_threads(threads)
                got = run(SKINNY_ALL, a, b, c0, ta, tb, 0.5, -1.0)
                assert np.array_equal(bits(got), bits(want)), (isa, kc, threads, m, n, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_leading_dimensions(dtype, ta, tb, beta):
    """Column slices of wider arrays: the row strides are the leading dimensions (for a short N,
    C's column is strided along the vectors), nothing outside the slices is read or written."""
    rng = np.random.default_rng(3)
    for isa, (m, n, k) in itertools.product(ISAS, both_sides([(1, 37, 19), (3, 70, 33),
                                                               (9, 20, 40)])):
        ops.set_isa(isa)
        a, b, c0 = operands(rng, m, n, k, ta, tb, dtype)
        a_big = np.full((a.shape[0], a.shape[1] + 5), np.nan, dtype)
        b_big = np.full((b.shape[0], b.shape[1] + 3), np.nan, dtype)
        a_big[:, 2:2 + a.shape[1]] = a
        b_big[:, 1:1 + b.shape[1]] = b
        outs = {}
        for setting in (TILE, SKINNY_ALL):
            c_big = np.full((m, n + 7), -3.0, dtype)
            c_big[:, 4:4 + n] = c0
            run(setting, a_big[:, 2:2 + a.shape[1]], b_big[:, 1:1 + b.shape[1]], c0, ta, tb,
                1.25, beta, out=c_big[:, 4:4 + n])
            assert np.all(c_big[:, :4] == -3.0) and np.all(c_big[:, 4 + n:] == -3.0), setting
            outs[setting] = c_big[:, 4:4 + n]
        assert np.array_equal(bits(outs[SKINNY_ALL]), bits(outs[TILE])), (isa, m, n, k)
        expected = ref.gemm(a, b, trans_a=ta, trans_b=tb, alpha=1.25, beta=beta, c=c0)
        bound = 2 * ref.gemm_error_bound(a, b, trans_a=ta, trans_b=tb, alpha=1.25, beta=beta,
                                         c=c0, eps=np.finfo(dtype).eps)
        assert np.all(np.abs(outs[SKINNY_ALL] - expected) <= bound), (isa, m, n, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
def test_matches_float64_reference(dtype, ta, tb):
    """The one-wide products of the audit, and a few-wide one, against np.matmul in float64."""
    rng = np.random.default_rng(4)
    _core.gemm_set_skinny(-1)
    for m, n, k in [(32, 1, 100000), (1, 32, 100000), (64, 8, 20000), (8, 64, 20000),
                    (100000, 1, 32), (3, 5000, 7)]:
        a, b, c0 = operands(rng, m, n, k, ta, tb, dtype)
        out = c0.copy()
        ops.gemm(a, b, out=out, trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0)
        op_a = (a.T if ta else a).astype(np.float64)
        op_b = (b.T if tb else b).astype(np.float64)
        expected = 0.5 * np.matmul(op_a, op_b) + 2.0 * c0
        mag = 0.5 * np.matmul(np.abs(op_a), np.abs(op_b)) + 2.0 * np.abs(c0)
        # Each element sums in k order: error grows like sqrt(K) eps in practice, K eps at worst.
        tol = 4 * np.sqrt(k) * np.finfo(dtype).eps * mag + 1e-30
        assert np.all(np.abs(out - expected) <= tol), (m, n, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_blas_conventions(dtype):
    """beta = 0 never reads C, alpha = 0 or K = 0 reads neither A nor B, an empty side writes
    nothing: on skinny shapes, on every path, as on the tile path."""
    rng = np.random.default_rng(5)
    _core.gemm_set_skinny(SKINNY_ALL)
    for isa in ISAS:
        ops.set_isa(isa)
        a = rng.standard_normal((3, 50)).astype(dtype)
        b = rng.standard_normal((50, 40)).astype(dtype)
        c = np.full((3, 40), np.nan, dtype)
        _core.gemm(a, b, c, False, False, 1.0, 0.0)
        assert np.isfinite(c).all(), isa
        a_nan = np.full_like(a, np.nan)
        c = np.ones((3, 40), dtype)
        _core.gemm(a_nan, b, c, False, False, 0.0, 2.0)  # alpha = 0: C = beta C
        assert np.all(c == 2.0), isa
        c = np.full((3, 40), np.nan, dtype)
        _core.gemm(a[:, :0], b[:0], c, False, False, 1.0, 0.0)  # K = 0, beta = 0: zeros
        assert np.all(c == 0.0) and not np.signbit(c).any(), isa
        c = np.full((0, 40), 1.0, dtype)
        _core.gemm(a[:0], b, c, False, False, 1.0, 1.0)


def test_the_tuned_rule_keeps_the_bits_of_every_setting():
    """gemm_set_skinny's three kinds of setting (the tuned rule, none, every product up to a
    side) give one result, and the setting reads back."""
    rng = np.random.default_rng(6)
    a, b, c0 = operands(rng, 6, 900, 300, True, False, np.float32)
    outs = [run(s, a, b, c0, True, False, 1.0, 0.5) for s in (-1, 0, 4, 6, 1000)]
    for out in outs[1:]:
        assert np.array_equal(bits(out), bits(outs[0]))
    _core.gemm_set_skinny(7)
    assert _core.gemm_get_skinny() == 7
    _core.gemm_set_skinny(-5)
    assert _core.gemm_get_skinny() == -1


# ---- through the Dense layer --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,I,O", [(100000, 1, 32), (100000, 32, 1), (20000, 8, 64),
                                   (20000, 64, 1), (3000, 2, 3), (3, 700, 2), (5000, 16, 9)])
def test_dense_same_bits_with_and_without_the_path(dtype, B, I, O):
    """dense_forward and dense_backward hand skinny products to gemm(): the same bits as with
    the path off (their own kernels and the tile GEMM), for 1 and 2 threads on every ISA."""
    rng = np.random.default_rng(B + I + O)
    x = rng.standard_normal((B, I)).astype(dtype)
    w = rng.standard_normal((O, I)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    dy = rng.standard_normal((B, O)).astype(dtype)
    dw0 = rng.standard_normal((O, I)).astype(dtype)
    for isa in ISAS:
        ops.set_isa(isa)
        results = []
        for setting, threads in [(TILE, 1), (-1, 1), (-1, 2), (SKINNY_ALL, 2)]:
            _core.gemm_set_skinny(setting)
            cr.set_num_threads(threads)
            y = ops.dense_forward(x, w, b)
            dx, dw, _ = ops.dense_backward(dy, x, w, dweight=dw0.copy())
            results.append((y, dx, dw))
        for got in results[1:]:
            for g, want, name in zip(got, results[0], ("y", "dx", "dW")):
                assert np.array_equal(bits(g), bits(want)), (isa, name)


def test_full_batch_training_same_bits_with_and_without_the_path():
    """A full-batch 1-32-1 regression (the audit's model) trains to the same weights with the
    path on or off, on 1 or 2 threads."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((3000, 1)).astype(np.float32)
    y = np.sin(2 * X) + 0.1 * rng.standard_normal((3000, 1)).astype(np.float32)
    states = []
    for setting, threads in [(TILE, 1), (-1, 1), (-1, 2)]:
        _core.gemm_set_skinny(setting)
        cr.set_num_threads(threads)
        m = cr.Model([cr.Dense(1, 32), cr.ReLU(), cr.Dense(32, 1)], loss="mse",
                     optimizer=cr.SGD(lr=0.05), dtype="float32", seed=0)
        m.fit(X, y, epochs=5, batch_size=None, shuffle=False)
        states.append(m.state_dict())
    for state in states[1:]:
        for k, v in states[0].items():
            assert np.array_equal(bits(state[k]), bits(v)), k
