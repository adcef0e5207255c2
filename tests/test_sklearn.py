"""chainrule.sklearn: scikit-learn's estimator checks on the MLPs; agreement with scikit-learn's own
MLP (the same initial weights bit for bit, SGD to rounding, similar scores where shuffling
differs); scikit-learn's attributes and semantics (random_state, warm_start, partial_fit, early
stopping, pickling, Pipeline/GridSearchCV/cross_val_score in worker processes); what goes beyond
scikit-learn; and the recurrent estimators on (n_samples, T, n_features) data.
"""
from __future__ import annotations

import copy
import io
import pickle
import warnings

import numpy as np
import pytest
from joblib import parallel_backend
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_iris, make_blobs
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import chainrule as cr
from chainrule.sklearn import MLPClassifier, MLPRegressor, RNNClassifier, RNNRegressor

# Checks expected to fail, by estimator class name, with the reason. None: every check of the
# installed scikit-learn passes (pandas-based checks skip themselves where pandas is absent).
EXPECTED_FAILED_CHECKS: dict = {}


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def smooth_regression(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 2))
    y = np.c_[np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2, np.cos(X[:, 0] * X[:, 1])]
    return X, y


def sequences(n=120, T=8, seed=0):
    """X (n, T, 2); y_reg depends on the last steps and the mean; y_cls on the sum's sign."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, 2))
    y_reg = X[:, -2:, 0].sum(axis=1) - 0.5 * X[:, :, 1].mean(axis=1)
    y_cls = np.where(X[:, :, 0].sum(axis=1) > 0, "up", "down")
    return X, y_reg, y_cls


def assert_same_state(a, b):
    sa, sb = a.model_.state_dict(), b.model_.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


# ---------------------------------------------------------------------------------------------
# scikit-learn's estimator checks
# ---------------------------------------------------------------------------------------------

@parametrize_with_checks(
    [MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01),
     MLPRegressor(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(type(est).__name__, {}))
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# ---------------------------------------------------------------------------------------------
# agreement with scikit-learn's MLP
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "logistic", "tanh"])
def test_initial_weights_are_sklearns_bit_for_bit(iris, activation):
    # A step of 1e-300 leaves every weight as initialised: both draw Glorot-uniform weights
    # from the same RandomState in the same order.
    X, y = iris
    kw = dict(hidden_layer_sizes=(6, 5), activation=activation, solver="sgd", momentum=0.0,
              learning_rate_init=1e-300, max_iter=1, random_state=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours, theirs = MLPClassifier(**kw).fit(X, y), SkMLPClassifier(**kw).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_array_equal(a, b)


def _targets(kind, X, y):
    if kind == "binary":
        return (y == 1).astype(int)
    if kind == "multilabel":
        return np.c_[y == 1, y == 2, X[:, 0] > 0].astype(int)
    return y


@pytest.mark.parametrize("hidden", [(7, 5), ()], ids=["two_hidden", "no_hidden"])
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_sgd_matches_sklearn_to_rounding_classifier(iris, kind, hidden):
    # Without shuffling the batches are the same, so scikit-learn's loss scale, momentum and
    # Nesterov rule must give the same trajectory (the loss definitions differ by output kind).
    X, y = iris
    t = _targets(kind, X, y)
    kw = dict(hidden_layer_sizes=hidden, activation="tanh", solver="sgd", alpha=0.0,
              batch_size=30, shuffle=False, max_iter=15, learning_rate_init=0.05,
              random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours, theirs = MLPClassifier(**kw).fit(X, t), SkMLPClassifier(**kw).fit(X, t)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-8,
                               atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.out_activation_ == theirs.out_activation_ and ours.n_layers_ == theirs.n_layers_
    assert ours.n_outputs_ == theirs.n_outputs_ and ours.t_ == theirs.t_


@pytest.mark.parametrize("schedule", [dict(momentum=0.9), dict(momentum=0.5,
                                      nesterovs_momentum=False, learning_rate="invscaling",
                                      power_t=0.25)], ids=["nesterov", "invscaling"])
def test_sgd_matches_sklearn_to_rounding_multioutput_regressor(schedule):
    X, y = smooth_regression(100)
    kw = dict(hidden_layer_sizes=(6,), solver="sgd", alpha=0.0, batch_size=20, shuffle=False,
              max_iter=15, learning_rate_init=0.02, random_state=3, **schedule)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours, theirs = MLPRegressor(**kw).fit(X, y), SkMLPRegressor(**kw).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_optimizer_settings_carry_sklearns_meaning_into_chainrules_loss_scale(solver):
    # Three regression outputs: chainrule's mean squared error has 2/3 of the gradient of
    # scikit-learn's half squared error summed over outputs (s = 3/2). SGD's step is scaled by
    # s; Adam is scale-free but for ε; the L2 decay is α/(s·batch) against the scaled gradient.
    X, y = smooth_regression(50)
    y = np.c_[y, y[:, 0] - y[:, 1]]
    est = MLPRegressor(hidden_layer_sizes=(3,), solver=solver, learning_rate_init=0.01,
                       alpha=0.3, batch_size=10, epsilon=1e-6, max_iter=1, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    opt = est.model_.optimizer
    assert opt.weight_decay == pytest.approx(0.3 / (1.5 * 10), rel=1e-15)
    if solver == "sgd":
        assert opt.lr == pytest.approx(0.015, rel=1e-15) and opt.nesterov and opt.momentum == 0.9
    else:
        assert opt.lr == 0.01 and opt.eps == pytest.approx(1e-6 / 1.5, rel=1e-15)
        assert tuple(opt.betas) == (0.9, 0.999)


def test_adam_follows_sklearn_closely():
    # Only ε's place differs (PyTorch's rule): far below what any fit is judged by.
    X, y = smooth_regression(100)
    kw = dict(hidden_layer_sizes=(6,), alpha=0.0, batch_size=20, shuffle=False, max_iter=15,
              learning_rate_init=0.01, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours, theirs = MLPRegressor(**kw).fit(X, y), SkMLPRegressor(**kw).fit(X, y)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-5)


@pytest.mark.parametrize("ours_cls, theirs_cls", [(MLPClassifier, SkMLPClassifier),
                                                   (MLPRegressor, SkMLPRegressor)],
                         ids=["classifier", "regressor"])
def test_alpha_is_sklearns_l2_on_weights_and_also_decays_intercepts(iris, ours_cls, theirs_cls):
    # One full-batch step without momentum: the weights get scikit-learn's α·W/n exactly; the
    # intercepts (which scikit-learn does not penalise) lose lr·α·b₀/n more, as documented.
    # loss_ holds the L2 term at the weights after the step, scikit-learn's those before it.
    X, y = iris
    n, lr, alpha = len(X), 0.1, 3.0
    kw = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, batch_size=n,
              max_iter=1, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = ours_cls(alpha=alpha, learning_rate_init=lr, **kw).fit(X, y)
        theirs = theirs_cls(alpha=alpha, learning_rate_init=lr, **kw).fit(X, y)
        start = ours_cls(learning_rate_init=1e-300, **kw).fit(X, y)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    for a, b, b0 in zip(ours.intercepts_, theirs.intercepts_, start.intercepts_):
        np.testing.assert_allclose(a, b - lr * alpha * b0 / n, rtol=1e-12, atol=1e-15)
        assert np.abs(a - b).max() > 1e-4  # the documented difference is really there

    def l2(est):
        return 0.5 * alpha * sum(np.sum(W ** 2) for W in est.coefs_) / n

    np.testing.assert_allclose(ours.loss_ - l2(ours), theirs.loss_ - l2(start), rtol=1e-12)


@pytest.mark.parametrize("loader", [load_iris, load_breast_cancer], ids=["iris", "cancer"])
def test_classification_scores_like_sklearn(loader):
    X, y = loader(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    scores = []
    for cls in (MLPClassifier, SkMLPClassifier):
        pipe = make_pipeline(StandardScaler(), cls(hidden_layer_sizes=(32,), max_iter=300,
                                                   random_state=0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores.append(pipe.fit(Xtr, ytr).score(Xte, yte))
    assert min(scores) >= 0.9, scores
    assert abs(scores[0] - scores[1]) <= 0.05, scores


def test_regression_r2_like_sklearn():
    X, y = smooth_regression(400)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    r2 = []
    for cls in (MLPRegressor, SkMLPRegressor):
        est = cls(hidden_layer_sizes=(32, 32), learning_rate_init=0.01, max_iter=300,
                  random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            r2.append(est.fit(Xtr, ytr).score(Xte, yte))
    assert min(r2) >= 0.9, r2
    assert abs(r2[0] - r2[1]) <= 0.05, r2


# ---------------------------------------------------------------------------------------------
# scikit-learn's attributes and methods
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, out_activation, n_outputs, proba_cols", [
    ("binary", "logistic", 1, 2), ("multiclass", "softmax", 3, 3),
    ("multilabel", "logistic", 3, 3)])
def test_classifier_attributes(iris, kind, out_activation, n_outputs, proba_cols):
    X, y = iris
    t = _targets(kind, X, y)
    est = MLPClassifier(hidden_layer_sizes=(5, 4), max_iter=7, random_state=0)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        est.fit(X, t)
    assert est.out_activation_ == out_activation and est.n_outputs_ == n_outputs
    assert est.n_features_in_ == 4 and est.n_layers_ == 4 and est.n_iter_ == 7
    assert est.t_ == 7 * len(X) and len(est.loss_curve_) == 7
    assert est.loss_ == est.loss_curve_[-1] and est.best_loss_ == min(est.loss_curve_)
    assert est.validation_scores_ is None and est.best_validation_score_ is None
    assert est.validation_loss_curve_ is None
    assert [c.shape for c in est.coefs_] == [(4, 5), (5, 4), (4, n_outputs)]
    assert [b.shape for b in est.intercepts_] == [(5,), (4,), (n_outputs,)]
    assert isinstance(est.model_, cr.Model)
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), proba_cols)
    np.testing.assert_allclose(est.predict_log_proba(X), np.log(proba), rtol=1e-12)
    if kind == "multilabel":
        np.testing.assert_array_equal(est.predict(X), (proba > 0.5).astype(int))
    else:
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])
        np.testing.assert_array_equal(est.classes_, np.unique(t))
    assert est.score(X, t) == np.mean(np.all(est.predict(X).reshape(len(X), -1) ==
                                             t.reshape(len(X), -1), axis=1))


def test_regressor_attributes_and_output_shapes():
    X, y = smooth_regression(60)
    est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    assert est.out_activation_ == "identity" and est.n_outputs_ == 2
    assert est.predict(X).shape == (60, 2)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y[:, 0])
    assert est.n_outputs_ == 1 and est.predict(X).shape == (60,)
    assert [c.shape for c in est.coefs_] == [(2, 4), (4, 1)]
    assert not hasattr(est, "predict_proba")


def test_coefs_are_sklearns_layout_and_activations_per_layer(iris):
    # predict_proba equals a plain NumPy forward pass through coefs_ (in, out) and
    # intercepts_, with a leaky ReLU (slope 0.2, given as a layer) and then a tanh layer.
    X, y = iris
    est = MLPClassifier(hidden_layer_sizes=(6, 5), activation=[cr.LeakyReLU(0.2), "tanh"],
                        max_iter=20, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    assert [type(layer).__name__ for layer in est.model_.layers] == [
        "Dense", "LeakyReLU", "Dense", "Tanh", "Dense"]
    W, b = est.coefs_, est.intercepts_
    h = X @ W[0] + b[0]
    h = np.where(h > 0, h, 0.2 * h)
    h = np.tanh(h @ W[1] + b[1])
    z = h @ W[2] + b[2]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(est.predict_proba(X), p / p.sum(axis=1, keepdims=True),
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("activation, layer", [("leaky_relu", "LeakyReLU"), ("identity", None),
                                               ("logistic", "Sigmoid")])
def test_activation_names(iris, activation, layer):
    X, y = iris
    est = MLPClassifier(hidden_layer_sizes=(4,), activation=activation, max_iter=2,
                        random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    names = [type(lay).__name__ for lay in est.model_.layers]
    assert names == ["Dense"] + ([layer] if layer else []) + ["Dense"]
    if activation == "leaky_relu":
        assert est.model_.layers[1].negative_slope == 0.01


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_predict_log_proba_stays_finite_where_proba_rounds_to_zero(iris, kind):
    X, y = iris
    t = _targets(kind, X, y)
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=50, random_state=0,
                        learning_rate_init=0.05)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, t)
    sd = est.model_.state_dict()
    sd["2.weight"] *= 1e4  # logits in the tens of thousands
    est.model_.load_state_dict(sd)
    with np.errstate(divide="ignore"):
        assert np.isneginf(np.log(est.predict_proba(X))).any()
    logp = est.predict_log_proba(X)
    assert np.isfinite(logp).all()
    np.testing.assert_array_equal(est.classes_[logp.argmax(axis=1)], est.predict(X))


def test_unfitted_estimator_raises_not_fitted(iris):
    X, _ = iris
    for est in (MLPClassifier(), MLPRegressor(), RNNClassifier(), RNNRegressor()):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            est.predict(X)
    assert not hasattr(MLPClassifier(), "coefs_")
    with pytest.raises(AttributeError, match="coefs_"):
        MLPRegressor().coefs_


def test_errors_in_sklearns_wording(iris):
    X, y = iris
    est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4 "
                                         "features as input"):
        est.predict(X[:, :3])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array instead"):
        est.predict(X[0])
    with pytest.raises(ValueError, match="The 'solver' parameter of MLPClassifier must be"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be positive integers"):
        MLPClassifier(hidden_layer_sizes=(3, 0)).fit(X, y)
    with pytest.raises(ValueError, match="activation has 1 entries but hidden_layer_sizes has 2"):
        MLPClassifier(hidden_layer_sizes=(3, 3), activation=["relu"]).fit(X, y)
    with pytest.raises(ValueError, match="'activation' parameter of MLPRegressor must be one of"):
        MLPRegressor(hidden_layer_sizes=(3, 3), activation=["relu", "swish"]).fit(X, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit(X, X[:, 0])


def test_divergence_is_a_value_error():
    X, y = smooth_regression(50)
    est = MLPRegressor(solver="sgd", learning_rate_init=1e6, max_iter=50, random_state=0)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        est.fit(X, y * 1e3)


def test_float32(iris):
    X, y = iris
    kw = dict(hidden_layer_sizes=(8,), max_iter=100, learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f32 = MLPClassifier(dtype="float32", **kw).fit(X, y)
        f64 = MLPClassifier(**kw).fit(X, y)
    assert f32.model_.dtype == np.float32 and f64.model_.dtype == np.float64
    assert f32.coefs_[0].dtype == np.float32
    np.testing.assert_allclose(f32.loss_curve_, f64.loss_curve_, rtol=1e-3)


def test_feature_names_in_from_a_dataframe(iris):
    pd = pytest.importorskip("pandas")
    X, y = iris
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(df, y)
    np.testing.assert_array_equal(est.feature_names_in_, ["a", "b", "c", "d"])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        est.predict(X)


# ---------------------------------------------------------------------------------------------
# random_state, warm_start, partial_fit, early stopping
# ---------------------------------------------------------------------------------------------

def test_random_state_reproduces_bit_for_bit(iris):
    X, y = iris
    kw = dict(hidden_layer_sizes=(8, 8), max_iter=30, early_stopping=True,
              validation_fraction=0.2, learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(random_state=11, **kw).fit(X, y)
        b = MLPClassifier(random_state=11, **kw).fit(X, y)
        c = MLPClassifier(random_state=12, **kw).fit(X, y)
        d = MLPClassifier(random_state=np.random.RandomState(11), **kw).fit(X, y)
    assert_same_state(a, b)
    assert_same_state(a, d)
    assert a.loss_curve_ == b.loss_curve_ and a.validation_scores_ == b.validation_scores_
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.loss_curve_ != c.loss_curve_


def test_warm_start_continues_where_the_last_fit_stopped(iris):
    # SGD without momentum keeps no optimizer state, so two warm fits of 5 epochs are one fit
    # of 10, bit for bit (the generator that shuffles goes on too).
    X, y = iris
    kw = dict(hidden_layer_sizes=(6,), solver="sgd", momentum=0.0, learning_rate_init=0.05,
              batch_size=32, n_iter_no_change=100, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm = MLPClassifier(max_iter=5, warm_start=True, **kw).fit(X, y).fit(X, y)
        once = MLPClassifier(max_iter=10, **kw).fit(X, y)
        cold = MLPClassifier(max_iter=5, **kw).fit(X, y)
        cold_again = clone(cold).fit(X, y).fit(X, y)
    assert warm.loss_curve_ == once.loss_curve_ and len(warm.loss_curve_) == 10
    assert warm.n_iter_ == 5 and warm.t_ == 10 * len(X)  # as scikit-learn counts them
    assert_same_state(warm, once)
    assert cold_again.loss_curve_ == cold.loss_curve_  # without warm_start: a fresh start
    with pytest.raises(ValueError, match="the layers cannot change"):
        warm.set_params(hidden_layer_sizes=(7,)).fit(X, y)


def test_warm_start_may_switch_early_stopping_on_and_off(iris):
    X, y = iris
    est = MLPClassifier(hidden_layer_sizes=(4,), warm_start=True, max_iter=4, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        assert est.validation_scores_ is None and est.best_loss_ == min(est.loss_curve_)
        est.set_params(early_stopping=True).fit(X, y)
        assert len(est.validation_scores_) == 4 and est.best_loss_ is None
        est.set_params(early_stopping=False).fit(X, y)
    assert est.validation_scores_ is None and est.best_loss_ == min(est.loss_curve_[-4:])
    assert len(est.loss_curve_) == 12


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_partial_fit_accumulates_and_equals_fit(iris, solver):
    # k partial_fit calls = fit with max_iter=k: the optimizer state (momentum, Adam moments)
    # and the shuffling generator carry over from call to call.
    X, y = iris
    kw = dict(hidden_layer_sizes=(6,), solver=solver, learning_rate_init=0.01, batch_size=40,
              n_iter_no_change=100, random_state=0)
    est = MLPClassifier(**kw)
    for k in range(1, 5):
        est.partial_fit(X, y, classes=np.unique(y) if k == 1 else None)
        assert est.n_iter_ == k and est.t_ == k * len(X) and len(est.loss_curve_) == k
    with pytest.warns(ConvergenceWarning):
        whole = MLPClassifier(max_iter=4, **kw).fit(X, y)
    assert est.loss_curve_ == whole.loss_curve_
    assert_same_state(est, whole)


def test_partial_fit_rules(iris):
    X, y = iris
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier().partial_fit(X, y)
    est = MLPClassifier(hidden_layer_sizes=(3,), random_state=0)
    est.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])  # later classes may come later
    assert est.out_activation_ == "softmax" and list(est.classes_) == [0, 1, 2]
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        est.partial_fit(X, y + 1)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])
    reg = MLPRegressor(hidden_layer_sizes=(3,), random_state=0).partial_fit(X, y)
    reg.partial_fit(X, y)
    assert reg.n_iter_ == 2 and reg.t_ == 2 * len(X)


def test_early_stopping_stops_records_and_restores_the_best_epoch():
    # With tol above any possible gain every epoch after the first (which improves on -inf)
    # counts as "no improvement": the run stops after exactly n_iter_no_change + 2 epochs and
    # keeps the weights of the best one, which a run cut at that epoch ends with.
    X, y = make_blobs(300, centers=3, cluster_std=1.0, random_state=0)
    X = StandardScaler().fit_transform(X)
    kw = dict(hidden_layer_sizes=(8,), early_stopping=True, validation_fraction=0.2,
              learning_rate_init=0.05, tol=10.0, n_iter_no_change=5, random_state=0)
    est = MLPClassifier(max_iter=100, **kw).fit(X, y)
    assert est.n_iter_ == 7 and len(est.loss_curve_) == 7
    assert len(est.validation_scores_) == 7 and len(est.validation_loss_curve_) == 7
    assert est.best_validation_score_ == max(est.validation_scores_) and est.best_loss_ is None
    best = int(np.argmax(est.validation_scores_))
    assert best < 6, "the best epoch must not be the last for this test to mean anything"
    with pytest.warns(ConvergenceWarning):
        cut = MLPClassifier(max_iter=best + 1, **kw).fit(X, y)
    assert_same_state(est, cut)
    assert np.all(np.isfinite(est.validation_loss_curve_))
    assert est.validation_loss_curve_[best] < est.validation_loss_curve_[0]


def test_training_loss_stopping_and_adaptive_schedule_count_like_sklearn(iris):
    X, y = iris
    for params in (dict(tol=10.0, n_iter_no_change=3),
                   dict(solver="sgd", learning_rate="adaptive", tol=10.0, n_iter_no_change=2)):
        ours = MLPClassifier(hidden_layer_sizes=(4,), max_iter=500, random_state=0,
                             **params).fit(X, y)
        theirs = SkMLPClassifier(hidden_layer_sizes=(4,), max_iter=500, random_state=0,
                                 **params).fit(X, y)
        assert ours.n_iter_ == theirs.n_iter_, params
    # The first epoch improves on inf; then 1e-3 is divided by 5 until <= 1e-6, a round of
    # three epochs for each of the six rates.
    assert ours.n_iter_ == 1 + 6 * 3


def test_verbose_prints_sklearns_lines(iris, capsys):
    X, y = iris
    MLPClassifier(hidden_layer_sizes=(3,), max_iter=3, early_stopping=True, tol=10.0,
                  n_iter_no_change=1, verbose=True, random_state=0).fit(X, y)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Iteration 1, loss = ") and out[1].startswith("Validation score: ")
    assert out[-1].startswith("Validation score did not improve more than tol=10.000000 for 1 "
                              "consecutive epochs. Stopping.")


# ---------------------------------------------------------------------------------------------
# pickling and scikit-learn's tools, in worker processes too
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: MLPClassifier(hidden_layer_sizes=(5,), random_state=0),
    lambda: RNNRegressor(cell="gru", hidden_size=4, random_state=0)], ids=["mlp", "rnn"])
def test_pickle_goes_through_chainrules_safe_bytes(iris, make):
    est = make()
    if isinstance(est, RNNRegressor):
        X, y, _ = sequences(40)
        est.partial_fit(X, y)
    else:
        X, y = iris
        est.partial_fit(X, y, classes=[0, 1, 2])
    blob = pickle.dumps(est)
    found = []

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            found.append(f"{module}.{name}")
            return super().find_class(module, name)

    back = Recorder(io.BytesIO(blob)).load()
    # The only chainrule class the pickle names is the estimator's: no Model, no C++ object.
    assert [f for f in found if f.startswith("chainrule")] == [f"chainrule.sklearn."
                                                             f"{type(est).__name__}"]
    assert isinstance(est.__getstate__()["_model_bytes"], bytes)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    # Optimizer and generator state come along: both go on identically.
    for e in (est, back):
        e.partial_fit(X, y)
    assert back.loss_curve_ == est.loss_curve_
    assert_same_state(back, est)
    deep = copy.deepcopy(est)
    np.testing.assert_array_equal(deep.predict(X), est.predict(X))
    unfitted = pickle.loads(pickle.dumps(make()))
    assert not hasattr(unfitted, "model_")


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_pipeline_gridsearch_cross_val_score_in_two_workers(iris, backend):
    # Worker processes (loky's, or forked ones) give exactly the serial results.
    X, y = iris
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,),
                                                         learning_rate_init=0.01,
                                                         max_iter=100, random_state=0))
    grid = {"mlpclassifier__activation": ["relu", "leaky_relu"],
            "mlpclassifier__alpha": [1e-4, 1e-1]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        serial = cross_val_score(pipe, X, y, cv=3)
        serial_grid = GridSearchCV(pipe, grid, cv=3).fit(X, y)
        with parallel_backend(backend):
            parallel = cross_val_score(pipe, X, y, cv=3, n_jobs=2)
            search = GridSearchCV(pipe, grid, cv=3, n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(parallel, serial)
    assert serial.mean() >= 0.85
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"],
                                  serial_grid.cv_results_["mean_test_score"])
    assert search.best_params_ == serial_grid.best_params_
    np.testing.assert_array_equal(search.predict(X), serial_grid.predict(X))


# ---------------------------------------------------------------------------------------------
# beyond scikit-learn's MLP
# ---------------------------------------------------------------------------------------------

def test_clip_grad_norm_bounds_each_step_in_sklearns_gradient_scale():
    # One full-batch SGD step without momentum moves the parameters by lr·min(‖g‖, c), with g
    # the gradient of scikit-learn's loss (half the squared error: half as steep as chainrule's
    # mean squared error for one output).
    X, y = smooth_regression(80)
    y = y[:, 0]
    kw = dict(hidden_layer_sizes=(8,), solver="sgd", momentum=0.0, alpha=0.0, batch_size=80,
              learning_rate_init=0.1, max_iter=1, random_state=0)

    def step_norm(**extra):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = MLPRegressor(**{**kw, "learning_rate_init": 1e-300}).fit(X, y)
            moved = MLPRegressor(**kw, **extra).fit(X, y)
        return np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(
            moved.coefs_ + moved.intercepts_, start.coefs_ + start.intercepts_)))

    free = step_norm()
    assert free > 0.1 * 0.5  # the unclipped gradient is larger than the bound below
    np.testing.assert_allclose(step_norm(clip_grad_norm=0.5), 0.1 * 0.5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# recurrent estimators
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_rnn_regressor_learns_from_sequences(cell):
    X, y, _ = sequences(120)
    est = RNNRegressor(cell=cell, hidden_size=8, learning_rate_init=0.02, max_iter=60,
                       random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    assert est.score(X, y) >= 0.9
    assert est.n_features_in_ == 2 and est.out_activation_ == "identity"
    assert type(est.model_.layers[0]).__name__ == cell.upper()
    assert est.model_.layers[0].return_sequences is False
    assert est.predict(X[:, :5]).shape == (120,)  # any sequence length predicts


def test_rnn_classifier_binary_and_multiclass():
    X, _, labels = sequences(160)
    three = np.where(X[:, -1, 0] > 0.5, "high", labels)
    for y, n_classes in ((labels, 2), (three, 3)):
        est = RNNClassifier(cell="gru", hidden_size=12, learning_rate_init=0.02, max_iter=60,
                            random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        assert est.score(X, y) >= 0.9
        np.testing.assert_array_equal(est.classes_, np.unique(y))
        proba = est.predict_proba(X)
        assert proba.shape == (160, n_classes)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])


def test_rnn_input_checks():
    X, y, labels = sequences(30)
    with pytest.raises(ValueError, match=r"Expected 3D array \(n_samples, n_timesteps, "
                                         r"n_features\), got 2D array"):
        RNNRegressor().fit(X[:, :, 0], y)
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        RNNRegressor().fit(X, None)
    est = RNNClassifier(hidden_size=3, max_iter=2, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, labels)
    with pytest.raises(ValueError, match="X has 1 features, but RNNClassifier is expecting 2"):
        est.predict(X[:, :, :1])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(np.where(X > 2, np.nan, X))
    assert not est.__sklearn_tags__().input_tags.two_d_array
    assert est.__sklearn_tags__().input_tags.three_d_array


def test_rnn_bptt_memory_sqrt_is_bitwise_the_same_training():
    # "sqrt" checkpointing recomputes the dropped states: the same gradients bit for bit.
    X, y, _ = sequences(80, T=8)
    kw = dict(cell="lstm", hidden_size=6, learning_rate_init=0.02, max_iter=30, random_state=0,
              clip_grad_norm=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full = RNNRegressor(**kw).fit(X, y)
        sqrt = RNNRegressor(bptt_memory="sqrt", **kw).fit(X, y)
    assert_same_state(full, sqrt)
    assert full.loss_curve_[-1] < 0.5 * full.loss_curve_[0]


def test_rnn_partial_fit_early_stopping_and_cross_val_score():
    X, y, labels = sequences(120)
    est = RNNClassifier(cell="rnn", nonlinearity="relu", hidden_size=6, random_state=0)
    for k in range(1, 4):
        est.partial_fit(X, labels, classes=["down", "up"] if k == 1 else None)
    assert est.n_iter_ == 3 and est.t_ == 360
    stopped = RNNRegressor(cell="gru", hidden_size=6, early_stopping=True, tol=10.0,
                           n_iter_no_change=2, random_state=0).fit(X, y)
    assert stopped.n_iter_ == 4 and len(stopped.validation_loss_curve_) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with parallel_backend("loky"):
            scores = cross_val_score(RNNRegressor(cell="gru", hidden_size=8, max_iter=60,
                                                  learning_rate_init=0.02, random_state=0),
                                     X, y, cv=3, n_jobs=2)
    assert scores.min() >= 0.7, scores


def test_first_partial_fit_refuses_labels_outside_classes(iris):
    # they were trained on as a neighbouring class, silently
    X, y = iris
    for classes, labels in (([0, 1], y), ([0, 2, 4], np.where(y == 1, 1, y * 2)),
                            (["0", "1", "2"], y)):
        est = MLPClassifier(hidden_layer_sizes=(3,), random_state=0)
        with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
            est.partial_fit(X, labels, classes=classes)
        assert not hasattr(est, "classes_")  # a retry with the right classes starts anew
        est.partial_fit(X, y, classes=[0, 1, 2])
        assert list(est.classes_) == [0, 1, 2]


def test_partial_fit_takes_sample_weight_where_sklearn_does(iris):
    # partial_fit(X, y, sample_weight=None, classes=None), scikit-learn >= 1.7's order: a call
    # written for it must not hand the weights to classes
    X, y = iris
    with pytest.raises(ValueError, match="sample_weight is not supported"):
        MLPClassifier(random_state=0).partial_fit(X, y, np.ones(len(y)))
    with pytest.raises(ValueError, match="sample_weight is not supported"):
        MLPRegressor(random_state=0).partial_fit(X, y.astype(float), np.ones(len(y)))
    MLPClassifier(hidden_layer_sizes=(3,), random_state=0).partial_fit(X, y, None, [0, 1, 2])


@pytest.mark.parametrize("how", ["partial_fit", "warm_start"])
def test_multiclass_model_refuses_a_multilabel_target_later(iris, how):
    X, y = iris
    est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0,
                        warm_start=how == "warm_start")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if how == "partial_fit":
            est.partial_fit(X, y, classes=[0, 1, 2])
        else:
            est.fit(X, y)
        before = [c.copy() for c in est.coefs_]
        indicator = np.eye(3, dtype=int)[y]
        with pytest.raises(ValueError, match="not fitted with multilabel input"):
            getattr(est, "partial_fit" if how == "partial_fit" else "fit")(X, indicator)
        multilabel = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0,
                                   warm_start=True).fit(X, indicator)
        with pytest.raises(ValueError, match="fitted with multilabel input"):
            multilabel.fit(X, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, est.coefs_))


def test_warm_start_fit_restarts_the_invscaling_schedule_as_sklearn():
    # scikit-learn's fit makes a new optimizer, whose first epoch steps at learning_rate_init
    X, y = smooth_regression(100)
    kw = dict(hidden_layer_sizes=(6,), solver="sgd", alpha=0.0, batch_size=20, shuffle=False,
              max_iter=4, learning_rate_init=0.05, learning_rate="invscaling", power_t=0.5,
              momentum=0.5, random_state=3, warm_start=True)
    ours, theirs = MLPRegressor(**kw), SkMLPRegressor(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for est in (ours, theirs):
            est.fit(X, y)
            est.set_params(max_iter=3)
            est.fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_mlp_regressor_takes_sklearns_loss_parameter():
    X, y = smooth_regression(40)
    est = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    assert est.get_params()["loss"] == "squared_error"
    assert MLPRegressor("squared_error", (3,)).hidden_layer_sizes == (3,)  # sklearn's order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        with pytest.raises(ValueError, match="The 'loss' parameter of MLPRegressor must be"):
            clone(est).set_params(loss="poisson").fit(X, y)


def test_coefs_and_intercepts_can_be_assigned_as_in_sklearn(iris):
    X, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    est.coefs_ = [np.zeros_like(c) for c in est.coefs_]
    est.intercepts_ = [np.zeros_like(b) for b in est.intercepts_]
    np.testing.assert_allclose(est.predict_proba(X[:2]), np.full((2, 3), 1 / 3))
    assert all((c == 0).all() for c in est.coefs_)
    with pytest.raises(ValueError, match="coefs_ must hold 2 arrays"):
        est.coefs_ = [np.zeros((4, 4))]
    with pytest.raises(ValueError, match=r"coefs_\[0\] has shape \(3, 4\), expected \(4, 4\)"):
        est.coefs_ = [np.zeros((3, 4)), np.zeros((4, 3))]  # (iris: 4 features, 4 hidden)
    with pytest.raises(TypeError, match="coefs_ must be a list of 2 arrays"):
        est.coefs_ = np.zeros((4, 4))
    with pytest.raises(AttributeError, match="set by fit"):
        MLPClassifier().coefs_ = [np.zeros((4, 4))]


@pytest.mark.parametrize("make", ["mlp", "rnn"])
def test_a_dtype_set_after_fit_waits_for_the_next_fit(make, iris):
    # predict read X in the new dtype: a float64 fit then predicted from float32-rounded inputs
    if make == "mlp":
        X, y = iris
        est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    else:
        X, y = sequences(60)[0], sequences(60)[2]
        est = RNNClassifier(hidden_size=4, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    before = est.predict_proba(X)
    est.set_params(dtype="float32")
    np.testing.assert_array_equal(est.predict_proba(X), before)


def test_multilabel_partial_fit_needs_classes_as_in_sklearn():
    X = np.random.default_rng(0).standard_normal((20, 3))
    Y = (X[:, :2] > 0).astype(int)
    for est in (MLPClassifier(hidden_layer_sizes=(3,), random_state=0),
                SkMLPClassifier(hidden_layer_sizes=(3,), random_state=0)):
        with pytest.raises(ValueError, match="classes must be passed on the first call"):
            est.partial_fit(X, Y)
        est.partial_fit(X, Y, classes=[0, 1])
        assert list(est.classes_) == [0, 1]
