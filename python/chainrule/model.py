"""The Model: a stack of layers, a loss and an optimizer over the C++ core.

The fundamentals, one call each::

    out = model.forward(X)     # weighted sums and activations, layer by layer
    loss = model.backward(y)   # loss, then the chain rule back through every layer
    model.step()               # w ← w − η·∇w (or the optimizer's rule)
    model.zero_grad()          # parameter gradients accumulate until zeroed

``fit`` runs the same loop over minibatches in C++, one Python call per epoch.
"""
from __future__ import annotations

import copy
import os
import functools
import secrets
import threading
import warnings
from collections import OrderedDict
from typing import (Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import numpy as np

from . import _core
from ._validation import (NotFittedError, as_numeric, check_array, check_bool,
                          check_positive_int, check_real)
from .callbacks import Callback, EarlyStopping
from ._progress import Progress
from .history import History
from .layers import Layer, Sigmoid, Softmax, _Recurrent, layer_from_config
from .losses import Loss, get_loss
from .optim import Optimizer, get_optimizer

__all__ = ["Model"]

ArrayLike = Any
_DTYPES = {"float32": np.float32, "float64": np.float64}
_ON_NONFINITE = ("raise", "stop", "ignore")
# Optimizer state buffers in the core, and the names PyTorch's optimizers give them.
_STATE_NAMES = {"sgd": {"buf": "momentum_buffer"},
                "adam": {"buf": "exp_avg", "buf2": "exp_avg_sq", "buf3": "max_exp_avg_sq"}}


def _parse_dtype(dtype: Any) -> np.dtype:
    try:
        # np.dtype(None) is float64: None would silently double the default float32's precision.
        name = np.dtype(dtype).name if dtype is not None else "None"
    except TypeError:
        name = str(dtype)
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return np.dtype(name)


def _parse_seed(seed: Any) -> int:
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}")
    s = int(seed.__index__())
    if s < 0 or s >= 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {s}")
    return s


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """R² averaged uniformly over outputs, as ``sklearn.metrics.r2_score`` (force_finite)."""
    y2 = y.reshape(-1, y.shape[-1]).astype(np.float64)
    p2 = pred.reshape(-1, pred.shape[-1]).astype(np.float64)
    ss_res = ((y2 - p2) ** 2).sum(axis=0)
    ss_tot = ((y2 - y2.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(_r2_from_sums(ss_res, ss_tot)))


def _tensor_to_numpy(what: str, t: Any) -> np.ndarray:
    """A torch tensor's values as an ndarray: bfloat16 (which NumPy lacks) widened exactly to
    float32; a tensor on the meta device (no data) refused by name."""
    t = t.detach()
    if getattr(t, "is_meta", False):
        raise ValueError(f"{what} is on the meta device: it has a shape but no values to load")
    t = t.cpu()
    if str(t.dtype) == "torch.bfloat16":
        t = t.float()
    return t.numpy()


class IncompatibleKeys(NamedTuple):
    """What :meth:`Model.load_state_dict` did not load (torch's ``_IncompatibleKeys``)."""
    missing_keys: List[str]
    unexpected_keys: List[str]


def _r2_from_sums(ss_res: np.ndarray, ss_tot: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - ss_res / ss_tot
    # A constant target: perfect predictions score 1, anything else 0 (scikit-learn's choice).
    return np.where(ss_tot > 0, r2, np.where(ss_res == 0, 1.0, 0.0))


class _UseGuard:
    """The thread contract in Python: calls that change the model (fit, forward, backward, step,
    load_state_dict, ...) take it alone, and a call from another thread meanwhile raises
    RuntimeError at once instead of waiting or interleaving (fit runs epoch by epoch when it
    has per-epoch work, so the C++ lock alone would leave gaps between epochs). Reading calls
    (predict, evaluate, state_dict, ...) run concurrently with each other. The thread that holds
    it may call anything (callbacks inside fit read and restore weights)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: Optional[int] = None
        # Counts the calls that took it: a reader spread over time (save copies one tensor at
        # a time) sees whether the model may have changed under it.
        self.generation = 0

    def enter(self) -> bool:
        me = threading.get_ident()
        if self._owner == me:
            return False  # re-entered by the owner: nothing to release
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("this model is already in use by another thread (fit, forward, "
                               "backward, step and load_state_dict need it alone); wait for "
                               "that call to finish, or use a copy of the model per thread")
        self._owner = me
        self.generation += 1
        return True

    def leave(self) -> None:
        self._owner = None
        self._lock.release()

    def check_shared(self) -> None:
        if self._lock.locked() and self._owner != threading.get_ident():
            raise RuntimeError("this model is being trained or changed by another thread; "
                               "predict and evaluate may run concurrently with each other, not "
                               "with fit or step")


def _exclusive(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: "Model", *args: Any, **kwargs: Any) -> Any:
        entered = self._guard.enter()
        try:
            return fn(self, *args, **kwargs)
        finally:
            if entered:
                self._guard.leave()
    return wrapper


def _shared(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: "Model", *args: Any, **kwargs: Any) -> Any:
        self._guard.check_shared()
        return fn(self, *args, **kwargs)
    return wrapper


def _warn_gradient_flow(profile: np.ndarray, layer: int, factor: float) -> bool:
    """Warns when ‖∂L/∂h_t‖ changes by more than factor between the last and the first step."""
    first, last = profile[-1, 0], profile[-1, -1]
    if not (np.isfinite(first) and np.isfinite(last)) or last == 0:
        return False
    ratio = first / last
    if ratio < 1.0 / factor:
        warnings.warn(f"vanishing gradient in layer {layer}: ‖∂L/∂h_t‖ falls by a factor of "
                      f"{1 / max(ratio, 1e-300):.3g} from the last time step to the first (more "
                      f"than {factor:g}); early steps barely learn. Gated cells (LSTM, GRU) keep "
                      "it flowing.", RuntimeWarning, stacklevel=3)
        return True
    if ratio > factor:
        warnings.warn(f"exploding gradient in layer {layer}: ‖∂L/∂h_t‖ grows by a factor of "
                      f"{ratio:.3g} from the last time step to the first (more than {factor:g}); "
                      "clip it with clip_grad_norm=... or lower the learning rate.",
                      RuntimeWarning, stacklevel=3)
        return True
    return False


def _is_callback(cb: Any) -> bool:
    """A Callback (or any object with its hooks), or a function f(epoch, logs)."""
    return (isinstance(cb, Callback) or callable(cb) or
            any(hasattr(cb, h) for h in ("on_train_begin", "on_epoch_end", "on_train_end")))


class Model:
    """A feedforward (or recurrent) network trained by backpropagation.

    Args:
        layers: the layers in order, e.g. ``[Dense(2, 8), Tanh(), Dense(8, 1)]``.
        loss: ``"mse"``, ``"bce"``, ``"bce_with_logits"``, ``"cross_entropy"`` or a Loss object.
        optimizer: an ``SGD(...)`` or ``Adam(...)``, or a name; default ``SGD(lr=0.01)``.
        dtype: ``"float32"`` or ``"float64"``; every array is computed in it.
        seed: seeds the model's own generator (initial weights and shuffling); None draws one.

    Raises:
        ValueError: unknown names, sizes that do not fit together, a bad dtype, a seed out of
            range.
        TypeError: layers that are not Layer objects; a seed, loss or optimizer of the wrong
            type.
    """

    def __init__(self, layers: Sequence[Layer], loss: Union[str, Loss] = "mse",
                 optimizer: Union[None, str, Optimizer] = None, dtype: Any = "float32",
                 seed: Optional[int] = None) -> None:
        self._guard = _UseGuard()
        if isinstance(layers, Layer):
            layers = [layers]
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
            raise TypeError(f"layers must be a list of Layer objects, got {type(layers).__name__}")
        layers = list(layers)
        if not layers:
            raise ValueError("a Model needs at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} must be a chainrule Layer (e.g. Dense(2, 4), Tanh()), "
                                f"got {type(layer).__name__} {layer!r}")
        self._layers: Tuple[Layer, ...] = tuple(layers)
        self._loss = get_loss(loss)
        self._optimizer = get_optimizer(optimizer)
        self.dtype = _parse_dtype(dtype)
        self.seed = _parse_seed(seed)
        self.stop_training = False
        self._net: Any = None
        self._in_features: Optional[int] = None
        self._last_out_shape: Optional[Tuple[int, ...]] = None
        self._last_in_shape: Optional[Tuple[int, ...]] = None
        self._bptt_memory: Union[str, int] = "all"
        self._has_input_grad = False  # a backward ran since the last forward
        self._warn_double_activation()
        # The input size is that of the first layer that has one (activations pass it through);
        # None there means the weights are created from the first data seen.
        known = None
        for layer in self._layers:
            if hasattr(layer, "in_features") or hasattr(layer, "input_size"):
                known = getattr(layer, "in_features", getattr(layer, "input_size", None))
                break
        if known is not None:
            self._build(int(known))

    # ------------------------------------------------------------------ construction
    def _warn_double_activation(self) -> None:
        last = self._layers[-1]
        # (A final LogSoftmax is harmless: log_softmax of log-probabilities changes nothing.)
        if self._loss.name == "cross_entropy" and isinstance(last, Softmax):
            warnings.warn("cross_entropy takes logits and applies log_softmax itself (as "
                          "torch.nn.CrossEntropyLoss); the final Softmax is applied twice. Drop "
                          "it: predict_proba applies softmax to the logits.", UserWarning,
                          stacklevel=3)
        if self._loss.name == "bce_with_logits" and isinstance(last, Sigmoid):
            warnings.warn("bce_with_logits takes logits and applies the sigmoid itself; the final "
                          "Sigmoid is applied twice. Drop it, or use loss='bce'.", UserWarning,
                          stacklevel=3)

    def _layer_specs(self, in_features: int) -> List[Dict[str, Any]]:
        specs, f = [], in_features
        for layer in self._layers:
            specs.append(layer.spec(f))
            f = layer.output_features(f)
        return specs

    def _build(self, in_features: int) -> None:
        specs = self._layer_specs(in_features)
        cls = _core.Network32 if self.dtype == np.float32 else _core.Network64
        self._opt_config = self._optimizer._core_config()
        self._net = cls(specs, in_features, self._loss.name, self._loss.reduction,
                        self._opt_config, self.seed)
        self._in_features = in_features

    def _sync_optimizer(self) -> None:
        """Passes hyper-parameters assigned since the last step (``optimizer.lr = ...``) to the
        core, keeping the optimizer's state."""
        cfg = self._optimizer._core_config()
        if self._net is not None and cfg != self._opt_config:
            self._optimizer._validate()
            self._net.set_optimizer_hyperparameters(cfg)
            self._opt_config = cfg

    def _require_net(self) -> Any:
        if self._net is None:
            raise NotFittedError(
                "This Model instance has no weights yet: its first layer does not state its "
                "input size, so the weights are created by the first fit() or forward(). Call "
                "fit with appropriate arguments before using this model, or give the first "
                "layer its input size.")
        return self._net

    # ------------------------------------------------------------------ properties
    @property
    def layers(self) -> Tuple[Layer, ...]:
        """The layers, in order."""
        return self._layers

    @property
    def loss(self) -> Loss:
        """The loss the model trains on."""
        return self._loss

    @loss.setter
    def loss(self, loss: Union[str, Loss]) -> None:
        new = get_loss(loss)
        if self._net is not None:
            self._net.set_loss(new.name, new.reduction)
        self._loss = new

    @property
    def optimizer(self) -> Optimizer:
        """The optimizer. Assigning a new one resets its state (momentum, Adam moments);
        changing its hyper-parameters in place (``model.optimizer.lr = 0.01``, e.g. from a
        callback between epochs) keeps the state and applies from the next step, as changing a
        torch param_group's values does."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer: Union[str, Optimizer]) -> None:
        new = get_optimizer(optimizer)
        if self._net is not None:
            self._opt_config = new._core_config()
            self._net.set_optimizer(self._opt_config)
        self._optimizer = new

    @property
    def n_features_in(self) -> Optional[int]:
        """Input features per sample (per time step), or None before the first data."""
        return self._in_features

    @property
    def is_classifier(self) -> bool:
        """True for classification losses (bce, bce_with_logits, cross_entropy)."""
        return self._loss.is_classification

    def parameter_names(self) -> List[str]:
        """Parameter names in order, as in a PyTorch state dict."""
        return list(self._require_net().param_names())

    @property
    def num_parameters(self) -> int:
        """Total number of trainable scalars."""
        net = self._require_net()
        return int(sum(np.prod(net.param_shape(n)) for n in net.param_names()))

    def __repr__(self) -> str:
        lines = []
        f = self._in_features  # once built, a layer that inferred its input size shows it
        for i, layer in enumerate(self._layers):
            shown = layer
            for attr in ("in_features", "input_size"):
                if f is not None and hasattr(layer, attr) and getattr(layer, attr) is None:
                    shown = copy.copy(layer)
                    setattr(shown, attr, f)
            lines.append(f"  ({i}): {shown!r}")
            f = None if f is None else layer.output_features(f)
        return ("Model(\n" + "\n".join(lines) + f"\n  loss={self._loss!r}, "
                f"optimizer={self._optimizer!r}, dtype={self.dtype.name}\n)")

    # ------------------------------------------------------------------ input handling
    def _check_X(self, X: ArrayLike, name: str = "X",
                 rows: Optional[int] = None) -> Tuple[np.ndarray, int]:
        """X as a C-contiguous array of the model's dtype, and its time length (0: none).

        rows: how many samples' activations the caller holds at once (None: all of them, as
        forward does; fit holds a batch, predict a chunk).
        """
        ndims = self._input_ndims()
        raw = as_numeric(X, name)
        if ndims == (3,) and raw.ndim == 2:
            raise ValueError(f"Expected 3D array (batch, time, features) for a recurrent model, got "
                             f"2D array of shape {raw.shape} instead. Reshape a single sequence "
                             f"with X[None] or a batch of one-step sequences with X[:, None, :].")
        if raw.ndim == 3 and raw.shape[0] > 0 and raw.shape[1] == 0:
            raise ValueError(f"{name} holds sequences of length 0 (shape={raw.shape}); a sequence "
                             "needs at least one time step")
        self._check_memory(raw, name, rows)
        x = check_array(raw, self.dtype, name=name, ndims=ndims)
        features = x.shape[-1]
        if self._net is None:
            self._build(features)
        elif features != self._in_features:
            raise ValueError(f"{name} has {features} features, but Model is expecting "
                             f"{self._in_features} features as input.")
        time = x.shape[1] if x.ndim == 3 else 0
        return x, time

    def _check_memory(self, raw: np.ndarray, name: str, rows: Optional[int]) -> None:
        """MemoryError before X is converted, when X and the activations of `rows` samples
        cannot fit in the memory available: a broadcast view of (1, 10**9, 1) costs its caller
        nothing, but its copy and a forward through it would take gigabytes (the core refuses
        too, but only after the copy)."""
        if raw.ndim not in (2, 3) or 0 in raw.shape:
            return  # check_array says what is wrong with it
        n, time, f = raw.shape[0], raw.shape[1] if raw.ndim == 3 else 1, raw.shape[-1]
        per_sample = time * f  # elements at every layer boundary, plus recurrent states
        try:
            for layer in self._layers:
                f = layer.output_features(f)
                if isinstance(layer, _Recurrent):
                    gates = {"LSTM": 4, "GRU": 3}.get(type(layer).__name__, 1)
                    per_sample += time * f * (gates + 2) * layer.num_layers
                    time = time if layer.return_sequences else 1
                per_sample += time * f
        except ValueError:
            return  # sizes that do not chain: building the network says so
        held = n if rows is None else min(n, rows)
        need = (raw.size + held * per_sample) * self.dtype.itemsize
        avail = int(_core.available_memory()) if need >= 64 << 20 else 0
        if avail and need + (64 << 20) > avail:
            raise MemoryError(
                f"{name} of shape {raw.shape} needs about {need / 2**30:.3g} GiB (a "
                f"{self.dtype.name} copy of it and the activations of {held} sample(s)), but only "
                f"{avail / 2**30:.3g} GiB of memory is available; pass fewer or shorter "
                "sequences at a time, or a smaller batch_size")

    def _input_ndims(self) -> Tuple[int, ...]:
        return (3,) if self._recurrent_indices() else (2, 3)

    def _recurrent_indices(self) -> List[int]:
        return [i for i, layer in enumerate(self._layers) if isinstance(layer, _Recurrent)]

    def _output_shape(self, n: int, time: int) -> Tuple[int, ...]:
        t, f = self._net.output_shape(time)
        return (n, t, f) if t > 0 else (n, f)

    def _check_y(self, y: ArrayLike, out_shape: Tuple[int, ...]
                 ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """Targets as (float targets, None) or (None, int64 class indices)."""
        if y is None:
            raise TypeError("y must be an array-like of targets, got None")
        raw = as_numeric(y, "y")
        # Integers become int64. Float class labels are checked in float64 (2.0000001 must not
        # round to a whole float32); float regression targets go straight to the model's dtype,
        # checked once there (a float32 round trip through float64 cost 10 ms per fit call on
        # the wide benchmark's 4096 x 1024 targets).
        if raw.dtype == np.uint64:  # int64 would wrap values from 2**63: range-check them as is
            target: Any = np.uint64 if self._loss.name == "cross_entropy" else self.dtype
        elif raw.dtype.kind in "biu":
            target = np.int64
        elif self._loss.name == "cross_entropy":
            target = np.float64
        else:
            target = self.dtype
        a = check_array(raw, target, name="y", ndims=(1, 2, 3), allow_empty=True)
        n, C = out_shape[0], out_shape[-1]
        if len(a) != n:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"[{n}, {len(a)}]")
        if self._loss.name == "cross_entropy":
            if a.shape == out_shape[:-1] + (1,) and C > 1:
                a = a.reshape(out_shape[:-1])
            if a.shape == out_shape[:-1]:
                if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
                    raise ValueError("Unknown label type: 'continuous'. cross_entropy needs class "
                                     "indices (integers) of shape "
                                     f"{out_shape[:-1]} or class probabilities of shape "
                                     f"{out_shape}.")
                # Range check before the cast: 1e30 would become int64's minimum.
                lo, hi = a.min(), a.max()
                if lo < 0 or hi >= C:
                    bad = lo if lo < 0 else hi
                    raise ValueError(f"y contains class {bad}, but the model's output has {C} "
                                     f"classes (expected 0 <= y < {C}).")
                return None, np.ascontiguousarray(a, dtype=np.int64)
            if a.shape != out_shape:
                raise ValueError(f"y has shape {a.shape}, but cross_entropy expects class "
                                 f"indices of shape {out_shape[:-1]} or class probabilities of "
                                 f"shape {out_shape} for this model's output.")
            return np.ascontiguousarray(a, dtype=self.dtype), None
        if a.shape == out_shape[:-1] and C == 1:
            a = a.reshape(out_shape)
        if a.shape != out_shape:
            raise ValueError(f"y has shape {a.shape}, but the model's output for this X has shape "
                             f"{out_shape}; they must match for the {self._loss.name!r} loss.")
        yf = np.ascontiguousarray(a, dtype=self.dtype)  # from int64: finite (|y| < 2^63)
        lo, hi = (yf.min(), yf.max()) if self._loss.name == "bce" and yf.size else (0, 1)
        if not (lo >= 0 and hi <= 1):
            bad = lo if lo < 0 else hi
            raise ValueError(f"y contains {bad}, but the 'bce' loss expects targets in [0, 1] "
                             "(probabilities or 0/1 labels).")
        return yf, None

    # ------------------------------------------------------------------ fundamentals
    @_exclusive
    def forward(self, X: ArrayLike, initial_state: Any = None,
                bptt_memory: Union[None, str, int] = None) -> np.ndarray:
        """Forward pass, layer by layer: ``a₀ = X, aₗ = fₗ(aₗ₋₁)``; keeps what backward needs.

        Args:
            X: inputs (n_samples, n_features), or (n_samples, T, n_features) for sequences.
            initial_state: for a recurrent model, h0 of shape (num_layers, n_samples, hidden)
                (PyTorch's layout; (n_samples, hidden) is accepted for one layer), or (h0, c0)
                for an LSTM; a dict {layer index: state} for several recurrent layers. None:
                zeros.
            bptt_memory: what the following backward keeps: "all" (every state), "sqrt"
                (a checkpoint every ~√T steps, segments recomputed; bitwise the same
                gradients), or a budget in bytes ("all" when it fits, else "sqrt"; compared with
                :meth:`bptt_workspace`'s count for "all"). None: the model's
                :attr:`bptt_memory`.

        Returns:
            The output of the last layer, (n_samples, out) or (n_samples, T, out).
        """
        x, time = self._check_X(X)
        self._apply_bptt_memory(bptt_memory)
        self._apply_initial_state(initial_state, len(x))
        # A forward that fails in the core leaves no tape there (not half of one): nor here.
        self._last_out_shape = None
        self._has_input_grad = False
        out = self._net.forward(x, x.shape[0], time)
        self._last_out_shape = self._output_shape(x.shape[0], time)
        self._has_input_grad = False
        self._last_in_shape = x.shape
        return out.reshape(self._last_out_shape)

    __call__ = forward

    @_exclusive
    def backward(self, y: Optional[ArrayLike] = None, *,
                 grad_output: Optional[ArrayLike] = None) -> Optional[float]:
        """Backward pass by the chain rule, from the last layer to the first.

        With ``y``: computes the loss of the last forward output against y and its gradient,
        then ``∂L/∂aₗ₋₁ = fₗ'ᵀ · ∂L/∂aₗ`` layer by layer, accumulating (+=) every parameter's
        gradient. With ``grad_output``: starts from a caller-computed ``∂L/∂output``.

        Returns:
            The loss (with y), or None (with grad_output).

        Raises:
            RuntimeError: no forward() ran before, or the weights changed since it (a step(),
                load_state_dict() or another write: its tape belongs to the old weights).
            ValueError: targets that do not fit.
        """
        if (y is None) == (grad_output is None):
            raise TypeError("backward takes exactly one of y (targets) or grad_output "
                            "(dL/d output)")
        if self._last_out_shape is None:
            raise RuntimeError("backward() needs a forward() first: call model.forward(X)")
        if grad_output is not None:
            g = check_array(grad_output, self.dtype, name="grad_output", ndims=(1, 2, 3))
            if g.shape != self._last_out_shape:
                raise ValueError(f"grad_output has shape {g.shape}, but the last forward output "
                                 f"has shape {self._last_out_shape}")
            self._net.backward_grad(g)
            self._has_input_grad = True
            return None
        yf, yi = self._check_y(y, self._last_out_shape)
        loss = float(self._net.backward_loss(yf, yi))
        self._has_input_grad = True
        return loss

    @property
    def input_grad(self) -> np.ndarray:
        """``∂L/∂X`` from the last backward, shaped like the last forward's input."""
        if self._last_out_shape is None or not self._has_input_grad:
            # The core's buffer holds the last backward's dL/dX, possibly of another batch size.
            raise RuntimeError("input_grad needs a forward() and then a backward() first")
        # Shaped like the input, not the output: a recurrent layer with return_sequences=False
        # takes (n, T, F) and gives (n, H).
        return self._net.input_grad().reshape(self._last_in_shape)

    @property
    @_shared
    def grads(self) -> Dict[str, np.ndarray]:
        """``∂L/∂θ`` for every parameter (copies), keyed like :meth:`state_dict`."""
        net = self._require_net()
        return OrderedDict((n, net.get(n, "grad")) for n in net.param_names())

    @_exclusive
    def zero_grad(self) -> None:
        """Sets every parameter gradient to zero (they accumulate across backward calls)."""
        self._require_net().zero_grad()

    @_exclusive
    def step(self) -> None:
        """One optimizer update of every parameter from its gradient: plain SGD is
        ``w ← w − η·∇w``. Hyper-parameters assigned since the last step
        (``model.optimizer.lr = 0.01``) apply from this one on."""
        net = self._require_net()
        self._sync_optimizer()
        net.step()

    @_exclusive
    def clip_grad_norm(self, max_norm: float, norm_type: float = 2.0,
                       error_if_nonfinite: bool = False) -> float:
        """Scales all gradients by ``min(1, max_norm / (‖g‖ + 1e-6))``, ‖g‖ the global norm.

        Returns:
            The global norm before clipping (torch.nn.utils.clip_grad_norm_'s formula).

        Raises:
            FloatingPointError: the norm is NaN or inf and error_if_nonfinite is set.
        """
        max_norm = check_real("max_norm", max_norm)
        if not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}")
        if isinstance(norm_type, str) and norm_type.lower() in ("inf", "+inf"):
            norm_type = float("inf")  # torch.nn.utils.clip_grad_norm_ takes 'inf' too
        norm_type = check_real("norm_type", norm_type)
        if not norm_type > 0:
            raise ValueError(f"norm_type must be > 0 or inf, got {norm_type}")
        return float(self._require_net().clip_grad_norm(max_norm, norm_type,
                                                        check_bool("error_if_nonfinite",
                                                                   error_if_nonfinite)))

    @_exclusive
    def clip_grad_value(self, clip_value: float) -> None:
        """Clamps every gradient element to ``[-clip_value, clip_value]``."""
        clip_value = check_real("clip_value", clip_value)
        if not clip_value > 0:
            raise ValueError(f"clip_value must be > 0, got {clip_value}")
        self._require_net().clip_grad_value(clip_value)

    # ------------------------------------------------------------------ recurrent layers
    @property
    def bptt_memory(self) -> Union[str, int]:
        """What backpropagation through time keeps: "all", "sqrt", or a byte budget."""
        return self._bptt_memory

    @bptt_memory.setter
    def bptt_memory(self, value: Union[str, int]) -> None:
        self._bptt_memory = self._parse_bptt_memory(value)

    @staticmethod
    def _parse_bptt_memory(value: Union[str, int]) -> Union[str, int]:
        if isinstance(value, str):
            if value not in ("all", "sqrt"):
                raise ValueError(f"bptt_memory must be 'all', 'sqrt' or a byte budget, got "
                                 f"{value!r}")
            return value
        if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) <= 0:
            raise ValueError(f"bptt_memory must be 'all', 'sqrt' or a positive byte budget, "
                             f"got {value!r}")
        return min(int(value), 2**63 - 1)  # beyond any machine's memory: always "all"

    def _apply_bptt_memory(self, value: Union[None, str, int]) -> None:
        mode = self._bptt_memory if value is None else self._parse_bptt_memory(value)
        if isinstance(mode, str):
            self._net.set_bptt_memory(mode, 0)
        else:
            self._net.set_bptt_memory("all", mode)

    def _rec(self, i: int) -> _Recurrent:
        layer = self._layers[i]
        assert isinstance(layer, _Recurrent), f"layer {i} is not recurrent"
        return layer

    def _recurrent_layer(self, layer: Optional[int]) -> int:
        rec = self._recurrent_indices()
        if not rec:
            raise ValueError("this model has no recurrent layer")
        if layer is None:
            return rec[0]
        if isinstance(layer, (bool, np.bool_)) or not hasattr(layer, "__index__"):
            raise TypeError(f"layer must be an int index into the model's layers, got "
                            f"{type(layer).__name__} {layer!r}")
        i = int(layer.__index__())
        if -len(self._layers) <= i < 0:  # counted from the end, as a list index is
            i += len(self._layers)
        if i not in rec:
            raise ValueError(f"layer {i} is not recurrent; the recurrent layers are {rec}")
        return i

    def _apply_initial_state(self, initial_state: Any, batch: int) -> None:
        rec = self._recurrent_indices()
        for i in rec:
            self._net.set_initial_state(i, None, None)
        if initial_state is None:
            return
        if not rec:
            raise ValueError("initial_state is for recurrent layers; this model has none")
        states = initial_state if isinstance(initial_state, dict) else {rec[0]: initial_state}
        for i, state in states.items():
            i = self._recurrent_layer(i)
            layer = self._rec(i)
            is_lstm = type(layer).__name__ == "LSTM"
            if is_lstm:
                if not isinstance(state, (tuple, list)) or len(state) != 2:
                    raise ValueError("an LSTM's initial_state is a pair (h0, c0)")
                h0, c0 = state
            else:
                h0, c0 = state, None
            want = (layer.num_layers, batch, layer.hidden_size)
            arrays: List[Optional[np.ndarray]] = []
            for name, a in (("h0", h0), ("c0", c0)):
                if a is None:
                    arrays.append(None)
                    continue
                a = check_array(a, self.dtype, name=name, ndims=(2, 3))
                if a.ndim == 2 and layer.num_layers == 1:
                    a = a[None]
                if a.shape != want:
                    raise ValueError(f"{name} has shape {a.shape}, but layer {i} ({layer!r}) with "
                                     f"this batch expects (num_layers, batch, hidden_size) = {want}")
                arrays.append(np.ascontiguousarray(a))
            self._net.set_initial_state(i, arrays[0], arrays[1])

    def _recurrent_info(self, layer: Optional[int]) -> Tuple[int, Dict[str, Any]]:
        i = self._recurrent_layer(layer)
        info = self._require_net().recurrent_info(i)
        if info["steps"] == 0:
            raise RuntimeError("no forward has run through the recurrent layer yet")
        return i, info

    @_shared
    def final_state(self, layer: Optional[int] = None) -> Any:
        """The final state of a recurrent layer after the last forward: h_n of shape
        (num_layers, batch, hidden), or (h_n, c_n) for an LSTM (PyTorch's layout)."""
        i, info = self._recurrent_info(layer)
        shape = (self._rec(i).num_layers, info["batch"], self._rec(i).hidden_size)
        h = info["hn"].reshape(shape)
        return (h, info["cn"].reshape(shape)) if info["cn"] is not None else h

    @_shared
    def initial_state_grad(self, layer: Optional[int] = None) -> Any:
        """``∂L/∂h0`` (and ``∂L/∂c0`` for an LSTM) from the last backward, shaped like h0."""
        i, info = self._recurrent_info(layer)
        if info["dh0"] is None:
            raise RuntimeError("initial_state_grad needs a backward() after the last forward()")
        shape = (self._rec(i).num_layers, info["batch"], self._rec(i).hidden_size)
        h = info["dh0"].reshape(shape)
        return (h, info["dc0"].reshape(shape)) if info["dc0"] is not None else h

    @_shared
    def timestep_grad_norms(self, layer: Optional[int] = None) -> np.ndarray:
        """Per-timestep gradient norms ``‖∂L/∂h_t‖`` (over the batch) from the last backward,
        shape (num_layers, T): where they shrink towards t = 0 the gradient vanishes, where they
        grow it explodes."""
        i, info = self._recurrent_info(layer)
        norms = np.asarray(info["step_norms"], dtype=np.float64)
        if norms.size == 0:
            raise RuntimeError("timestep_grad_norms needs a backward() after the last forward()")
        return norms.reshape(self._rec(i).num_layers, info["steps"])

    @_shared
    def bptt_workspace(self, layer: Optional[int] = None) -> Dict[str, Any]:
        """Bytes the last BPTT of a recurrent layer held: ``{"workspace_bytes",
        "peak_workspace_bytes", "memory"}``.

        Counted: the states and gates ("all": every step's; "sqrt": the state every ⌈√T⌉
        steps and one segment's states and gates), one segment's scratch and gate gradients,
        and with ``num_layers > 1`` the (T, batch, hidden) sequence between each two stacked
        cells ("all" among its states, "sqrt" as a copy) and that sequence's gradient (which
        fit, in "sqrt", writes over the copy). Not counted, as they are the model's data rather
        than BPTT's: the layer's input, its output and their gradients, one buffer each at most
        (fit writes the output's gradient over the output, and reads the input where the layer
        below left it).
        """
        _, info = self._recurrent_info(layer)
        return {k: info[k] for k in ("workspace_bytes", "peak_workspace_bytes", "memory")}

    # ------------------------------------------------------------------ parameters
    @_shared
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters as name → array (copies), with PyTorch's names and shapes
        (``"0.weight"`` (out, in), ``"0.bias"`` (out), ...)."""
        net = self._require_net()
        return OrderedDict((n, net.get(n, "value")) for n in net.param_names())

    @_exclusive
    def load_state_dict(self, state_dict: Dict[str, Any],
                        strict: bool = True) -> "IncompatibleKeys":
        """Loads parameters from a dict of name → array (a PyTorch state dict loads unchanged).

        Every name and shape is checked before anything changes; the first mismatch is named.

        Returns:
            ``IncompatibleKeys(missing_keys, unexpected_keys)``, as torch's load_state_dict: the
            names left out (kept at their values) and the names ignored, both empty with strict.

        Raises:
            ValueError: missing or unexpected names (with strict), a wrong shape, non-finite values.
        """
        net = self._require_net()
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of name -> array, got "
                            f"{type(state_dict).__name__}")
        names = list(net.param_names())
        missing = [n for n in names if n not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in names]
        if strict and missing:
            raise ValueError(f"state_dict is missing parameter {missing[0]!r} (expected "
                             f"{names}); missing: {missing}")
        if strict and unexpected:
            raise ValueError(f"state_dict has unexpected parameter {unexpected[0]!r} (expected "
                             f"{names})")
        staged = []
        for n in names:
            if n not in state_dict:
                continue
            staged.append((n, self._param_array(repr(n), state_dict[n], net.param_shape(n))))
        for n, a in staged:
            net.set(n, "value", a)
        return IncompatibleKeys(missing, unexpected)

    def _param_array(self, what: str, v: Any, shape: Sequence[int],
                     nonnegative: bool = False) -> np.ndarray:
        """v (an array, nested lists, a torch tensor) as a finite array of the model's dtype
        and the given shape, for a parameter or an optimizer buffer named by what."""
        want = tuple(shape)
        if hasattr(v, "detach"):  # a torch tensor
            v = _tensor_to_numpy(what, v)
        try:
            a = np.asarray(v)
        except ValueError:  # ragged nested lists
            raise ValueError(f"{what} must be an array of shape {want}, got a ragged "
                             f"{type(v).__name__}") from None
        if a.shape != want:
            raise ValueError(f"size mismatch for {what}: got shape {a.shape}, expected {want}")
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{what} must hold real numbers, got dtype {a.dtype}")
        a = np.ascontiguousarray(a, dtype=self.dtype)
        if not np.isfinite(a).all():
            raise ValueError(f"{what} contains NaN or infinity")
        if nonnegative and (a < 0).any():
            raise ValueError(f"{what} must be >= 0 (a mean of squares), got a minimum of "
                             f"{a.min()!r}")
        return a

    # ------------------------------------------------------------------ training
    @_exclusive
    def fit(self, X: ArrayLike, y: ArrayLike, epochs: int = 1, batch_size: Optional[int] = 32,
            shuffle: bool = True, validation_split: float = 0.0,
            validation_data: Optional[Tuple[ArrayLike, ArrayLike]] = None,
            early_stopping: Union[None, int, EarlyStopping] = None,
            clip_grad_norm: Optional[float] = None, clip_grad_value: Optional[float] = None,
            callbacks: Optional[Sequence[Union[Callback, Callable[..., Any]]]] = None,
            verbose: int = 0, on_nonfinite: str = "raise", bptt_steps: Optional[int] = None,
            stateful: bool = False, bptt_memory: Union[None, str, int] = None,
            record_grad_norms: bool = False, grad_norm_warn_factor: float = 1e3) -> History:
        """Trains by minibatch gradient descent: for each batch, forward, loss, backward,
        clipping, optimizer step. The loop runs in C++ with the GIL released; Ctrl-C raises
        KeyboardInterrupt within a fraction of a second and leaves the last completed step.

        Args:
            X: (n_samples, n_features) or (n_samples, T, n_features).
            y: targets: like the output, or class indices for cross_entropy.
            epochs: passes over the data (≥ 0).
            batch_size: samples per step (None: the whole set in one batch).
            shuffle: reshuffle the samples every epoch with the model's generator.
            validation_split: the last fraction of X, y held out (before shuffling) for
                validation, in [0, 1).
            validation_data: (X_val, y_val); overrides validation_split.
            early_stopping: None, a patience (int), or an EarlyStopping.
            clip_grad_norm: clip every step's gradients to this global norm.
            clip_grad_value: clamp every gradient element to ±this.
            callbacks: Callback objects, or functions ``f(epoch, logs)``; either may return
                True to stop.
            verbose: 0 silent; 1 a progress bar with the running loss when stderr is a terminal
                (tqdm if installed), silent otherwise; 2 a line per epoch on stdout.
            on_nonfinite: on a NaN/inf loss or gradient, or an optimizer step that would make
                a weight or its optimizer state NaN/inf (a learning rate times a gradient
                beyond the dtype's range), "raise" FloatingPointError, "stop" with the last
                finite weights and a warning, or "ignore" (which checks loss and gradients
                only, and steps on regardless).
            bptt_steps: truncated BPTT: cut each minibatch of sequences into chunks of this many
                steps, carry the recurrent state (detached) from chunk to chunk, one loss,
                backward and step per chunk. None: full BPTT.
            stateful: carry the recurrent state across minibatches too: sample i of a batch
                continues sample i of the previous one, so the batches must be of equal size
                and, when an epoch has more than one, shuffle=False (else ValueError).
            bptt_memory: "all", "sqrt" or a byte budget (see :meth:`forward`).
            record_grad_norms: record each epoch's mean per-timestep gradient norms
                ``‖∂L/∂h_t‖`` in ``history.timestep_grad_norms[layer]``, and warn when they
                shrink or grow by more than ``grad_norm_warn_factor`` across the sequence.

        Returns:
            A History of the per-epoch loss, metric and validation values.
        """
        epochs = check_positive_int("epochs", epochs, allow_zero=True)
        shuffle = check_bool("shuffle", shuffle)
        stateful = check_bool("stateful", stateful)
        record_grad_norms = check_bool("record_grad_norms", record_grad_norms)
        steps = (0 if bptt_steps is None else
                 check_positive_int("bptt_steps", bptt_steps, clamp=True))
        if (steps or stateful or record_grad_norms) and not self._recurrent_indices():
            raise ValueError("bptt_steps, stateful and record_grad_norms are for models with a "
                             "recurrent layer (RNN, LSTM, GRU)")
        warn_factor = check_real("grad_norm_warn_factor", grad_norm_warn_factor)
        if not warn_factor > 1:
            raise ValueError(f"grad_norm_warn_factor must be > 1, got {grad_norm_warn_factor!r}")
        if on_nonfinite not in _ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {_ON_NONFINITE}, got {on_nonfinite!r}")
        rows = (batch_size if isinstance(batch_size, int) and not isinstance(batch_size, bool)
                else None)
        x, time = self._check_X(X, rows=rows)
        out_shape = self._output_shape(x.shape[0], time)
        yf, yi = self._check_y(y, out_shape)
        batch = (x.shape[0] if batch_size is None else
                 check_positive_int("batch_size", batch_size, clamp=True))
        batch = min(batch, x.shape[0])  # the core clamps too, but takes only 64-bit sizes
        max_norm = 0.0 if clip_grad_norm is None else check_real("clip_grad_norm", clip_grad_norm)
        clip_value = (0.0 if clip_grad_value is None else
                      check_real("clip_grad_value", clip_grad_value))
        if clip_grad_norm is not None and not max_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0, got {clip_grad_norm!r}")
        if clip_grad_value is not None and not clip_value > 0:
            raise ValueError(f"clip_grad_value must be > 0, got {clip_grad_value!r}")

        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            xv, tv = self._check_X(validation_data[0], name="X_val", rows=1)
            val = (xv, tv) + self._check_y(validation_data[1], self._output_shape(len(xv), tv))
        elif validation_split:
            vs = check_real("validation_split", validation_split)
            if not 0.0 <= vs < 1.0:
                raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
            n_val = int(len(x) * vs)
            if n_val == 0 or n_val == len(x):
                raise ValueError(f"validation_split={vs} of {len(x)} samples leaves "
                                 f"{n_val} for validation and {len(x) - n_val} for training; "
                                 "both need at least one")
            cut = len(x) - n_val
            val = (x[cut:], time, None if yf is None else yf[cut:],
                   None if yi is None else yi[cut:])
            x = x[:cut]
            yf = None if yf is None else yf[:cut]
            yi = None if yi is None else yi[:cut]

        batch = min(batch, len(x))  # after the validation split: the rows left to train on
        if stateful and shuffle and batch < len(x):
            raise ValueError(f"stateful=True continues sample i of a batch in row i of the next "
                             f"batch, which shuffling would break ({len(x)} training samples in "
                             f"batches of {batch}): pass shuffle=False with stateful=True")
        if stateful and len(x) % batch:
            raise ValueError(
                f"stateful=True continues sample i of a batch in row i of the next, so every batch "
                f"needs batch_size={batch} samples; got {len(x)} training samples, which leaves a "
                f"last batch of {len(x) % batch}. Use a batch_size that divides {len(x)}, or drop "
                f"the last {len(x) % batch} samples.")
        if callbacks is None:
            cbs: List[Any] = []
        elif _is_callback(callbacks):
            cbs = [callbacks]  # one callback without the list around it
        else:
            try:
                cbs = list(callbacks)
            except TypeError:
                raise TypeError(f"callbacks must be a list of Callback objects or functions "
                                f"f(epoch, logs), got {type(callbacks).__name__}") from None
        for cb in cbs:  # before any step: a bad entry would otherwise fail after epoch 1
            if not _is_callback(cb):
                raise TypeError(f"callbacks must be Callback objects or functions f(epoch, logs), "
                                f"got {type(cb).__name__} {cb!r}")
        stopper: Optional[EarlyStopping] = None
        if early_stopping is not None:
            stopper = (early_stopping if isinstance(early_stopping, EarlyStopping)
                       else EarlyStopping(patience=early_stopping))
            cbs.append(stopper)
        else:  # given among the callbacks, as Keras users do: report it the same way
            stopper = next((cb for cb in cbs if isinstance(cb, EarlyStopping)), None)
        metric = "accuracy" if self.is_classifier else "r2"
        progress = Progress(verbose, epochs)  # checks verbose: every check before any change
        self._optimizer._validate()
        self._apply_bptt_memory(bptt_memory)
        history = History()
        self.stop_training = False
        # fit's batches overwrite the forward tape: a later backward needs a new forward.
        self._last_out_shape = None
        self._has_input_grad = False
        for cb in cbs:
            if hasattr(cb, "on_train_begin"):
                cb.on_train_begin(self)
        # Without per-epoch work in Python, all epochs run in one C++ call.
        per_epoch = bool(val is not None or cbs or progress.active)
        layer_cells = {i: self._rec(i).num_layers for i in self._recurrent_indices()}
        warned = False
        nonfinite_stop = False  # on_nonfinite="stop" keeps the last finite weights
        try:
            with progress:
                epoch = 0
                while epoch < epochs:
                    self._sync_optimizer()  # a callback may have set a new learning rate
                    cols = self._net.fit_epochs(
                        x, yf, yi, len(x), time, 1 if per_epoch else epochs - epoch, batch,
                        bool(shuffle), max_norm, 2.0, False, clip_value, on_nonfinite != "ignore",
                        steps, bool(stateful), bool(record_grad_norms))
                    logs_cols = self._epoch_logs(cols, metric, max_norm > 0)
                    for layer, norms in cols["step_norms"].items():
                        for row in norms:
                            profile = row.reshape(layer_cells[layer], time)
                            history.timestep_grad_norms.setdefault(layer, []).append(profile)
                            if not warned:
                                warned = _warn_gradient_flow(profile, layer, warn_factor)
                    bad = np.flatnonzero(cols["nonfinite_batch"] >= 0)
                    if bad.size and history.nonfinite is None:
                        history.nonfinite = (epoch + int(bad[0]), int(cols["nonfinite_batch"][bad[0]]))
                    stopped = bool(cols["stopped"].size and cols["stopped"][-1])
                    done = len(cols["loss_sum"])
                    if stopped:
                        nonfinite_stop = True
                        last = done - 1
                        where = (f"epoch {epoch + last + 1}, batch "
                                 f"{int(cols['nonfinite_batch'][last]) + 1}")
                        bad_loss = float(cols["nonfinite_loss"][last])
                        if not np.isfinite(bad_loss):
                            what = f"non-finite loss ({bad_loss})"
                        elif cols["nonfinite_update"][last]:
                            what = (f"non-finite update (the loss {bad_loss:.6g} and the gradients "
                                    "were finite, but the optimizer step would overflow a weight "
                                    f"or its optimizer state beyond {self.dtype.name}'s range)")
                        else:
                            what = f"non-finite gradient (the loss was {bad_loss:.6g})"

                        msg = (f"{what} at {where}; the weights are those of the last finite "
                               "step. Lower the learning rate, scale the inputs, or clip the "
                               "gradients (clip_grad_norm=...).")
                        if on_nonfinite == "raise":
                            raise FloatingPointError(msg)
                        warnings.warn(msg, RuntimeWarning, stacklevel=2)
                        if cols["batches"][last] == 0:  # nothing trained in that epoch: no record
                            logs_cols = {k: v[:last] for k, v in logs_cols.items()}
                    if not per_epoch:
                        history.extend(logs_cols)
                        break
                    logs = {k: float(v[0]) for k, v in logs_cols.items() if len(v)}
                    if logs and val is not None:
                        logs.update(self._evaluate_arrays(*val, prefix="val_"))
                    if logs:
                        history.record(logs)
                    if stopped:
                        break
                    progress.epoch_end(epoch, logs)
                    stop = False
                    for cb in cbs:
                        fn = getattr(cb, "on_epoch_end", None)
                        if fn is not None:
                            r = fn(self, epoch, logs)
                        else:  # a function, or an object with only the other hooks
                            r = cb(epoch, logs) if callable(cb) else None
                        # True or NumPy's True (np.isnan(...) gives one), not any truthy value
                        stop = stop or (isinstance(r, (bool, np.bool_)) and bool(r))
                    epoch += 1
                    if stop or self.stop_training:
                        history.interrupted = not (stopper is not None and stopper.stopped)
                        break
            if stopper is not None and not (history.interrupted or nonfinite_stop):
                stopper._completed = True
        finally:
            for cb in cbs:
                if hasattr(cb, "on_train_end"):
                    cb.on_train_end(self)
        if stopper is not None:
            history.stopped_early = stopper.stopped
            history.best_epoch = stopper.best_epoch
        # Every key this run records, even after no epoch (epochs=0, or a stop in the first
        # batch): history.loss is [] rather than an AttributeError.
        keys = ["loss", metric] + (["grad_norm", "grad_norm_max"] if max_norm > 0 else [])
        if val is not None:
            keys += ["val_loss", "val_" + metric]
        for k in keys:
            history.history.setdefault(k, [])
        return history

    @staticmethod
    def _epoch_logs(cols: Dict[str, Any], metric: str, clipped: bool) -> Dict[str, np.ndarray]:
        """Per-epoch logs as arrays (one entry per epoch) from fit_epochs' columns."""
        samples = np.maximum(cols["samples"], 1)
        logs = {"loss": cols["loss_sum"] / samples}
        counted = np.maximum(cols["counted"], 1)
        if cols["counted"].size and cols["counted"].max() > 0:
            if metric == "accuracy":
                logs[metric] = cols["correct"] / counted
            else:
                logs[metric] = _r2_from_sums(cols["sum_sq_err"], cols["ss_tot"]).mean(axis=1)
        if clipped:
            batches = np.maximum(cols["batches"], 1)
            logs["grad_norm"] = cols["grad_norm_sum"] / batches
            logs["grad_norm_max"] = cols["grad_norm_max"]
        return logs

    # ------------------------------------------------------------------ inference
    @_shared
    def predict(self, X: ArrayLike) -> np.ndarray:
        """The network's output for X, (n_samples, out) or (n_samples, T, out).

        Thread-safe: many threads may predict on one model at once.
        """
        self._require_net()
        x, time = self._check_X(X, rows=1)  # predicted in chunks
        return self._net.predict(x, len(x), time).reshape(self._output_shape(len(x), time))

    @_shared
    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities: softmax of the logits (cross_entropy), sigmoid of the logits
        (bce_with_logits), or the output itself (bce, or a final Softmax layer)."""
        if not self.is_classifier:
            raise ValueError(f"predict_proba needs a classification loss, but this model "
                             f"trains on {self._loss.name!r}")
        return self._to_proba(self.predict(X))

    def _to_proba(self, out: np.ndarray) -> np.ndarray:
        if self._loss.name == "cross_entropy":
            return out if isinstance(self._layers[-1], Softmax) else _softmax(out)
        if self._loss.name == "bce_with_logits" and not isinstance(self._layers[-1], Sigmoid):
            return _sigmoid(out)
        return out

    @_shared
    def predict_classes(self, X: ArrayLike) -> np.ndarray:
        """Class predictions: argmax over classes (cross_entropy), else probability > 0.5
        (the last axis dropped when there is one output)."""
        proba = self.predict_proba(X)
        return self._classes(proba)

    def _classes(self, proba: np.ndarray) -> np.ndarray:
        if self._loss.name == "cross_entropy":
            return proba.argmax(axis=-1)
        c = (proba > 0.5).astype(np.int64)
        return c[..., 0] if c.shape[-1] == 1 else c

    @_shared
    def evaluate(self, X: ArrayLike, y: ArrayLike) -> Dict[str, float]:
        """Loss and metric on (X, y): ``{"loss", "accuracy"}`` for classifiers, ``{"loss", "r2"}``
        for regression (R² averaged over outputs, as scikit-learn's r2_score).

        Accuracy is the fraction of correct predictions: of rows (or sequence steps) for
        cross_entropy; for bce and bce_with_logits with several outputs, of single outputs
        (Keras's binary_accuracy), not scikit-learn's accuracy_score, which counts a row right
        only when all its labels are. fit's ``accuracy`` columns count the same way."""
        self._require_net()
        x, time = self._check_X(X, rows=1)  # predicted in chunks
        yf, yi = self._check_y(y, self._output_shape(len(x), time))
        return self._evaluate_arrays(x, time, yf, yi)

    def _evaluate_arrays(self, x: np.ndarray, time: int, yf: Optional[np.ndarray],
                         yi: Optional[np.ndarray], prefix: str = "") -> Dict[str, float]:
        n = len(x)
        out = self._net.predict(x, n, time)
        loss = float(self._net.loss_value(out, yf, yi, n, time))
        out = out.reshape(self._output_shape(n, time))
        if self.is_classifier:
            pred = self._classes(self._to_proba(out))
            if yi is not None:
                truth = yi
            elif self._loss.name == "cross_entropy":
                assert yf is not None
                truth = yf.argmax(axis=-1)
            else:
                assert yf is not None
                truth = np.asarray(yf > 0.5).astype(np.int64)
                truth = truth[..., 0] if truth.shape[-1] == 1 else truth
            return {prefix + "loss": loss, prefix + "accuracy": float(np.mean(pred == truth))}
        assert yf is not None  # regression targets are always float
        return {prefix + "loss": loss, prefix + "r2": r2_score(yf, out)}

    # ------------------------------------------------------------------ persistence
    def get_config(self) -> Dict[str, Any]:
        """The architecture as JSON-able data: layers (with inferred sizes), loss, optimizer.

        Raises:
            ValueError: the optimizer's hyper-parameters, changed in place, no longer fit
                together (SGD's nesterov without momentum): what would be saved could not be
                loaded.
        """
        self._optimizer._validate()
        layers = []
        f = self._in_features
        for layer in self._layers:
            cfg = {"type": type(layer).__name__, **layer.get_config()}
            for key in ("in_features", "input_size"):  # a lazy Dense's or recurrent layer's
                if f is not None and key in cfg and cfg[key] is None:
                    cfg[key] = f
            layers.append(cfg)
            if f is not None:
                f = layer.output_features(f)
        return {"layers": layers, "loss": self._loss.get_config(),
                "optimizer": {"kind": self._optimizer.kind, **self._optimizer.get_config()},
                "dtype": self.dtype.name, "seed": self.seed, "in_features": self._in_features}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Model":
        """Builds a model (fresh weights) from :meth:`get_config`'s output."""
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict like get_config() returns, got "
                            f"{type(config).__name__}")
        missing = [k for k in ("layers", "loss", "optimizer", "dtype", "seed") if k not in config]
        if missing:
            raise ValueError(f"config is missing {missing} (get_config() gives 'layers', 'loss', "
                             f"'optimizer', 'dtype', 'seed' and 'in_features')")
        if isinstance(config["layers"], (str, bytes)) or not isinstance(config["layers"],
                                                                        Iterable):
            raise TypeError(f"config['layers'] must be a list of layer configs, got "
                            f"{type(config['layers']).__name__}")
        layers = [layer_from_config(c) for c in config["layers"]]
        model = cls(layers, loss=get_loss(config["loss"]),
                    optimizer=get_optimizer(config["optimizer"]), dtype=config["dtype"],
                    seed=config["seed"])
        if model._net is None and config.get("in_features") is not None:
            model._build(check_positive_int("in_features", config["in_features"]))
        return model

    @_shared
    def optimizer_state(self) -> Dict[str, Any]:
        """The optimizer's state: the step count and per-parameter buffers named as PyTorch
        names them (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``)."""
        net = self._require_net()
        state: Dict[str, Any] = {"step": int(net.optimizer_steps),
                                 "params": OrderedDict((n, {}) for n in net.param_names())}
        for n, key, torch_name in self._optimizer_buffers():
            state["params"][n][torch_name] = net.get(n, key)
        return state

    def _optimizer_buffers(self) -> List[Tuple[str, str, str]]:
        """(parameter, core buffer, PyTorch name) of each buffer optimizer_state holds, in its
        order, found without copying any (save lists them in the header before writing one)."""
        net = self._require_net()
        out = []
        for n in net.param_names():
            for key, torch_name in _STATE_NAMES[self._optimizer.kind].items():
                if key == "buf" and self._optimizer.kind == "sgd" and not net.has_buf(n):
                    continue
                if net.has(n, key):
                    out.append((n, key, torch_name))
        return out

    @_exclusive
    def load_optimizer_state(self, state: Dict[str, Any]) -> None:
        """Restores what :meth:`optimizer_state` returned (shapes are checked first). Like
        torch's ``optimizer.load_state_dict`` it replaces the whole state: a buffer the state
        lacks starts afresh (SGD's momentum from the next gradient, Adam's moments from 0)."""
        net = self._require_net()
        names = _STATE_NAMES[self._optimizer.kind]
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict like optimizer_state() returns "
                            f"({{'step': int, 'params': {{name: {{buffer: array}}}}}}), got "
                            f"{type(state).__name__}")
        params = state.get("params", {})
        if not isinstance(params, Mapping) or not all(isinstance(b, Mapping)
                                                      for b in params.values()):
            raise TypeError("optimizer state 'params' must map parameter names to dicts of "
                            f"buffers ({{name: {{{', '.join(map(repr, names.values()))}: "
                            f"array}}}}), got {params!r:.80}")
        step = state.get("step", 0)
        try:  # an int, or a whole number of another type (5.0, numpy or torch scalars)
            count = (None if isinstance(step, (bool, np.bool_, str, bytes)) else
                     int(step) if float(step) == int(step) else None)
        except (TypeError, ValueError, OverflowError):
            count = None
        if count is None or not 0 <= count < 2**63:
            raise ValueError(f"optimizer state step must be an integer in [0, 2**63), got "
                             f"{step!r}")
        step = count
        staged = []
        for n, bufs in params.items():
            if n not in net.param_names():
                raise ValueError(f"optimizer state names unknown parameter {n!r}")
            for key, torch_name in names.items():
                if torch_name in bufs:
                    a = self._param_array(f"optimizer state {n}.{torch_name}", bufs[torch_name],
                                          net.param_shape(n), nonnegative=key != "buf")
                    staged.append((n, key, a))
        for n, key, a in staged:
            net.set(n, key, a)
            if key == "buf" and self._optimizer.kind == "sgd":
                net.set_has_buf(n, True)
        # The state replaces the whole state, as torch's optimizer.load_state_dict does: a
        # buffer it lacks starts afresh (momentum from the next gradient, Adam's from zeros).
        loaded = {(n, key) for n, key, _ in staged}
        for n in net.param_names():
            for key in names:
                if (n, key) in loaded:
                    continue
                if self._optimizer.kind == "sgd":
                    net.set_has_buf(n, False)
                elif (current := net.get(n, key)) is not None:
                    net.set(n, key, np.zeros_like(current))
        net.optimizer_steps = int(step)

    @_shared
    def save(self, path: Union[str, bytes, "os.PathLike[str]"]) -> None:
        """Saves architecture, weights and optimizer state to a safetensors file, atomically
        (a temporary file in the same folder, fsync, rename): a crash never leaves a
        half-written file. The weights carry PyTorch's names; the optimizer's tensors sit
        beside them under ``optimizer.``, which a torch load_state_dict leaves out (see
        :mod:`chainrule.io`)."""
        from .io import save
        save(self, path)

    @_shared
    def to_torch(self) -> Any:
        """The network as a torch module, same weights and dtype (chainrule.interop.to_torch)."""
        from .interop import to_torch
        return to_torch(self)

    @_shared
    def to_bytes(self) -> bytes:
        """The model as the bytes :meth:`save` writes."""
        from .io import to_bytes
        return to_bytes(self)

    def __getstate__(self) -> Dict[str, Any]:
        # Pickling goes through the same safe format: no code in the bytes.
        if self._net is None:  # no weights yet (lazy first layer): the architecture is all
            return {"chainrule_config": self.get_config()}
        return {"chainrule_model": self.to_bytes()}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        from .io import from_bytes
        if "chainrule_config" in state:
            other = Model.from_config(state["chainrule_config"])
        else:
            other = from_bytes(state["chainrule_model"])
        self.__dict__.update(other.__dict__)
