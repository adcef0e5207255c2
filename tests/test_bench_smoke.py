"""The benchmark harness runs end to end on tiny shapes (bench/run.py --smoke): every requested
workload is in the table, chainrule and each installed peer give positive numbers, and every
system takes the same two SGD steps as float64 NumPy. No speed is asserted: speed lives in
bench/. The bench runs in a subprocess; this process's environment is left as it is.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import chainrule

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
TRAINING = ["xor", "digits", "mnist", "wide", "rnn", "rnnlong", "lstm"]
ALL = ["gemm"] + TRAINING
PEERS = ["torch", "jax", "sklearn"]


def _run_bench(args, tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ)  # a copy for the child: chainrule importable there as it is here
    pkg_parent = str(Path(chainrule.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in env.get(
        "PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), *args, "--smoke",
                           "--json", str(out)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _run_bench(ALL + ["--check"], tmp_path_factory.mktemp("bench"))


def _table_labels(stdout):
    return {line.split()[0] for line in stdout.splitlines() if line.strip()}


def test_table_lists_every_workload(smoke):
    stdout, doc = smoke
    labels = _table_labels(stdout)
    for name in ALL:
        assert name in labels, f"{name} missing from the table:\n{stdout}"
    assert set(doc["results"]) == set(ALL)


def test_chainrule_numbers_are_positive(smoke):
    _, doc = smoke
    for name in TRAINING:
        d = doc["results"][name]["systems"]["chainrule"]
        assert d.get("median", 0) > 0, (name, d)
        assert np.isfinite(d["final_loss"]), (name, d)
    numpy_row = doc["results"]["gemm"]["gemm"][0]
    assert numpy_row["gflops"]["numpy"] > 0
    if hasattr(chainrule.ops, "gemm"):
        assert all(row["gflops"]["chainrule"] > 0 for row in doc["results"]["gemm"]["gemm"])
    else:
        assert numpy_row["errors"]["chainrule"] == "ops not available"


def test_numpy_numbers_are_positive(smoke):
    _, doc = smoke
    for name in TRAINING:
        assert doc["results"][name]["systems"]["numpy"]["median"] > 0, name


@pytest.mark.parametrize("peer", PEERS)
def test_peer_numbers_are_positive(smoke, peer):
    _, doc = smoke
    if peer in doc["meta"]["unavailable"]:  # the bench could not import it
        pytest.skip(f"{peer}: {doc['meta']['unavailable'][peer]}")
    for name in TRAINING:
        d = doc["results"][name]["systems"][peer]
        if d.get("error") == "n/a":  # scikit-learn has no recurrent networks
            assert peer == "sklearn" and name in ("rnn", "rnnlong", "lstm")
            continue
        assert d.get("median", 0) > 0, (name, peer, d)


def test_every_system_trains_the_same_network(smoke):
    _, doc = smoke
    assert set(doc["checks"]) == set(TRAINING)
    for name, check in doc["checks"].items():
        assert "chainrule" in check["systems"] and "numpy" in check["systems"]
        for system, d in check["systems"].items():
            assert d["ok"], (name, system, d)


def test_kernels_workload_runs_alone(tmp_path):
    stdout, doc = _run_bench(["kernels", "--systems", "chainrule,numpy"], tmp_path)
    assert "kernels" in _table_labels(stdout)
    k = doc["results"]["kernels"]
    assert {row["op"] for row in k["gemm"]} == {"NN", "TN", "NT"}
    assert {row["dtype"] for row in k["gemm"]} == {"float32", "float64"}
    assert all(row["melems"]["numpy"] > 0 for row in k["activations"])
    assert all(row["gflops"]["numpy"] > 0 for row in k["dense"])


# ---------------------------------------------------------------- pieces, in this process
def _import_bench(name):
    """bench/<name>.py as a module named bench_<name> (no bench/ on sys.path for others)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _NumpyOps:
    """A stand-in for chainrule.ops with its signatures, so kernels.py's chainrule path runs
    before (and independently of) the real module."""

    @staticmethod
    def gemm(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None):
        r = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
        if out is None:
            return r
        out[...] = r + beta * out
        return out

    relu = staticmethod(lambda x: np.maximum(x, 0))
    tanh = staticmethod(np.tanh)
    sigmoid = staticmethod(lambda x: 0.5 * np.tanh(0.5 * x) + 0.5)

    @staticmethod
    def activation_backward(name, dy, x=None, y=None):
        return dy * {"relu": lambda: y > 0, "tanh": lambda: 1 - y * y,
                     "sigmoid": lambda: y * (1 - y)}[name]()

    @staticmethod
    def dense_forward(x, weight, bias):
        return x @ weight.T + bias

    @staticmethod
    def dense_backward(dy, x, weight, dweight=None, dbias=None):
        dweight += dy.T @ x
        dbias += dy.sum(axis=0)
        return dy @ weight, dweight, dbias


def test_kernels_measure_chainrule_through_the_ops_api():
    kernels = _import_bench("kernels")
    kw = dict(reps=1, min_time=0.0, settle=0.0)
    ops = _NumpyOps()
    rows = kernels.gemm_sweep(ops, (5, 17), **kw)
    assert len(rows) == 2 * 3 * 2
    for row in rows:
        assert row["gflops"]["chainrule"] > 0 and not row["errors"], row
        assert row["max_rel_err"] < 1e-5, row
    for row in kernels.activation_bench(ops, n=1000, **kw):
        assert row["melems"]["chainrule"] > 0 and row["max_abs_err"] < 1e-6, row
    rows = kernels.dense_bench(ops, kernels.SMOKE_DENSE_SHAPES, **kw)
    for row in rows:
        assert row["gflops"]["chainrule"] > 0 and not row["errors"], row
    # a single row also times Model.predict of a one-layer model (the weight kept laid out)
    predict = [row for row in rows if row["dir"] == "predict"]
    assert [row["shape"] for row in predict] == [(1, 9, 7)]
    assert predict[0]["max_abs_err"] < 1e-5, predict[0]


def test_kernels_without_ops_say_so():
    kernels = _import_bench("kernels")
    rows = kernels.gemm_sweep(None, (8,), reps=1, min_time=0.0, settle=0.0,
                              dtypes=(np.float32,), ops_list=("NN",))
    assert rows[0]["errors"] == {"chainrule": "ops not available"}
    assert rows[0]["gflops"]["numpy"] > 0


def test_bench_environment_cleans_only_its_own_copy():
    run = _import_bench("run")
    base = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "PATH": "/bin",
            "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=true --xla_dump_to=/tmp/x"}
    env, removed = run.bench_environment(3, base)
    assert removed == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PJRT_NPROC",
              "CHAINRULE_NUM_THREADS"):
        assert env[k] == "3"
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x" and env["PATH"] == "/bin"
    env1, _ = run.bench_environment(1, base)
    assert "--xla_cpu_multi_thread_eigen=false" in env1["XLA_FLAGS"].split()
    assert base["OPENBLAS_CORETYPE"] == "Haswell"  # the caller's mapping is untouched
