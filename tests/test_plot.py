"""chainrule.plot: what each function draws, that PNGs save, a clear error without matplotlib."""
from __future__ import annotations

import builtins
import sys

import numpy as np
import pytest

import chainrule as cr
from chainrule import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    # Runs with or without matplotlib: the import is made to fail.
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot.plot_timestep_grad_norms(np.ones(5))


@pytest.fixture
def plt():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


def _save(ax, path) -> bytes:
    ax.figure.savefig(path)
    return path.read_bytes()


def _sequence_model(seed: int = 0) -> cr.Model:
    return cr.Model([cr.LSTM(2, 4, num_layers=2), cr.Dense(4, 1)], optimizer=cr.Adam(lr=0.01),
                    dtype="float64", seed=seed)


def _sequence_data(n: int = 8, T: int = 12):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, T, 2))
    return X, np.cumsum(X[..., :1], axis=1) / T


def test_plot_history_loss_val_and_metric(plt, tmp_path):
    X, y = _sequence_data()
    hist = _sequence_model().fit(X, y, epochs=4, batch_size=4, validation_split=0.25)
    ax = plot.plot_history(hist)
    assert [line.get_label() for line in ax.get_lines()] == ["loss", "val_loss"]
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), hist.loss)
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [1, 2, 3, 4])
    twin = ax.figure.axes[-1]
    assert twin is not ax
    assert [line.get_label() for line in twin.get_lines()] == ["r2", "val_r2"]
    assert _save(ax, tmp_path / "history.png").startswith(PNG_MAGIC)


def test_plot_history_without_metric_or_validation_on_a_given_axes(plt):
    fig, ax = plt.subplots()
    out = plot.plot_history({"loss": [3.0, 2.0, 1.0]}, ax=ax)
    assert out is ax
    assert len(ax.get_lines()) == 1 and len(fig.axes) == 1
    with pytest.raises(ValueError, match="'loss' record"):
        plot.plot_history({"accuracy": [0.5]})


def test_grad_norms_from_array_model_and_history(plt, tmp_path):
    ax = plot.plot_timestep_grad_norms(np.array([1e-3, 1e-2, 1e-1, 1.0]))
    assert len(ax.get_lines()) == 1 and ax.get_yscale() == "log"
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [0, 1, 2, 3])

    X, y = _sequence_data()
    model = _sequence_model()
    model.forward(X)
    model.backward(y)
    ax = plot.plot_timestep_grad_norms(model, log=False)  # one line per stacked cell
    assert len(ax.get_lines()) == 2 and ax.get_yscale() == "linear"
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), model.timestep_grad_norms()[1])
    assert _save(ax, tmp_path / "norms.png").startswith(PNG_MAGIC)

    hist = _sequence_model().fit(X, y, epochs=3, batch_size=4, record_grad_norms=True)
    ax = plot.plot_timestep_grad_norms(hist)  # the last epoch's profile
    np.testing.assert_array_equal(ax.get_lines()[-1].get_ydata(),
                                  hist.timestep_grad_norms[0][-1][-1])


def test_grad_norms_heatmap_is_epochs_by_time(plt, tmp_path):
    X, y = _sequence_data(T=12)
    hist = _sequence_model().fit(X, y, epochs=5, batch_size=4, record_grad_norms=True)
    ax = plot.plot_timestep_grad_norms(hist, layer=0, kind="heatmap")
    images = ax.get_images()
    assert len(images) == 1
    data = np.asarray(images[0].get_array())
    assert data.shape == (5, 12)
    np.testing.assert_array_equal(data[2], hist.timestep_grad_norms[0][2][-1])
    assert _save(ax, tmp_path / "heatmap.png").startswith(PNG_MAGIC)


def test_grad_norms_bad_arguments(plt):
    with pytest.raises(ValueError, match="kind must be"):
        plot.plot_timestep_grad_norms(np.ones(3), kind="bars")
    with pytest.raises(ValueError, match="needs a History"):
        plot.plot_timestep_grad_norms(np.ones(3), kind="heatmap")
    with pytest.raises(ValueError, match=r"shape \(T,\) or \(num_layers, T\)"):
        plot.plot_timestep_grad_norms(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="record_grad_norms=True"):
        plot.plot_timestep_grad_norms(cr.History())


def test_decision_boundary_of_a_two_moons_classifier(plt, tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    t = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    X = np.column_stack([np.cos(t) + label, np.sin(t) * (1 - 2 * label) + 0.5 * label])
    X += 0.1 * rng.normal(size=X.shape)
    model = cr.Model([cr.Dense(2, 16), cr.Tanh(), cr.Dense(16, 2)], loss="cross_entropy",
                     optimizer=cr.Adam(lr=0.05), seed=0)
    model.fit(X, label, epochs=150, batch_size=50)
    ax = plot.plot_decision_boundary(model, X, label, resolution=50)
    regions = ax.collections[0]  # the filled contour set
    assert regions.get_array() is not None
    scatter = ax.collections[-1]
    assert scatter.get_offsets().shape == (n, 2)
    # The classifier separates the moons, so the boundary drawn is a meaningful one.
    assert np.mean(model.predict_classes(X) == label) > 0.9
    assert _save(ax, tmp_path / "boundary.png").startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        plot.plot_decision_boundary(model, np.zeros((4, 3)), np.zeros(4))
    regressor = cr.Model([cr.Dense(2, 1)], seed=0)
    with pytest.raises(ValueError, match="classifier"):
        plot.plot_decision_boundary(regressor, X, label)
