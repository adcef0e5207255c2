"""Plots of training runs: loss curves, per-timestep gradient norms, decision boundaries.

matplotlib is optional: it is imported inside each function, and only there. Every function
draws on the Axes it is given (or on a new figure's) and returns that Axes, so plots compose
and tests can inspect what was drawn.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["plot_history", "plot_timestep_grad_norms", "plot_decision_boundary"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("chainrule.plot needs matplotlib, which is not installed: "
                          "pip install matplotlib") from e
    return plt


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots()
    return ax


def plot_history(history: Any, ax: Any = None) -> Any:
    """Training (and validation) loss per epoch; the metric (accuracy or R²) on a twin axis.

    Args:
        history: the :class:`~chainrule.History` that ``fit`` returned (or its ``.history``
            dict of key -> one value per epoch).
        ax: the Axes to draw on; None makes a new figure.

    Returns:
        The Axes holding the loss curves (the metric, when recorded, is on its twin:
        the figure's last Axes).

    Raises:
        ValueError: the history has no ``"loss"`` record.
    """
    records = getattr(history, "history", history)
    if not isinstance(records, dict) or "loss" not in records:
        raise ValueError(f"plot_history needs a History with a 'loss' record, got "
                         f"{type(history).__name__} with keys "
                         f"{sorted(records) if isinstance(records, dict) else None}")
    ax = _axes(ax)
    epochs = np.arange(1, len(records["loss"]) + 1)
    ax.plot(epochs, records["loss"], label="loss", color="C0")
    if "val_loss" in records:
        ax.plot(epochs, records["val_loss"], label="val_loss", color="C0", linestyle="--")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    metric = next((m for m in ("accuracy", "r2") if m in records), None)
    if metric is not None:
        twin = ax.twinx()
        twin.plot(epochs, records[metric], label=metric, color="C1")
        if "val_" + metric in records:
            twin.plot(epochs, records["val_" + metric], label="val_" + metric, color="C1",
                      linestyle="--")
        twin.set_ylabel(metric)
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="best")
    return ax


def _norms_from(source: Any, layer: Optional[int], kind: str) -> np.ndarray:
    """(cells, T) for a line plot, or (epochs, T) of the top cell for a heatmap."""
    from .history import History
    from .model import Model

    if isinstance(source, History):
        recorded = source.timestep_grad_norms
        if not recorded:
            raise ValueError("this History has no per-timestep gradient norms; train with "
                             "fit(..., record_grad_norms=True)")
        key = min(recorded) if layer is None else layer
        if key not in recorded:
            raise ValueError(f"no gradient norms recorded for layer {layer}; recorded layers: "
                             f"{sorted(recorded)}")
        profiles = [np.asarray(p, dtype=np.float64) for p in recorded[key]]
        if kind == "heatmap":
            return np.stack([p[-1] for p in profiles])
        return profiles[-1]
    if isinstance(source, Model):
        norms = source.timestep_grad_norms(layer)
    else:
        norms = np.asarray(source, dtype=np.float64)
        if norms.ndim == 1:
            norms = norms[None]
        if norms.ndim != 2 or norms.shape[1] == 0:
            raise ValueError(f"gradient norms must have shape (T,) or (num_layers, T), got "
                             f"{norms.shape}")
    if kind == "heatmap":
        raise ValueError("kind='heatmap' shows epochs x t and needs a History recorded with "
                         "fit(..., record_grad_norms=True)")
    return norms


def plot_timestep_grad_norms(norms_or_model_or_history: Any, layer: Optional[int] = None,
                             ax: Any = None, log: bool = True, kind: str = "line") -> Any:
    """Per-timestep gradient norms ``‖∂L/∂h_t‖`` over t: where the curve falls towards t = 0
    the gradient vanishes, where it rises it explodes.

    Args:
        norms_or_model_or_history: an array (T,) or (num_layers, T); a Model after a backward
            (its :meth:`~chainrule.Model.timestep_grad_norms`); or a History from
            ``fit(..., record_grad_norms=True)`` (its last epoch, or every epoch as a heatmap).
        layer: which recurrent layer of the model or history (None: the first).
        ax: the Axes to draw on; None makes a new figure.
        log: logarithmic norms (y axis for lines, colour scale for the heatmap).
        kind: ``"line"`` (one line per stacked cell) or ``"heatmap"`` (History only: epochs ×
            t of the top cell).

    Returns:
        The Axes.

    Raises:
        ValueError: an unknown kind, an array of the wrong shape, nothing recorded.
    """
    if kind not in ("line", "heatmap"):
        raise ValueError(f"kind must be 'line' or 'heatmap', got {kind!r}")
    norms = _norms_from(norms_or_model_or_history, layer, kind)
    ax = _axes(ax)
    if kind == "heatmap":
        from matplotlib.colors import LogNorm

        positive = norms[norms > 0]
        norm = (LogNorm(vmin=positive.min(), vmax=positive.max())
                if log and positive.size else None)
        image = ax.imshow(norms, aspect="auto", origin="lower", interpolation="nearest",
                          norm=norm, extent=(-0.5, norms.shape[1] - 0.5, 0.5,
                                             norms.shape[0] + 0.5))
        ax.figure.colorbar(image, ax=ax, label="‖∂L/∂h_t‖")
        ax.set_xlabel("time step t")
        ax.set_ylabel("epoch")
        return ax
    t = np.arange(norms.shape[1])
    for k, row in enumerate(norms):
        ax.plot(t, row, label=f"cell {k}" if len(norms) > 1 else "‖∂L/∂h_t‖")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel("‖∂L/∂h_t‖")
    if len(norms) > 1:
        ax.legend(loc="best")
    return ax


def plot_decision_boundary(model: Any, X: Any, y: Any, ax: Any = None,
                           resolution: int = 200) -> Any:
    """The regions a classifier with 2-D input assigns to each class, and the data on top.

    Args:
        model: a fitted classifier (bce, bce_with_logits or cross_entropy) taking 2 features.
        X: (n, 2) points. y: their labels (n,) (class indices or 0/1).
        ax: the Axes to draw on; None makes a new figure.
        resolution: grid points per axis.

    Returns:
        The Axes (the filled regions are its first collection or image).

    Raises:
        ValueError: X is not (n, 2), the model is not a classifier, resolution < 2.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).reshape(-1)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary needs 2-D points X of shape (n, 2), got "
                         f"{X.shape}")
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} points but y has {len(y)} labels")
    if not getattr(model, "is_classifier", False):
        raise ValueError("plot_decision_boundary needs a classifier (loss bce, bce_with_logits "
                         "or cross_entropy)")
    if int(resolution) < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    resolution = int(resolution)
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = 0.1 * np.maximum(hi - lo, 1e-9)
    gx = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    gy = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    xx, yy = np.meshgrid(gx, gy)
    grid = np.column_stack([xx.ravel(), yy.ravel()])
    classes = model.predict_classes(grid).reshape(resolution, resolution)
    ax = _axes(ax)
    n_classes = int(max(classes.max(), y.max())) + 1
    levels = np.arange(n_classes + 1) - 0.5
    ax.contourf(xx, yy, classes, levels=levels, alpha=0.3, cmap="coolwarm")
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="coolwarm", edgecolors="k", s=20,
               vmin=0, vmax=max(n_classes - 1, 1))
    ax.set_xlim(gx[0], gx[-1])
    ax.set_ylim(gy[0], gy[-1])
    ax.set_xlabel("x₀")
    ax.set_ylabel("x₁")
    return ax
