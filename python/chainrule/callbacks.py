"""Callbacks for :meth:`Model.fit`, and early stopping."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from ._validation import check_bool


class Callback:
    """Hooks called by fit. ``on_epoch_end`` may return True to stop training."""

    def on_train_begin(self, model: Any) -> None:
        pass

    def on_epoch_end(self, model: Any, epoch: int, logs: Dict[str, float]) -> Optional[bool]:
        return None

    def on_train_end(self, model: Any) -> None:
        pass


class EarlyStopping(Callback):
    """Stops when the monitored value has not improved by ``min_delta`` for more than
    ``patience`` epochs in a row.

    Args:
        monitor: a History key; ``"val_loss"`` falls back to ``"loss"`` without validation data.
        patience: epochs without improvement tolerated (≥ 0); the next one stops training, so
            ``patience=0`` stops at the first epoch that does not improve (scikit-learn's
            ``n_iter_no_change`` counts the same way; Keras stops one epoch sooner for
            ``patience ≥ 1``).
        min_delta: the least change that counts as an improvement (≥ 0).
        mode: ``"min"`` or ``"max"``; ``"auto"`` picks max for accuracy and r2, min otherwise.
        restore_best_weights: when training ends, stopped early or with its epochs run out,
            put back the weights of the best epoch (as scikit-learn's early stopping keeps its
            best coefficients). A run stopped by Ctrl-C, another callback or an error keeps
            its last completed step instead.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True) -> None:
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        if not isinstance(min_delta, (int, float)) or min_delta < 0 or not math.isfinite(min_delta):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.mode = mode
        self.restore_best_weights = check_bool("restore_best_weights", restore_best_weights)

    def on_train_begin(self, model: Any) -> None:
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.best_state: Optional[Dict[str, np.ndarray]] = None
        self.wait = 0
        self.stopped = False
        self.last_epoch: Optional[int] = None
        self._completed = False  # fit sets it when the epochs ran out

    def _key(self, logs: Dict[str, float]) -> str:
        if self.monitor in logs:
            return self.monitor
        if self.monitor.startswith("val_") and self.monitor[4:] in logs:
            return self.monitor[4:]
        raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which fit does not record; "
                         f"available: {sorted(logs)}")

    def on_epoch_end(self, model: Any, epoch: int, logs: Dict[str, float]) -> Optional[bool]:
        key = self._key(logs)
        value = logs[key]
        self.last_epoch = epoch
        maximize = self.mode == "max" or (self.mode == "auto" and
                                          key.split("_")[-1] in ("accuracy", "r2"))
        sign = -1.0 if maximize else 1.0
        if self.best is None or sign * (value - self.best) < -self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_state = model.state_dict()
            return None
        self.wait += 1
        if self.wait > self.patience:
            self.stopped = True
            return True
        return None

    def on_train_end(self, model: Any) -> None:
        if (self.restore_best_weights and self.best_state is not None
                and (self.stopped or self._completed) and self.best_epoch != self.last_epoch):
            model.load_state_dict(self.best_state)

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, restore_best_weights={self.restore_best_weights})")
