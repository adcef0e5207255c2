"""Optimizers with PyTorch's exact update rules (``torch.optim.SGD`` and ``torch.optim.Adam``).

The update runs in C++; these classes hold and validate the hyper-parameters.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Tuple, Union

from ._validation import check_bool, check_real

__all__ = ["Optimizer", "SGD", "Adam", "get_optimizer"]


def _number(name: str, value: Any, *, positive: bool = False, lo: float = 0.0,
            hi: float = math.inf, hi_open: bool = False) -> float:
    v = check_real(name, value)  # the type and the float range; the bounds below
    if not math.isfinite(v) or v < lo or (positive and v <= 0) or v > hi or (hi_open and v >= hi):
        bound = f"in [{lo}, {hi}{')' if hi_open else ']'}" if hi != math.inf else (
            "> 0" if positive else f">= {lo}")
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return v


def _betas(betas: Any) -> Tuple[float, float]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
    return (_number("betas[0]", b1, hi=1.0, hi_open=True),
            _number("betas[1]", b2, hi=1.0, hi_open=True))


class Optimizer:
    """Base class: hyper-parameters of an update rule.

    The hyper-parameters are plain attributes, checked as they are assigned. A model picks up
    new values at its next step (``model.optimizer.lr = 0.01`` in a callback is a learning-rate
    schedule), keeping the optimizer's state, as torch does when a param_group changes.
    """

    kind = ""
    # attribute -> its check (the constructor's), run on every assignment
    _checks: Dict[str, Callable[[Any], Any]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        check = type(self)._checks.get(name)
        super().__setattr__(name, check(value) if check is not None else value)

    def _validate(self) -> None:
        """Checks that involve several hyper-parameters (each alone is checked as assigned)."""

    def get_config(self) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _core_config(self) -> Dict[str, Any]:
        return {"kind": self.kind, **self.get_config()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.kind, tuple(sorted(self.get_config().items()))))


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's rule.

    ``g = ∇w + λw``; with momentum μ: ``b = g`` on the first step, then ``b = μb + (1−τ)g``, and
    ``g = g + μb`` (Nesterov) or ``g = b``; finally ``w ← w − η·g``. With momentum 0 and no weight
    decay this is exactly ``w ← w − η·∇w``.

    Args:
        lr: learning rate η > 0.
        momentum: μ ≥ 0. dampening: τ ≥ 0. weight_decay: λ ≥ 0 (L2 penalty).
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0, as in PyTorch).
        maximize: ascend instead of descend.
    """

    kind = "sgd"
    _checks = {
        "lr": lambda v: _number("lr", v, positive=True),
        "momentum": lambda v: _number("momentum", v),
        "dampening": lambda v: _number("dampening", v),
        "weight_decay": lambda v: _number("weight_decay", v),
        "nesterov": lambda v: check_bool("nesterov", v),
        "maximize": lambda v: check_bool("maximize", v),
    }

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
        self.lr = lr
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.maximize = maximize
        self._validate()

    def _validate(self) -> None:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def get_config(self) -> Dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov,
                "maximize": self.maximize}


class Adam(Optimizer):
    """Adam, PyTorch's rule (L2 weight decay added to the gradient, optional AMSGrad).

    ``g = ∇w + λw; m = β₁m + (1−β₁)g; v = β₂v + (1−β₂)g²;
    w ← w − η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`` (``max`` of all v so far with amsgrad).

    Args:
        lr: η > 0. betas: (β₁, β₂) in [0, 1). eps: ε ≥ 0. weight_decay: λ ≥ 0.
        amsgrad: use the running maximum of v. maximize: ascend instead of descend.
    """

    kind = "adam"
    _checks = {
        "lr": lambda v: _number("lr", v, positive=True),
        "betas": lambda v: _betas(v),
        "eps": lambda v: _number("eps", v),
        "weight_decay": lambda v: _number("weight_decay", v),
        "amsgrad": lambda v: check_bool("amsgrad", v),
        "maximize": lambda v: check_bool("maximize", v),
    }

    def __init__(self, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.amsgrad = amsgrad
        self.maximize = maximize

    def get_config(self) -> Dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay, "amsgrad": self.amsgrad,
                "maximize": self.maximize}

    def _core_config(self) -> Dict[str, Any]:
        cfg = {"kind": self.kind, **self.get_config()}
        cfg["beta1"], cfg["beta2"] = cfg.pop("betas")
        return cfg


_BY_NAME = {"sgd": SGD, "adam": Adam}


def get_optimizer(opt: Union[None, str, Optimizer, Dict[str, Any]]) -> Optimizer:
    """An Optimizer from None (plain SGD, lr=0.01), a name, an Optimizer, or a saved config."""
    if opt is None:
        return SGD()
    if isinstance(opt, Optimizer):
        return opt
    if isinstance(opt, dict):
        cfg = dict(opt)
        kind = cfg.pop("kind", None)
        if kind not in _BY_NAME:
            raise ValueError(f"unknown optimizer {kind!r}; expected one of {sorted(_BY_NAME)}")
        if "betas" in cfg:
            cfg["betas"] = tuple(cfg["betas"])
        return _BY_NAME[kind](**cfg)
    if not isinstance(opt, str):
        raise TypeError(f"optimizer must be a name or an Optimizer, got {type(opt).__name__}")
    if opt.lower() not in _BY_NAME:
        raise ValueError(f"unknown optimizer {opt!r}; expected one of {sorted(_BY_NAME)}")
    return _BY_NAME[opt.lower()]()
