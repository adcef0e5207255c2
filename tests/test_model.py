"""The Model's fundamentals without PyTorch: gradients by central differences, parameters,
lazy building, inference and evaluation.

Finite differences run in float64: every parameter element is perturbed through
load_state_dict and every input element through X, and the loss is re-evaluated on both sides.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, r2_score

import chainrule as cr

ACTIVATIONS = {
    "sigmoid": cr.Sigmoid, "tanh": cr.Tanh, "relu": cr.ReLU,
    "leaky_relu": lambda: cr.LeakyReLU(0.3), "softmax": cr.Softmax,
    "log_softmax": cr.LogSoftmax, "identity": cr.Identity,
}
LOSS_CASES = ["mse", "bce", "bce_with_logits", "ce_index", "ce_prob"]


def two_hidden(act: str, loss_case: str, rng, n: int = 5, reduction: str = "mean"):
    """Dense(3, 4) -> act -> Dense(4, 4) -> act -> Dense(4, C) [-> Sigmoid], and targets."""
    C = 2 if loss_case.startswith("bce") else 3
    layers = [cr.Dense(3, 4), ACTIVATIONS[act](), cr.Dense(4, 4), ACTIVATIONS[act](),
              cr.Dense(4, C)]
    if loss_case == "mse":
        y, loss = rng.standard_normal((n, C)), cr.MSELoss(reduction)
    elif loss_case == "bce":
        layers.append(cr.Sigmoid())
        y, loss = rng.uniform(0, 1, (n, C)), cr.BCELoss(reduction)
    elif loss_case == "bce_with_logits":
        y, loss = rng.integers(0, 2, (n, C)).astype(float), cr.BCEWithLogitsLoss(reduction)
    elif loss_case == "ce_index":
        y, loss = rng.integers(0, C, n), cr.CrossEntropyLoss(reduction)
    else:
        y, loss = rng.dirichlet(np.ones(C), n), cr.CrossEntropyLoss(reduction)
    model = cr.Model(layers, loss=loss, dtype="float64", seed=11)
    # Weights wider than the default init, so sigmoid/tanh/softmax work off their linear part.
    model.load_state_dict({k: rng.uniform(-1.2, 1.2, v.shape)
                           for k, v in model.state_dict().items()})
    return model, rng.standard_normal((n, 3)), y


def numeric_grads(model, X, y, h=1e-6):
    """Central differences of the loss w.r.t. every parameter element and every input element."""
    def loss_at(state=None, X_=X):
        if state is not None:
            model.load_state_dict(state)
        return model.evaluate(X_, y)["loss"]

    base = model.state_dict()
    grads = {}
    for name, value in base.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = dict(base), dict(base)
            plus[name] = value.copy()
            plus[name][idx] += h
            minus[name] = value.copy()
            minus[name][idx] -= h
            g[idx] = (loss_at(plus) - loss_at(minus)) / (2 * h)
        grads[name] = g
    model.load_state_dict(base)
    gx = np.zeros_like(X)
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        gx[idx] = (loss_at(X_=Xp) - loss_at(X_=Xm)) / (2 * h)
    return grads, gx


@pytest.mark.parametrize("loss_case", LOSS_CASES)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_gradients_match_central_differences(act, loss_case, rng):
    model, X, y = two_hidden(act, loss_case, rng)
    model.zero_grad()
    model.forward(X)
    loss = model.backward(y)
    assert loss == pytest.approx(model.evaluate(X, y)["loss"], rel=1e-14)
    analytic, analytic_x = model.grads, model.input_grad
    numeric, numeric_x = numeric_grads(model, X, y)
    for name in analytic:
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=1e-6, atol=1e-8,
                                   err_msg=name)
    np.testing.assert_allclose(analytic_x, numeric_x, rtol=1e-6, atol=1e-8, err_msg="input")


@pytest.mark.parametrize("loss_case", LOSS_CASES)
def test_sum_reduction_gradients_match_central_differences(loss_case, rng):
    model, X, y = two_hidden("tanh", loss_case, rng, reduction="sum")
    model.forward(X)
    model.backward(y)
    analytic, analytic_x = model.grads, model.input_grad
    numeric, numeric_x = numeric_grads(model, X, y)
    for name in analytic:
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=1e-6, atol=1e-8,
                                   err_msg=name)
    np.testing.assert_allclose(analytic_x, numeric_x, rtol=1e-6, atol=1e-8)


def test_plain_sgd_step_is_w_minus_lr_grad(rng):
    model = cr.Model([cr.Dense(3, 4), cr.ReLU(), cr.Dense(4, 1)], optimizer=cr.SGD(lr=0.25),
                     dtype="float64", seed=0)
    X, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 1))
    before = model.state_dict()
    model.forward(X)
    model.backward(y)
    grads = model.grads
    model.step()
    for k, w in model.state_dict().items():
        np.testing.assert_array_equal(w, before[k] - 0.25 * grads[k])


def test_input_grad_needs_a_backward_after_the_last_forward(rng):
    """input_grad belongs to the last forward; a newer forward (of any batch size) invalidates it."""
    model = cr.Model([cr.Dense(3, 4), cr.Tanh(), cr.Dense(4, 2)], dtype="float64", seed=0)
    X, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    with pytest.raises(RuntimeError, match="forward"):
        model.input_grad
    model.forward(X[:2])
    model.backward(y[:2])
    assert model.input_grad.shape == (2, 3)
    model.forward(X)
    with pytest.raises(RuntimeError, match="backward"):
        model.input_grad
    model.backward(y)
    assert model.input_grad.shape == (6, 3)


@pytest.mark.parametrize("layers,shape", [
    (lambda: [cr.Dense(3, 4), cr.Tanh(), cr.Dense(4, 2)], (6, 3)),
    (lambda: [cr.GRU(3, 5), cr.Dense(5, 2)], (6, 9, 3)),
])
def test_backward_after_the_weights_changed_needs_a_new_forward(rng, layers, shape):
    """As torch refuses a graph whose tensors were modified in place: the tape's activations
    belong to the old weights, and "sqrt" memory would recompute with the new ones."""
    model = cr.Model(layers(), dtype="float64", seed=0, optimizer=cr.SGD(lr=0.5))
    X = rng.standard_normal(shape)
    y = rng.standard_normal(shape[:-1] + (2,))
    changes = [model.step,
               lambda: model.load_state_dict({k: 2 * v for k, v in model.state_dict().items()}),
               lambda: model.load_state_dict({"0.bias" if len(shape) == 2 else "0.bias_hh_l0":
                                              np.zeros(4 if len(shape) == 2 else 15)},
                                             strict=False)]
    for change in changes:
        model.forward(X)
        model.backward(y)
        change()
        grads = model.grads
        with pytest.raises(RuntimeError, match="weights changed.*forward"):
            model.backward(y)
        with pytest.raises(RuntimeError, match="weights changed"):
            model.backward(grad_output=np.ones(shape[:-1] + (2,)))
        assert all((model.grads[k] == grads[k]).all() for k in grads)  # nothing accumulated
    # what does not change the weights keeps the tape: gradients, optimizer state, reads
    model.forward(X)
    model.backward(y)
    model.zero_grad()
    model.load_optimizer_state(model.optimizer_state())
    model.state_dict()
    model.predict(X)
    model.backward(y)
    model.forward(X)  # a new forward after a change is the way on
    model.step()
    model.forward(X)
    model.backward(y)


def test_fit_invalidates_the_tape_of_an_earlier_forward(rng):
    """fit runs its own forwards; a backward afterwards must not use fit's last batch."""
    model = cr.Model([cr.Dense(3, 4), cr.Tanh(), cr.Dense(4, 2)], dtype="float64", seed=0)
    X, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    model.forward(X[:4])
    model.fit(X, y, epochs=1, batch_size=4, shuffle=False)
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(y[:4])
    with pytest.raises(RuntimeError):
        model.input_grad


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------

def test_state_dict_names_shapes_and_initialisation():
    model = cr.Model([cr.Dense(4, 6), cr.ReLU(), cr.Dense(6, 2, bias=False), cr.Sigmoid()],
                     loss="bce", seed=5)
    sd = model.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "2.weight"] == model.parameter_names()
    assert sd["0.weight"].shape == (6, 4) and sd["0.bias"].shape == (6,)
    assert sd["2.weight"].shape == (2, 6)
    assert all(v.dtype == np.float32 for v in sd.values())
    assert model.num_parameters == 6 * 4 + 6 + 2 * 6
    # PyTorch's Linear init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    assert np.abs(sd["0.weight"]).max() <= 0.5 and np.abs(sd["2.weight"]).max() <= 6 ** -0.5
    assert np.abs(sd["0.weight"]).max() > 0.4  # spread over the range, not a constant
    assert len(np.unique(sd["0.weight"])) == sd["0.weight"].size


def test_state_dict_and_grads_are_copies(rng):
    model = cr.Model([cr.Dense(2, 3), cr.Tanh(), cr.Dense(3, 1)], dtype="float64", seed=0)
    X, y = rng.standard_normal((4, 2)), rng.standard_normal((4, 1))
    sd = model.state_dict()
    keep = {k: v.copy() for k, v in sd.items()}
    for v in sd.values():
        v[...] = 123.0
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, keep[k])
    model.forward(X)
    model.backward(y)
    g = model.grads
    keep_g = {k: v.copy() for k, v in g.items()}
    for v in g.values():
        v[...] = 0.0
    for k, v in model.grads.items():
        np.testing.assert_array_equal(v, keep_g[k])
    # The arrays given to load_state_dict are copied in, too.
    new = {k: np.full_like(v, 0.5) for k, v in keep.items()}
    model.load_state_dict(new)
    new["0.weight"][...] = 9.0
    np.testing.assert_array_equal(model.state_dict()["0.weight"], 0.5)


def test_load_state_dict_converts_dtype_and_accepts_lists():
    model = cr.Model([cr.Dense(2, 2)], seed=0)
    model.load_state_dict({"0.weight": [[1, 2], [3, 4]], "0.bias": np.array([0.5, -0.5])})
    np.testing.assert_array_equal(model.predict(np.array([[1.0, 1.0]])), [[3.5, 6.5]])
    assert model.state_dict()["0.weight"].dtype == np.float32


def test_load_state_dict_non_strict_loads_what_is_given():
    model = cr.Model([cr.Dense(2, 2)], seed=0)
    bias = model.state_dict()["0.bias"]
    keys = model.load_state_dict({"0.weight": np.eye(2), "extra": np.zeros(1)}, strict=False)
    np.testing.assert_array_equal(model.state_dict()["0.weight"], np.eye(2))
    np.testing.assert_array_equal(model.state_dict()["0.bias"], bias)
    # what torch's load_state_dict returns: the names left out and the names ignored
    assert keys == (["0.bias"], ["extra"])
    assert keys.missing_keys == ["0.bias"] and keys.unexpected_keys == ["extra"]
    assert model.load_state_dict(model.state_dict()) == ([], [])


def test_failed_load_state_dict_changes_nothing():
    model = cr.Model([cr.Dense(2, 3), cr.Tanh(), cr.Dense(3, 1)], seed=0)
    before = model.state_dict()
    bad = {"0.weight": np.zeros((3, 2)), "0.bias": np.zeros(3), "2.weight": np.zeros((1, 3)),
           "2.bias": np.zeros(2)}
    with pytest.raises(ValueError, match="2.bias"):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_repr_shows_sizes():
    model = cr.Model([cr.Dense(2, 16), cr.ReLU(), cr.Dense(16, 1, bias=False)])
    text = repr(model)
    assert "Dense(in=2, out=16)" in text and "Dense(in=16, out=1, bias=False)" in text
    assert "ReLU" in text and "MSELoss" in text and "float32" in text


def test_repr_shows_the_sizes_a_lazy_model_inferred():
    model = cr.Model([cr.Dense(16), cr.ReLU(), cr.Dense(16, 2)], seed=1)
    assert "Dense(in=None, out=16)" in repr(model)  # not built yet
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), epochs=1)
    assert "Dense(in=3, out=16)" in repr(model) and "None" not in repr(model)
    assert model.get_config()["layers"][0]["in_features"] == 3
    rnn = cr.Model([cr.GRU(None, 4), cr.Dense(4, 2)], seed=1)
    rnn.fit(np.zeros((4, 5, 3)), np.zeros((4, 5, 2)), epochs=1)
    assert "GRU(input_size=3, hidden_size=4" in repr(rnn)


# ---------------------------------------------------------------------------------------------
# lazy building
# ---------------------------------------------------------------------------------------------

def test_lazy_first_layer_builds_on_first_fit(rng):
    model = cr.Model([cr.Dense(16), cr.ReLU(), cr.Dense(1)], seed=0)
    assert model.n_features_in is None
    X, y = rng.standard_normal((10, 5)), rng.standard_normal((10, 1))
    with pytest.raises(cr.NotFittedError) as info:
        model.predict(X)
    assert isinstance(info.value, ValueError)
    assert "fit" in str(info.value)
    with pytest.raises(cr.NotFittedError):
        model.state_dict()
    with pytest.raises(cr.NotFittedError):
        model.evaluate(X, y)
    model.fit(X, y, epochs=1)
    assert model.n_features_in == 5
    assert model.state_dict()["0.weight"].shape == (16, 5)
    assert model.state_dict()["2.weight"].shape == (1, 16)
    assert model.predict(X).shape == (10, 1)
    with pytest.raises(ValueError, match="X has 4 features, but Model is expecting 5"):
        model.predict(X[:, :4])


def test_lazy_model_builds_the_same_weights_as_an_explicit_one(rng):
    X = rng.standard_normal((3, 5))
    lazy = cr.Model([cr.Dense(4), cr.Tanh(), cr.Dense(2)], seed=7)
    lazy.forward(X)
    explicit = cr.Model([cr.Dense(5, 4), cr.Tanh(), cr.Dense(4, 2)], seed=7)
    for k, v in explicit.state_dict().items():
        np.testing.assert_array_equal(lazy.state_dict()[k], v)


# ---------------------------------------------------------------------------------------------
# inference and evaluation
# ---------------------------------------------------------------------------------------------

def test_predict_does_not_change_the_model_or_its_input(rng):
    model = cr.Model([cr.Dense(3, 4), cr.Tanh(), cr.Dense(4, 2)], dtype="float64", seed=0)
    X = rng.standard_normal((5, 3))
    X_keep = X.copy()
    before = model.state_dict()
    p1 = model.predict(X)
    p2 = model.predict(X)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(X, X_keep)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # predict and forward agree bit for bit
    np.testing.assert_array_equal(model.forward(X), p1)


def test_predict_in_chunks_equals_one_forward(rng):
    """predict bounds its workspace by running wide layers over chunks of samples."""
    model = cr.Model([cr.Dense(3, 4096), cr.Tanh(), cr.Dense(4096, 2)], dtype="float64", seed=0)
    X = rng.standard_normal((700, 3))  # several chunks of 256 rows, the last one partial
    # Not bitwise: a GEMM may round a row differently when it falls on another tile edge.
    np.testing.assert_allclose(model.predict(X), model.forward(X), rtol=1e-13, atol=1e-15)


def test_predict_accepts_lists_and_other_dtypes(rng):
    model = cr.Model([cr.Dense(2, 3)], dtype="float64", seed=0)
    X = rng.standard_normal((4, 2))
    expected = model.predict(X)
    np.testing.assert_array_equal(model.predict(X.tolist()), expected)
    np.testing.assert_array_equal(model.predict(np.asfortranarray(X)), expected)
    np.testing.assert_allclose(model.predict(X.astype(np.float32)), expected, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(X[::1, :]), expected)
    Xi = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(model.predict(Xi), model.predict(Xi.astype(float)))


def test_float32_model_computes_in_float32(rng):
    model = cr.Model([cr.Dense(2, 3), cr.Sigmoid()], seed=0)
    X = rng.standard_normal((4, 2))
    out = model.predict(X)
    assert out.dtype == np.float32
    W, b = model.state_dict()["0.weight"], model.state_dict()["0.bias"]
    z = X.astype(np.float32) @ W.T + b
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-z)), rtol=1e-6)


def test_evaluate_accuracy_matches_sklearn(blobs):
    X, y = blobs
    model = cr.Model([cr.Dense(2, 8), cr.Tanh(), cr.Dense(8, 3)], loss="cross_entropy",
                     optimizer=cr.SGD(lr=0.1), seed=1)
    model.fit(X, y, epochs=3, batch_size=16)
    res = model.evaluate(X, y)
    assert set(res) == {"loss", "accuracy"}
    pred = model.predict_classes(X)
    assert res["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-15)
    assert res["accuracy"] == pytest.approx(accuracy_score(y, model.predict(X).argmax(1)))
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    # loss equals the mean negative log-probability of the true class
    nll = -np.mean(np.log(proba.astype(np.float64)[np.arange(len(y)), y]))
    assert res["loss"] == pytest.approx(nll, rel=1e-5)
    # probability targets give the same accuracy as the class indices they encode
    onehot = np.eye(3)[y]
    assert model.evaluate(X, onehot)["accuracy"] == res["accuracy"]


@pytest.mark.parametrize("loss", ["bce_with_logits", "bce"])
def test_evaluate_binary_accuracy_matches_sklearn(loss, blobs):
    X, y3 = blobs
    y = (y3 == 0).astype(float)
    layers = [cr.Dense(2, 4), cr.Tanh(), cr.Dense(4, 1)] + ([cr.Sigmoid()] if loss == "bce" else [])
    model = cr.Model(layers, loss=loss, seed=2)
    model.fit(X, y, epochs=2, batch_size=10)
    res = model.evaluate(X, y)
    pred = model.predict_classes(X)
    assert pred.shape == (90,)
    assert res["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert 0 < res["accuracy"] <= 1


def test_evaluate_r2_matches_sklearn(regression):
    X, y = regression
    model = cr.Model([cr.Dense(3, 16), cr.Tanh(), cr.Dense(16, 2)], optimizer=cr.Adam(lr=0.01),
                     dtype="float64", seed=0)
    model.fit(X, y, epochs=20, batch_size=16)
    res = model.evaluate(X, y)
    assert set(res) == {"loss", "r2"}
    pred = model.predict(X)
    assert res["r2"] == pytest.approx(r2_score(y, pred), rel=1e-12)
    assert res["loss"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-12)
    # a single output given as a 1-D target
    model1 = cr.Model([cr.Dense(3, 1)], dtype="float64", seed=0)
    res1 = model1.evaluate(X, y[:, 0])
    assert res1["r2"] == pytest.approx(r2_score(y[:, 0], model1.predict(X)[:, 0]), rel=1e-12)


def test_predict_proba_needs_a_classifier(rng):
    model = cr.Model([cr.Dense(2, 1)], seed=0)
    with pytest.raises(ValueError, match="classification"):
        model.predict_proba(rng.standard_normal((3, 2)))


def test_double_activation_warnings():
    with pytest.warns(UserWarning, match="Softmax"):
        cr.Model([cr.Dense(2, 3), cr.Softmax()], loss="cross_entropy")
    with warnings.catch_warnings():  # log_softmax of log-probabilities changes nothing
        warnings.simplefilter("error")
        cr.Model([cr.Dense(2, 3), cr.LogSoftmax()], loss="cross_entropy")
    with pytest.warns(UserWarning, match="Sigmoid"):
        cr.Model([cr.Dense(2, 1), cr.Sigmoid()], loss="bce_with_logits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cr.Model([cr.Dense(2, 1), cr.Sigmoid()], loss="bce")


def test_clip_grad_norm_error_if_nonfinite():
    model = cr.Model([cr.Dense(2, 1)], dtype="float64", seed=0)
    model.load_state_dict({"0.weight": np.array([[1e300, 1e300]]), "0.bias": np.zeros(1)})
    model.forward(np.array([[1e300, 1e300]]))
    model.backward(np.zeros((1, 1)))
    before = model.grads
    assert not np.isfinite(before["0.weight"]).all()
    with pytest.raises(FloatingPointError, match="non-finite"):
        model.clip_grad_norm(1.0, error_if_nonfinite=True)
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, before[k])


def test_get_config_records_the_input_size_a_lazy_layer_inferred(rng):
    for first, key in ((cr.Dense(4), "in_features"), (cr.LSTM(None, 4), "input_size")):
        model = cr.Model([first, cr.Dense(4, 1)], seed=0)
        assert model.get_config()["layers"][0][key] is None
        model.forward(rng.standard_normal((3, 5, 2)) if key == "input_size"
                      else rng.standard_normal((3, 2)))
        assert model.get_config()["layers"][0][key] == 2
        rebuilt = cr.Model.from_config(model.get_config())
        assert rebuilt.layers[0].get_config()[key] == 2


def _momentum_net(opt):
    return cr.Model([cr.Dense(3, 4), cr.Tanh(), cr.Dense(4, 1)], dtype="float64", optimizer=opt,
                    seed=0)


def test_changing_hyperparameters_in_place_applies_from_the_next_step(regression):
    # as a torch param_group edit: the momentum buffer is kept, the new lr used from then on
    X, y = regression
    y = y[:, :1]
    a = _momentum_net(cr.SGD(lr=0.1, momentum=0.9))
    b = _momentum_net(cr.SGD(lr=0.1, momentum=0.9))
    def steps(m, n):
        for _ in range(n):
            m.zero_grad()
            m.forward(X)
            m.backward(y)
            m.step()
    for m in (a, b):
        steps(m, 3)
    a.optimizer.lr = 0.01
    state = b.optimizer_state()
    b.optimizer = cr.SGD(lr=0.01, momentum=0.9)  # assignment resets; reload the state
    b.load_optimizer_state(state)
    for m in (a, b):
        steps(m, 2)
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k]), k
    assert a.get_config()["optimizer"]["lr"] == 0.01


def test_a_callback_can_schedule_the_learning_rate(regression):
    X, y = regression
    halve = lambda epoch, logs: setattr(model.optimizer, "lr", model.optimizer.lr / 2)
    model = _momentum_net(cr.SGD(lr=0.2, momentum=0.5))
    hist = model.fit(X, y[:, :1], epochs=3, batch_size=16, shuffle=False, callbacks=[halve])
    ref = _momentum_net(cr.SGD(lr=0.2, momentum=0.5))
    losses = []
    for _ in range(3):
        losses += ref.fit(X, y[:, :1], epochs=1, batch_size=16, shuffle=False).loss
        ref.optimizer.lr = ref.optimizer.lr / 2
    assert hist.loss == losses
    assert model.optimizer.lr == pytest.approx(0.2 / 8)
    for k, v in model.state_dict().items():
        assert np.array_equal(v, ref.state_dict()[k]), k
    constant = _momentum_net(cr.SGD(lr=0.2, momentum=0.5))
    assert constant.fit(X, y[:, :1], epochs=3, batch_size=16, shuffle=False).loss != losses


def test_hyperparameters_are_checked_as_they_are_assigned(regression):
    opt = cr.SGD(lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="lr must be > 0"):
        opt.lr = -1
    with pytest.raises(TypeError, match="nesterov must be a bool"):
        opt.nesterov = "no"
    with pytest.raises(ValueError, match=r"betas\[1\] must be in"):
        cr.Adam().betas = (0.9, 1.0)
    assert opt.lr == 0.1 and opt.nesterov is True
    X, y = regression
    model = _momentum_net(opt)
    model.fit(X, y[:, :1], epochs=1)
    opt.momentum = 0.0  # each value fine alone; Nesterov without momentum is not
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum"):
        model.step()
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum"):
        model.fit(X, y[:, :1], epochs=1)


@pytest.mark.parametrize("opt,switch", [(cr.SGD(lr=0.05), ("momentum", 0.9)),
                                        (cr.Adam(lr=0.01), ("amsgrad", True))])
def test_switching_on_a_buffer_mid_training_starts_it_as_torch_would(regression, opt, switch):
    X, y = regression
    model = _momentum_net(opt)
    model.fit(X, y[:, :1], epochs=2, batch_size=16)
    setattr(model.optimizer, *switch)
    hist = model.fit(X, y[:, :1], epochs=2, batch_size=16)
    assert np.isfinite(hist.loss).all()
    state = model.optimizer_state()["params"]["0.weight"]
    assert ("momentum_buffer" if switch[0] == "momentum" else "max_exp_avg_sq") in state
