"""Layers: small descriptions of what each step of the network computes.

A layer here holds no weights of its own; the :class:`~chainrule.Model` builds the C++ network
from the layers and owns the parameters, named as ``torch.nn.Sequential`` names them
(``"0.weight"``, ``"0.bias"``, ...).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

__all__ = [
    "Layer", "Dense", "Identity", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "Softmax",
    "LogSoftmax", "RNN", "LSTM", "GRU", "layer_from_config",
]


def _check_size(name: str, value: Any, *, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int,)) and not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    v = int(value.__index__())
    if v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v}")
    if v >= 2 ** 63:  # the core's sizes are 64-bit: the binding would fail with RuntimeError
        raise ValueError(f"{name} must be less than 2**63, got {v}")
    return v


def _size(name: str, value: Any) -> int:
    """A required positive size (never None)."""
    v = _check_size(name, value)
    assert v is not None
    return v


class Layer:
    """Base class of all layers."""

    #: registry name -> class, filled by subclasses, used to rebuild a saved architecture
    _registry: Dict[str, type] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Layer._registry[cls.__name__] = cls

    def output_features(self, in_features: int) -> int:
        """Features per sample this layer produces from ``in_features``."""
        return in_features

    def spec(self, in_features: int) -> Dict[str, Any]:  # pragma: no cover - abstract
        """The description the C++ core builds this layer from."""
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        """JSON-able constructor arguments (saved with a model)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


class Dense(Layer):
    """Fully connected layer: ``y = x Wᵀ + b`` with ``W`` of shape (out_features, in_features).

    Applied to every row of its input, so on a sequence (B, T, F) it acts on each time step, as
    ``torch.nn.Linear`` does on 3-D input. Parameters are initialised as PyTorch does,
    ``U(-1/√in, 1/√in)`` for weight and bias.

    Args:
        in_features: input size; ``None`` infers it from the previous layer or the data.
            ``Dense(16)`` with a single argument means ``Dense(None, 16)``.
        out_features: output size.
        bias: whether to learn an additive bias.

    Raises:
        ValueError: a size is not positive. TypeError: a size is not an int.
    """

    def __init__(self, in_features: Optional[int] = None, out_features: Optional[int] = None,
                 bias: bool = True) -> None:
        if out_features is None:
            if in_features is None:
                raise TypeError("Dense needs out_features, e.g. Dense(2, 16) or Dense(16)")
            in_features, out_features = None, in_features
        self.in_features = _check_size("in_features", in_features, allow_none=True)
        self.out_features = _size("out_features", out_features)
        if not isinstance(bias, (bool, int, np.bool_)):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__} {bias!r}")
        self.bias = bool(bias)

    def output_features(self, in_features: int) -> int:
        if self.in_features is not None and in_features != self.in_features:
            raise ValueError(f"{self!r} received {in_features} features, "
                             f"but is expecting {self.in_features} features as input")
        return self.out_features  # type: ignore[return-value]

    def spec(self, in_features: int) -> Dict[str, Any]:
        return {"kind": "dense", "in_features": in_features, "out_features": self.out_features,
                "bias": self.bias}

    def get_config(self) -> Dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias}

    def __repr__(self) -> str:
        extra = "" if self.bias else ", bias=False"
        return f"Dense(in={self.in_features}, out={self.out_features}{extra})"


class _Activation(Layer):
    _name = "identity"

    def spec(self, in_features: int) -> Dict[str, Any]:
        return {"kind": "activation", "activation": self._name}


class Identity(_Activation):
    """``y = x``."""
    _name = "identity"


class Sigmoid(_Activation):
    """``y = 1 / (1 + e^{-x})``, elementwise."""
    _name = "sigmoid"


class Tanh(_Activation):
    """``y = tanh(x)``, elementwise."""
    _name = "tanh"


class ReLU(_Activation):
    """``y = max(x, 0)``, elementwise."""
    _name = "relu"


class LeakyReLU(_Activation):
    """``y = x if x > 0 else negative_slope · x``, elementwise.

    Args:
        negative_slope: slope for negative inputs (PyTorch's default 0.01).
    """
    _name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01) -> None:
        if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(
                negative_slope, (int, float, np.integer, np.floating)):
            raise TypeError(f"negative_slope must be a float, got {type(negative_slope).__name__}")
        if not math.isfinite(negative_slope):
            raise ValueError(f"negative_slope must be a finite number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def spec(self, in_features: int) -> Dict[str, Any]:
        return {"kind": "activation", "activation": self._name,
                "negative_slope": self.negative_slope}

    def get_config(self) -> Dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class Softmax(_Activation):
    """``y_i = e^{x_i} / Σ_j e^{x_j}`` over the last axis (computed stably)."""
    _name = "softmax"


class LogSoftmax(_Activation):
    """``y_i = x_i − log Σ_j e^{x_j}`` over the last axis (computed stably)."""
    _name = "log_softmax"


_ALIASES = {"identity": Identity, "linear": Identity, "sigmoid": Sigmoid, "logistic": Sigmoid,
            "tanh": Tanh, "relu": ReLU, "leaky_relu": LeakyReLU, "softmax": Softmax,
            "log_softmax": LogSoftmax}


def activation(name: str) -> Layer:
    """The activation layer for a name (``"relu"``, ``"tanh"``, ``"logistic"``, ...)."""
    try:
        return _ALIASES[name]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{sorted(_ALIASES)}") from None


def layer_from_config(config: Dict[str, Any]) -> Layer:
    """Rebuilds a layer from ``{"type": name, **get_config()}`` (as saved with a model)."""
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        raise ValueError(f"a layer config must be a dict with a 'type', got {config!r}")
    cls = Layer._registry.get(config["type"])
    if cls is None or cls.__name__.startswith("_"):
        raise ValueError(f"unknown layer type {config['type']!r}; expected one of "
                         f"{sorted(k for k in Layer._registry if not k.startswith('_'))}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for layer {config['type']}: {e}") from None


class _Recurrent(Layer):
    """Base of the recurrent layers (batch-first input (B, T, input_size))."""

    _kind = "rnn"
    _gates = 1

    def __init__(self, input_size: Optional[int], hidden_size: int, num_layers: int = 1,
                 bias: bool = True, return_sequences: bool = True) -> None:
        self.input_size = _check_size("input_size", input_size, allow_none=True)
        self.hidden_size = _size("hidden_size", hidden_size)
        self.num_layers = _size("num_layers", num_layers)
        for name, flag in (("bias", bias), ("return_sequences", return_sequences)):
            if not isinstance(flag, (bool, int, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__} {flag!r}")
        self.bias = bool(bias)
        self.return_sequences = bool(return_sequences)

    def output_features(self, in_features: int) -> int:
        if self.input_size is not None and in_features != self.input_size:
            raise ValueError(f"{self!r} received {in_features} features per step, "
                             f"but is expecting {self.input_size} features as input")
        return self.hidden_size  # type: ignore[return-value]

    def spec(self, in_features: int) -> Dict[str, Any]:
        return {"kind": self._kind, "in_features": in_features, "out_features": self.hidden_size,
                "num_layers": self.num_layers, "bias": self.bias,
                "return_sequences": self.return_sequences}

    def get_config(self) -> Dict[str, Any]:
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "bias": self.bias,
                "return_sequences": self.return_sequences}


class RNN(_Recurrent):
    """Elman RNN, PyTorch's ``nn.RNN``: ``h_t = act(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)``.

    Input (B, T, input_size), batch-first. Output every ``h_t`` (B, T, H) with
    ``return_sequences=True``, else the last one (B, H). Parameters per stacked layer k:
    ``weight_ih_l{k}`` (H, I_k), ``weight_hh_l{k}`` (H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (H),
    initialised ``U(−1/√H, 1/√H)`` as in PyTorch.

    Args:
        input_size: features per step (None: inferred). hidden_size: H.
        nonlinearity: ``"tanh"`` or ``"relu"``. num_layers: stacked cells. bias: learn biases.
        return_sequences: output every step, or the last.
    """

    _kind = "rnn"

    def __init__(self, input_size: Optional[int], hidden_size: int, nonlinearity: str = "tanh",
                 num_layers: int = 1, bias: bool = True, return_sequences: bool = True) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, return_sequences)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    def spec(self, in_features: int) -> Dict[str, Any]:
        return {**super().spec(in_features), "relu": self.nonlinearity == "relu"}

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["nonlinearity"] = self.nonlinearity
        return cfg


class LSTM(_Recurrent):
    """LSTM, PyTorch's ``nn.LSTM`` with gates in the order i, f, g, o:
    ``i,f,o = σ(·), g = tanh(·), c_t = f⊙c_{t−1} + i⊙g, h_t = o⊙tanh(c_t)``.

    Parameters per stacked layer k: ``weight_ih_l{k}`` (4H, I_k), ``weight_hh_l{k}`` (4H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H).

    Args: ``LSTM(input_size, hidden_size, num_layers=1, bias=True, return_sequences=True)``, as
    :class:`RNN`'s without ``nonlinearity`` (so the third positional argument is num_layers).
    """

    _kind = "lstm"


class GRU(_Recurrent):
    """GRU, PyTorch's ``nn.GRU`` with gates r, z, n:
    ``r,z = σ(·), n = tanh(x W_inᵀ + b_in + r⊙(h W_hnᵀ + b_hn)), h_t = (1−z)⊙n + z⊙h_{t−1}``.

    Parameters per stacked layer k: ``weight_ih_l{k}`` (3H, I_k), ``weight_hh_l{k}`` (3H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (3H).

    Args: ``GRU(input_size, hidden_size, num_layers=1, bias=True, return_sequences=True)``, as
    :class:`RNN`'s without ``nonlinearity`` (so the third positional argument is num_layers).
    """

    _kind = "gru"
