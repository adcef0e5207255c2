"""History: what fit recorded, epoch by epoch."""
from __future__ import annotations

from typing import Any, Dict, List, Optional


class History:
    """Per-epoch records of a :meth:`Model.fit` call.

    ``history.history`` maps a key to one value per epoch: ``"loss"`` (the batch losses of the
    epoch averaged with the batch sizes as weights), the running training metric (``"accuracy"``
    for classification losses, ``"r2"`` for mse), and with validation data ``"val_loss"`` and
    ``"val_accuracy"``/``"val_r2"``; with ``clip_grad_norm``, ``"grad_norm"`` (mean pre-clip
    global norm) and ``"grad_norm_max"``. Keys are also attributes: ``history.loss``.

    Attributes:
        epochs: number of completed epochs.
        stopped_early: early stopping ended the run.
        best_epoch: with early stopping, the epoch of the best monitored value (the weights kept
            when ``restore_best_weights``), else None.
        nonfinite: the run met a NaN/inf loss, gradient or update, as ``(epoch, batch)``
            counted from 0 (the warning and error messages count from 1), else None.
        interrupted: a callback or Ctrl-C stopped the run.
    """

    def __init__(self) -> None:
        self.history: Dict[str, List[float]] = {}
        self.epochs = 0
        self.stopped_early = False
        self.best_epoch: Optional[int] = None
        self.nonfinite: Optional[tuple] = None
        self.interrupted = False
        #: with fit(record_grad_norms=True): layer index -> one (num_layers, T) array per epoch
        self.timestep_grad_norms: Dict[int, List[Any]] = {}

    def record(self, logs: Dict[str, float]) -> None:
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        self.epochs += 1

    def extend(self, logs: Dict[str, Any]) -> None:
        """Appends several epochs at once: each value a sequence with one entry per epoch."""
        n = None
        for k, v in logs.items():
            vals = [float(x) for x in v]
            n = len(vals) if n is None else n
            self.history.setdefault(k, []).extend(vals)
        self.epochs += n or 0

    def __getattr__(self, name: str) -> List[float]:
        hist = self.__dict__.get("history", {})
        if name in hist:
            return hist[name]
        raise AttributeError(f"History has no record {name!r}; it has {sorted(hist)}")

    def __getitem__(self, key: str) -> List[float]:
        return self.history[key]

    def __contains__(self, key: object) -> bool:
        return key in self.history

    def keys(self) -> List[str]:
        return list(self.history)

    def __len__(self) -> int:
        return self.epochs

    def to_dict(self) -> Dict[str, Any]:
        return {"history": {k: list(v) for k, v in self.history.items()}, "epochs": self.epochs,
                "stopped_early": self.stopped_early, "best_epoch": self.best_epoch,
                "nonfinite": self.nonfinite, "interrupted": self.interrupted}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={self.epochs}, last={last})"
