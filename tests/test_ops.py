"""chainrule.ops against the NumPy references (tests/reference.py), against central finite
differences in float64, and against PyTorch in float64 where it is installed; plus the surface:
dtypes, shapes, inputs left alone, and the errors for bad input."""

import numpy as np
import pytest

import reference as ref
from chainrule import _core, ops

DTYPES = [np.float32, np.float64]
ACTIVATIONS = list(ops.ACTIVATIONS)
ELEMENTWISE_LOSSES = ["mse", "bce", "bce_with_logits"]
REDUCTIONS = ["mean", "sum"]
# (loss name, kind of target) for every loss and every target form
LOSS_CASES = [("mse", "float"), ("bce", "prob"), ("bce_with_logits", "prob"),
              ("cross_entropy", "index"), ("cross_entropy", "dist")]


def tol(dtype):
    """Tolerances against the float64 references: a few units in the last place of dtype."""
    return dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)


def away_from_kinks(rng, shape, low=0.1, high=2.0):
    """Values with |x| in [low, high]: relu and leaky_relu are smooth there."""
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


def loss_inputs(rng, name, target_kind, shape=(6, 4), dtype=np.float64):
    n, c = shape
    if name == "bce":
        pred = rng.uniform(0.05, 0.95, shape)
    else:
        pred = rng.standard_normal(shape) * 2
    if target_kind == "index":
        target = rng.integers(0, c, n)
    elif target_kind == "dist":
        target = rng.dirichlet(np.ones(c), n)
    elif target_kind == "prob":
        target = rng.uniform(0, 1, shape)
    else:
        target = rng.standard_normal(shape)
    return pred.astype(dtype), (target if target_kind == "index" else target.astype(dtype))


@pytest.fixture
def torch():
    """PyTorch, or the test is skipped: the suite runs without it."""
    return pytest.importorskip("torch")


# ---- activations: values -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4), (0, 4), (4, 0)])
def test_activation_forward_matches_reference(name, dtype, shape):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    y = ops.activation(name, x, 0.1)
    assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_allclose(y, ref.activation(name, x, 0.1), **tol(dtype))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_named_functions_are_the_activations(name):
    x = np.random.default_rng(2).standard_normal((4, 6))
    fn = getattr(ops, name)
    np.testing.assert_array_equal(fn(x), ops.activation(name, x))
    if name == "leaky_relu":
        np.testing.assert_array_equal(fn(x, 0.3), ops.activation(name, x, 0.3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_at_extreme_inputs(dtype):
    x = np.array([[-1000.0, -60.0, -1.0, 0.0, 1.0, 60.0, 1000.0]], dtype=dtype)
    for name in ACTIVATIONS:
        y = ops.activation(name, x)
        assert not np.isnan(y).any(), name
        np.testing.assert_allclose(y, ref.activation(name, x), err_msg=name, **tol(dtype))
    np.testing.assert_array_equal(ops.sigmoid(x)[0, [0, -1]], [0.0, 1.0])
    np.testing.assert_array_equal(ops.softmax(x)[0, -1], 1.0)
    np.testing.assert_allclose(ops.log_softmax(x)[0, 0], -2000.0, rtol=1e-6)


def test_nan_propagates_through_relu_and_leaky_relu():
    x = np.array([np.nan, -1.0, 2.0])
    assert np.isnan(ops.relu(x)[0]) and np.isnan(ops.leaky_relu(x)[0])
    np.testing.assert_array_equal(ops.relu(x)[1:], [0.0, 2.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_passes_the_gradient_where_the_output_is_nan(dtype):
    # torch's threshold_backward zeroes dy only where y <= 0: a NaN output passes dy on (a NaN
    # upstream stays visible in the layers below rather than turning into a zero gradient);
    # leaky_relu's backward reads x > 0 as torch's does: slope * dy where x is NaN
    x = np.array([np.nan, -1.0, 0.0, 2.0] * 5, dtype=dtype)  # 20 values: the vector loop too
    dy = np.array([3.0, 4.0, 5.0, 6.0] * 5, dtype=dtype)
    for kw in ({"x": x}, {"y": ops.relu(x)}):
        np.testing.assert_array_equal(ops.activation_backward("relu", dy, **kw),
                                      [3.0, 0.0, 0.0, 6.0] * 5)
    np.testing.assert_array_equal(ops.activation_backward("leaky_relu", dy, x=x,
                                                          negative_slope=0.5),
                                  np.array([1.5, 2.0, 2.5, 6.0] * 5, dtype=dtype))
    dy[0] = np.nan
    assert np.isnan(ops.activation_backward("relu", dy, x=x)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", [[np.inf, 1.0, 0.0], [np.inf, -np.inf, 2.0], [1.0, np.nan, 0.0],
                                 [-np.inf, -np.inf, -np.inf]])
def test_a_row_without_a_finite_maximum_is_all_nan_as_in_torch(dtype, row):
    # torch: x - max(x) is NaN at the +inf (or everywhere), so the row's normaliser is NaN too.
    x = np.array([row, [1.0, 2.0, 3.0]] * 5, dtype=dtype)  # 10 rows: the 16-lane block too
    for y in (ops.softmax(x), ops.log_softmax(x)):
        assert np.isnan(y[0::2]).all() and np.isfinite(y[1::2]).all()
    for target in (np.full(10, 1), np.full(x.shape, 1 / 3, dtype)):
        for reduction in ("mean", "sum"):
            loss, grad = ops.loss_grad("cross_entropy", x, target, reduction=reduction)
            assert np.isnan(loss).all() and np.isnan(grad[0::2]).all()
            assert np.isfinite(grad[1::2]).all()
    assert np.isfinite(ops.loss_grad("cross_entropy", x[1::2], np.full(5, 1))[0])


def test_softmax_acts_along_the_last_axis():
    x = np.random.default_rng(3).standard_normal((2, 3, 5))
    y = ops.softmax(x)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(y[1, 2], ref.activation("softmax", x[1, 2]), rtol=1e-14)


# ---- activations: gradients ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_activation_backward_matches_reference(name, dtype, shape):
    rng = np.random.default_rng(4)
    x = away_from_kinks(rng, shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y = ops.activation(name, x, 0.2)
    expected = ref.activation_backward(name, dy, x, 0.2)
    from_x = ops.activation_backward(name, dy, x=x, negative_slope=0.2)
    from_y = ops.activation_backward(name, dy, y=y, negative_slope=0.2)
    from_both = ops.activation_backward(name, dy, x=x, y=y, negative_slope=0.2)
    for dx in (from_x, from_y, from_both):
        assert dx.shape == shape and dx.dtype == dtype
        np.testing.assert_allclose(dx, expected, **tol(dtype))
    np.testing.assert_array_equal(from_x, from_both)
    np.testing.assert_array_equal(from_y, from_both)


@pytest.mark.parametrize(
    "name,slope",
    [(name, 0.01) for name in ACTIVATIONS] + [("leaky_relu", s) for s in (0.3, 0.0, -0.5)],
)
def test_activation_gradient_by_finite_differences(name, slope):
    rng = np.random.default_rng(5)
    x = away_from_kinks(rng, (3, 5))
    w = rng.standard_normal((3, 5))

    def f(z):  # a scalar loss whose gradient with respect to y is w
        return float(np.sum(w * ops.activation(name, z, slope)))

    dx = ops.activation_backward(name, w, x=x, negative_slope=slope)
    np.testing.assert_allclose(dx, ref.numerical_grad(f, x), rtol=1e-6, atol=1e-8)


def test_leaky_relu_backward_from_y_needs_nonnegative_slope():
    x = np.array([-2.0, -1.0, 3.0])
    dy = np.ones(3)
    y = ops.leaky_relu(x, -0.5)  # y > 0 for x < 0 too: the sign of x is lost
    with pytest.raises(ValueError, match="needs x"):
        ops.activation_backward("leaky_relu", dy, y=y, negative_slope=-0.5)
    np.testing.assert_array_equal(
        ops.activation_backward("leaky_relu", dy, x=x, negative_slope=-0.5), [-0.5, -0.5, 1.0]
    )


# ---- losses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,target_kind", LOSS_CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_matches_reference(name, target_kind, reduction, dtype):
    rng = np.random.default_rng(6)
    pred, target = loss_inputs(rng, name, target_kind, dtype=dtype)
    value, grad = ops.loss_grad(name, pred, target, reduction)
    want_value, want_grad = ref.loss_grad(name, pred, target, reduction)
    assert isinstance(value, float)
    assert grad.shape == pred.shape and grad.dtype == dtype
    np.testing.assert_allclose(value, want_value, rtol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_allclose(grad, want_grad, **tol(dtype))
    assert ops.loss(name, pred, target, reduction) == value


@pytest.mark.parametrize("name,target_kind", LOSS_CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_gradient_by_finite_differences(name, target_kind, reduction):
    rng = np.random.default_rng(7)
    pred, target = loss_inputs(rng, name, target_kind, shape=(4, 3))
    _, grad = ops.loss_grad(name, pred, target, reduction)
    numeric = ref.numerical_grad(lambda p: ops.loss(name, p, target, reduction), pred)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_mean_divides_by_elements_or_by_rows():
    rng = np.random.default_rng(8)
    for name, kind in LOSS_CASES:
        pred, target = loss_inputs(rng, name, kind, shape=(5, 3))
        total = ops.loss(name, pred, target, "sum")
        count = 5 if name == "cross_entropy" else 15
        np.testing.assert_allclose(ops.loss(name, pred, target, "mean"), total / count,
                                   rtol=1e-14, err_msg=name)


@pytest.mark.parametrize("name", ELEMENTWISE_LOSSES)
@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4)])
def test_elementwise_losses_take_any_shape(name, shape):
    rng = np.random.default_rng(9)
    pred = rng.uniform(0.1, 0.9, shape)
    target = rng.uniform(0, 1, shape)
    value, grad = ops.loss_grad(name, pred, target)
    want_value, want_grad = ref.loss_grad(name, pred, target)
    assert grad.shape == shape
    np.testing.assert_allclose(value, want_value, rtol=1e-13)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-13)


def test_bce_clamps_the_log_at_minus_100():
    # p = 0 with t = 1 and p = 1 with t = 0 each cost exactly 100, as in PyTorch
    pred = np.array([0.0, 1.0, 0.5])
    target = np.array([1.0, 0.0, 0.5])
    value, grad = ops.loss_grad("bce", pred, target, "sum")
    np.testing.assert_allclose(value, 200.0 + np.log(2.0), rtol=1e-15)
    want_value, want_grad = ref.loss_grad("bce", pred, target, "sum")
    np.testing.assert_allclose(grad, want_grad, rtol=1e-15)
    eps = float(np.float32(1e-12))  # torch's EPSILON, a float constant
    assert grad[0] == -1 / eps and grad[1] == 1 / eps


def test_stable_at_extreme_logits():
    x = np.array([[-1000.0, 0.0, 1000.0]])
    value, grad = ops.loss_grad("bce_with_logits", x, np.array([[1.0, 0.5, 0.0]]), "sum")
    np.testing.assert_allclose(value, 2000.0 + np.log(2.0), rtol=1e-15)
    np.testing.assert_allclose(grad, [[-1.0, 0.0, 1.0]], atol=1e-15)
    value, grad = ops.loss_grad("cross_entropy", x, np.array([0]), "sum")
    np.testing.assert_allclose(value, 2000.0, rtol=1e-15)
    np.testing.assert_allclose(grad, [[-1.0, 0.0, 1.0]], atol=1e-15)


@pytest.mark.parametrize("target", [np.array([0]), np.array([[0.5, 0.5]], np.float32)],
                         ids=["index", "probabilities"])
def test_cross_entropy_keeps_its_precision_at_large_logits(target):
    # lse was formed as m + log(sum): at m = -1e4 a float32 rounds by 2^-10, and the loss ln 2
    # came out as 0.69336 (found by tests/test_properties.py)
    logits = np.full((1, 2), -1e4, np.float32)
    value, grad = ops.loss_grad("cross_entropy", logits, target)
    np.testing.assert_allclose(value, np.log(2.0), rtol=4 * np.finfo(np.float32).eps)
    want = [[-0.5, 0.5]] if target.ndim == 1 else [[0.0, 0.0]]
    np.testing.assert_allclose(grad, want, atol=4 * np.finfo(np.float32).eps)


@pytest.mark.parametrize("index_dtype", [np.int64, np.int32, np.uint8])
def test_cross_entropy_index_dtypes_and_one_hot_equivalence(index_dtype):
    rng = np.random.default_rng(10)
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    one_hot = np.eye(4)[labels]
    v_idx, g_idx = ops.loss_grad("cross_entropy", logits, labels.astype(index_dtype))
    v_hot, g_hot = ops.loss_grad("cross_entropy", logits, one_hot)
    np.testing.assert_allclose(v_idx, v_hot, rtol=1e-14)
    np.testing.assert_allclose(g_idx, g_hot, rtol=1e-14, atol=1e-16)


def test_loss_target_follows_pred_dtype():
    pred = np.full((3, 2), 0.25, dtype=np.float32)
    value, grad = ops.loss_grad("mse", pred, np.zeros((3, 2)))  # float64 target
    assert grad.dtype == np.float32
    np.testing.assert_allclose(value, 0.0625, rtol=1e-7)
    _, grad = ops.loss_grad("mse", pred.astype(np.int64), np.zeros((3, 2)))
    assert grad.dtype == np.float64


# ---- dense -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(5, 3), (3,), (2, 4, 3), (0, 3)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_dense_matches_reference(dtype, x_shape, with_bias):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((4, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype) if with_bias else None
    y = ops.dense_forward(x, w, b)
    assert y.shape == x_shape[:-1] + (4,) and y.dtype == dtype
    np.testing.assert_allclose(y, ref.dense_forward(x, w, b), **tol(dtype))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = ops.dense_backward(dy, x, w)
    want_dx, want_dw, want_db = ref.dense_backward(dy, x, w)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (4,)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    for got, want in ((dx, want_dx), (dw, want_dw), (db, want_db)):
        np.testing.assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_fast_and_checked_paths_agree(dtype):
    """2-D C-contiguous ndarrays of one dtype take a direct call; other inputs (lists, Fortran
    order, mixed dtypes) the checked path. Same results, and bad shapes still name both shapes."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((37, 70)).astype(dtype)
    w = rng.standard_normal((45, 70)).astype(dtype)
    b = rng.standard_normal(45).astype(dtype)
    dy = rng.standard_normal((37, 45)).astype(dtype)
    y_fast = ops.dense_forward(x, w, b)
    y_checked = ops.dense_forward(np.asfortranarray(x), w.tolist(), b)
    assert y_fast.dtype == dtype and y_checked.dtype == np.float64
    np.testing.assert_array_equal(ops.dense_forward(np.asfortranarray(x), w, b), y_fast)
    np.testing.assert_allclose(y_checked, y_fast, rtol=1e-4, atol=1e-4)  # float64 vs dtype
    fast = ops.dense_backward(dy, x, w)
    checked = ops.dense_backward(np.asfortranarray(dy), x, w)
    for f, c in zip(fast, checked):
        assert f.dtype == dtype
        np.testing.assert_array_equal(f, c)
    dx, dw, db = ops.dense_backward(dy, x, w, need_input_grad=False)
    assert dx is None
    np.testing.assert_array_equal(dw, fast[1])
    np.testing.assert_array_equal(db, fast[2])
    # given accumulators: added into in place on both paths
    dw_acc, db_acc = fast[1].copy(), fast[2].copy()
    _, dw_out, db_out = ops.dense_backward(dy, x, w, dweight=dw_acc, dbias=db_acc)
    assert dw_out is dw_acc and db_out is db_acc
    dw_acc2, db_acc2 = fast[1].copy(), fast[2].copy()
    ops.dense_backward(np.asfortranarray(dy), x, w, dweight=dw_acc2, dbias=db_acc2)
    np.testing.assert_array_equal(dw_acc, dw_acc2)
    np.testing.assert_array_equal(db_acc, db_acc2)
    ro = fast[1].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="dweight is read-only"):
        ops.dense_backward(dy, x, w, dweight=ro)
    with pytest.raises(TypeError, match="dweight has dtype"):
        ops.dense_backward(dy, x, w, dweight=fast[1].astype(np.float16))
    with pytest.raises(ValueError, match="overlap|apart|share"):
        ops.dense_backward(dy, x, w, dweight=w)
    with pytest.raises(ValueError, match=r"x has shape \(37, 70\) and weight has shape \(45, 69\)"):
        ops.dense_forward(x, w[:, :69].copy())
    with pytest.raises(ValueError, match=r"bias has shape \(44,\)"):
        ops.dense_forward(x, w, b[:44].copy())
    with pytest.raises(ValueError, match=r"dy has shape \(37, 44\)"):
        ops.dense_backward(dy[:, :44].copy(), x, w)


def test_dense_backward_accumulates_into_given_gradients():
    rng = np.random.default_rng(12)
    x, w, dy = rng.standard_normal((6, 3)), rng.standard_normal((2, 3)), rng.standard_normal((6, 2))
    dw0, db0 = rng.standard_normal((2, 3)), rng.standard_normal(2)
    dweight, dbias = dw0.copy(), db0.copy()
    dx, dw_out, db_out = ops.dense_backward(dy, x, w, dweight=dweight, dbias=dbias,
                                            need_input_grad=False)
    assert dx is None
    assert dw_out is dweight and db_out is dbias
    _, want_dw, want_db = ref.dense_backward(dy, x, w)
    np.testing.assert_allclose(dweight, dw0 + want_dw, rtol=1e-14)
    np.testing.assert_allclose(dbias, db0 + want_db, rtol=1e-14)
    # only one of the two accumulators given
    _, dw_new, db_same = ops.dense_backward(dy, x, w, dbias=dbias)
    assert db_same is dbias
    np.testing.assert_allclose(dbias, db0 + 2 * want_db, rtol=1e-14)
    np.testing.assert_allclose(dw_new, want_dw, rtol=1e-14)


def test_dense_gradient_by_finite_differences():
    rng = np.random.default_rng(13)
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2)
    g = rng.standard_normal((4, 2))  # dL/dy for L = sum(g * y)
    dx, dw, db = ops.dense_backward(g, x, w)
    checks = [
        (dx, lambda z: np.sum(g * ops.dense_forward(z, w, b)), x),
        (dw, lambda z: np.sum(g * ops.dense_forward(x, z, b)), w),
        (db, lambda z: np.sum(g * ops.dense_forward(x, w, z)), b),
    ]
    for analytic, f, at in checks:
        np.testing.assert_allclose(analytic, ref.numerical_grad(f, at), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, 4, 5, 40])  # the few-rows, small and large paths
@pytest.mark.parametrize("with_bias", [False, True])
def test_dense_forward_without_input_features_is_the_bias_or_zeros(dtype, rows, with_bias):
    # An empty sum: NumPy's x @ W.T gives zeros; the output must never be left unwritten.
    x, w = np.ones((rows, 0), dtype), np.ones((3, 0), dtype)
    b = np.arange(1, 4, dtype=dtype) if with_bias else None
    expected = np.broadcast_to(b if with_bias else np.zeros(3, dtype), (rows, 3))
    for _ in range(3):  # fresh outputs reuse freed memory: junk there must not come back
        junk = np.full((rows, 3), 123.0, dtype)
        del junk
        np.testing.assert_array_equal(ops.dense_forward(x, w, b), expected)
        np.testing.assert_array_equal(ops.dense_forward(x.astype(int), w.astype(int), b),
                                      expected)


def test_dense_mixed_dtypes_compute_in_float64():
    x32 = np.ones((2, 3), np.float32)
    assert ops.dense_forward(x32, np.ones((4, 3), np.float32)).dtype == np.float32
    assert ops.dense_forward(x32, np.ones((4, 3))).dtype == np.float64
    assert ops.dense_forward(x32, np.ones((4, 3), np.float32), np.ones(4)).dtype == np.float64
    with pytest.raises(TypeError, match="dweight has dtype float64, but the result is float32"):
        ops.dense_backward(np.ones((2, 4), np.float32), x32, np.ones((4, 3), np.float32),
                           dweight=np.zeros((4, 3)))


# ---- against PyTorch (float64) -----------------------------------------------------------------

TORCH_TOL = dict(rtol=1e-12, atol=1e-15)


def torch_activation(torch, name, t, slope):
    F = torch.nn.functional
    return {
        "identity": lambda: t * 1.0,
        "sigmoid": lambda: torch.sigmoid(t),
        "tanh": lambda: torch.tanh(t),
        "relu": lambda: torch.relu(t),
        "leaky_relu": lambda: F.leaky_relu(t, slope),
        "softmax": lambda: torch.softmax(t, dim=-1),
        "log_softmax": lambda: torch.log_softmax(t, dim=-1),
    }[name]()


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_match_torch(torch, name):
    rng = np.random.default_rng(14)
    x = away_from_kinks(rng, (4, 7), 0.01, 6.0)
    dy = rng.standard_normal((4, 7))
    t = torch.tensor(x, requires_grad=True)
    out = torch_activation(torch, name, t, 0.05)
    out.backward(torch.tensor(dy))
    np.testing.assert_allclose(ops.activation(name, x, 0.05), out.detach().numpy(), **TORCH_TOL)
    np.testing.assert_allclose(ops.activation_backward(name, dy, x=x, negative_slope=0.05),
                               t.grad.numpy(), **TORCH_TOL)


@pytest.mark.parametrize("name,target_kind", LOSS_CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_match_torch(torch, name, target_kind, reduction):
    F = torch.nn.functional
    rng = np.random.default_rng(15)
    pred, target = loss_inputs(rng, name, target_kind, shape=(8, 5))
    t_pred = torch.tensor(pred, requires_grad=True)
    t_target = torch.tensor(target)
    fn = {
        "mse": F.mse_loss,
        "bce": F.binary_cross_entropy,
        "bce_with_logits": F.binary_cross_entropy_with_logits,
        "cross_entropy": F.cross_entropy,
    }[name]
    t_loss = fn(t_pred, t_target, reduction=reduction)
    t_loss.backward()
    value, grad = ops.loss_grad(name, pred, target, reduction)
    np.testing.assert_allclose(value, t_loss.item(), **TORCH_TOL)
    np.testing.assert_allclose(grad, t_pred.grad.numpy(), **TORCH_TOL)


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturated_bce_gradient_matches_torch_to_the_bit(torch, dtype):
    # p (1 - p) below torch's EPSILON: the clamp is float 1e-12 (9.99999996e-13), in float64 too
    pred = np.array([[1 - 1e-13, 1e-13, 1 - 1e-15, 0.0, 1.0, 0.5]], dtype=dtype)
    target = np.array([[0.0, 1.0, 0.25, 1.0, 0.0, 1.0]], dtype=dtype)
    t_pred = torch.tensor(pred, requires_grad=True)
    torch.nn.functional.binary_cross_entropy(t_pred, torch.tensor(target), reduction="sum").backward()
    np.testing.assert_array_equal(ops.loss_grad("bce", pred, target, "sum")[1], t_pred.grad.numpy())


@pytest.mark.parametrize("with_bias", [True, False])
def test_dense_matches_torch(torch, with_bias):
    F = torch.nn.functional
    rng = np.random.default_rng(16)
    x, w = rng.standard_normal((9, 5)), rng.standard_normal((3, 5))
    b = rng.standard_normal(3) if with_bias else None
    dy = rng.standard_normal((9, 3))
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if with_bias else None
    ty = F.linear(tx, tw, tb)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(ops.dense_forward(x, w, b), ty.detach().numpy(), **TORCH_TOL)
    dx, dw, db = ops.dense_backward(dy, x, w)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TORCH_TOL)
    np.testing.assert_allclose(dw, tw.grad.numpy(), **TORCH_TOL)
    if with_bias:
        np.testing.assert_allclose(db, tb.grad.numpy(), **TORCH_TOL)


# ---- the surface: inputs, dtypes, errors --------------------------------------------------------


def test_inputs_are_never_modified():
    rng = np.random.default_rng(17)
    arrays = {
        "x": rng.standard_normal((4, 3)),
        "x32": rng.standard_normal((4, 3)).astype(np.float32),
        "w": rng.standard_normal((2, 3)),
        "b": rng.standard_normal(2),
        "dy": rng.standard_normal((4, 2)),
        "p": rng.uniform(0.1, 0.9, (4, 3)),
        "t": rng.uniform(0, 1, (4, 3)),
        "labels": np.array([0, 2, 1, 2]),
    }
    saved = {k: v.copy() for k, v in arrays.items()}
    a = arrays
    for name in ACTIVATIONS:
        y = ops.activation(name, a["x"])
        assert not np.shares_memory(y, a["x"])
        ops.activation_backward(name, a["p"], x=a["x"], y=ops.activation(name, a["x"]))
        ops.activation_backward(name, a["p"], y=a["t"])
        ops.activation(name, a["x32"])
    for name, kind in LOSS_CASES:
        target = a["labels"] if kind == "index" else a["t"]
        ops.loss_grad(name, a["p"], target, "sum")
    ops.dense_forward(a["x"], a["w"], a["b"])
    ops.dense_backward(a["dy"], a["x"], a["w"])
    ops.gemm(a["x"], a["w"], trans_b=True)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, saved[k], err_msg=k)


def test_dtype_policy():
    assert ops.relu(np.ones(3, np.float32)).dtype == np.float32
    assert ops.relu(np.ones(3, np.float16)).dtype == np.float64
    assert ops.relu([1, 2, 3]).dtype == np.float64
    assert ops.relu(np.ones(3, bool)).dtype == np.float64
    dx = ops.activation_backward("tanh", np.ones(3, np.float32), x=np.ones(3))
    assert dx.dtype == np.float64
    # a Fortran-ordered or strided input is converted, with the same values
    xf = np.asfortranarray(np.arange(12.0).reshape(3, 4) - 6)
    np.testing.assert_array_equal(ops.softmax(xf), ops.softmax(np.ascontiguousarray(xf)))
    np.testing.assert_array_equal(ops.relu(xf[:, ::2]), np.maximum(xf[:, ::2], 0))


@pytest.mark.parametrize(
    "call,exc,pattern",
    [
        (lambda: ops.activation("gelu", np.ones(3)), ValueError,
         "Unknown activation 'gelu'; expected one of 'identity'"),
        (lambda: ops.activation(3, np.ones(3)), TypeError, "must be a str, got int"),
        (lambda: ops.relu(np.array(["a"])), TypeError, "dtype <U1"),
        (lambda: ops.relu(np.ones(2, complex)), TypeError, "complex128"),
        (lambda: ops.leaky_relu(np.ones(2), "0.1"), TypeError, "negative_slope"),
        (lambda: ops.activation_backward("tanh", np.ones(3)), ValueError, "got neither"),
        (lambda: ops.activation_backward("tanh", np.ones(3), x=np.ones(4)), ValueError,
         r"dy has shape \(3,\) but x has shape \(4,\)"),
        (lambda: ops.loss("hinge", np.ones(2), np.ones(2)), ValueError, "Unknown loss 'hinge'"),
        (lambda: ops.loss("mse", np.ones(2), np.ones(2), "none"), ValueError,
         "Unknown reduction 'none'; expected one of 'mean', 'sum'"),
        (lambda: ops.loss("mse", np.ones((3, 1)), np.ones(3)), ValueError,
         r"pred has shape \(3, 1\) but target has shape \(3,\)"),
        (lambda: ops.loss("mse", np.ones(0), np.ones(0)), ValueError, "empty"),
        (lambda: ops.loss("bce", np.array([0.5, 1.5]), np.ones(2)), ValueError,
         r"\[0, 1\].*1\.5"),
        (lambda: ops.loss("cross_entropy", np.ones(3), np.array([0])), ValueError,
         "Expected 2D .* got 1D array"),
        (lambda: ops.loss("cross_entropy", np.ones((2, 3)), np.array([0.0, 1.0])), TypeError,
         "must be integers.*astype"),
        (lambda: ops.loss("cross_entropy", np.ones((2, 3)), np.array([0, 3])), ValueError,
         "class target 3 at row 1 is out of range; expected 0 <= target < 3"),
        (lambda: ops.loss("cross_entropy", np.ones((2, 3)), np.array([0, -1])), ValueError,
         "class target -1"),
        (lambda: ops.loss("cross_entropy", np.ones((2, 3)), np.array([0, 1, 2])), ValueError,
         r"pred has shape \(2, 3\) but the class-index target has shape \(3,\)"),
        (lambda: ops.loss("cross_entropy", np.ones((2, 3)), np.ones((2, 4))), ValueError,
         r"\(2, 3\).*\(2, 4\)"),
        (lambda: ops.dense_forward(np.ones((2, 3)), np.ones((4, 2))), ValueError,
         "x has 3 features, but weight is expecting 2"),
        (lambda: ops.dense_forward(np.ones((2, 3)), np.ones(3)), ValueError,
         "Expected 2D .* for weight, got 1D array"),
        (lambda: ops.dense_forward(np.ones((2, 3)), np.ones((4, 3)), np.ones(3)), ValueError,
         r"bias has shape \(3,\) but weight has shape \(4, 3\)"),
        (lambda: ops.dense_backward(np.ones((2, 5)), np.ones((2, 3)), np.ones((4, 3))),
         ValueError, r"dy has shape \(2, 5\).*expected dy of shape \(2, 4\)"),
        (lambda: ops.dense_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((4, 3)),
                                    dweight=np.zeros((3, 4))), ValueError,
         r"dweight has shape \(3, 4\), but the result has shape \(4, 3\)"),
        (lambda: ops.dense_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((4, 3)),
                                    dweight=np.zeros((3, 4)).T), ValueError, "C-contiguous"),
        (lambda: ops.dense_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((4, 3)),
                                    dbias=[0.0] * 4), TypeError, "must be a numpy.ndarray"),
    ],
)
def test_bad_inputs_raise_informative_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_read_only_accumulator_is_a_value_error():
    dw = np.zeros((4, 3))
    dw.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.dense_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((4, 3)), dweight=dw)


# ---- the bindings: no silent conversion, shapes checked, outputs in place ------------------------


def test_core_bindings_take_exact_arrays_only():
    x = np.ones((2, 3))
    with pytest.raises(TypeError):  # float32 output for float64 input: no hidden cast
        _core.activation_forward(np.empty((2, 3), np.float32), x, "relu", 0.01)
    with pytest.raises(TypeError):  # non-contiguous input: no hidden copy
        _core.activation_forward(np.empty((3, 2)), np.ones((2, 6))[:, ::2].T, "relu", 0.01)
    with pytest.raises(ValueError, match=r"y has shape \(3, 2\) but x has shape \(2, 3\)"):
        _core.activation_forward(np.empty((3, 2)), x, "relu", 0.01)
    with pytest.raises(ValueError, match=r"expected x to be a 2-D array, got a 1-D array"):
        _core.activation_forward(np.empty(3), np.ones(3), "relu", 0.01)
    y = np.empty((2, 3))
    y.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _core.activation_forward(y, x, "relu", 0.01)
    with pytest.raises(ValueError, match=r"target has shape \(3,\) but logits has shape \(2, 3\)"):
        _core.cross_entropy_index(None, x, np.array([0, 1, 2]), "mean")
    with pytest.raises(TypeError):  # int32 class indices are not converted
        _core.cross_entropy_index(None, x, np.array([0, 1], np.int32), "mean")
    p = np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match="grad overlaps the memory of pred"):
        _core.loss(p, p, np.ones((2, 3)), "mse", "mean")
    with pytest.raises(ValueError, match=r"dweight has shape \(2, 2\) but weight has shape"):
        _core.dense_backward(None, np.zeros((2, 2)), None, np.ones((4, 2)), np.ones((4, 3)),
                             np.ones((2, 3)))


def test_core_activation_may_work_in_place():
    x = np.array([[-1.0, 2.0]])
    _core.activation_forward(x, x, "relu", 0.01)
    np.testing.assert_array_equal(x, [[0.0, 2.0]])
    dy = np.array([[3.0, 4.0]])
    _core.activation_backward(dy, dy, x, x, "relu", 0.01)
    np.testing.assert_array_equal(dy, [[0.0, 4.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_of_a_large_negative_logit_and_a_soft_target_does_not_cancel(dtype):
    # (1 - t) x - min(x, 0) cancelled: float32 x = -1e4, t = 1e-5 gave 0.1006 for 0.1 (torch's
    # formula cancels the same way); -t x + log1p(e^-|x|) is the same value, exactly
    x = np.array([[-1e4, -300.0, 50.0]], dtype=dtype)
    t = np.array([[1e-5, 0.25, 0.9]], dtype=dtype)
    xd, td = x.astype(np.float64), t.astype(np.float64)
    exact = np.where(xd > 0, (1 - td) * xd, -td * xd) + np.log1p(np.exp(-np.abs(xd)))
    total = ops.loss("bce_with_logits", x, t, reduction="sum")
    np.testing.assert_allclose(total, exact.sum(), rtol=4 * np.finfo(dtype).eps)
