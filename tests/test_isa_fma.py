"""Every ISA path rounds each float32 multiply-add a·b + acc once, as the FMA instructions do, so
that the products are bitwise the same on all of them even where rounding twice would differ.

Rounding a·b + c first to double and then to float32 (what a double-precision fma does with float
operands) differs from rounding it once when the exact value lies within half a double ulp of a
float32 midpoint: rare (|a·b| far below |c|, and then one case in ~2^29). The portable float kernel
did that, which made 4 of a grid of 13,292 trainings differ between paths: an RNN's weight_ih after
truncated BPTT below a Dense layer, a 3-cell LSTM's per-step gradient norms (each with "all" and
"sqrt" memory). Random operands cannot reach such a case in
a test, so the operands here are built to land on one: each C element is c·1 then fma(a, b, c).
"""
from fractions import Fraction

import numpy as np
import pytest

import chainrule as cr
from chainrule import ops

ISAS = ops.supported_isas()


def _round_f32(q):
    """The float32 nearest to the rational q, ties to even (normal range)."""
    if q == 0:
        return np.float32(0)
    sign, q = (-1, -q) if q < 0 else (1, q)
    e = q.numerator.bit_length() - q.denominator.bit_length()
    while q >= Fraction(2) ** (e + 1):
        e += 1
    while q < Fraction(2) ** e:
        e -= 1
    n = round(q / Fraction(2) ** (e - 23))  # 24 significant bits; round() ties to even
    return np.float32(sign * n * 2.0 ** (e - 23))


def _fma_f32(a, b, c):
    """a·b + c rounded once to float32."""
    return _round_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def _twice_rounded(a, b, c):
    """a·b + c rounded to double, then to float32 (a·b of two floats is exact in double)."""
    return np.float32(np.float64(a) * np.float64(b) + np.float64(c))


def _triples():
    """(a, b, c, fma(a, b, c)) in float32 where rounding twice gives another float.

    a = A 2^-23 in [1, 2) and b = M 2^-48 with A M = 2^47 + r, 0 < |r| < 2^18: then a·b is
    2^-24 (half an ulp of 1) plus r 2^-71, less than half a double ulp of 1 away from it. With
    c = 1 and r > 0 the exact sum lies just above the midpoint 1 + 2^-24 (once: 1 + 2^-23; twice:
    the midpoint, then to even, 1). With c = 1 + 2^-23 and r < 0 it lies just below the midpoint
    1 + 3 2^-24 (once: c; twice: 1 + 2^-22). Scaled by powers of two and negated as well.
    """
    found = {}
    A = 2**23 + 1
    while len(found) < 2:
        M = (2**47 + A // 2) // A
        r = A * M - 2**47
        if 0 < abs(r) < 2**18 and 2**23 <= M < 2**24:
            found.setdefault(r > 0, (A, M))
        A += 1
    out = []
    for above, (A, M) in sorted(found.items()):
        a = np.float32(A * 2.0**-23)
        b0 = np.float32(M * 2.0**-48)
        c0 = np.float32(1.0 if above else 1.0 + 2.0**-23)
        for s in (-30, 0, 20):
            for sign in (1, -1):
                b, c = np.float32(b0 * 2.0**s), np.float32(sign * c0 * 2.0**s)
                aa = np.float32(sign * a)
                out.append((aa, b, c, _fma_f32(aa, b, c)))
    return out


TRIPLES = _triples()


def test_the_operands_are_cases_where_rounding_twice_differs():
    # Without this every test below could pass on a kernel that rounds twice.
    assert len(TRIPLES) == 12
    for a, b, c, once in TRIPLES:
        assert _twice_rounded(a, b, c) != once, (a, b, c)


def _gemm_operands(a, b, c, M, N, K):
    """op(A) (M, K), op(B) (K, N) with every element of op(A) op(B) = c·1 then fma(a, b, c) at
    depth K-2, K-1 (zeros before them in A: the sum is exactly +0 until then)."""
    A = np.zeros((M, K), np.float32)
    A[:, K - 2], A[:, K - 1] = c, a
    B = np.random.default_rng(K).standard_normal((K, N)).astype(np.float32)
    B[K - 2], B[K - 1] = 1.0, b
    return A, B


# Rows and columns across every register tile (4x8 / 4x4, 6x16 / 6x8, 14x32 / 8x32 and the
# one-row kernel), and a product large enough to be split over two threads.
GEMM_SHAPES = [(1, 1), (3, 5), (4, 8), (5, 9), (8, 16), (9, 17), (14, 32), (15, 33), (17, 40),
               (20, 33), (33, 7), (200, 70)]


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True)])
@pytest.mark.parametrize("K", [2, 37])
@pytest.mark.parametrize("M,N", GEMM_SHAPES)
def test_gemm_rounds_each_fma_once_on_every_path(M, N, K, trans_a, trans_b):
    cr.set_num_threads(2)
    for a, b, c, once in TRIPLES:
        A, B = _gemm_operands(a, b, c, M, N, K)
        A_in = np.ascontiguousarray(A.T) if trans_a else A
        B_in = np.ascontiguousarray(B.T) if trans_b else B
        for isa in ISAS:
            ops.set_isa(isa)
            out = ops.gemm(A_in, B_in, trans_a=trans_a, trans_b=trans_b)
            assert (out == once).all(), (isa, a, b, c, out[out != once][:3], once)


@pytest.mark.parametrize("B", [1, 3, 5, 20, 300])
@pytest.mark.parametrize("O", [1, 3, 33, 100])
def test_dense_forward_rounds_each_fma_once_on_every_path(B, O):
    # On avx512: B <= 4 the GEMV reading W in place, O = 1 the GEMV with roles swapped, small
    # products the small path's tiles, the rest the packed GEMM; the other paths the GEMM for all.
    a, b, c, once = TRIPLES[(B + O) % len(TRIPLES)]
    x, wt = _gemm_operands(a, b, c, B, O, 40)  # y = x W^T: W (O, I) = B^T
    w = np.ascontiguousarray(wt.T)
    for isa in ISAS:
        ops.set_isa(isa)
        y = ops.dense_forward(x, w)
        assert (y == once).all(), (isa, B, O)


@pytest.mark.parametrize("B,I,O", [(2, 1, 1), (20, 33, 132), (140, 33, 132), (5, 70, 40)])
def test_dense_backward_rounds_each_fma_once_on_every_path(B, I, O):
    a, b, c, once = TRIPLES[(B + I) % len(TRIPLES)]
    # dx = dy W: dy (B, O) rows c, a in columns O-2, O-1 (O >= 2), W rows 1, b there.
    dy, w = _gemm_operands(a, b, c, B, I, max(O, 2))
    x = np.random.default_rng(1).standard_normal((B, I)).astype(np.float32)
    # dW = dy^T x: dy2 (B, O) and x2 (B, I) give c·1 then fma(a, b, c) over the last two rows.
    dy2t, x2 = _gemm_operands(a, b, c, O, I, max(B, 2))
    dy2 = np.ascontiguousarray(dy2t.T)
    for isa in ISAS:
        ops.set_isa(isa)
        dx, _, _ = ops.dense_backward(dy, x, w)
        assert (dx == once).all(), (isa, "dx")
        _, dw, _ = ops.dense_backward(dy2, x2, np.zeros((O, I), np.float32), need_input_grad=False)
        assert (dw == once).all(), (isa, "dW")


def _backward_on_every_path(model, X, dy, memory):
    """{isa: [gradients, input gradient, initial-state gradients, per-step norms]}."""
    out = {}
    for isa in ISAS:
        ops.set_isa(isa)
        model.zero_grad()
        model.forward(X, bptt_memory=memory)
        model.backward(grad_output=dy)
        rec = 1 if isinstance(model.layers[0], cr.Dense) else 0
        state = model.initial_state_grad(rec)
        out[isa] = (list(model.grads.values()) + [model.input_grad] +
                    list(state if isinstance(state, tuple) else (state,)) +
                    [model.timestep_grad_norms(rec)])
    return out


def _assert_same_bits(results):
    for isa, got in results.items():
        for i, (x, y) in enumerate(zip(got, results["baseline"])):
            assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), f"{isa}: output {i}"


@pytest.mark.parametrize("memory", ["all", "sqrt"])
def test_rnn_hidden_gradient_below_a_dense_layer_same_bits(memory):
    # The grid's case (a), reduced to one backward: Dense(4, 5) below RNN(5, 33), 20 rows. The
    # first product that differed was dL/dh_{t-1} = dG_t W_hh. Here the Dense layer outputs
    # zeros (zero weights), so h = 0 and dG = dL/dh; dy at the last step puts c, a in units 0, 1
    # and W_hh rows 0, 1 are 1, b: every element of dL/dh_0 is c·1 then fma(a, b, c). It reaches
    # the Dense layer's weight gradient through dG_0 W_ih, the norms and dL/dh0.
    a, b, c, _ = TRIPLES[2]  # unscaled: the differences are not lost in larger sums
    B, T, H = 20, 2, 33
    model = cr.Model([cr.Dense(4, 5), cr.RNN(5, H, return_sequences=True)], dtype="float32",
                     seed=1)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((B, T, 4)).astype(np.float32)
    model.forward(X)
    state = model.state_dict()
    state["0.weight"][:] = 0
    state["0.bias"][:] = 0
    state["1.bias_ih_l0"][:] = 0
    state["1.bias_hh_l0"][:] = 0
    state["1.weight_hh_l0"][0], state["1.weight_hh_l0"][1] = 1.0, b
    model.load_state_dict(state)
    dy = np.zeros((B, T, H), np.float32)
    dy[:, T - 1, 0], dy[:, T - 1, 1] = c, a
    _assert_same_bits(_backward_on_every_path(model, X, dy, memory))


@pytest.mark.parametrize("memory", ["all", "sqrt"])
def test_stacked_lstm_input_gradient_same_bits(memory):
    # The grid's case (b), reduced to one backward of two stacked LSTM cells (H = 33, 20 rows):
    # the first product that differed was the upper cell's input gradient dG W_ih (depth 4H),
    # which is the lower cell's dL/dh and so its per-step norms. With zero inputs and states
    # every gate is sigma(0) = 1/2 or tanh(0) = 0 and dG's g block is dL/dh / 4, the other blocks
    # zeros; dy = 4 (c, a) in units 0, 1 and W_ih rows 2H, 2H+1 of the upper cell = 1, b.
    a, b, c, _ = TRIPLES[8]
    B, T, H = 20, 3, 33
    model = cr.Model([cr.LSTM(4, H, num_layers=2, return_sequences=True)], dtype="float32",
                     seed=1)
    X = np.zeros((B, T, 4), np.float32)
    model.forward(X)
    state = model.state_dict()
    for k in ("0.bias_ih_l0", "0.bias_hh_l0", "0.bias_ih_l1", "0.bias_hh_l1"):
        state[k][:] = 0
    state["0.weight_ih_l1"][2 * H], state["0.weight_ih_l1"][2 * H + 1] = 1.0, b
    model.load_state_dict(state)
    dy = np.zeros((B, T, H), np.float32)
    dy[:, T - 1, 0], dy[:, T - 1, 1] = 4 * c, 4 * a
    _assert_same_bits(_backward_on_every_path(model, X, dy, memory))
