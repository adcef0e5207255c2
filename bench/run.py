"""Benchmarks chainrule against plain NumPy, PyTorch, JAX and scikit-learn, side by side.

    python bench/run.py [workload ...] [--quick | --smoke] [--reps N] [--threads N]
                        [--json out.json] [--markdown] [--check | --check-only]

Prints one table: the median steps/s (GFLOP/s for gemm) of each system over --reps
repetitions, systems interleaved, and chainrule ÷ the best peer. See bench/README.md for what
is measured and the fairness rules (same network, data, batch, loss, float32, thread count).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SYSTEMS = ("chainrule", "numpy", "torch", "jax", "sklearn")
PEER_NAMES = SYSTEMS[1:]
# Variables that make NumPy's OpenBLAS pick a slower kernel on these machines (PERFORMANCE.md).
SLOW_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "CHAINRULE_NUM_THREADS",
               "PJRT_NPROC")  # PJRT_NPROC: the size of XLA's CPU thread pools (jaxlib reads it)
_REMOVED_KEY = "CHAINRULE_BENCH_REMOVED_ENV"
# --check tolerances. Float32 weights hold an update lr·∇w only to about one ulp of w, 1e-4 to
# 2e-3 of the update here, for every system alike; a different network, loss scaling or learning
# rate shows up as an O(1) error.
LOSS_TOL, UPDATE_TOL = 1e-4, 1e-2


# ==================================================================== environment
def bench_environment(threads: int, base: Dict[str, str]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """The benchmark's own process environment: the slow-kernel variables removed, every
    library's thread count set to threads. Returns (env, removed variables)."""
    env = dict(base)
    removed = json.loads(env.pop(_REMOVED_KEY, "{}"))
    removed.update({k: env.pop(k) for k in SLOW_VARS if k in env})
    for k in THREAD_VARS:
        env[k] = str(threads)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_cpu_multi_thread_eigen")]
    if threads == 1:  # Eigen's own intra-op threads off as well
        flags.append("--xla_cpu_multi_thread_eigen=false")
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    else:
        env.pop("XLA_FLAGS", None)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env, removed


def prepare_environment(threads: int) -> Dict[str, str]:
    """Applies bench_environment to this process before NumPy loads OpenBLAS; if NumPy was
    already imported (its kernel already chosen), re-executes the script with the clean
    environment. Returns the removed variables."""
    env, removed = bench_environment(threads, dict(os.environ))
    if "numpy" in sys.modules and any(k in os.environ for k in SLOW_VARS) and \
            os.environ.get("CHAINRULE_BENCH_REEXEC") != "1":
        env["CHAINRULE_BENCH_REEXEC"] = "1"
        env[_REMOVED_KEY] = json.dumps(removed)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)
    os.environ.clear()
    os.environ.update(env)
    return removed


# ==================================================================== chainrule
class ChainruleTrainer:
    """chainrule.Model.fit: each call runs a whole run of minibatch steps in C++."""

    name = "chainrule"

    def __init__(self, w: Any, params: Dict[str, Any], X: Any, y: Any) -> None:
        import numpy as np
        import chainrule as cr
        if w.kind == "mlp":
            layers: List[Any] = []
            for k in range(len(w.sizes) - 1):
                layers.append(cr.Dense(w.sizes[k], w.sizes[k + 1]))
                if k < len(w.sizes) - 2:
                    layers.append(cr.ReLU() if w.activation == "relu" else cr.Tanh())
        else:
            rec = cr.LSTM if w.kind == "lstm" else cr.RNN
            layers = [rec(*w.sizes), cr.Dense(w.sizes[1], 1)]
        self.model = cr.Model(layers, loss=w.loss, optimizer=cr.SGD(lr=w.lr), dtype="float32",
                              seed=0)
        self.model.load_state_dict(params)
        n = w.n_batches * w.batch
        self.X = np.ascontiguousarray(X[:n], np.float32)
        self.y = np.ascontiguousarray(y[:n]) if y.dtype.kind == "i" else np.ascontiguousarray(
            y[:n], np.float32)
        self.w, self.i, self.nb = w, 0, w.n_batches

    def run(self, steps: int) -> float:
        B, loss = self.w.batch, 0.0
        while steps > 0:
            n = min(steps, self.nb - self.i)
            lo, hi = self.i * B, (self.i + n) * B
            h = self.model.fit(self.X[lo:hi], self.y[lo:hi], epochs=1, batch_size=B,
                               shuffle=False)
            loss = h.history["loss"][-1]
            self.i = (self.i + n) % self.nb
            steps -= n
        return loss

    def losses(self, steps: int) -> List[float]:
        return [self.run(1) for _ in range(steps)]

    def params(self) -> Dict[str, Any]:
        import numpy as np
        return {k: v.astype(np.float64) for k, v in self.model.state_dict().items()}


def import_chainrule() -> Tuple[Optional[Any], str]:
    """chainrule from the path, else from the working tree's python/ (after ./dev-build.sh)."""
    try:
        import chainrule
        return chainrule, ""
    except ImportError as e:
        tree = os.path.join(REPO, "python")
        if os.path.isdir(os.path.join(tree, "chainrule")) and tree not in sys.path:
            sys.path.insert(0, tree)
            try:
                import chainrule
                return chainrule, ""
            except ImportError as e2:
                return None, f"chainrule not importable: {e2}"
        return None, f"chainrule not importable: {e}"


# ==================================================================== harness
class Env:
    """What the run found: the importable systems, their versions, and the machine."""

    def __init__(self, threads: int, systems: Sequence[str], removed: Dict[str, str]) -> None:
        import numpy as np
        self.threads = threads
        self.available: Dict[str, bool] = {}
        self.why: Dict[str, str] = {}
        self.versions: Dict[str, str] = {"numpy": np.__version__}
        cr, why = import_chainrule()
        self.available["chainrule"] = cr is not None
        if cr is not None:
            self.versions["chainrule"] = f"{cr.__version__} ({os.path.dirname(cr.__file__)})"
        else:
            self.why["chainrule"] = why
        self.available["numpy"] = True
        for s, mod in (("torch", "torch"), ("jax", "jax"), ("sklearn", "sklearn")):
            if s not in systems:
                continue
            try:
                m = __import__(mod)
                self.available[s] = True
                self.versions[s] = m.__version__
            except Exception as e:  # noqa: BLE001 - any failure means absent
                self.available[s] = False
                self.why[s] = f"not installed ({type(e).__name__}: {e})"[:120]
        if self.available.get("torch"):
            import torch
            torch.set_num_threads(threads)
            self.versions["torch"] += f" (threads={torch.get_num_threads()})"
        if self.available.get("jax"):
            import jax
            self.versions["jax"] += f" (jaxlib {jax.lib.__version__}, " \
                                    f"{jax.devices()[0].platform}, PJRT_NPROC={threads})"
        # Limit every BLAS/OpenMP pool loaded by now (NumPy's and scikit-learn's OpenBLAS,
        # PyTorch's OpenMP) to the common thread count, for the rest of the process.
        self.blas: List[Dict[str, Any]] = []
        try:
            import threadpoolctl
            self._limits = threadpoolctl.threadpool_limits(limits=threads)
            self.blas = threadpoolctl.threadpool_info()
        except ImportError:
            self.why["threadpoolctl"] = "threadpoolctl missing: OpenBLAS threads set by env only"
        self.numpy_blas = next((b for b in self.blas if "numpy" in b.get("filepath", "")),
                               next((b for b in self.blas if b.get("user_api") == "blas"), {}))
        self.removed = removed
        self.systems = [s for s in systems if self.available.get(s)]
        self.machine = machine_info()

    def header(self) -> List[str]:
        b = self.numpy_blas
        blas = (f"{b.get('internal_api')} {b.get('version')}, architecture={b.get('architecture')},"
                f" num_threads={b.get('num_threads')}" if b else "unknown (no threadpoolctl)")
        was = ", ".join(f"{k}={v!r}" for k, v in self.removed.items()) or "none were set"
        m = self.machine
        lines = [
            f"machine: {m['cpu']}, {m['logical_cpus']} logical CPUs (affinity {m['affinity']}), "
            f"AVX-512 {'yes' if m['avx512f'] else 'no'}; {m['os']}; Python {m['python']}; "
            f"load average {m['load_start']}",
            f"threads: {self.threads} for every system (torch.set_num_threads, PJRT_NPROC, "
            f"threadpoolctl + OMP/MKL/OPENBLAS_NUM_THREADS, CHAINRULE_NUM_THREADS)",
            f"numpy {self.versions['numpy']}: OpenBLAS kernel {blas}; "
            f"unset for this run: {', '.join(SLOW_VARS)} (before: {was})",
        ]
        busy = m["load_avg"][0]
        if busy + self.threads > (m["affinity"] or 1) + 0.5:  # our threads + theirs > cores
            lines.append(
                f"WARNING: load average {busy:.1f} on {m['affinity']} CPUs: other processes "
                f"compete for the cores. Thread pools that wait at barriers (OpenBLAS, OpenMP in "
                f"PyTorch, XLA) stall whenever one of their {self.threads} threads is preempted, "
                "so multi-threaded peers lose most; the ratios below are unreliable. "
                "Re-run on a quiet machine, or compare with --threads 1.")
        for s in SYSTEMS[0:1] + PEER_NAMES[1:]:
            if s in self.versions:
                lines.append(f"{s} {self.versions[s]}")
            elif s in self.why:
                lines.append(f"{s}: {self.why[s]}")
        return lines


def machine_info() -> Dict[str, Any]:
    cpu, flags = platform.processor() or "unknown CPU", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("unknown CPU", "x86_64", ""):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "affinity": affinity,
            "avx512f": " avx512f" in flags, "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "load_avg": list(load),
            "load_start": " ".join(f"{x:.2f}" for x in load)}


def make_trainer(system: str, w: Any, params: Any, X: Any, y: Any) -> Any:
    if system == "chainrule":
        return ChainruleTrainer(w, params, X, y)
    if system == "numpy":
        from numpy_nets import NumpyTrainer
        return NumpyTrainer(w, params, __import__("workloads").batches(w, X, y))
    from peers import PEERS
    return PEERS[system](w, params, X, y)


def _timed(tr: Any, steps: int) -> Tuple[float, float, float]:
    """(wall seconds, process CPU seconds, last loss) of steps training steps."""
    c0, t0 = time.process_time(), time.perf_counter()
    loss = tr.run(steps)
    return time.perf_counter() - t0, time.process_time() - c0, loss


def bench_training(w: Any, env: Env, opts: argparse.Namespace) -> Dict[str, Any]:
    """steps/s of every system on workload w: build, warm up, calibrate, then reps interleaved."""
    from peers import applies
    from workloads import init_params, make_data, step_flops
    X, y = make_data(w, seed=0)
    params = init_params(w, seed=0)
    res: Dict[str, Any] = {"description": w.description, "figure": "steps/s", "batch": w.batch,
                           "step_gflop": step_flops(w) / 1e9, "systems": {}}
    trainers, steps = {}, {}
    for s in env.systems:
        if not applies(s, w):
            res["systems"][s] = {"error": "n/a"}
            continue
        try:
            tr = make_trainer(s, w, params, X, y)
            tr.run(max(1, min(3, w.n_batches)))  # warm-up: allocations, caches, first calls
            n = 1
            while True:  # calibrate: steps per repetition of about min_time
                dt, _, _ = _timed(tr, n)
                if dt >= opts.min_time * 0.5 or n >= 1 << 24:
                    break
                n = n * 2 if dt <= 0 else max(n * 2, int(n * opts.min_time / dt))
            steps[s] = max(opts.min_steps, int(round(n * opts.min_time / dt)) if dt > 0 else 1)
            trainers[s] = tr
        except Exception as e:  # noqa: BLE001 - one broken peer must not stop the run
            res["systems"][s] = {"error": f"{type(e).__name__}: {e}"[:200]}
    samples: Dict[str, List[Tuple[float, float, float]]] = {s: [] for s in trainers}
    names = list(trainers)
    from kernels import settle_time
    previous = None
    for r in range(opts.reps):
        for s in names[r % len(names):] + names[:r % len(names)] if names else []:
            if opts.settle > 0 and len(names) > 1:
                # other systems' spinning pool threads go idle (OpenBLAS's take ~0.1 s)
                time.sleep(settle_time(previous, opts.settle))
            samples[s].append(_timed(trainers[s], steps[s]))
            previous = s
    for s, sm in samples.items():
        rates = [steps[s] / dt for dt, _, _ in sm]
        med = _median(rates)
        res["systems"][s] = {
            "median": med, "samples": rates, "steps_per_rep": steps[s],
            "spread": (max(rates) - min(rates)) / med if med > 0 else float("nan"),
            "cores": _median([c / dt for dt, c, _ in sm]),
            "final_loss": float(sm[-1][2]),
        }
    del trainers
    return res


def check_training(w: Any, env: Env, steps: int = 2) -> Dict[str, Any]:
    """One system after another trains `steps` steps from the same weights on the same batches;
    each one's losses and parameter updates are compared with float64 NumPy."""
    from dataclasses import replace

    import numpy as np
    from numpy_nets import NumpyTrainer
    from peers import applies
    from workloads import batches, init_params, make_data
    w2 = replace(w, n_samples=steps * w.batch)
    X, y = make_data(w, seed=0)
    X, y = X[:w2.n_samples], y[:w2.n_samples]
    p0 = init_params(w, seed=0)
    ref = NumpyTrainer(w2, p0, batches(w2, X, y), dtype=np.float64)
    ref_losses = ref.losses(steps)
    ref_dp = {k: v - p0[k].astype(np.float64) for k, v in ref.params().items()}
    out: Dict[str, Any] = {"reference": "numpy float64", "ref_losses": ref_losses, "systems": {}}
    for s in env.systems:
        if not applies(s, w):
            continue
        try:
            tr = make_trainer(s, w2, p0, X, y)
            losses = tr.losses(steps)
            got = tr.params()
            loss_err = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, ref_losses))
            dp_err = max(float(np.max(np.abs((got[k] - p0[k]) - d))) /
                         max(float(np.max(np.abs(d))), 1e-30) for k, d in ref_dp.items())
            out["systems"][s] = {"losses": losses, "loss_rel_err": loss_err,
                                 "update_rel_err": dp_err,
                                 "ok": bool(loss_err < LOSS_TOL and dp_err < UPDATE_TOL)}
        except Exception as e:  # noqa: BLE001
            out["systems"][s] = {"error": f"{type(e).__name__}: {e}"[:200], "ok": False}
    return out


def bench_kernels(w: Any, env: Env, opts: argparse.Namespace, with_peers: bool
                  ) -> Dict[str, Any]:
    import numpy as np
    import kernels
    ops, why = kernels.ops_module() if env.available["chainrule"] else (None, "no chainrule")
    kw = dict(reps=opts.reps, min_time=min(opts.min_time, 0.1), settle=min(opts.settle, 0.05))
    peers = [s for s in ("torch", "jax") if with_peers and s in env.systems]
    res: Dict[str, Any] = {"ops": why or "available", "figure": "GFLOP/s"}
    res["gemm"] = kernels.gemm_sweep(ops, w.gemm_sizes, peers=peers, **kw)
    if opts.smoke:
        res["activations"] = kernels.activation_bench(ops, n=1000, **kw)
        res["dense"] = kernels.dense_bench(ops, kernels.SMOKE_DENSE_SHAPES, **kw)
    else:
        res["activations"] = kernels.activation_bench(ops, **kw)
        res["dense"] = kernels.dense_bench(ops, **kw)
    del np
    return res


def _median(xs: Sequence[float]) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else 0.5 * (xs[m - 1] + xs[m])


# ==================================================================== output
def fmt(x: Optional[float]) -> str:
    """3 significant digits with k/M suffixes: 1.23M, 45.6k, 789, 12.3, 0.456."""
    if x is None or not isinstance(x, (int, float)) or math.isnan(x):
        return "—"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            v = x / div
            return f"{v:.3g}{suf}" if v < 1000 else f"{v:.0f}{suf}"
    return f"{x:.3g}"


def table_rows(results: Dict[str, Any], systems: Sequence[str], env: Env) -> List[List[str]]:
    """Rows of the main table: [workload, figure, one cell per system, ratio, best peer]."""
    rows = []

    def add(label: str, figure: str, vals: Dict[str, Any], spread: Dict[str, float]) -> None:
        cells = []
        for s in systems:
            v = vals.get(s, "absent" if s not in env.systems else None)
            if isinstance(v, str):
                cells.append(v)
            else:
                cells.append(fmt(v) + ("~" if spread.get(s, 0) > 0.25 else ""))
        peers = {s: v for s, v in vals.items() if s != "chainrule" and isinstance(v, float)
                 and not math.isnan(v)}
        cr = vals.get("chainrule")
        if peers and isinstance(cr, float) and not math.isnan(cr):
            best = max(peers, key=peers.get)
            ratio, who = f"{cr / peers[best]:.2f}×", best
        else:
            ratio, who = "—", (max(peers, key=peers.get) if peers else "—")
        rows.append([label, figure] + cells + [ratio, who])

    for name, r in results.items():
        if "gemm" in r:
            sizes = sorted({row["n"] for row in r["gemm"]})
            if not sizes:
                continue
            picks = sorted({sizes[0] if sizes[0] >= 128 else
                            next((n for n in sizes if n >= 128), sizes[-1]), sizes[-1]})
            for row in r["gemm"]:
                if row["op"] != "NN" or row["n"] not in picks:
                    continue
                vals: Dict[str, Any] = dict(row["gflops"])
                vals.update({s: _short(e) for s, e in row["errors"].items()})
                spread = {s: _spread(v) for s, v in row["samples"].items()}
                dt = "f32" if row["dtype"] == "float32" else "f64"
                add(f"{name} {dt} n={row['n']}", "GFLOP/s", vals, spread)
        elif "systems" in r:
            vals, spread = {}, {}
            for s, d in r["systems"].items():
                vals[s] = d["median"] if "median" in d else _short(d.get("error", "?"))
                spread[s] = d.get("spread", 0.0)
            add(name, "steps/s", vals, spread)
            if name == "wide":
                g = r["step_gflop"]
                add("wide", "GFLOP/s", {s: (v * g if isinstance(v, float) else v)
                                        for s, v in vals.items()}, spread)
    return rows


def _spread(xs: Sequence[float]) -> float:
    m = _median(xs)
    return (max(xs) - min(xs)) / m if xs and m > 0 else 0.0


def _short(err: str) -> str:
    if err in ("n/a", "ops not available"):
        return err
    return "error"


def render(header: Sequence[str], rows: List[List[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join(
            "---" if i < 2 else "---:" for i in range(len(header))) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(  # noqa: E731
        str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def print_report(env: Env, results: Dict[str, Any], checks: Dict[str, Any],
                 opts: argparse.Namespace) -> None:
    systems = [s for s in SYSTEMS if s in opts.systems]
    md = opts.markdown
    say = lambda s="": print(s, flush=True)  # noqa: E731
    mode = "smoke" if opts.smoke else "quick" if opts.quick else "full"
    say(("## " if md else "") + f"chainrule bench ({mode}): median of {opts.reps} reps, "
        f"≥{opts.min_time:g} s each, systems interleaved, float32, plain SGD")
    for line in env.header():
        say(("- " if md else "  ") + line)
    say()
    if checks:
        hdr = ["check", "reference losses"] + [s for s in systems if s in env.systems] + ["ok"]
        rows = []
        for name, c in checks.items():
            cells, ok = [], True
            for s in hdr[2:-1]:
                d = c["systems"].get(s)
                if d is None:
                    cells.append("n/a")
                elif "error" in d:
                    cells.append("error")
                    ok = False
                else:
                    cells.append(f"{d['loss_rel_err']:.1e}/{d['update_rel_err']:.1e}")
                    ok = ok and d["ok"]
            rows.append([name, " ".join(f"{x:.5g}" for x in c["ref_losses"])] + cells +
                        ["yes" if ok else "NO"])
        say("Same network? Two SGD steps from the same weights: relative error of the losses / "
            "of the parameter updates vs NumPy float64.")
        say(render(hdr, rows, md))
        say()
    if not results:
        return
    hdr = ["workload", "figure"] + systems + ["cr÷best", "best peer"]
    say(render(hdr, table_rows(results, systems, env), md))
    say("~ marks a cell whose repetitions spread more than 25% (noisy machine); "
        "n/a: the system has no such network.")
    cores = [[n, "cores"] + [f"{r['systems'][s]['cores']:.2f}" if "cores" in r["systems"].get(
        s, {}) else "" for s in systems] for n, r in results.items() if "systems" in r]
    if cores:
        say()
        say(f"CPU time / wall time while training (≤ {env.threads} expected; spinning BLAS/OpenMP "
            "workers count as busy):")
        say(render(["workload", "figure"] + systems, cores, md))
    for name, r in results.items():
        if "gemm" in r:
            say()
            print_kernels(name, r, md)
    notes = []
    for name, r in results.items():
        for s, d in r.get("systems", {}).items():
            if "error" in d and d["error"] != "n/a":
                notes.append(f"{name}/{s}: {d['error']}")
            if "final_loss" in d and not math.isfinite(d["final_loss"]):
                notes.append(f"{name}/{s}: the loss became {d['final_loss']} while timing")
            if d.get("cores", 0) > env.threads + 0.3:
                notes.append(f"{name}/{s}: busy {d['cores']:.2f} cores > {env.threads} threads")
    if notes:
        say()
        say("Notes:")
        for n in notes:
            say(("- " if md else "  ") + n)


def print_kernels(name: str, r: Dict[str, Any], md: bool) -> None:
    say = lambda s="": print(s, flush=True)  # noqa: E731
    gsys = ["chainrule", "numpy", "torch", "jax"]
    say(f"{name}: C = op(A)·op(B), square n, GFLOP/s (chainrule.ops: {r['ops']}; "
        "torch and jax for NN only)")
    rows = []
    for row in r["gemm"]:
        vals = [fmt(row["gflops"][s]) if s in row["gflops"] else
                (row["errors"].get(s, "") if s == "chainrule" else "") for s in gsys]
        num = row["gflops"].get("numpy")
        cr = row["gflops"].get("chainrule")
        ratio = f"{cr / num:.2f}×" if cr and num else "—"
        err = f"{row['max_rel_err']:.1e}" if "max_rel_err" in row else ""
        busy = "/".join(f"{row['cores'][s]:.1f}" if s in row.get("cores", {}) else "-"
                        for s in gsys)
        rows.append([row["dtype"], row["op"], str(row["n"])] + vals + [ratio, err, busy])
    say(render(["dtype", "op", "n"] + gsys + ["cr÷numpy", "rel err", "cores (same order)"],
               rows, md))
    say()
    say("activations, Melem/s (new output array per call, as a user calls them)")
    rows = []
    for row in r["activations"]:
        cr = row["melems"].get("chainrule")
        num = row["melems"].get("numpy")
        rows.append([row["dtype"], f"{row['op']} {row['dir']}", str(row["n"]),
                     fmt(cr) if cr else row["errors"].get("chainrule", ""), fmt(num),
                     f"{cr / num:.2f}×" if cr and num else "—"])
    say(render(["dtype", "op", "n", "chainrule", "numpy", "cr÷numpy"], rows, md))
    say()
    say("dense layer y = x·Wᵀ + b, (B, I, O), GFLOP/s (forward 2BIO, backward dx, dW, db 4BIO)")
    rows = []
    for row in r["dense"]:
        cr = row["gflops"].get("chainrule")
        num = row["gflops"].get("numpy")
        rows.append([row["dtype"], "×".join(map(str, row["shape"])), row["dir"],
                     fmt(cr) if cr else row["errors"].get("chainrule", ""), fmt(num),
                     f"{cr / num:.2f}×" if cr and num else "—"])
    say(render(["dtype", "B×I×O", "pass", "chainrule", "numpy", "cr÷numpy"], rows, md))


# ==================================================================== main
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    names = ["gemm", "xor", "digits", "mnist", "wide", "rnn", "rnnlong", "lstm", "kernels"]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="*", metavar="workload",
                    help=f"any of {', '.join(names)} (default: all but kernels; gemm includes "
                         "the kernel tables, kernels runs them without the peers)")
    ap.add_argument("--quick", action="store_true",
                    help="3 reps of ≥0.05 s, gemm up to n=512")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes, 1 rep, a couple of steps: checks the harness, not speed")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per system (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every system (default 2)")
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds of work per repetition (default 0.2)")
    ap.add_argument("--settle", type=float, default=None,
                    help="pause between systems so idle pool threads stop spinning (default 0.1)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"comma-separated subset of {','.join(SYSTEMS)}")
    ap.add_argument("--json", metavar="PATH", help="write every number to this JSON file")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--check", action="store_true",
                    help="first verify every system trains the same network (2 steps)")
    ap.add_argument("--check-only", action="store_true", help="only the check, no timing")
    opts = ap.parse_args(argv)
    bad = [n for n in opts.workloads if n not in names]
    if bad:
        ap.error(f"unknown workload {bad[0]!r}; expected any of {', '.join(names)}")
    opts.workloads = opts.workloads or names[:-1]
    opts.systems = [s.strip() for s in opts.systems.split(",") if s.strip()]
    bad = [s for s in opts.systems if s not in SYSTEMS]
    if bad:
        ap.error(f"unknown system {bad[0]!r}; expected some of {', '.join(SYSTEMS)}")
    if opts.threads < 1:
        ap.error(f"--threads must be ≥ 1, got {opts.threads}")
    defaults = (1, 0.0, 0.0, 2) if opts.smoke else (3, 0.05, 0.05, 1) if opts.quick else (
        5, 0.2, 0.1, 1)
    opts.reps = opts.reps if opts.reps is not None else defaults[0]
    opts.min_time = opts.min_time if opts.min_time is not None else defaults[1]
    opts.settle = opts.settle if opts.settle is not None else defaults[2]
    opts.min_steps = defaults[3]
    if opts.reps < 1:
        ap.error(f"--reps must be ≥ 1, got {opts.reps}")
    return opts


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = parse_args(argv)
    removed = prepare_environment(opts.threads)   # before NumPy is imported
    sys.path.insert(0, HERE)
    import workloads as wl
    env = Env(opts.threads, opts.systems, removed)
    t_start = time.perf_counter()
    checks: Dict[str, Any] = {}
    if opts.check or opts.check_only:
        for name in opts.workloads:
            w = wl.get(name, smoke=opts.smoke, quick=opts.quick)
            if w.kind in ("mlp", "rnn", "lstm"):
                checks[name] = check_training(w, env)
    results: Dict[str, Any] = {}
    if not opts.check_only:
        for name in opts.workloads:
            w = wl.get(name, smoke=opts.smoke, quick=opts.quick)
            if w.kind in ("gemm", "kernels"):
                if name == "kernels" and "gemm" in opts.workloads:
                    continue  # gemm already ran the kernel tables
                results[name] = bench_kernels(w, env, opts, with_peers=name == "gemm")
            else:
                results[name] = bench_training(w, env, opts)
            print(f"[{name} done, {time.perf_counter() - t_start:.0f} s]", file=sys.stderr,
                  flush=True)
    env.machine["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print_report(env, results, checks, opts)
    print(f"\n(total {time.perf_counter() - t_start:.0f} s; load average at the end "
          f"{env.machine['load_end']})", flush=True)
    if opts.json:
        doc = {"meta": {"argv": sys.argv, "threads": opts.threads, "reps": opts.reps,
                        "min_time": opts.min_time, "mode": "smoke" if opts.smoke else "quick"
                        if opts.quick else "full", "machine": env.machine,
                        "versions": env.versions, "unavailable": env.why,
                        "blas": env.blas, "removed_env": removed,
                        "env": {k: os.environ.get(k) for k in THREAD_VARS + ("XLA_FLAGS",)}},
               "results": results, "checks": checks}
        with open(opts.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
    failed_checks = [n for n, c in checks.items() if not all(
        d.get("ok") for d in c["systems"].values())]
    return 1 if failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
