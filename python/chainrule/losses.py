"""Losses, by name or as objects, with PyTorch's formulas and ``reduction``.

=================== ==================================================================
``"mse"``           ``mean((p − t)²)``
``"bce"``           ``−mean(t·log p + (1−t)·log(1−p))`` on probabilities, logs clamped at −100
``"bce_with_logits"`` ``mean((1−t)·x − log σ(x))``, computed stably from logits
``"cross_entropy"`` ``−mean_rows Σ_c t_c · log_softmax(x)_c``; t as class indices or probabilities
=================== ==================================================================

``reduction="mean"`` divides by the element count (by the row count for cross_entropy), as PyTorch
does; ``"sum"`` does not divide.
"""
from __future__ import annotations

from typing import Any, Dict, Union

__all__ = ["Loss", "MSELoss", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "get_loss"]

_REDUCTIONS = ("mean", "sum")


class Loss:
    """Base class: a named loss with a reduction."""

    name = ""
    #: whether the loss trains a classifier (accuracy is reported) or a regressor (R²)
    is_classification = False

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Loss) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((self.name, self.reduction))


class MSELoss(Loss):
    """Mean squared error, ``L = mean((p − t)²)``; ``∂L/∂p = 2(p − t)/n``."""
    name = "mse"


class BCELoss(Loss):
    """Binary cross-entropy on probabilities (put a Sigmoid before it),
    ``L = −mean(t·max(log p, −100) + (1−t)·max(log(1−p), −100))``."""
    name = "bce"
    is_classification = True


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits, ``L = mean((1−t)·x − log σ(x))``; ``∂L/∂x = (σ(x) − t)/n``."""
    name = "bce_with_logits"
    is_classification = True


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits, ``L = mean_rows(logsumexp(x) − x_target)``;
    ``∂L/∂x = (softmax(x) − onehot(t))/rows``. Targets are class indices (N,) or probabilities (N, C)."""
    name = "cross_entropy"
    is_classification = True


_BY_NAME = {c.name: c for c in (MSELoss, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss)}
_ALIASES = {"mean_squared_error": "mse", "binary_cross_entropy": "bce",
            "binary_crossentropy": "bce", "categorical_crossentropy": "cross_entropy",
            "crossentropy": "cross_entropy"}


def get_loss(loss: Union[str, Loss, Dict[str, Any]]) -> Loss:
    """A Loss from a name (``"mse"``, ...), a Loss object, or a saved config dict."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, dict):
        cfg = dict(loss)
        name = cfg.pop("name", None)
        if name not in _BY_NAME:
            raise ValueError(f"unknown loss {name!r}; expected one of {sorted(_BY_NAME)}")
        return _BY_NAME[name](**cfg)
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a name or a Loss, got {type(loss).__name__}")
    name = _ALIASES.get(loss, loss)
    if name not in _BY_NAME:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(_BY_NAME)}")
    return _BY_NAME[name]()
