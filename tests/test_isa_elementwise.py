"""Every elementwise kernel (activations, losses, optimizer updates, clipping) on every
instruction-set path the CPU supports gives the bits of the portable path. The elementwise tables
follow the GEMM's path (ops.set_isa switches both); the C++ tests (cpp/tests) compare each path
with the _ref twins as well."""
import numpy as np
import pytest

import chainrule as cr
from chainrule import ops

ISAS = ops.supported_isas()
# Lengths around the 16-lane reduction blocks and every vector width (4, 8, 16 floats).
SHAPES = [(1, 1), (2, 3), (1, 15), (2, 16), (1, 17), (3, 31), (2, 33), (5, 100), (1, 1000)]


def _on_every_path(fn):
    """{isa: fn()} with each supported path switched on in turn."""
    out = {}
    for isa in ISAS:
        ops.set_isa(isa)
        out[isa] = fn()
    return out


def _same_bits(a, b):
    """Bitwise, +0 and -0 told apart; NaN matches NaN (IEEE leaves NaN payloads open)."""
    a, b = np.asarray(a), np.asarray(b)
    nan = np.isnan(a)
    return (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(nan, np.isnan(b))
            and np.array_equal(a[~nan], b[~nan])
            and np.array_equal(np.signbit(a[~nan]), np.signbit(b[~nan])))


def _assert_paths_agree(results, what):
    base = results[ISAS[0]]
    for isa, got in results.items():
        for i, (x, y) in enumerate(zip(got, base)):
            assert _same_bits(x, y), f"{what}: {isa} differs from {ISAS[0]} (output {i})"


def _inputs(shape, dtype, specials):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    x = (rng.standard_normal(shape) * 6).astype(dtype)
    if specials and x.size > 20:
        vals = [0.0, -0.0, 1e-30, -88.5, 95.0, -800.0, 800.0, np.inf, -np.inf, np.nan]
        x.flat[1:31:3] = vals
    dy = rng.standard_normal(shape).astype(dtype)
    return x, dy


def test_the_paths_include_the_best_one_the_cpu_has():
    # Without this the comparisons below could pass on a machine where only one path runs.
    assert ISAS[0] == "baseline"
    if len(ISAS) == 1:
        pytest.skip("only the portable path on this CPU")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ops.ACTIVATIONS)
@pytest.mark.parametrize("specials", [False, True])
def test_activations_agree_bitwise(dtype, shape, name, specials):
    x, dy = _inputs(shape, dtype, specials)

    def run():
        y = ops.activation(name, x, negative_slope=0.2)
        return y, ops.activation_backward(name, dy, x=x, y=y, negative_slope=0.2)

    results = _on_every_path(run)
    _assert_paths_agree(results, f"{name} {np.dtype(dtype).name} {shape}")
    if not specials and name in ("tanh", "sigmoid"):  # and the paths compute the function
        ref = np.tanh(x.astype(np.float64)) if name == "tanh" else \
            1 / (1 + np.exp(-x.astype(np.float64)))
        tol = 1e-6 if dtype == np.float32 else 1e-15
        np.testing.assert_allclose(results[ISAS[-1]][0], ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_losses_agree_bitwise(dtype, shape, reduction):
    x, t = _inputs(shape, dtype, False)
    prob = (1 / (1 + np.exp(-x))).astype(dtype)
    target_prob = np.abs(t) / np.abs(t).sum(axis=1, keepdims=True)
    cls = np.random.default_rng(1).integers(0, shape[1], shape[0])

    def run():
        out = []
        for name, pred, target in [("mse", x, t), ("bce", prob, np.abs(t).clip(0, 1)),
                                   ("bce_with_logits", x, np.abs(t).clip(0, 1)),
                                   ("cross_entropy", x, target_prob.astype(dtype)),
                                   ("cross_entropy", x, cls)]:
            value, grad = ops.loss_grad(name, pred, target, reduction=reduction)
            out += [np.float64(value), grad, np.float64(ops.loss(name, pred, target, reduction))]
        return out

    _assert_paths_agree(_on_every_path(run), f"losses {np.dtype(dtype).name} {shape}")


def _train(dtype, optimizer, clip):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 7)).astype(dtype)
    y = rng.standard_normal((40, 3)).astype(dtype)
    model = cr.Model([cr.Dense(7, 33), cr.Tanh(), cr.Dense(33, 17), cr.Sigmoid(), cr.Dense(17, 3)],
                     loss="mse", optimizer=optimizer, dtype=np.dtype(dtype).name, seed=0)
    norms = []
    for _ in range(3):
        model.forward(X)
        model.backward(y)
        if clip == "value":
            model.clip_grad_value(0.01)
        elif clip is not None:
            norms.append(model.clip_grad_norm(0.05, norm_type=clip))
        model.step()
        model.zero_grad()
    return [np.float64(n) for n in norms] + list(model.state_dict().values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer,clip", [
    (lambda: cr.SGD(lr=0.1), None),
    (lambda: cr.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True), 2.0),
    (lambda: cr.SGD(lr=0.1, momentum=0.9, dampening=0.5, maximize=True), float("inf")),
    (lambda: cr.Adam(lr=1e-2), 3.0),
    (lambda: cr.Adam(lr=1e-2, amsgrad=True, weight_decay=1e-2, betas=(0.3, 0.9)), "value"),
])
def test_training_steps_agree_bitwise(dtype, optimizer, clip):
    results = _on_every_path(lambda: _train(dtype, optimizer(), clip))
    _assert_paths_agree(results, f"training {np.dtype(dtype).name} clip={clip}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ops.ACTIVATIONS)
def test_large_activations_same_bits_on_one_and_two_threads(dtype, name):
    # Large enough to be split over the thread pool (rows for softmax, elements otherwise), with
    # piece boundaries that are not multiples of the vector widths' natural blocks.
    before = cr.get_num_threads()
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((301, 517)) * 4).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    try:
        out = {}
        for threads in (1, 2):
            cr.set_num_threads(threads)
            y = ops.activation(name, x, negative_slope=0.2)
            out[threads] = (y, ops.activation_backward(name, dy, x=x, y=y, negative_slope=0.2))
    finally:
        cr.set_num_threads(before)
    for a, b in zip(out[1], out[2]):
        assert _same_bits(a, b)
    if name not in ("softmax", "log_softmax"):  # elementwise: any cut gives the same values
        assert _same_bits(out[2][0][:, :5], ops.activation(name, x[:, :5], negative_slope=0.2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_all_finite_on_every_path_and_thread_count(dtype, threads):
    """_core.all_finite finds one NaN or inf anywhere: first, last, either side of its 4096-element
    blocks and of the threads' slices (arrays of 1 M elements and more are split); extreme finite
    values (max, tiny, subnormal, -0) pass."""
    cr.set_num_threads(threads)
    info = np.finfo(dtype)
    for n in [0, 1, 15, 16, 17, 4095, 4096, 4097, 70001, 200003, 2 ** 20 + 7, 2 ** 21 + 3]:
        x = np.linspace(-3, 3, n).astype(dtype)
        if n >= 4:
            x[:4] = [info.max, -info.max, info.smallest_subnormal, -0.0]
        for isa in ISAS:
            ops.set_isa(isa)
            assert ops._core.all_finite(x), (isa, n)
        for pos in sorted({0, n // 3, 4095, 4096, n // 2, n // 2 + 1, n - 1}):
            if not 0 <= pos < n:
                continue
            for bad in [np.nan, np.inf, -np.inf, -np.nan] if n < 2 ** 20 else [np.nan, -np.inf]:
                y = x.copy()
                y[pos] = bad
                for isa in ISAS:
                    ops.set_isa(isa)
                    assert not ops._core.all_finite(y), (isa, n, pos, bad)
    # Any shape, C-contiguous; another dtype or layout is a TypeError, not a silent copy.
    assert ops._core.all_finite(np.ones((3, 4, 5), dtype))
    assert not ops._core.all_finite(np.full((3, 4, 5), np.inf, dtype))
    with pytest.raises(TypeError):
        ops._core.all_finite(np.ones((4, 4), dtype)[:, ::2])
    with pytest.raises(TypeError):
        ops._core.all_finite(np.ones(4, np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("R,C", [(4, 1), (4, 10), (5, 2), (16, 10), (17, 16), (33, 7), (40, 3)])
def test_cross_entropy_rows_in_lanes_equal_rows_one_at_a_time(dtype, R, C):
    """Class-index cross-entropy of short rows (at most 16 classes) runs 16 rows at a time, one
    row per vector lane: the loss and gradient must be the bits of the row-at-a-time loop (a
    single row takes it), ties for the maximum, infinities and NaN included, on every path."""
    rng = np.random.default_rng(R * 100 + C)
    x = (rng.standard_normal((R, C)) * 4).astype(dtype)
    if C > 1:
        x[1, :] = x[1, 0]                       # all classes tie
        x[2, C - 1] = x[2, 0] = x[2].max() + 1  # two maxima, the first one skipped
    specials = [np.inf, -np.inf, np.nan, 1e30, -1e30, -0.0, 95.0, -800.0]
    for i, v in enumerate(specials):
        if 3 + i < R:
            x[3 + i, i % C] = v
    cls = rng.integers(0, C, R)

    def run():
        value, grad = ops.loss_grad("cross_entropy", x, cls, reduction="sum")
        rows = [ops.loss_grad("cross_entropy", x[r:r + 1], cls[r:r + 1], reduction="sum")
                for r in range(R)]
        total = 0.0
        for v, _ in rows:
            total += float(v)
        return [np.float64(value), grad, np.float64(total), np.concatenate([g for _, g in rows])]

    for isa, (value, grad, total, rows) in _on_every_path(run).items():
        assert _same_bits(grad, rows), f"{isa}: gradient differs from row-at-a-time"
        assert _same_bits(value, total), f"{isa}: loss {value} != row-at-a-time sum {total}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_of_nan_is_that_nan_on_every_path_and_lane(dtype):
    # The NaN went through the exp arithmetic, and its sign bit came out by operand order:
    # negative in the scalar tail of the portable path, positive in the vector lanes
    x = np.full(19, np.nan, dtype=dtype)  # vector lanes and a scalar tail on every path
    x[1::2] = -x[1::2]
    bits = x.view(np.uint32 if dtype == np.float32 else np.uint64)
    for isa, y in _on_every_path(lambda: ops.tanh(x)).items():
        assert np.array_equal(y.view(bits.dtype), bits), isa
