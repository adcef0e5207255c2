"""scikit-learn estimators trained by chainrule: MLPClassifier and MLPRegressor with scikit-learn's
parameters, attributes and loss definitions, and RNNClassifier/RNNRegressor for sequences
X (n_samples, T, n_features) that predict from the last time step.

Needs scikit-learn >= 1.6. ``import chainrule`` does not import this module (nor scikit-learn).

What matches ``sklearn.neural_network.MLP*`` (solver "sgd"/"adam") and what does not:

- The objective is scikit-learn's: per batch b, ``L_b + α/(2|b|)·Σ‖W‖²`` with L_b its log-loss
  (sum over outputs, mean over samples) or half the squared error. chainrule's own losses are
  means over every element, so the gradient is ``s·∇L_chainrule`` (s = 1 for softmax and a
  binary output, k for k logistic outputs, k/2 for k regression outputs); the optimizer is set up
  so that learning_rate_init, momentum, nesterovs_momentum, beta_1, beta_2 and epsilon mean what
  they mean in scikit-learn: SGD steps ``lr·s``, Adam's ε is ``epsilon/s``.
- The same random_state gives the same initial weights as scikit-learn (Glorot uniform, drawn in
  the same order), and with shuffle=False the same batches: SGD with alpha=0 reproduces
  scikit-learn's coefs_ to rounding. Shuffling uses chainrule's generator, so shuffled runs differ.
- alpha is applied as the optimizer's weight decay ``α/(s·batch_size)``: exactly scikit-learn's
  ``α·W/|b|`` on the weights, but (PyTorch-style) on the intercepts too, and an epoch's last,
  smaller batch gets the nominal batch size's decay.
- loss_ and loss_curve_ are scikit-learn's loss; the L2 term in them is taken at the weights at
  the end of each epoch (scikit-learn sums it over the batches as it goes).
- Adam adds ε to ``√v/√(1−β₂ᵗ)`` (PyTorch) where scikit-learn adds it to ``√v``, so Adam fits
  differ from scikit-learn's: with the default ε = 1e-8, coefs_ after one epoch on small data
  differ by about 2e-4 (relative); the gap shrinks with ε (about 3e-8 at ε = 1e-12). SGD fits
  match scikit-learn to rounding.
- n_iter_ accumulates over partial_fit calls (scikit-learn's is 1 after every partial_fit), so it
  always equals the epochs behind loss_curve_ since the last fit; t_ accumulates in both.
- Early stopping stratifies the validation split for binary and multiclass targets (scikit-learn
  only for binary) when every class can be split; validation_loss_curve_ records the loss on that
  split (without the L2 term) next to validation_scores_.
- dtype defaults to "float64": scikit-learn's precision, so predictions on subsets agree with
  predictions on the whole to scikit-learn's tolerances; "float32" trains wide layers about
  twice as fast.
- Not supported: solver="lbfgs", sample_weight, sparse X, loss="poisson" (each is a clear error).
  MLPRegressor takes loss="squared_error" (its default) as scikit-learn does.
- Beyond scikit-learn: activation "leaky_relu" (slope 0.01), one activation per hidden layer (a
  list, whose items may also be chainrule activation layers such as ``LeakyReLU(0.2)``),
  clip_grad_norm (on the data-loss gradient, in scikit-learn's scale), predict_log_proba computed
  from the logits (finite where ``log(predict_proba)`` is -inf), validation_loss_curve_, and the
  recurrent estimators. The trained network is ``model_``, a :class:`chainrule.Model`.

Pickling stores ``model_`` as chainrule's safe bytes (:meth:`Model.to_bytes`), never a C++ object.
"""
from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real
from typing import Any, Dict, List, Optional, Tuple, cast

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils._param_validation import (Interval, Options, StrOptions,
                                                 validate_parameter_constraints)
    from sklearn.utils.multiclass import (check_classification_targets, type_of_target,
                                          unique_labels)
    from sklearn.utils.validation import (check_array, check_consistent_length, check_is_fitted,
                                          column_or_1d, validate_data)
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("chainrule.sklearn needs scikit-learn >= 1.6: pip install "
                      "'scikit-learn>=1.6'") from e

from .io import from_bytes
from .layers import (GRU, LSTM, RNN, Dense, Identity, Layer, LeakyReLU, ReLU, Sigmoid, Tanh)
from .model import Model
from .optim import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor", "RNNClassifier", "RNNRegressor"]

_ACTIVATIONS = {"identity": None, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU,
                "leaky_relu": LeakyReLU}
_ACTIVATION_LAYERS = (Identity, Sigmoid, Tanh, ReLU, LeakyReLU)
_CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}

# Parameters every estimator here shares, with scikit-learn's MLP constraints.
_COMMON_CONSTRAINTS: Dict[str, list] = {
    "solver": [StrOptions({"sgd", "adam"})],
    "alpha": [Interval(Real, 0, None, closed="left")],
    "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
    "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
    "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
    "power_t": [Interval(Real, 0, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "shuffle": ["boolean"],
    "random_state": ["random_state"],
    "tol": [Interval(Real, 0, None, closed="left")],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "momentum": [Interval(Real, 0, 1, closed="both")],
    "nesterovs_momentum": ["boolean"],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "beta_1": [Interval(Real, 0, 1, closed="left")],
    "beta_2": [Interval(Real, 0, 1, closed="left")],
    "epsilon": [Interval(Real, 0, None, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
    "clip_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
    "dtype": [StrOptions({"float32", "float64"}), type, np.dtype],
}


def _np_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"The 'dtype' parameter must be 'float32' or 'float64'. Got {dtype!r} "
                         "instead.")
    return dt


def _no_sample_weight(sample_weight: Any) -> None:
    if sample_weight is not None:
        raise ValueError("sample_weight is not supported by chainrule's estimators (every sample "
                         "counts once); got an argument for it")


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(_log_sigmoid(z))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class _Network(BaseEstimator):
    """The training loop shared by every estimator here: scikit-learn's MLP epoch loop (loss
    curve, tol/n_iter_no_change, early stopping, learning-rate schedules) around
    :meth:`Model.fit`, one epoch per call. Subclasses say how X is checked and which layers
    are built; the classifier and regressor mixins say how y becomes the model's targets."""

    # The parameters every subclass's __init__ sets (scikit-learn's names and meanings).
    solver: str
    alpha: float
    batch_size: Any
    learning_rate: str
    learning_rate_init: float
    power_t: float
    max_iter: int
    shuffle: bool
    random_state: Any
    tol: float
    verbose: Any
    warm_start: bool
    momentum: float
    nesterovs_momentum: bool
    early_stopping: bool
    validation_fraction: float
    beta_1: float
    beta_2: float
    epsilon: float
    n_iter_no_change: Any
    clip_grad_norm: Optional[float]
    dtype: Any
    _parameter_constraints: Dict[str, list]
    # Set by fit (annotated here for type checkers; absent before fit, as scikit-learn expects).
    model_: Model
    n_outputs_: int
    out_activation_: str
    loss_: float
    loss_curve_: List[float]
    best_loss_: Optional[float]
    validation_scores_: Optional[List[float]]
    validation_loss_curve_: Optional[List[float]]
    best_validation_score_: Optional[float]

    # ------------------------------------------------------------------ hooks
    def _validate_Xy(self, X: Any, y: Any, reset: bool) -> Tuple[np.ndarray, Any]:
        raise NotImplementedError

    def _validate_X(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def _build_layers(self, n_features: int, n_outputs: int) -> List[Layer]:
        raise NotImplementedError

    def _initial_params(self, layers: List[Layer], rs: np.random.RandomState
                        ) -> Optional[Dict[str, np.ndarray]]:
        """Initial parameters by name, or None for chainrule's (PyTorch's) initialisation."""
        return None

    def _architecture(self, n_features: int, n_outputs: int) -> Tuple[Any, ...]:
        raise NotImplementedError

    def _fit_kwargs(self) -> Dict[str, Any]:
        return {}

    def _encode_targets(self, y: Any, first_pass: bool, incremental: bool,
                        classes: Any) -> Tuple[np.ndarray, int]:
        """Targets as the model takes them, and the number of output units; sets
        out_activation_ (and classes_ for classifiers)."""
        raise NotImplementedError

    def _score_outputs(self, out: np.ndarray, y: Any) -> float:
        """scikit-learn's score (accuracy, R²) of the output layer's values against y."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared pieces
    def _check_params(self) -> None:
        validate_parameter_constraints(self._parameter_constraints,
                                       self.get_params(deep=False),
                                       caller_name=type(self).__name__)
        _np_dtype(self.dtype)

    def _grad_scale(self) -> float:
        """s = ∇(scikit-learn's loss) / ∇(chainrule's loss) for this output layer."""
        k = self.n_outputs_
        if self.out_activation_ == "identity":
            return k / 2.0
        return float(k) if self.out_activation_ == "logistic" else 1.0

    def _loss_scale(self) -> float:
        """scikit-learn's reported loss / chainrule's (half squared error; log-loss summed over
        logistic outputs)."""
        if self.out_activation_ == "identity":
            return 0.5
        return float(self.n_outputs_) if self.out_activation_ == "logistic" else 1.0

    def _current_lr(self) -> float:
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            # scikit-learn's fit (warm or not) makes a new optimizer, which steps at
            # learning_rate_init until its first epoch ends; partial_fit keeps its optimizer
            if getattr(self, "_fresh_optimizer", False):
                return self.learning_rate_init
            return self.learning_rate_init / (self.t_ + 1) ** self.power_t
        if self.solver == "sgd" and self.learning_rate == "adaptive":
            return self._adaptive_lr
        return self.learning_rate_init

    def _make_optimizer(self, batch: int) -> Any:
        s = self._grad_scale()
        decay = self.alpha / (s * batch)
        if self.solver == "sgd":
            # Nesterov needs a momentum in chainrule (as in PyTorch); without one it is plain SGD.
            return SGD(lr=self._current_lr() * s, momentum=self.momentum,
                       nesterov=bool(self.nesterovs_momentum and self.momentum > 0),
                       weight_decay=decay)
        return Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                    eps=self.epsilon / s, weight_decay=decay)

    def _set_optimizer(self, opt: Any, keep_state: bool) -> None:
        model = self.model_
        old: Any = model.optimizer
        if keep_state and old == opt:
            return
        if keep_state and old.kind == opt.kind:
            # A new step size or decay keeps the momentum / Adam moments (assignment resets them).
            state = model.optimizer_state()
            if opt.kind == "sgd" and opt.lr != old.lr:
                # scikit-learn's velocity holds past steps at their own step size
                # (v ← μv − η·g); PyTorch's buffer is applied at the current one (w ← w − η·b):
                # rescale b so that η_new·b is the same velocity.
                ratio = old.lr / opt.lr
                for bufs in state["params"].values():
                    if "momentum_buffer" in bufs:
                        bufs["momentum_buffer"] = bufs["momentum_buffer"] * ratio
            model.optimizer = opt
            model.load_optimizer_state(state)
        else:
            model.optimizer = opt

    def _penalty(self, n_batches: int, n_train: int) -> float:
        if self.alpha == 0:
            return 0.0
        sq = sum(float(np.dot(v.ravel(), v.ravel()))
                 for k, v in self.model_.state_dict().items() if "weight" in k)
        return 0.5 * self.alpha * sq * n_batches / n_train

    def _initialize(self, n_features: int, n_outputs: int, rs: np.random.RandomState) -> None:
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = n_outputs
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self._adaptive_lr = self.learning_rate_init
        self._reset_stopping_records()
        layers = self._build_layers(n_features, n_outputs)
        loss = {"identity": "mse", "logistic": "bce_with_logits",
                "softmax": "cross_entropy"}[self.out_activation_]
        params = self._initial_params(layers, rs)
        # The model's own generator (shuffling) is seeded from random_state after the weights;
        # the optimizer is replaced before the first step.
        model = Model(layers, loss=loss, optimizer="sgd", dtype=_np_dtype(self.dtype).name,
                      seed=int(rs.randint(np.iinfo(np.int32).max)))
        if params is not None:
            model.load_state_dict(params)
        self.model_ = model
        self._arch = self._architecture(n_features, n_outputs)
        self._best_state = model.state_dict() if self.early_stopping else None

    def _reset_stopping_records(self) -> None:
        if self.early_stopping:
            self.validation_scores_ = []
            self.validation_loss_curve_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.validation_loss_curve_ = None
            self.best_validation_score_ = None

    def _fit(self, X: Any, y: Any, incremental: bool, classes: Any = None) -> "_Network":
        self._check_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first_pass = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        X, y = self._validate_Xy(X, y, reset=first_pass)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        targets, n_outputs = self._encode_targets(y, first_pass, incremental, classes)
        rs = check_random_state(self.random_state)
        n_features = X.shape[-1]
        if first_pass:
            self._initialize(n_features, n_outputs, rs)
        else:
            arch = self._architecture(n_features, n_outputs)
            if arch != self._arch:
                raise ValueError(
                    f"{type(self).__name__} was fitted with architecture {self._arch}, and this "
                    f"{'partial_fit' if incremental else 'warm_start fit'} asks for {arch}: "
                    "the layers cannot change while the weights are kept. Set "
                    "warm_start=False (or fit a clone) to start anew.")
            if self.early_stopping != (self.validation_scores_ is not None):
                # early_stopping was switched since the last fit: its records start anew.
                self._reset_stopping_records()
                self._no_improvement_count = 0
                self._best_state = self.model_.state_dict() if self.early_stopping else None
            if not incremental:
                self._adaptive_lr = self.learning_rate_init
        self._run_epochs(X, targets, y, rs, incremental)
        return self

    def _split(self, n: int, y: Any, rs: np.random.RandomState) -> Tuple[np.ndarray, np.ndarray]:
        idx = np.arange(n)
        stratify = self._stratify_labels(y)
        if stratify is not None:
            try:
                return tuple(train_test_split(idx, random_state=rs,
                                              test_size=self.validation_fraction,
                                              stratify=stratify))
            except ValueError:  # a class too small to split: fall back to a plain split
                pass
        return tuple(train_test_split(idx, random_state=rs, test_size=self.validation_fraction))

    def _stratify_labels(self, y: Any) -> Optional[np.ndarray]:
        return None

    def _run_epochs(self, X: np.ndarray, T: np.ndarray, y: Any, rs: np.random.RandomState,
                    incremental: bool) -> None:
        model = self.model_
        if self.early_stopping:
            tr, va = self._split(len(X), y, rs)
            if len(va) < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            X_train, T_train = X[tr], T[tr]
            X_val, T_val, y_val = X[va], T[va], y[va]
        else:
            X_train, T_train = X, T
        n_train = len(X_train)
        if self.batch_size == "auto":
            batch = min(200, n_train)
        else:
            if self.batch_size > n_train:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped")
            batch = int(np.clip(self.batch_size, 1, n_train))
        n_batches = -(-n_train // batch)
        s = self._grad_scale()
        clip = None if self.clip_grad_norm is None else self.clip_grad_norm / s
        self._fresh_optimizer = not incremental
        self._set_optimizer(self._make_optimizer(batch), keep_state=incremental)
        if not incremental:
            self.n_iter_ = 0
        r = self._loss_scale()
        try:
            for it in range(self.max_iter):
                self._set_optimizer(self._make_optimizer(batch), keep_state=True)
                try:
                    hist = model.fit(X_train, T_train, epochs=1, batch_size=batch,
                                     shuffle=self.shuffle, clip_grad_norm=clip,
                                     on_nonfinite="raise", **self._fit_kwargs())
                except FloatingPointError as e:
                    raise ValueError(
                        "Solver produced non-finite parameter weights. The input data may "
                        "contain large values and need to be preprocessed; or lower "
                        f"learning_rate_init, or set clip_grad_norm. ({e})") from e
                self.n_iter_ += 1
                self.t_ += n_train
                self._fresh_optimizer = False
                self.loss_ = r * hist.history["loss"][-1] + self._penalty(n_batches, n_train)
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                if self.early_stopping:
                    self._record_validation(X_val, T_val, y_val, r)
                else:
                    best = cast(float, self.best_loss_)
                    if self.loss_ > best - self.tol:
                        self._no_improvement_count += 1
                    else:
                        self._no_improvement_count = 0
                    if self.loss_ < best:
                        self.best_loss_ = self.loss_
                if self._no_improvement_count > self.n_iter_no_change:
                    if self.early_stopping:
                        msg = ("Validation score did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    if self._trigger_stopping(msg):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if it + 1 == self.max_iter:
                    warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the "
                                  "optimization hasn't converged yet." % self.max_iter,
                                  ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if self.early_stopping and self._best_state is not None:
            model.load_state_dict(self._best_state)

    def _trigger_stopping(self, msg: str) -> bool:
        """scikit-learn's rule: stop, except that adaptive SGD first divides its step by 5."""
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._adaptive_lr <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._adaptive_lr /= 5.0
        if self.verbose:
            print(msg + " Setting learning rate to %f" % self._adaptive_lr)
        return False

    def _record_validation(self, X_val: np.ndarray, T_val: np.ndarray, y_val: Any,
                           r: float) -> None:
        model = self.model_
        out = model.predict(X_val)
        score = (self._score_outputs(out, y_val) if np.isfinite(out).all() else np.nan)
        cast(List[float], self.validation_scores_).append(score)
        cast(List[float], self.validation_loss_curve_).append(
            r * model.evaluate(X_val, T_val)["loss"])
        if self.verbose:
            print("Validation score: %f" % score)
        best = cast(float, self.best_validation_score_)
        if score < best + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > best:
            self.best_validation_score_ = score
            self._best_state = model.state_dict()

    def _input_dtype(self) -> np.dtype:
        """The dtype X is read in for prediction: the fitted network's (a dtype set since, by
        set_params, applies at the next fit, as every parameter does), else the parameter's."""
        model = self.__dict__.get("model_")
        return np.dtype(model.dtype) if model is not None else _np_dtype(self.dtype)

    def _outputs(self, X: Any) -> np.ndarray:
        """The network's output layer (logits for classifiers) for X, after validation."""
        check_is_fitted(self)
        return self.model_.predict(self._validate_X(X))

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        if model is not None:
            # chainrule's safe format: architecture, weights, optimizer and generator state as
            # tensors and JSON; unpickling runs no code from the bytes and binds no C++ object.
            state["_model_bytes"] = model.to_bytes()
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = dict(state)
        raw = state.pop("_model_bytes", None)
        super().__setstate__(state)
        if raw is not None:
            self.model_ = from_bytes(raw)


# ---------------------------------------------------------------------------------------------
# classification and regression heads
# ---------------------------------------------------------------------------------------------

class _Classifier(_Network):
    """Targets through a LabelBinarizer as in scikit-learn: two classes → one logistic unit,
    more → softmax, an indicator matrix (multilabel) → one logistic unit per label.

    It precedes ClassifierMixin in the estimators' bases, so that its tags are set after the
    mixin has created classifier_tags."""

    _label_binarizer: LabelBinarizer  # set by the first fit or partial_fit

    def _encode_targets(self, y: Any, first_pass: bool, incremental: bool,
                        classes: Any) -> Tuple[np.ndarray, int]:
        check_classification_targets(y)
        multilabel = type_of_target(y).startswith("multilabel")
        if not first_pass and hasattr(self, "_label_binarizer"):
            # scikit-learn's LabelBinarizer refuses to switch between the two kinds of target
            fitted_multilabel = self._label_binarizer.y_type_.startswith("multilabel")
            if multilabel and not fitted_multilabel:
                raise ValueError("The object was not fitted with multilabel input.")
            if fitted_multilabel and not multilabel:
                raise ValueError("The object was fitted with multilabel input; y must be a "
                                 "label indicator matrix again, got a "
                                 f"{type_of_target(y)} target.")
        if incremental and not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            lb = LabelBinarizer()
            lb.fit(y if multilabel else classes)
            unseen = [c for c in unique_labels(y) if c not in set(lb.classes_)]
            if not multilabel and unseen:  # checked before classes_ exists: a retry starts anew
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{lb.classes_}. 'y' has {unique_labels(y)}.")
            self._label_binarizer = lb
            self.classes_ = lb.classes_
        elif incremental:
            if classes is not None and not np.array_equal(self.classes_, unique_labels(classes)):
                raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                                 f"partial_fit, was: {self.classes_!r}")
            if len(np.setdiff1d(unique_labels(y), self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {unique_labels(y)}.")
        elif first_pass:
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        elif set(unique_labels(y)) != set(self.classes_):
            raise ValueError("warm_start can only be used where `y` has the same classes as in "
                             f"the previous call to fit. Previously got {self.classes_}, `y` "
                             f"has {unique_labels(y)}")
        lb = self._label_binarizer
        if lb.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
            targets = np.searchsorted(self.classes_, y).astype(np.int64)
            return targets, len(self.classes_)
        self.out_activation_ = "logistic"
        Y = lb.transform(y)
        Y = np.ascontiguousarray(Y.toarray() if hasattr(Y, "toarray") else Y,
                                 dtype=_np_dtype(self.dtype))
        return Y, Y.shape[1]

    def _stratify_labels(self, y: Any) -> Optional[np.ndarray]:
        return None if self._label_binarizer.y_type_.startswith("multilabel") else y

    def _proba(self, z: np.ndarray) -> np.ndarray:
        if self.out_activation_ == "softmax":
            return np.exp(_log_softmax(z))
        return _sigmoid(z)

    def _labels(self, z: np.ndarray) -> Any:
        p = self._proba(z)
        return self._label_binarizer.inverse_transform(p.ravel() if self.n_outputs_ == 1 else p)

    def _score_outputs(self, z: np.ndarray, y: Any) -> float:
        return float(accuracy_score(y, self._labels(z)))

    def predict(self, X: Any) -> Any:
        """Class labels for X: shape (n_samples,), or (n_samples, n_labels) for multilabel."""
        return self._labels(self._outputs(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) in the order of ``classes_``: softmax for
        multiclass, ``[σ(−z), σ(z)]`` for two classes, ``σ(z)`` per label for multilabel."""
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """``log(predict_proba(X))`` computed from the logits (log-softmax, log-sigmoid), so it
        stays finite where the probability rounds to 0."""
        z = self._outputs(X)
        if self.out_activation_ == "softmax":
            return _log_softmax(z)
        if self.n_outputs_ == 1:
            return np.hstack([_log_sigmoid(-z), _log_sigmoid(z)])
        return _log_sigmoid(z)

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None) -> Any:
        """One epoch over (X, y), keeping the weights and optimizer state.

        Args:
            sample_weight: not supported (scikit-learn's position for it, so that a call
                written for scikit-learn fails clearly instead of reading weights as classes).
            classes: every class that y may hold over all calls; needed on the first call, as
                in scikit-learn (for a multilabel indicator y the labels are its columns, and
                classes only has to be given), optional later.
        """
        _no_sample_weight(sample_weight)
        return self._fit(X, y, incremental=True, classes=classes)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class _Regressor(_Network):
    """Identity output units trained on half the squared error; y (n,) or (n, n_outputs).
    It precedes RegressorMixin in the estimators' bases (see :class:`_Classifier`)."""

    def _encode_targets(self, y: Any, first_pass: bool, incremental: bool,
                        classes: Any) -> Tuple[np.ndarray, int]:
        self.out_activation_ = "identity"
        Y = np.ascontiguousarray(y.reshape(len(y), -1), dtype=_np_dtype(self.dtype))
        return Y, Y.shape[1]

    def _score_outputs(self, out: np.ndarray, y: Any) -> float:
        return float(r2_score(y, out.ravel() if out.shape[1] == 1 else out))

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n_samples,) for one output, else (n_samples, n_outputs)."""
        out = self._outputs(X)
        return out.ravel() if out.shape[1] == 1 else out

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
        """One epoch over (X, y), keeping the weights and optimizer state (sample_weight: not
        supported, as in fit)."""
        _no_sample_weight(sample_weight)
        return self._fit(X, y, incremental=True)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


# ---------------------------------------------------------------------------------------------
# multilayer perceptrons
# ---------------------------------------------------------------------------------------------

class _MLP(_Network):
    _parameter_constraints: Dict[str, list] = {
        **_COMMON_CONSTRAINTS,
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_ACTIVATIONS)), list, tuple, Layer],
    }

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: Any = "relu", *,
                 solver: str = "adam", alpha: float = 0.0001, batch_size: Any = "auto",
                 learning_rate: str = "constant", learning_rate_init: float = 0.001,
                 power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float = 1e-4, verbose: bool = False,
                 warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: Any = 10,
                 clip_grad_norm: Optional[float] = None, dtype: Any = "float64") -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.clip_grad_norm = clip_grad_norm
        self.dtype = dtype

    def _hidden_sizes(self) -> List[int]:
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if any(not isinstance(h, (Integral, np.integer)) or isinstance(h, bool) or h <= 0
               for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {sizes}.")
        return [int(h) for h in sizes]

    def _activations(self) -> List[Any]:
        """One activation per hidden layer: a name or a chainrule activation layer."""
        sizes = self._hidden_sizes()
        acts = self.activation
        if isinstance(acts, (str, Layer)):
            acts = [acts] * len(sizes)
        acts = list(acts)
        if len(acts) != len(sizes):
            raise ValueError(f"activation has {len(acts)} entries but hidden_layer_sizes has "
                             f"{len(sizes)} layers; give one activation per hidden layer, or "
                             "a single name for all.")
        for a in acts:
            if isinstance(a, str) and a in _ACTIVATIONS:
                continue
            if isinstance(a, _ACTIVATION_LAYERS):
                continue
            raise ValueError(f"The 'activation' parameter of {type(self).__name__} must be one "
                             f"of {sorted(_ACTIVATIONS)} or a chainrule activation layer "
                             f"({', '.join(c.__name__ for c in _ACTIVATION_LAYERS)}), or a list "
                             f"of those per hidden layer. Got {a!r} instead.")
        return acts

    def _build_layers(self, n_features: int, n_outputs: int) -> List[Layer]:
        layers: List[Layer] = []
        f = n_features
        for h, a in zip(self._hidden_sizes(), self._activations()):
            layers.append(Dense(f, h))
            act = copy.deepcopy(a) if isinstance(a, Layer) else _ACTIVATIONS[a]
            if isinstance(act, type):
                act = act()
            if act is not None and not isinstance(act, Identity):
                layers.append(act)
            f = h
        layers.append(Dense(f, n_outputs))
        return layers

    def _architecture(self, n_features: int, n_outputs: int) -> Tuple[Any, ...]:
        acts = tuple(a if isinstance(a, str) else repr(a) for a in self._activations())
        return (n_features, tuple(self._hidden_sizes()), acts, n_outputs, self.out_activation_,
                _np_dtype(self.dtype).name)

    def _initial_params(self, layers: List[Layer], rs: np.random.RandomState
                        ) -> Dict[str, np.ndarray]:
        """Glorot uniform as scikit-learn draws it: per layer, coef (in, out) then intercept,
        bound √(factor / (in + out)) with factor 2 after a logistic layer, else 6."""
        acts = self._activations()
        params: Dict[str, np.ndarray] = {}
        dense = [(i, layer) for i, layer in enumerate(layers) if isinstance(layer, Dense)]
        for j, (i, layer) in enumerate(dense):
            fan_in, fan_out = int(layer.in_features), int(layer.out_features)  # type: ignore[arg-type]
            # The output layer follows the last hidden layer's rule (scikit-learn uses its one
            # activation for every layer).
            a = acts[min(j, len(acts) - 1)] if acts else self.activation
            factor = 2.0 if (isinstance(a, str) and a == "logistic") or isinstance(a, Sigmoid) \
                else 6.0
            bound = np.sqrt(factor / (fan_in + fan_out))
            coef = rs.uniform(-bound, bound, (fan_in, fan_out))
            params[f"{i}.weight"] = np.ascontiguousarray(coef.T)
            params[f"{i}.bias"] = rs.uniform(-bound, bound, fan_out)
        return params

    def _validate_Xy(self, X: Any, y: Any, reset: bool) -> Tuple[np.ndarray, Any]:
        return validate_data(self, X, y, multi_output=True, y_numeric=isinstance(self, _Regressor),
                             dtype=_np_dtype(self.dtype), reset=reset)

    def _validate_X(self, X: Any) -> np.ndarray:
        return validate_data(self, X, dtype=self._input_dtype(), reset=False)

    def _dense_names(self) -> List[Tuple[str, str]]:
        return [(f"{i}.weight", f"{i}.bias") for i, layer in enumerate(self.model_.layers)
                if isinstance(layer, Dense)]

    def _fitted_model(self, attr: str) -> Model:
        model = self.__dict__.get("model_")
        if model is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attr}' "
                                 "(it is set by fit)")
        return model

    @property
    def coefs_(self) -> List[np.ndarray]:
        """Weight matrices in scikit-learn's layout, (n_in, n_out) per layer: the transpose of
        PyTorch's (and ``model_.state_dict()``'s) weight. Copies of the current weights: edit
        them in place and nothing changes; assign a list of them (as in scikit-learn) and the
        model takes them."""
        sd = self._fitted_model("coefs_").state_dict()
        return [np.ascontiguousarray(sd[w].T) for w, _ in self._dense_names()]

    @coefs_.setter
    def coefs_(self, coefs: Any) -> None:
        self._set_layer_params("coefs_", coefs, 0, transpose=True)

    @property
    def intercepts_(self) -> List[np.ndarray]:
        """Bias vectors, (n_out,) per layer. Copies of the current biases (assignable, as
        coefs_)."""
        sd = self._fitted_model("intercepts_").state_dict()
        return [sd[b] for _, b in self._dense_names()]

    @intercepts_.setter
    def intercepts_(self, intercepts: Any) -> None:
        self._set_layer_params("intercepts_", intercepts, 1, transpose=False)

    def _set_layer_params(self, attr: str, values: Any, which: int, transpose: bool) -> None:
        """Loads one array per layer (coefs_ or intercepts_) into the model, all checked first."""
        model = self._fitted_model(attr)
        names = [pair[which] for pair in self._dense_names()]
        if isinstance(values, np.ndarray) or not hasattr(values, "__len__"):
            raise TypeError(f"{attr} must be a list of {len(names)} arrays, one per layer, got "
                            f"{type(values).__name__}")
        if len(values) != len(names):
            raise ValueError(f"{attr} must hold {len(names)} arrays, one per layer; got "
                             f"{len(values)}")
        current = getattr(self, attr)
        new = {}
        for i, (name, v, now) in enumerate(zip(names, values, current)):
            a = np.asarray(v)
            if a.shape != now.shape:  # in the caller's layout, before any transpose
                raise ValueError(f"{attr}[{i}] has shape {a.shape}, expected {now.shape} "
                                 f"({'(n_in, n_out)' if transpose else '(n_out,)'} per layer)")
            new[name] = a.T if transpose else a
        model.load_state_dict(new, strict=False)

    @property
    def n_layers_(self) -> int:
        """Layers counted as scikit-learn does: input, hidden layers, output."""
        self._fitted_model("n_layers_")
        return len(self._arch[1]) + 2

    def fit(self, X: Any, y: Any) -> Any:
        """Trains on (X, y) for up to max_iter epochs (fresh weights unless warm_start).

        Returns:
            self.
        """
        return self._fit(X, y, incremental=False)


class MLPClassifier(_Classifier, ClassifierMixin, _MLP):
    """Multi-layer perceptron classifier with scikit-learn's parameters and attributes (see the
    module docstring for the differences), trained by chainrule's C++ core.

    Args (beyond ``sklearn.neural_network.MLPClassifier``'s, whose meanings they keep):
        activation: a name ("identity", "logistic", "tanh", "relu", "leaky_relu"), a chainrule
            activation layer, or a list of those with one per hidden layer.
        clip_grad_norm: clip each step's gradient of the data loss to this global L2 norm.
        dtype: "float64" (default) or "float32".

    Attributes:
        classes_, n_features_in_, feature_names_in_, loss_, loss_curve_, best_loss_,
        validation_scores_, best_validation_score_, n_iter_, t_, coefs_, intercepts_,
        n_layers_, n_outputs_, out_activation_: as in scikit-learn.
        validation_loss_curve_: the validation loss per epoch (with early_stopping), else None.
        model_: the trained :class:`chainrule.Model`.
    """


class MLPRegressor(_Regressor, RegressorMixin, _MLP):
    """Multi-layer perceptron regressor (squared error, identity outputs) with scikit-learn's
    parameters and attributes; see :class:`MLPClassifier` for the extras.

    Args:
        loss: "squared_error", the only loss here (scikit-learn's first parameter, also
            offering "poisson", which is refused).
    """

    _parameter_constraints: Dict[str, list] = {
        **_MLP._parameter_constraints,
        "loss": [StrOptions({"squared_error"})],
    }

    def __init__(self, loss: str = "squared_error", hidden_layer_sizes: Any = (100,),
                 activation: Any = "relu", *, solver: str = "adam", alpha: float = 0.0001,
                 batch_size: Any = "auto", learning_rate: str = "constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200,
                 shuffle: bool = True, random_state: Any = None, tol: float = 1e-4,
                 verbose: bool = False, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: Any = 10,
                 clip_grad_norm: Optional[float] = None, dtype: Any = "float64") -> None:
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha,
                         batch_size=batch_size, learning_rate=learning_rate,
                         learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
                         verbose=verbose, warm_start=warm_start, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, n_iter_no_change=n_iter_no_change,
                         clip_grad_norm=clip_grad_norm, dtype=dtype)
        self.loss = loss


# ---------------------------------------------------------------------------------------------
# recurrent estimators
# ---------------------------------------------------------------------------------------------

class _RecurrentNet(_Network):
    _parameter_constraints: Dict[str, list] = {
        **_COMMON_CONSTRAINTS,
        "cell": [StrOptions(set(_CELLS))],
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "num_layers": [Interval(Integral, 1, None, closed="left")],
        "nonlinearity": [StrOptions({"tanh", "relu"})],
        "bptt_memory": [StrOptions({"all", "sqrt"}), Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, cell: str = "lstm", hidden_size: int = 32, num_layers: int = 1,
                 nonlinearity: str = "tanh", *, solver: str = "adam", alpha: float = 0.0001,
                 batch_size: Any = "auto", learning_rate: str = "constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200,
                 shuffle: bool = True, random_state: Any = None, tol: float = 1e-4,
                 verbose: bool = False, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: Any = 10,
                 clip_grad_norm: Optional[float] = None, bptt_memory: Any = "all",
                 dtype: Any = "float64") -> None:
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.nonlinearity = nonlinearity
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.clip_grad_norm = clip_grad_norm
        self.bptt_memory = bptt_memory
        self.dtype = dtype

    def _build_layers(self, n_features: int, n_outputs: int) -> List[Layer]:
        if self.cell == "rnn":
            rec = RNN(n_features, self.hidden_size, nonlinearity=self.nonlinearity,
                      num_layers=self.num_layers, return_sequences=False)
        else:
            rec = _CELLS[self.cell](n_features, self.hidden_size, num_layers=self.num_layers,
                                    return_sequences=False)
        return [rec, Dense(self.hidden_size, n_outputs)]

    def _architecture(self, n_features: int, n_outputs: int) -> Tuple[Any, ...]:
        return (n_features, self.cell, self.hidden_size, self.num_layers,
                self.nonlinearity if self.cell == "rnn" else None, n_outputs,
                self.out_activation_, _np_dtype(self.dtype).name)

    def _fit_kwargs(self) -> Dict[str, Any]:
        return {"bptt_memory": self.bptt_memory}

    def _check_sequences(self, X: Any, reset: bool) -> np.ndarray:
        X = check_array(X, allow_nd=True, ensure_2d=False,
                        dtype=_np_dtype(self.dtype) if reset else self._input_dtype(),
                        input_name="X")
        if X.ndim != 3:
            raise ValueError(
                f"Expected 3D array (n_samples, n_timesteps, n_features), got {X.ndim}D array "
                f"of shape {X.shape} instead. Reshape univariate sequences with X[:, :, None], "
                "or one-step samples with X[:, None, :].")
        if 0 in X.shape[1:]:
            raise ValueError(f"Found array with 0 time step(s) or feature(s) (shape={X.shape}) "
                             "while a minimum of 1 is required.")
        if reset:
            self.n_features_in_ = X.shape[2]
        elif X.shape[2] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[2]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input.")
        return X

    def _validate_Xy(self, X: Any, y: Any, reset: bool) -> Tuple[np.ndarray, Any]:
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, "
                             "but the target y is None.")
        X = self._check_sequences(X, reset)
        y = check_array(y, ensure_2d=False, input_name="y",
                        dtype="numeric" if isinstance(self, _Regressor) else None)
        check_consistent_length(X, y)
        return X, y

    def _validate_X(self, X: Any) -> np.ndarray:
        return self._check_sequences(X, reset=False)

    def fit(self, X: Any, y: Any) -> Any:
        """Trains on sequences X (n_samples, T, n_features) for up to max_iter epochs.

        Returns:
            self.
        """
        return self._fit(X, y, incremental=False)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags


class RNNClassifier(_Classifier, ClassifierMixin, _RecurrentNet):
    """Sequence classifier: a recurrent network (cell "rnn", "lstm" or "gru"; num_layers
    stacked) over X (n_samples, T, n_features) and a dense output layer on the last step's
    hidden state, with the MLP's training parameters and attributes (no coefs_: the weights
    are in ``model_.state_dict()``).

    Args (beyond the MLP's training parameters):
        cell: "rnn" (Elman), "lstm" or "gru". hidden_size: H. num_layers: stacked cells.
        nonlinearity: "tanh" or "relu", for cell="rnn".
        bptt_memory: what backpropagation through time keeps: "all" (every state), "sqrt"
            (a checkpoint every ~√T steps, the rest recomputed: the same gradients bit for bit
            in less memory), or a byte budget.

    Full BPTT only: chainrule's truncated BPTT (Model.fit's bptt_steps) needs a loss at every
    step, and these estimators have one loss, on the last step.

    Predictions work for any sequence length T, not only the one fitted on.
    """


class RNNRegressor(_Regressor, RegressorMixin, _RecurrentNet):
    """Sequence regressor: see :class:`RNNClassifier`; identity outputs on the last step."""
