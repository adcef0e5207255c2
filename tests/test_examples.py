"""The worked examples: each demo reaches its stated result, and the command line behaves.

Demos run in-process on small settings (digits on its real settings: they take seconds); the
``python -m chainrule`` checks run in a subprocess against the package under test, found from
``chainrule.__file__``. Demos that load scikit-learn's data skip without it. No timings.
"""
from __future__ import annotations

import inspect
import io
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

import chainrule
from chainrule import demos
from chainrule.__main__ import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DATASETS = Path(os.environ.get("CHAINRULE_DATASETS", REPO.parent / "shared" / "datasets"))
HOUSING_CSV = DATASETS / "california_housing.csv"
PACKAGE_PARENT = str(Path(chainrule.__file__).resolve().parent.parent)


def run_python(*args: str) -> subprocess.CompletedProcess:
    """Runs ``python *args`` with only the package under test on PYTHONPATH."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=300)


def epoch_losses(text: str) -> List[float]:
    """The loss column of the first epoch table printed in text."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["epoch", "loss"])
    losses = []
    for line in lines[start + 2:]:
        parts = line.split()
        if not parts or not parts[0].isdigit():
            break
        losses.append(float(parts[1]))
    return losses


# ------------------------------------------------------------------------------------ xor
def test_xor_learns_and_prints_falling_loss() -> None:
    buf = io.StringIO()
    result = demos.xor(out=buf)
    assert result.passed
    np.testing.assert_array_equal(result.details["predictions"], [0, 1, 1, 0])
    # Decision values on the right side of zero, with a margin.
    z = result.details["decision_values"]
    assert np.all(z[[1, 2]] > 2) and np.all(z[[0, 3]] < -2)
    losses = epoch_losses(buf.getvalue())
    assert len(losses) >= 5
    assert losses[-1] < losses[0] / 100
    assert "4/4 correct" in buf.getvalue()


def test_xor_seed_reproduces_bit_for_bit() -> None:
    a = demos.xor(epochs=50, seed=3, out=io.StringIO())
    b = demos.xor(epochs=50, seed=3, out=io.StringIO())
    np.testing.assert_array_equal(a.details["decision_values"], b.details["decision_values"])


# -------------------------------------------------------------------------- gradient check
@pytest.mark.parametrize("loss", ["mse", "bce_with_logits", "cross_entropy"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_gradient_check_agrees(loss: str, activation: str) -> None:
    result = demos.gradient_check(loss=loss, activation=activation, out=io.StringIO())
    assert result.passed
    assert result.metrics["max_rel_error"] < 1e-6
    assert list(result.details["per_parameter"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_gradient_check_catches_a_wrong_gradient(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    # Scale the analytic gradients by 1.001: the check must fail, and the script exit with 1.
    true_grads = chainrule.Model.grads
    monkeypatch.setattr(chainrule.Model, "grads", property(
        lambda self: {k: v * 1.001 for k, v in true_grads.fget(self).items()}))
    result = demos.gradient_check(out=io.StringIO())
    assert not result.passed
    assert 5e-4 < result.metrics["max_rel_error"] < 2e-3
    assert demos.run_cli("gradient_check", []) == 1
    assert "FAILED" in capsys.readouterr().out


# ------------------------------------------------------------------- binary classification
def test_binary_classification_breast_cancer() -> None:
    pytest.importorskip("sklearn")
    buf = io.StringIO()
    result = demos.binary_classification(quick=True, out=buf)
    assert result.metrics["accuracy"] >= 0.9
    assert result.metrics["accuracy"] > result.metrics["majority_accuracy"]
    losses = epoch_losses(buf.getvalue())
    assert losses[-1] < losses[0] / 2
    assert "held-out accuracy" in buf.getvalue()


# ------------------------------------------------------------------------------------ digits
def test_digits_reaches_97_percent() -> None:
    pytest.importorskip("sklearn")
    result = demos.digits(out=io.StringIO())  # the real settings: a couple of seconds
    assert result.metrics["accuracy"] >= 0.97
    confusion = result.details["confusion"]
    assert confusion.shape == (10, 10) and confusion.sum() == 450
    # Stratified: round(0.25 * n) of each digit's 174-183 images are held out.
    assert set(confusion.sum(axis=1)) <= {44, 45, 46}


# ------------------------------------------------------------------------------ house prices
def test_house_prices_synthetic() -> None:
    buf = io.StringIO()
    result = demos.house_prices(synthetic=True, quick=True, out=buf)
    m = result.metrics
    assert m["r2"] > 0.5
    assert m["rmse"] < m["mean_rmse"]
    # The synthetic prices hold an income-by-location product a linear model cannot fit.
    assert m["rmse"] < m["linear_rmse"]
    assert "synthetic" in result.details["source"]
    assert "ocean_proximity=INLAND" in result.details["feature_names"]


@pytest.mark.skipif(not HOUSING_CSV.exists(), reason=f"{HOUSING_CSV} not present "
                    "(set CHAINRULE_DATASETS to the folder holding california_housing.csv)")
def test_house_prices_real_csv() -> None:
    buf = io.StringIO()
    result = demos.house_prices(csv_path=str(HOUSING_CSV), quick=True, out=buf)
    m = result.metrics
    assert m["r2"] > 0.5
    assert m["r2"] > m["linear_r2"]
    assert 10_000 < m["rmse"] < m["linear_rmse"]
    assert "207 blank cells" in buf.getvalue()
    assert "5 columns" in buf.getvalue()  # ocean_proximity's five categories


def write_csv(path: Path, rows: List[Dict[str, str]]) -> None:
    cols = list(demos.HOUSING_NUMERIC) + [demos.HOUSING_TARGET, demos.HOUSING_CATEGORY]
    lines = [",".join(cols)] + [",".join(r.get(c, "1") for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_read_housing_csv_blanks_and_categories(tmp_path: Path) -> None:
    path = tmp_path / "houses.csv"
    write_csv(path, [{"total_bedrooms": "", "median_house_value": "100000",
                      "ocean_proximity": "INLAND"},
                     {"total_bedrooms": "4", "median_house_value": "200000",
                      "ocean_proximity": "NEAR BAY"},
                     {"median_house_value": "", "ocean_proximity": "INLAND"},  # dropped
                     {"total_bedrooms": "8", "median_house_value": "300000",
                      "ocean_proximity": "NEAR BAY"}])
    data = demos.read_housing_csv(str(path))
    np.testing.assert_array_equal(data.target, [100000, 200000, 300000])
    col = data.numeric_names.index("total_bedrooms")
    assert np.isnan(data.numeric[0, col]) and np.isnan(data.numeric).sum() == 1
    feats = demos.HousingFeatures().fit(data, np.arange(3))
    assert feats.medians_[col] == 6.0  # the median of 4 and 8 fills the blank
    assert feats.levels_ == ["INLAND", "NEAR BAY"]
    X = feats.transform(data, np.arange(3))
    assert X.shape == (3, 8 + 2) and np.isfinite(X).all()


def test_read_housing_csv_names_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("longitude,latitude,median_house_value\n1,2,3\n")
    with pytest.raises(ValueError, match="total_rooms"):
        demos.read_housing_csv(str(path))


def test_house_prices_without_sklearn_falls_back_to_synthetic(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    buf = io.StringIO()
    result = demos.house_prices(quick=True, out=buf)
    assert "synthetic" in result.details["source"]
    assert "scikit-learn is not installed" in buf.getvalue()
    assert result.metrics["r2"] > 0.5


def test_house_prices_download_passes_arguments_scikit_learn_accepts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # scikit-learn validates its arguments before any download: n_retries=0 made every download
    # fail at once, offline or not, and the demo always fell back to the synthetic data.
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    real = sklearn_datasets.fetch_california_housing
    constraints = getattr(real, "_skl_parameter_constraints", None)
    if constraints is None:
        pytest.skip("this scikit-learn does not declare its parameter constraints")
    from sklearn.utils._param_validation import validate_parameter_constraints
    seen: list = []

    def fake_fetch(**kwargs: object) -> None:
        validate_parameter_constraints(constraints, kwargs, caller_name="fetch_california_housing")
        seen.append(kwargs)
        raise OSError("offline")  # a valid call that finds no network

    monkeypatch.setattr(sklearn_datasets, "fetch_california_housing", fake_fetch)
    buf = io.StringIO()
    result = demos.house_prices(download_timeout=5.0, quick=True, out=buf)
    assert [k["download_if_missing"] for k in seen] == [False, True]  # cache, then download
    assert "synthetic" in result.details["source"] and "offline" in buf.getvalue()


def test_house_prices_download_that_hangs_is_abandoned(monkeypatch: pytest.MonkeyPatch) -> None:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    release = threading.Event()

    def fake_fetch(download_if_missing: bool = True, **kwargs: object) -> None:
        if not download_if_missing:
            raise OSError("Data not found and `download_if_missing` is False")
        release.wait()  # a download that never answers (until the test ends)
        raise OSError("released")

    monkeypatch.setattr(sklearn_datasets, "fetch_california_housing", fake_fetch)
    buf = io.StringIO()
    try:
        result = demos.house_prices(download_timeout=0.2, quick=True, out=buf)
    finally:
        release.set()
    assert "synthetic" in result.details["source"]
    assert "no answer within 0.2 s" in buf.getvalue()


# ------------------------------------------------------------------------------ command line
def test_python_m_chainrule_runs_xor_and_gradient_check() -> None:
    proc = run_python("-m", "chainrule")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "XOR: 4/4 correct" in out
    assert "gradient check passed" in out
    losses = epoch_losses(out)
    assert losses[-1] < losses[0] / 100
    # The predictions table: x1 x2, target, decision value, sigmoid, predicted, ok.
    rows = re.findall(r"^\s+([01])\s+([01])\s+([01])\s+[-+]\d+\.\d+\s+\d\.\d+\s+([01])\s+ok$",
                      out, re.M)
    assert rows == [("0", "0", "0", "0"), ("0", "1", "1", "1"), ("1", "0", "1", "1"),
                    ("1", "1", "0", "0")]


def test_python_m_chainrule_needs_only_numpy() -> None:
    # Block the extras (and torch): the default demo must not import them.
    code = ("import sys, runpy\n"
            "for m in ('sklearn', 'matplotlib', 'torch', 'pandas'): sys.modules[m] = None\n"
            "sys.argv = ['chainrule']\n"
            "runpy.run_module('chainrule', run_name='__main__', alter_sys=True)\n")
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert "XOR: 4/4 correct" in proc.stdout


def test_unknown_demo_exits_2() -> None:
    proc = run_python("-m", "chainrule", "demo", "nonsense")
    assert proc.returncode == 2
    assert "nonsense" in proc.stderr and "gradient_check" in proc.stderr


def test_help_lists_every_demo(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ["xor", "gradient_check", "binary_classification", "house_prices", "digits"]:
        assert re.search(rf"^\s+{name}\s", out, re.M), name
    assert "pip install '.[examples]'" in out


def test_missing_sklearn_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    for name in ["digits", "binary_classification"]:
        assert main(["demo", name, "--quick"]) == 1
        err = capsys.readouterr().err
        assert f"The {name} demo" in err and "pip install '.[examples]'" in err


@pytest.mark.parametrize("argv,message", [
    (["house_prices", "/nonexistent/houses.csv"], "cannot use /nonexistent/houses.csv as house "
                                                  "data: .*No such file"),
    (["digits", "--test-size", "0.999"], "leaves 0 for training"),
    (["binary_classification", "--plot", "/nonexistent/dir/x.png"],
     "the folder /nonexistent/dir does not exist"),
    (["gradient_check", "--loss", "cross_entropy", "--outputs", "1"],
     "cross_entropy needs at least 2 outputs"),
    (["house_prices", "--synthetic", "--rows", "3"], "R² needs at least 2 held-out rows"),
])
def test_bad_demo_input_is_an_error_line_and_exit_2(argv, message, capsys, tmp_path) -> None:
    # no traceback, and (for --plot) before any training
    assert main(["demo", *argv]) == 2
    captured = capsys.readouterr()
    assert re.search(f"^error: .*{message}", captured.err), captured.err
    assert "epoch" not in captured.out.lower()


def test_bad_csv_content_is_an_error_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["demo", "house_prices", str(bad)]) == 2
    assert re.search(r"^error: cannot use .*bad.csv as house data: .*lacks column",
                     capsys.readouterr().err)


@pytest.mark.parametrize("name", list(demos.DEMOS))
def test_cli_options_are_demo_arguments(name: str) -> None:
    # Every option the command line parses is a keyword of the demo function it calls, except
    # --plot, which run_demo handles after the demo returns.
    options = vars(demos.build_parser(name).parse_args([]))
    assert options.pop("plot", None) is None
    params = inspect.signature(demos.DEMOS[name].run).parameters
    assert set(options) <= set(params) - {"out"}
    assert "seed" in options
    for key, value in options.items():
        assert value == params[key].default, key


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/ is not beside tests/")
def test_example_scripts_run() -> None:
    proc = run_python(str(EXAMPLES / "xor.py"), "--epochs", "300", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "XOR: 4/4 correct" in proc.stdout and "after 300 epochs" in proc.stdout
    proc = run_python(str(EXAMPLES / "gradient_check.py"), "--loss", "cross_entropy")
    assert proc.returncode == 0, proc.stderr
    assert "gradient check passed" in proc.stdout
    proc = run_python(str(EXAMPLES / "gradient_check.py"), "--tol", "1e-15")
    assert proc.returncode == 1
    assert "gradient check FAILED" in proc.stdout


def test_a_missing_extension_says_so() -> None:
    # it read "cannot import name '_core' from partially initialized module ... (most likely due
    # to a circular import)"
    proc = run_python("-c", "import sys; sys.modules['chainrule._core'] = None; import chainrule")
    assert proc.returncode == 1
    assert "compiled core (the _core extension) cannot be loaded" in proc.stderr
    assert "pip install ." in proc.stderr


def test_plot_path_that_is_a_folder_is_refused_before_training(tmp_path: Path, capsys) -> None:
    assert main(["demo", "xor", "--plot", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "it is a folder; name a file" in captured.err and "epoch" not in captured.out
