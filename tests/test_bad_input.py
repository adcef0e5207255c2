"""Bad input at the public boundary: each case raises its documented error, and the message says
what was received and what was expected (matched on its key words).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import chainrule as cr
from chainrule.layers import activation, layer_from_config


@pytest.fixture
def model():
    return cr.Model([cr.Dense(2, 4), cr.Tanh(), cr.Dense(4, 1)], seed=0)


@pytest.fixture
def clf():
    return cr.Model([cr.Dense(2, 4), cr.Tanh(), cr.Dense(4, 3)], loss="cross_entropy", seed=0)


X2 = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y1 = np.array([[0.0], [1.0], [1.0]])


# ---------------------------------------------------------------------------------------------
# X
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fit", "predict", "evaluate", "forward"])
def test_1d_X(model, method):
    args = (np.array([1.0, 2.0]),) + ((Y1[:2],) if method in ("fit", "evaluate") else ())
    with pytest.raises(ValueError, match=r"(?s)Expected 2D array, got 1D array instead.*reshape"):
        getattr(model, method)(*args)


@pytest.mark.parametrize("X", [np.float64(3.0), np.zeros((2, 2, 2, 2))])
def test_X_of_other_ranks(model, X):
    with pytest.raises(ValueError, match=r"Expected 2D or 3D array.*got [04]D"):
        model.predict(X)


@pytest.mark.parametrize("method", ["fit", "predict", "evaluate", "forward"])
def test_wrong_feature_count(model, method):
    X = np.ones((3, 3))
    args = (X,) + ((Y1,) if method in ("fit", "evaluate") else ())
    with pytest.raises(ValueError, match="X has 3 features, but Model is expecting 2"):
        getattr(model, method)(*args)


def test_wrong_feature_count_in_validation_data(model):
    with pytest.raises(ValueError, match="X_val has 3 features, but Model is expecting 2"):
        model.fit(X2, Y1, validation_data=(np.ones((2, 3)), Y1[:2]))


@pytest.mark.parametrize("bad,what", [(np.nan, "NaN"), (np.inf, "infinity"),
                                      (-np.inf, "infinity")])
def test_nonfinite_X(model, bad, what):
    X = X2.copy()
    X[1, 0] = bad
    with pytest.raises(ValueError, match=f"Input X contains {what}"):
        model.fit(X, Y1)
    with pytest.raises(ValueError, match=f"Input X contains {what}"):
        model.predict(X)


def test_X_too_large_for_float32(model):
    X = np.full((2, 2), 1e300)
    with pytest.raises(ValueError, match=r"infinity or a value too large for dtype\('float32'\)"
                                         r".*float64"):
        model.predict(X)


def test_y_too_large_for_float32(model):
    """Regression targets convert to the model's dtype once; a float64 value beyond float32's
    range is refused there, and the message names the conversion."""
    y = Y1.astype(np.float64)
    y[1, 0] = 1e300
    with pytest.raises(ValueError, match=r"Input y contains infinity or a value too large for "
                                         r"dtype\('float32'\) \(converted from float64\)"):
        model.fit(X2, y)
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"too large for dtype\('float32'\)"):
        model.evaluate(X2, y)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("bad,what", [(np.nan, "NaN"), (np.inf, "infinity")])
def test_nonfinite_y(model, clf, bad, what):
    y = Y1.copy()
    y[2, 0] = bad
    with pytest.raises(ValueError, match=f"Input y contains {what}"):
        model.fit(X2, y)
    with pytest.raises(ValueError, match=f"Input y contains {what}"):
        model.evaluate(X2, y)
    with pytest.raises(ValueError, match=f"y contains {what}"):
        clf.fit(X2, np.array([0.0, 1.0, bad]))


def test_empty_arrays(model):
    with pytest.raises(ValueError, match=r"0 sample\(s\).*minimum of 1"):
        model.fit(np.zeros((0, 2)), np.zeros((0, 1)))
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        model.predict(np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"0 feature\(s\)"):
        model.predict(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        model.fit(X2, np.zeros((0, 1)))


@pytest.mark.parametrize("n", [2, 4])
def test_inconsistent_lengths(model, n):
    y = np.zeros((n, 1))
    with pytest.raises(ValueError, match=rf"inconsistent numbers of samples: \[3, {n}\]"):
        model.fit(X2, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        model.evaluate(X2, y)


def test_inconsistent_lengths_in_validation_data(model):
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        model.fit(X2, Y1, validation_data=(X2, Y1[:2]))


@pytest.mark.parametrize("X,err", [
    ("abc", TypeError), (None, TypeError), ({"a": 1}, TypeError),
    (np.array([["a", "b"], ["c", "d"]]), TypeError), (np.ones((2, 2), dtype=complex), TypeError),
    ([[1.0, 2.0], [3.0]], ValueError),
])
def test_X_of_wrong_type(model, X, err):
    with pytest.raises(err, match="X"):
        model.predict(X)


def test_y_of_wrong_type(model):
    with pytest.raises(TypeError, match="y must be an array-like"):
        model.fit(X2, None)
    with pytest.raises(TypeError, match="y"):
        model.fit(X2, "abc")
    with pytest.raises(TypeError, match="y must contain numbers"):
        model.fit(X2, np.array([["a"], ["b"], ["c"]]))


def test_y_of_wrong_shape(model, clf):
    with pytest.raises(ValueError, match=r"y has shape \(3, 2\).*\(3, 1\)"):
        model.fit(X2, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"y has shape \(3, 2\).*class indices of shape \(3,\)"):
        clf.fit(X2, np.zeros((3, 2)))


# ---------------------------------------------------------------------------------------------
# classification targets
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("y,bad", [([0, 1, 3], 3), ([0, -1, 2], -1), ([0, 1, 7], 7)])
def test_class_targets_out_of_range(clf, y, bad):
    with pytest.raises(ValueError, match=rf"y contains class {bad}.*3 classes.*0 <= y < 3"):
        clf.fit(X2, np.array(y))
    clf.forward(X2)
    with pytest.raises(ValueError, match=f"class {bad}"):
        clf.backward(np.array(y))


@pytest.mark.parametrize("bad", [1e30, -1e30, 2.0 ** 63])
def test_class_targets_beyond_int64(clf, bad):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'invalid value encountered in cast'
        with pytest.raises(ValueError, match=r"y contains class -?[0-9.e+]+, but the model's "
                                             r"output has 3 classes") as info:
            clf.fit(X2, np.array([0.0, 1.0, bad]))
    assert "9223372036854775808" not in str(info.value)


def test_uint64_class_targets_beyond_int64_are_named_exactly(clf):
    y = np.array([0, 1, 2**63 + 1], dtype=np.uint64)  # int64 would wrap it to a negative class
    with pytest.raises(ValueError, match="y contains class 9223372036854775809, but"):
        clf.fit(X2, y)
    with pytest.raises(ValueError, match="class target 9223372036854775809 at row 2"):
        cr.ops.loss_grad("cross_entropy", np.zeros((3, 3)), y)
    clf.fit(X2, np.array([0, 1, 2], dtype=np.uint64), epochs=1)  # in range: fine


def test_uint64_regression_targets_keep_their_value():
    model = cr.Model([cr.Dense(2, 1)], loss="mse", dtype="float64", seed=0)
    y = np.array([2**63 + 2**11, 1, 2], dtype=np.uint64)
    out = model.predict(X2).ravel()
    expected = np.mean((out - y.astype(np.float64)) ** 2)
    assert model.evaluate(X2, y)["loss"] == pytest.approx(expected, rel=1e-12)


def test_continuous_targets_for_cross_entropy(clf):
    with pytest.raises(ValueError, match="continuous.*class indices"):
        clf.fit(X2, np.array([0.0, 1.5, 2.0]))


def test_bce_needs_probabilities():
    model = cr.Model([cr.Dense(2, 1)], loss="bce", seed=0)  # no Sigmoid: outputs leave [0, 1]
    model.load_state_dict({"0.weight": np.array([[5.0, 5.0]]), "0.bias": np.array([1.0])})
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*Sigmoid"):
        model.fit(X2, Y1)


@pytest.mark.parametrize("bad", [-1.0, 5.0, 1.0 + 1e-9])
def test_bce_needs_targets_in_0_1(bad):
    # torch: "all elements of target should be between 0 and 1"; a negative loss otherwise
    model = cr.Model([cr.Dense(2, 1), cr.Sigmoid()], loss="bce", dtype="float64", seed=0)
    before = model.state_dict()
    y = np.array([0.0, 1.0, bad])
    for call in (lambda: model.fit(X2, y, batch_size=1, shuffle=False),
                 lambda: model.evaluate(X2, y)):
        with pytest.raises(ValueError, match=rf"y contains {bad}.*targets in \[0, 1\]"):
            call()
    model.forward(X2)
    with pytest.raises(ValueError, match=r"targets in \[0, 1\]"):
        model.backward(y)
    with pytest.raises(ValueError, match=r"bce expects targets in \[0, 1\], got -1"):
        cr.ops.loss_grad("bce", np.full((3, 1), 0.5), np.array([[0.0], [1.0], [-1.0]]))
    assert all((model.state_dict()[k] == before[k]).all() for k in before)
    model.fit(X2, np.array([0.0, 0.25, 1.0]), epochs=1)  # probabilities as targets: fine


def test_callbacks_are_checked_before_any_step(model):
    before = model.state_dict()
    for bad, match in (([1], "got int 1"), (5, "must be a list of Callback.*got int"),
                       ([lambda e, l: None, "stop"], "got str 'stop'")):
        with pytest.raises(TypeError, match=match):
            model.fit(X2, Y1, epochs=3, callbacks=bad)
        assert all((model.state_dict()[k] == before[k]).all() for k in before)
    seen = []
    model.fit(X2, Y1, epochs=3, callbacks=lambda epoch, logs: seen.append(epoch))  # no list
    stopper = cr.EarlyStopping(patience=0)
    model.fit(X2, Y1, epochs=3, callbacks=stopper)
    assert seen == [0, 1, 2] and stopper.last_epoch is not None

    class OnlyBegin:  # an object with some of the hooks only
        def on_train_begin(self, model):
            self.began = True
    only = OnlyBegin()
    model.fit(X2, Y1, epochs=2, callbacks=[only])
    assert only.began


def test_leaky_relu_takes_numpy_scalars():
    assert cr.LeakyReLU(np.float32(0.25)).negative_slope == 0.25
    assert cr.LeakyReLU(np.int64(1)).negative_slope == 1.0
    with pytest.raises(TypeError, match="negative_slope must be a float, got bool"):
        cr.LeakyReLU(np.True_)


# ---------------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------------

def test_unknown_names():
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*cross_entropy"):
        cr.Model([cr.Dense(2, 1)], loss="hinge")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'.*adam"):
        cr.Model([cr.Dense(2, 1)], optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown activation 'swish'.*relu"):
        activation("swish")
    with pytest.raises(ValueError, match="unknown layer type 'Conv2d'.*Dense"):
        layer_from_config({"type": "Conv2d"})
    with pytest.raises(ValueError, match="reduction.*'none'"):
        cr.MSELoss(reduction="none")


def test_names_are_accepted():
    model = cr.Model([cr.Dense(2, 1)], loss="binary_crossentropy", optimizer="adam")
    assert isinstance(model.loss, cr.BCELoss) and isinstance(model.optimizer, cr.Adam)


@pytest.mark.parametrize("make,match", [
    (lambda: cr.Dense(0, 3), "in_features must be a positive int, got 0"),
    (lambda: cr.Dense(2, -1), "out_features must be a positive int, got -1"),
    (lambda: cr.Dense(-4), "out_features must be a positive int, got -4"),
    (lambda: cr.SGD(lr=0), "lr must be > 0, got 0"),
    (lambda: cr.SGD(lr=-0.1), "lr must be > 0"),
    (lambda: cr.Adam(lr=0.0), "lr must be > 0"),
    (lambda: cr.SGD(lr=float("nan")), "lr must be > 0"),
    (lambda: cr.SGD(momentum=-0.5), "momentum must be >= 0"),
    (lambda: cr.Adam(betas=(0.9, 1.0)), r"betas\[1\] must be in \[0.0, 1.0\)"),
    (lambda: cr.Adam(betas=0.9), "betas must be a pair"),
    (lambda: cr.SGD(nesterov=True), "Nesterov momentum requires a momentum"),
    (lambda: cr.EarlyStopping(patience=-1), "patience must be an int >= 0"),
    (lambda: cr.LeakyReLU(float("nan")), "negative_slope must be a finite number, got nan"),
    (lambda: cr.LeakyReLU(-np.inf), "negative_slope must be a finite number, got -inf"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), "batch_size must be a positive int, got 0"),
    (dict(batch_size=-3), "batch_size must be a positive int"),
    (dict(epochs=-1), "epochs must be >= 0, got -1"),
    (dict(epochs=2**63), r"epochs must be less than 2\*\*63, got 9223372036854775808"),
    (dict(validation_split=1.0), r"validation_split must be in \[0, 1\)"),
    (dict(validation_split=0.1), "leaves 0 for validation"),
    (dict(validation_data=(X2,)), "validation_data must be a pair"),
    (dict(clip_grad_norm=0.0), "clip_grad_norm must be > 0"),
    (dict(clip_grad_value=-1.0), "clip_grad_value must be > 0"),
    (dict(on_nonfinite="skip"), "on_nonfinite must be one of"),
])
def test_bad_fit_arguments(model, kwargs, match):
    before = model.state_dict()
    with pytest.raises(ValueError, match=match):
        model.fit(X2, Y1, **kwargs)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("kwargs", [dict(epochs=2.0), dict(batch_size=1.5), dict(epochs="3"),
                                    dict(batch_size=True)])
def test_non_integer_counts(model, kwargs):
    with pytest.raises(TypeError, match="must be an int"):
        model.fit(X2, Y1, **kwargs)


def test_layers_must_be_layer_objects():
    with pytest.raises(TypeError, match="layer 1 must be a chainrule Layer.*got str"):
        cr.Model([cr.Dense(2, 3), "relu"])
    with pytest.raises(TypeError, match="layer 0 must be a chainrule Layer"):
        cr.Model([lambda x: x])
    with pytest.raises(TypeError, match="layers must be a list"):
        cr.Model("dense")
    with pytest.raises(TypeError, match="layers must be a list"):
        cr.Model(None)
    with pytest.raises(ValueError, match="at least one layer"):
        cr.Model([])


def test_sizes_that_do_not_fit_together():
    with pytest.raises(ValueError, match="received 3 features.*expecting 4"):
        cr.Model([cr.Dense(2, 3), cr.ReLU(), cr.Dense(4, 1)])


@pytest.mark.parametrize("make", [lambda: cr.Dense(2.5, 3), lambda: cr.Dense("2", 3),
                                  lambda: cr.Dense(2, True), lambda: cr.LeakyReLU("0.1"),
                                  lambda: cr.SGD(lr="0.1")])
def test_wrong_types_in_layers_and_optimizers(make):
    with pytest.raises(TypeError):
        make()


@pytest.mark.parametrize("dtype", ["float16", np.int32, "int64", "complex128", "bogus", None])
def test_dtype_not_float32_or_float64(dtype):
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        cr.Model([cr.Dense(2, 1)], dtype=dtype)


@pytest.mark.parametrize("seed,err", [(-1, ValueError), (2 ** 64, ValueError), (1.5, TypeError),
                                      ("0", TypeError), (True, TypeError)])
def test_bad_seed(seed, err):
    with pytest.raises(err, match="seed"):
        cr.Model([cr.Dense(2, 1)], seed=seed)


def test_wrong_types_for_loss_and_optimizer():
    with pytest.raises(TypeError, match="loss must be a name or a Loss"):
        cr.Model([cr.Dense(2, 1)], loss=3)
    with pytest.raises(TypeError, match="optimizer must be a name or an Optimizer"):
        cr.Model([cr.Dense(2, 1)], optimizer=0.1)


# ---------------------------------------------------------------------------------------------
# load_state_dict
# ---------------------------------------------------------------------------------------------

def full_state(model):
    return {k: np.zeros_like(v) for k, v in model.state_dict().items()}


def test_load_state_dict_missing_key(model):
    sd = full_state(model)
    del sd["2.weight"]
    with pytest.raises(ValueError, match=r"missing parameter '2.weight'"):
        model.load_state_dict(sd)


def test_load_state_dict_unexpected_key(model):
    sd = full_state(model)
    sd["4.weight"] = np.zeros((1, 1))
    with pytest.raises(ValueError, match=r"unexpected parameter '4.weight'"):
        model.load_state_dict(sd)


def test_load_state_dict_wrong_shape_names_the_first(model):
    sd = full_state(model)
    sd["0.bias"] = np.zeros(5)
    sd["2.weight"] = np.zeros((4, 1))
    with pytest.raises(ValueError, match=r"size mismatch for '0.bias': got shape \(5,\), "
                                         r"expected \(4,\)"):
        model.load_state_dict(sd)


def test_load_state_dict_bad_values(model):
    sd = full_state(model)
    sd["0.bias"] = np.array([0.0, np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match="'0.bias' contains NaN"):
        model.load_state_dict(sd)
    sd["0.bias"] = np.array(["a", "b", "c", "d"])
    with pytest.raises(TypeError, match="real numbers"):
        model.load_state_dict(sd)
    with pytest.raises(TypeError, match="mapping"):
        model.load_state_dict([("0.weight", np.zeros((4, 2)))])


# ---------------------------------------------------------------------------------------------
# the fundamentals
# ---------------------------------------------------------------------------------------------

def test_backward_before_forward(model):
    with pytest.raises(RuntimeError, match=r"needs a forward\(\) first"):
        model.backward(Y1)
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(grad_output=Y1)


def test_backward_needs_exactly_one_of_y_and_grad_output(model):
    model.forward(X2)
    with pytest.raises(TypeError, match="exactly one"):
        model.backward()
    with pytest.raises(TypeError, match="exactly one"):
        model.backward(Y1, grad_output=Y1)


def test_grad_output_of_wrong_shape(model):
    model.forward(X2)
    with pytest.raises(ValueError, match=r"grad_output has shape \(3, 2\).*\(3, 1\)"):
        model.backward(grad_output=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"grad_output has shape \(2, 1\)"):
        model.backward(grad_output=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="grad_output contains NaN"):
        model.backward(grad_output=np.full((3, 1), np.nan))


def test_backward_targets_of_wrong_shape(model):
    model.forward(X2)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        model.backward(np.zeros((2, 1)))


def test_bad_clip_arguments(model):
    model.forward(X2)
    model.backward(Y1)
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        model.clip_grad_norm(0.0)
    with pytest.raises(ValueError, match="norm_type must be > 0"):
        model.clip_grad_norm(1.0, norm_type=-2)
    with pytest.raises(ValueError, match="clip_value must be > 0"):
        model.clip_grad_value(-1.0)


@pytest.mark.parametrize("make,name", [
    (lambda v: cr.SGD(lr=0.1, momentum=0.9, nesterov=v), "nesterov"),
    (lambda v: cr.SGD(maximize=v), "maximize"),
    (lambda v: cr.Adam(amsgrad=v), "amsgrad"),
    (lambda v: cr.Adam(maximize=v), "maximize"),
    (lambda v: cr.EarlyStopping(restore_best_weights=v), "restore_best_weights"),
    (lambda v: cr.Model([cr.Dense(2, 1)], seed=0).clip_grad_norm(1.0, error_if_nonfinite=v),
     "error_if_nonfinite"),
])
def test_flags_are_bools_not_truth_values(make, name):
    # "no" would read as True, as would 1: refused, as scikit-learn's boolean parameters are
    for bad in ("no", 1, None):
        with pytest.raises(TypeError, match=f"{name} must be a bool .*got {type(bad).__name__}"):
            make(bad)
    make(np.True_)
    make(False)


def test_early_stopping_argument_types():
    with pytest.raises(ValueError, match="mode must be"):
        cr.EarlyStopping(mode="largest")
    with pytest.raises(ValueError, match="min_delta"):
        cr.EarlyStopping(min_delta=-1)


@pytest.mark.parametrize("call,name", [
    (lambda m, v: m.clip_grad_norm(v), "max_norm"),
    (lambda m, v: m.clip_grad_norm(1.0, norm_type=v), "norm_type"),
    (lambda m, v: m.clip_grad_value(v), "clip_value"),
    (lambda m, v: m.fit(np.zeros((4, 2)), np.zeros((4, 1)), clip_grad_norm=v), "clip_grad_norm"),
    (lambda m, v: m.fit(np.zeros((4, 2)), np.zeros((4, 1)), clip_grad_value=v),
     "clip_grad_value"),
    (lambda m, v: m.fit(np.zeros((4, 2)), np.zeros((4, 1)), validation_split=v),
     "validation_split"),
    (lambda m, v: m.fit(np.zeros((4, 2)), np.zeros((4, 1)), grad_norm_warn_factor=v),
     "grad_norm_warn_factor"),
])
def test_real_valued_arguments_name_themselves(call, name):
    # float() would take "0.5" and True, and say "could not convert string to float" for "a"
    m = cr.Model([cr.Dense(2, 1)], seed=0)
    optional = name in ("clip_grad_norm", "clip_grad_value", "validation_split")  # None: off
    for bad in ("0.5", "a", True, [1.0]) + (() if optional else (None,)):
        with pytest.raises(TypeError, match=f"{name} must be a real number, got "
                                            f"{type(bad).__name__}"):
            call(m, bad)


def test_numbers_beyond_the_float_range():
    with pytest.raises(ValueError, match="lr must be within the float range"):
        cr.SGD(lr=10**400)
    with pytest.raises(ValueError, match="max_norm must be within the float range"):
        cr.Model([cr.Dense(2, 1)], seed=0).clip_grad_norm(10**400)
    with pytest.raises(ValueError, match=r"alpha must be within the float range, got 1000.*\.\.\.$"):
        cr.ops.gemm(np.ones((2, 2)), np.ones((2, 2)), alpha=10**400)


def test_gemm_transpose_flags_are_bools():
    a = np.ones((2, 3))
    with pytest.raises(TypeError, match="trans_a must be a bool .*got str 'no'"):
        cr.ops.gemm(a, a.T, trans_a="no")
    with pytest.raises(TypeError, match="trans_b must be a bool .*got int 1"):
        cr.ops.gemm(a, a, trans_b=1)
    np.testing.assert_array_equal(cr.ops.gemm(a, a, trans_b=np.True_), a @ a.T)


def test_thread_count_has_an_upper_bound():
    # 100000 threads were accepted, and the next parallel call failed with an errno message
    for n in (1025, 100000, 2**40):
        with pytest.raises(ValueError, match=r"n must be in \[1, 1024\], got"):
            cr.set_num_threads(n)
    cr.set_num_threads(1024)
    assert cr.get_num_threads() == 1024


def test_real_valued_arguments_take_any_real_number_type():
    # 0-d arrays, NumPy and torch scalars, Decimal and Fraction are real numbers too; torch's
    # clip_grad_norm_ also takes norm_type='inf'
    from decimal import Decimal
    from fractions import Fraction
    m = cr.Model([cr.Dense(2, 1)], seed=0)
    X, y = np.ones((8, 2)), np.ones((8, 1))
    for v in (np.array(0.5), np.float32(0.5), Decimal("0.5"), Fraction(1, 2)):
        m.fit(X, y, clip_grad_norm=v, clip_grad_value=v, validation_split=v / 2)
        m.clip_grad_value(v)
    m.forward(X)
    m.backward(y)
    largest = max(np.abs(g).max() for g in m.grads.values())
    assert m.clip_grad_norm(1.0, norm_type="inf") == pytest.approx(largest, rel=1e-6)
    with pytest.raises(TypeError, match="max_norm must be a real number, got ndarray"):
        m.clip_grad_norm(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="clip_value must be a real number, got complex"):
        m.clip_grad_value(1 + 0j)
