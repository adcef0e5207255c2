"""GEMM: the blocked kernel (_core.gemm), its plain twin (_core.gemm_ref) and ops.gemm against a
float64 reference, for every transpose, alpha/beta, shapes that cross every tile and block edge
(with the default and with shrunk block sizes), leading dimensions, and the BLAS conventions."""

import itertools
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from chainrule import _core, ops

DTYPES = [np.float32, np.float64]
TRANSPOSES = list(itertools.product([False, True], repeat=2))
KERNELS = {"gemm": _core.gemm, "gemm_ref": _core.gemm_ref}
DEFAULT_BLOCKING = _core.gemm_get_blocking()

# Sizes around the register tiles (4 x 8 float, 4 x 4 double today; 6, 8, 12, 14, 16, 32 are
# common tile sizes of ISA-specific kernels) and the default cache blocks (256 / 1024 / 2048).
TILE_SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 15, 16, 17, 31, 33]


def operands(rng, m, n, k, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    return a, b, c


def assert_gemm_close(result, a, b, c, trans_a, trans_b, alpha, beta, what=""):
    """result must be within the rounding-error bound of the exact GEMM (NaN fails)."""
    eps = np.finfo(result.dtype).eps
    expected = ref.gemm(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, c=c)
    # Twice the single-rounding bound: the blocked path rounds once more per depth block, and the
    # float64 reference has its own (smaller) error.
    bound = 2 * ref.gemm_error_bound(
        a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, c=c, eps=eps
    )
    assert result.shape == expected.shape, what
    err = np.abs(result.astype(np.float64) - expected)
    bad = ~(err <= bound)
    assert not bad.any(), (
        f"{what}: {bad.sum()} of {bad.size} elements off, worst at "
        f"{np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape)}: err "
        f"{np.max(np.where(bad, err, 0))}, bound there {bound[bad].min()}"
    )


def run(kernel, a, b, c, trans_a, trans_b, alpha, beta):
    out = c.copy()
    KERNELS[kernel](a, b, out, trans_a, trans_b, alpha, beta)
    return out


# ---- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "m,n,k",
    [
        (1, 1, 1),
        (3, 7, 5),
        (4, 8, 16),
        (5, 9, 17),
        (17, 33, 259),  # kc + 3
        (64, 64, 64),
        (257, 13, 40),  # mc + 1
        (3, 5, 515),  # two kc blocks and a remainder
        (2, 4099, 3),  # nc + 3
        (130, 70, 300),
    ],
)
def test_values_default_blocking(dtype, trans_a, trans_b, kernel, m, n, k):
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a, b, c = operands(rng, m, n, k, trans_a, trans_b, dtype)
    for alpha, beta in [(1.0, 0.0), (-0.5, 0.0), (2.0, 0.5), (1.0, 1.0), (0.3, -1.5)]:
        out = run(kernel, a, b, c, trans_a, trans_b, alpha, beta)
        assert out.dtype == dtype
        assert_gemm_close(out, a, b, c, trans_a, trans_b, alpha, beta, f"alpha={alpha} beta={beta}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("blocking", [(1, 1, 1), (4, 3, 8), (5, 7, 9), (8, 16, 12), (3, 2, 5)])
def test_values_shrunk_blocking(dtype, trans_a, trans_b, blocking):
    """Small blocks put tile, block and panel edges inside small matrices."""
    _core.gemm_set_blocking(*blocking)
    assert _core.gemm_get_blocking() == blocking
    mc, kc, nc = blocking
    edges = sorted(set(TILE_SIZES[:12] + [mc - 1, mc, mc + 1, 2 * mc + 3, kc + 3, nc + 1]) - {0})
    rng = np.random.default_rng(sum(blocking))
    # Every size appears in each of M, N and K, against rotating partners.
    for i, m in enumerate(edges):
        n = edges[(i + 3) % len(edges)]
        k = edges[(i + 7) % len(edges)]
        a, b, c = operands(rng, m, n, k, trans_a, trans_b, dtype)
        alpha, beta = [(1.0, 0.0), (-1.5, 0.75)][i % 2]
        out = run("gemm", a, b, c, trans_a, trans_b, alpha, beta)
        assert_gemm_close(out, a, b, c, trans_a, trans_b, alpha, beta, f"M={m} N={n} K={k}")


@settings(max_examples=300, deadline=None,
          derandomize=os.environ.get("CI", "").lower() == "true")  # CI: the same examples
@given(
    m=st.integers(0, 70),
    n=st.integers(0, 70),
    k=st.integers(0, 70),
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    alpha=st.sampled_from([1.0, -0.5, 2.0]),
    beta=st.sampled_from([0.0, 1.0, -0.25]),
    blocking=st.sampled_from([None, (1, 1, 1), (5, 3, 7), (8, 16, 12), (17, 9, 33)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_shapes(m, n, k, trans_a, trans_b, dtype, alpha, beta, blocking, seed):
    _core.gemm_set_blocking(*(blocking or (0, 0, 0)))
    a, b, c = operands(np.random.default_rng(seed), m, n, k, trans_a, trans_b, dtype)
    fast = run("gemm", a, b, c, trans_a, trans_b, alpha, beta)
    slow = run("gemm_ref", a, b, c, trans_a, trans_b, alpha, beta)
    assert_gemm_close(fast, a, b, c, trans_a, trans_b, alpha, beta, "gemm")
    assert_gemm_close(slow, a, b, c, trans_a, trans_b, alpha, beta, "gemm_ref")
    # numpy in the same dtype: within twice the bound of ours, as both are within it of the truth
    op_a = a.T if trans_a else a
    op_b = b.T if trans_b else b
    np_result = alpha * (op_a @ op_b) + beta * c
    bound = 4 * ref.gemm_error_bound(
        a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, c=c,
        eps=np.finfo(dtype).eps,
    )
    assert np.all(np.abs(fast.astype(np.float64) - np_result) <= bound)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_ops_gemm_matches_numpy(dtype, trans_a, trans_b):
    rng = np.random.default_rng(7)
    a, b, _ = operands(rng, 150, 97, 311, trans_a, trans_b, dtype)
    got = ops.gemm(a, b, trans_a=trans_a, trans_b=trans_b)
    want = (a.T if trans_a else a) @ (b.T if trans_b else b)
    assert got.dtype == dtype
    bound = 4 * ref.gemm_error_bound(a, b, trans_a=trans_a, trans_b=trans_b,
                                     eps=np.finfo(dtype).eps)
    assert np.all(np.abs(got.astype(np.float64) - want) <= bound)


# ---- BLAS conventions ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("k", [0, 1, 9, 300])
def test_beta_zero_never_reads_c(dtype, kernel, k):
    rng = np.random.default_rng(k)
    a, b, _ = operands(rng, 13, 11, k, False, True, dtype)
    for poison in (np.nan, np.inf, -np.inf):
        c = np.full((13, 11), poison, dtype=dtype)
        out = run(kernel, a, b, c, False, True, 1.5, 0.0)
        assert np.all(np.isfinite(out)), f"C = {poison} leaked through beta = 0"
        assert_gemm_close(out, a, b, None, False, True, 1.5, 0.0)
        if k == 0:
            assert np.all(out == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_beta_nonzero_reads_c(dtype, kernel):
    """With beta != 0 every element of C is read, and only its own result sees it."""
    rng = np.random.default_rng(3)
    a, b, c = operands(rng, 10, 9, 20, True, False, dtype)
    c[4, 5] = np.nan
    out = run(kernel, a, b, c, True, False, 1.0, 1.0)
    assert np.isnan(out[4, 5])
    assert np.isnan(out).sum() == 1
    c[4, 5] = 0.0
    assert_gemm_close(run(kernel, a, b, c, True, False, 1.0, 1.0), a, b, c, True, False, 1.0, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_k_zero_scales_c(dtype, kernel, trans_a, trans_b):
    rng = np.random.default_rng(0)
    a, b, c = operands(rng, 6, 5, 0, trans_a, trans_b, dtype)
    out = run(kernel, a, b, c, trans_a, trans_b, 2.0, -0.5)
    np.testing.assert_array_equal(out, (-0.5 * c).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("m,n", [(0, 5), (5, 0), (0, 0)])
def test_empty_m_or_n_is_a_no_op(dtype, kernel, m, n):
    big = np.full((max(m, 1) + 2, n + 4), 7.0, dtype=dtype)
    out = big[1 : 1 + m, 2 : 2 + n]
    a = np.ones((m, 3), dtype=dtype)
    b = np.ones((3, n), dtype=dtype)
    KERNELS[kernel](a, b, out, False, False, 1.0, 0.5)
    assert np.all(big == 7.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("beta", [0.0, 0.7])
@pytest.mark.parametrize("blocking", [None, (3, 4, 5)])
def test_leading_dimensions(dtype, trans_a, trans_b, beta, blocking):
    """Operands and output that are column slices of wider arrays: the row stride is the
    leading dimension, and nothing outside the slice is read into the result or written."""
    _core.gemm_set_blocking(*(blocking or (0, 0, 0)))
    rng = np.random.default_rng(11)
    m, n, k = 19, 21, 23
    a_dense, b_dense, c_dense = operands(rng, m, n, k, trans_a, trans_b, dtype)
    a_big = np.full((a_dense.shape[0], a_dense.shape[1] + 5), np.nan, dtype=dtype)
    a_big[:, 3 : 3 + a_dense.shape[1]] = a_dense
    b_big = np.full((b_dense.shape[0], b_dense.shape[1] + 7), np.nan, dtype=dtype)
    b_big[:, 1 : 1 + b_dense.shape[1]] = b_dense
    a_view = a_big[:, 3 : 3 + a_dense.shape[1]]
    b_view = b_big[:, 1 : 1 + b_dense.shape[1]]
    for kernel in KERNELS:
        c_big = np.full((m, n + 6), -3.0, dtype=dtype)
        c_big[:, 4 : 4 + n] = c_dense
        c_view = c_big[:, 4 : 4 + n]
        KERNELS[kernel](a_view, b_view, c_view, trans_a, trans_b, 1.25, beta)
        assert_gemm_close(c_view, a_dense, b_dense, c_dense, trans_a, trans_b, 1.25, beta, kernel)
        assert np.all(c_big[:, :4] == -3.0) and np.all(c_big[:, 4 + n :] == -3.0)
    # the same through ops.gemm's out
    c_big = np.full((m, n + 6), -3.0, dtype=dtype)
    c_big[:, 4 : 4 + n] = c_dense
    res = ops.gemm(a_view, b_view, trans_a=trans_a, trans_b=trans_b, alpha=1.25, beta=beta,
                   out=c_big[:, 4 : 4 + n])
    assert np.shares_memory(res, c_big)
    assert_gemm_close(c_big[:, 4 : 4 + n], a_dense, b_dense, c_dense, trans_a, trans_b, 1.25, beta)
    assert np.all(c_big[:, :4] == -3.0) and np.all(c_big[:, 4 + n :] == -3.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic(dtype):
    rng = np.random.default_rng(5)
    a, b, c = operands(rng, 300, 270, 600, False, True, dtype)
    first = run("gemm", a, b, c, False, True, 1.0, 0.5)
    for _ in range(3):
        np.testing.assert_array_equal(run("gemm", a, b, c, False, True, 1.0, 0.5), first)


def test_concurrent_calls_from_threads():
    """Packing space is per thread: calls running at once (the GIL is released) must each get
    the result they get alone."""
    rng = np.random.default_rng(9)
    jobs = []
    for i, dtype in enumerate([np.float32, np.float64] * 3):
        m, n, k = 90 + 17 * i, 300 - 23 * i, 280 + 31 * i
        a, b, c = operands(rng, m, n, k, i % 2 == 0, i % 3 == 0, dtype)
        jobs.append((a, b, c, i % 2 == 0, i % 3 == 0))
    expected = [run("gemm", a, b, c, ta, tb, 1.0, 0.0) for a, b, c, ta, tb in jobs]
    failures = []

    def worker(j):
        a, b, c, ta, tb = jobs[j]
        for _ in range(15):
            if not np.array_equal(run("gemm", a, b, c, ta, tb, 1.0, 0.0), expected[j]):
                failures.append(j)

    threads = [threading.Thread(target=worker, args=(j,)) for j in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


# ---- block table -----------------------------------------------------------------------------


def test_blocking_table():
    assert all(v > 0 for v in DEFAULT_BLOCKING)
    _core.gemm_set_blocking(7, 5, 3)
    assert _core.gemm_get_blocking() == (7, 5, 3)
    _core.gemm_set_blocking(0, 9, 0)
    assert _core.gemm_get_blocking() == (DEFAULT_BLOCKING[0], 9, DEFAULT_BLOCKING[2])
    with pytest.raises(ValueError, match="mc=-1"):
        _core.gemm_set_blocking(-1, 4, 4)
    assert _core.gemm_get_blocking() == (DEFAULT_BLOCKING[0], 9, DEFAULT_BLOCKING[2])


# ---- ops.gemm's Python surface ---------------------------------------------------------------


def test_ops_gemm_dtypes_and_inputs_unchanged():
    a32 = np.arange(6, dtype=np.float32).reshape(2, 3)
    b32 = np.arange(12, dtype=np.float32).reshape(3, 4)
    a_copy, b_copy = a32.copy(), b32.copy()
    assert ops.gemm(a32, b32).dtype == np.float32
    assert ops.gemm(a32, b32.astype(np.float64)).dtype == np.float64
    assert ops.gemm(a32.astype(np.int64), b32.astype(np.int32)).dtype == np.float64
    assert ops.gemm(a32.astype(np.float16), b32.astype(np.float16)).dtype == np.float64
    np.testing.assert_array_equal(ops.gemm([[1, 2], [3, 4]], [[5], [6]]), [[17.0], [39.0]])
    np.testing.assert_array_equal(a32, a_copy)
    np.testing.assert_array_equal(b32, b_copy)
    # Fortran-ordered and strided inputs are converted, not rejected
    af = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    bs = np.arange(40.0).reshape(8, 5)[::2]
    np.testing.assert_allclose(ops.gemm(af, bs), af @ bs, rtol=1e-15)


def test_ops_gemm_out_is_returned_and_accumulates():
    a = np.eye(3)
    b = np.arange(9.0).reshape(3, 3)
    out = np.ones((3, 3))
    res = ops.gemm(a, b, alpha=2.0, beta=-1.0, out=out)
    assert res is out
    np.testing.assert_array_equal(out, 2.0 * b - 1.0)


@pytest.mark.parametrize(
    "kwargs,exc,pattern",
    [
        (dict(a=np.ones((2, 3)), b=np.ones((4, 5))), ValueError, r"\(2, 3\).*\(4, 5\)"),
        (dict(a=np.ones(3), b=np.ones((3, 5))), ValueError, r"Expected 2D array for a, got 1D array of shape \(3,\)"),
        (dict(a=np.ones((2, 3)), b=np.ones((3, 5, 1))), ValueError, "got 3D array"),
        (dict(a=np.ones((2, 3)), b=np.ones((3, 5)), beta=1.0), ValueError, "out is None"),
        (dict(a=np.ones((2, 3)), b=np.ones((3, 5)), out=np.ones((2, 4))), ValueError,
         r"shape \(2, 4\).*\(2, 5\)"),
        (dict(a=np.ones((2, 3)), b=np.ones((3, 5)), out=np.ones((2, 5), np.float32)), TypeError,
         "float32.*float64"),
        (dict(a=np.ones((2, 3)), b=np.ones((3, 5)), out=[[0.0] * 5] * 2), TypeError, "ndarray"),
        (dict(a=np.ones((2, 3)), b=np.ones((3, 5)), out=np.ones((5, 2)).T), ValueError,
         "contiguous rows"),
        (dict(a=np.ones((1, 3)), b=np.ones((3, 5)), out=np.ones((2, 10))[:1, ::2]), ValueError,
         "contiguous rows"),
        (dict(a=np.array([["a", "b"]]), b=np.ones((2, 2))), TypeError, "real numbers"),
        (dict(a=np.ones((2, 3)), b=np.ones((3, 5)), alpha="2"), TypeError, "alpha"),
    ],
)
def test_ops_gemm_errors(kwargs, exc, pattern):
    kwargs = dict(kwargs)
    a, b = kwargs.pop("a"), kwargs.pop("b")
    with pytest.raises(exc, match=pattern):
        ops.gemm(a, b, **kwargs)


def test_ops_gemm_read_only_or_overlapping_out():
    a = np.ones((3, 3))
    out = np.zeros((3, 3))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.gemm(a, a, out=out)
    buf = np.ones((3, 3))
    with pytest.raises(ValueError, match="overlaps"):
        ops.gemm(buf, np.eye(3), out=buf)


def test_core_gemm_rejects_conversions_and_bad_arguments():
    a = np.ones((2, 3))
    b = np.ones((3, 4))
    c = np.zeros((2, 4))
    with pytest.raises(TypeError):  # mixed dtypes: no silent cast
        _core.gemm(a.astype(np.float32), b, c, False, False, 1.0, 0.0)
    with pytest.raises(TypeError):  # a list is not converted
        _core.gemm(a.tolist(), b, c, False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"a has shape \(2, 3\).*b has shape \(4, 3\)"):
        _core.gemm(a, np.ones((4, 3)), c, False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="strides"):
        _core.gemm(np.ones((3, 2)).T, b, c, False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="strides"):  # one row, but its elements are strided
        _core.gemm(np.ones((1, 3)), b, np.zeros((2, 8))[:1, ::2], False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="strides"):  # rows in reverse order
        _core.gemm(a[::-1], b, c, False, False, 1.0, 0.0)
    c.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):  # not pybind11's FloatingPointError
        _core.gemm(a, b, c, False, False, 1.0, 0.0)


# ---- the C++ fast path of ops.gemm (_core.gemm_fast) ------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (8, 8, 8), (5, 33, 17), (40, 50, 60), (0, 3, 2),
                                   (3, 0, 2), (3, 4, 0)])
def test_gemm_fast_same_bits_as_core_gemm(dtype, trans_a, trans_b, m, n, k):
    """gemm_fast computes exactly what _core.gemm computes, into a new array or into out."""
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a, b, c = operands(rng, m, n, k, trans_a, trans_b, dtype)
    want = np.empty((m, n), dtype)
    _core.gemm(a, b, want, trans_a, trans_b, 1.5, 0.0)
    got = _core.gemm_fast(a, b, None, trans_a, trans_b, 1.5, 0)
    assert got is not None and got.dtype == dtype and got.shape == (m, n)
    np.testing.assert_array_equal(got, want)
    want2 = c.copy()
    _core.gemm(a, b, want2, trans_a, trans_b, 0.5, -2.0)
    out = c.copy()
    assert _core.gemm_fast(a, b, out, trans_a, trans_b, 0.5, -2.0) is out
    np.testing.assert_array_equal(out, want2)


class _Sub(np.ndarray):
    pass


def test_gemm_fast_declines_what_it_does_not_handle():
    """Anything but plain C-contiguous float arrays and scalars returns None, computing nothing:
    ops.gemm then converts, or raises its clear error."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal((3, 5)).astype(np.float32)
    out = np.full((4, 5), 7.0, np.float32)
    declined = [
        (a.tolist(), b, None, False, False, 1.0, 0.0),                 # not an ndarray
        (a, b.astype(np.float64), None, False, False, 1.0, 0.0),       # mixed dtypes
        (a.astype(np.int64), b, None, False, False, 1.0, 0.0),         # integer
        (a.astype(np.float16), b, None, False, False, 1.0, 0.0),       # other float
        (np.asfortranarray(a), b, None, False, False, 1.0, 0.0),       # not C-contiguous
        (a[:, ::2], b[:2], None, False, False, 1.0, 0.0),              # strided columns
        (a[0], b, None, False, False, 1.0, 0.0),                       # 1-D
        (a.view(_Sub), b, None, False, False, 1.0, 0.0),               # a subclass
        (a, b[:2], None, False, False, 1.0, 0.0),                      # inner dims differ
        (a, b, None, False, False, np.float32(1.0), 0.0),              # NumPy scalar alpha
        (a, b, None, False, False, True, 0.0),                         # bool alpha
        (a, b, None, False, False, 1.0, 1.0),                          # beta without out
        (a, b, None, False, False, 10 ** 400, 0.0),                    # int too big for a double
        (a, b, out[:, :4], False, False, 1.0, 0.0),                    # out of the wrong shape
        (a, b, out.astype(np.float64), False, False, 1.0, 0.0),        # out of another dtype
    ]
    ro = out.copy()
    ro.flags.writeable = False
    declined.append((a, b, ro, False, False, 1.0, 0.0))                # read-only out
    big = np.zeros((4, 8), np.float32)
    declined.append((big[:, :3], b, big[:, 3:8], False, False, 1.0, 0.0))  # strided a
    shared = np.zeros(40, np.float32)
    declined.append((shared[:12].reshape(4, 3), b, shared[:20].reshape(4, 5), False, False, 1.0,
                     0.0))                                             # out overlaps a
    for args in declined:
        before = out.copy()
        assert _core.gemm_fast(*args) is None, args
        np.testing.assert_array_equal(out, before)
    with pytest.raises(TypeError):
        _core.gemm_fast(a, b)


def test_ops_gemm_fast_and_checked_paths_agree():
    """The same product through the fast path and through the checked path (a list input) is
    the same bits, and bad input still gets the checked path's messages."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 7))
    b = rng.standard_normal((7, 9))
    np.testing.assert_array_equal(ops.gemm(a, b), ops.gemm(a.tolist(), b))
    np.testing.assert_array_equal(ops.gemm(a, b, alpha=2), ops.gemm(a, b, alpha=np.float64(2)))
    with pytest.raises(ValueError, match="inner dimensions differ"):
        ops.gemm(a, b[:3])
    with pytest.raises(ValueError, match="out is None"):
        ops.gemm(a, b, beta=1.0)
    with pytest.raises(ValueError, match="Expected 2D array"):
        ops.gemm(a[0], b)


def test_alpha_zero_reads_neither_a_nor_b():
    # BLAS and torch.addmm: with alpha = 0 the product is not formed, so NaN or inf in a or b
    # does not reach out (0 * inf would be NaN)
    a = np.array([[np.nan, 1.0], [np.inf, 2.0]])
    b = np.array([[1.0, -np.inf], [np.nan, 1.0]])
    np.testing.assert_array_equal(ops.gemm(a, b, alpha=0.0), np.zeros((2, 2)))
    out = np.full((2, 2), 3.0)
    ops.gemm(a, b, alpha=0.0, beta=2.0, out=out)
    np.testing.assert_array_equal(out, np.full((2, 2), 6.0))
    for dt in (np.float32, np.float64):  # the fast path too (plain C-contiguous arrays)
        big = np.full((64, 64), np.inf, dtype=dt)
        np.testing.assert_array_equal(ops.gemm(big, big, alpha=0.0), np.zeros((64, 64), dt))


@pytest.mark.parametrize("dt", ["f4", "f8"])
def test_byte_swapped_arrays_are_read_as_numbers(dt):
    # '>f8' has float64's type number: the fast path read its bytes as native ones
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((3, 4))
    swapped = ">" if np.little_endian else "<"
    got = ops.gemm(a.astype(swapped + dt), b.astype(swapped + dt))
    np.testing.assert_allclose(got, a.astype(dt) @ b.astype(dt), rtol=1e-5, atol=1e-6)
    assert got.dtype == np.dtype(dt)  # native
    with pytest.raises(TypeError, match="out has dtype"):
        ops.gemm(a, b, out=np.zeros((5, 4), dtype=swapped + "f8"))
