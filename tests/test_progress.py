"""fit's progress reporting: silent by default and off a terminal, lines with verbose=2."""
import sys

import numpy as np
import pytest

import chainrule as cr


def _model():
    return cr.Model([cr.Dense(3, 4), cr.Tanh(), cr.Dense(4, 1)], seed=0)


def _data():
    X = np.random.default_rng(0).random((32, 3))
    return X, X.sum(1)


def test_default_is_silent(capsys):
    _model().fit(*_data(), epochs=3)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_verbose_1_is_silent_off_a_terminal(capsys):
    assert not sys.stderr.isatty()
    _model().fit(*_data(), epochs=3, verbose=1)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_verbose_1_draws_a_bar_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain fallback line
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    h = _model().fit(*_data(), epochs=4, verbose=1)
    err = capsys.readouterr().err
    assert "4/4" in err and f"loss={h.loss[-1]:.4g}" in err


def test_verbose_2_prints_a_line_per_epoch(capsys):
    h = _model().fit(*_data(), epochs=3, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[1] for ln in lines] == ["1/3", "2/3", "3/3"]
    assert f"loss={h.loss[-1]:.4g}" in lines[-1]


@pytest.mark.parametrize("bad", [3, -1, "1", True])
def test_bad_verbose_values(bad):
    with pytest.raises(ValueError, match="verbose"):
        _model().fit(*_data(), epochs=1, verbose=bad)
