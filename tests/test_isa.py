"""Every GEMM instruction-set path the CPU supports: correct against NumPy, and bitwise identical
to the portable path (every kernel fuses a·b + acc in k order and applies alpha/beta unfused)."""
import itertools

import numpy as np
import pytest

from chainrule import ops

ISAS = ops.supported_isas()
# Sizes around every tile edge in use: 4x8 / 4x4 (portable), 6x16 / 6x8 (avx2), 14x32 / 14x16
# (avx512), plus one beyond a shrunk depth block.
SIZES = [1, 3, 5, 6, 7, 13, 14, 15, 16, 17, 31, 32, 33, 45]


def _run_all_paths(a, b, c0, **kw):
    outs = {}
    for isa in ISAS:
        ops.set_isa(isa)
        c = c0.copy()
        outs[isa] = ops.gemm(a, b, out=c, **kw)
    return outs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
def test_paths_agree_bitwise_and_match_numpy(dtype, trans_a, trans_b):
    rng = np.random.default_rng(7)
    ops._core.gemm_set_blocking(20, 9, 40)  # small blocks: every edge of the blocking too
    # n = 100 and 70: several full B panels on every path (the copy packing's k-blocked sweep),
    # with depth blocks of 9 and 3 (not multiples of its 8-row blocks).
    for m, n, k in [(14, 32, 9), (15, 33, 10), (13, 31, 17), (45, 17, 5), (1, 45, 45), (6, 16, 8),
                    (9, 100, 21), (30, 70, 12)]:
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
        c0 = rng.standard_normal((m, n)).astype(dtype)
        outs = _run_all_paths(a, b, c0, trans_a=trans_a, trans_b=trans_b, alpha=0.75, beta=-1.5)
        ref = 0.75 * (a.T if trans_a else a).astype(np.float64) @ \
            (b.T if trans_b else b).astype(np.float64) - 1.5 * c0
        tol = 1e-4 if dtype == np.float32 else 1e-12
        for isa, out in outs.items():
            np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * k, err_msg=isa)
            assert np.array_equal(out, outs["baseline"]), f"{isa} differs from baseline"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_beta_zero_ignores_nan_in_c_on_every_path(dtype):
    rng = np.random.default_rng(3)
    for m, n in itertools.product([1, 14, 15], [1, 16, 33]):
        a = rng.standard_normal((m, 7)).astype(dtype)
        b = rng.standard_normal((7, n)).astype(dtype)
        c0 = np.full((m, n), np.nan, dtype)
        for isa, out in _run_all_paths(a, b, c0).items():
            assert np.isfinite(out).all(), isa


def test_set_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="not available"):
        ops.set_isa("sse9")
    assert ops.gemm_isa() in ISAS


def test_edge_rows_and_columns_never_written_past_the_matrix():
    # out is a view into a larger buffer: the kernels' masked stores must stay inside it.
    rng = np.random.default_rng(5)
    for isa in ISAS:
        ops.set_isa(isa)
        big = np.full((20, 50), 7.0, np.float32)
        view = big[2:17, 3:36]  # 15 x 33: partial tiles on every path
        a = rng.standard_normal((15, 11)).astype(np.float32)
        b = rng.standard_normal((11, 33)).astype(np.float32)
        ops.gemm(a, b, out=view)
        mask = np.ones_like(big, bool)
        mask[2:17, 3:36] = False
        assert (big[mask] == 7.0).all(), isa
