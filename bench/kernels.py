"""chainrule's C++ kernels alone, through chainrule.ops, against the same operation in NumPy.

gemm C = op(A)·op(B) for NN, TN (Aᵀ·B) and NT (A·Bᵀ), square n, float32 and float64, in GFLOP/s
(2n³ per call; PyTorch and JAX join for NN); relu/tanh/sigmoid forward and backward on 1M
elements in Melem/s; a dense layer y = x·Wᵀ + b forward and backward (dx, dW, db) in GFLOP/s.
Until chainrule.ops exists (it is written on another branch) the chainrule column reads
"ops not available". Every function takes ``ops`` as an argument so tests can pass a stand-in.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["ops_module", "gemm_sweep", "activation_bench", "dense_bench", "time_call",
           "GEMM_OPS", "DENSE_SHAPES"]

GEMM_OPS = ("NN", "TN", "NT")
# (B, I, O): the dense layers of digits, mnist, wide, and a batch-of-one decode-like shape
DENSE_SHAPES = ((32, 64, 128), (128, 784, 256), (256, 1024, 1024), (1, 1024, 1024))
SMOKE_DENSE_SHAPES = ((4, 8, 16), (3, 17, 5), (1, 9, 7))
ACTIVATIONS = ("relu", "tanh", "sigmoid")


def ops_module() -> Tuple[Optional[Any], str]:
    """chainrule.ops when it has the kernels (gemm), else (None, why not)."""
    try:
        import chainrule
        ops = getattr(chainrule, "ops", None)
        if ops is None:
            import chainrule.ops as ops  # type: ignore[no-redef]
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return None, f"chainrule not importable: {e}"
    if not hasattr(ops, "gemm"):
        return None, "ops not available"
    return ops, ""


def time_call(fn: Callable[[], Any], min_time: float, sync: Callable[[Any], Any] = None
              ) -> Tuple[int, Callable[[], Tuple[float, float]]]:
    """Calibrates how many calls of fn take at least min_time; returns (calls, timer) where
    timer() runs that many calls and returns (seconds per call, process CPU time / wall time)."""
    sync = sync or (lambda r: r)
    sync(fn())  # warm-up: first-touch, caches, JIT
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            r = fn()
        sync(r)
        dt = time.perf_counter() - t0
        if dt >= min_time * 0.5 or n >= 1 << 20:
            break
        n = n * 2 if dt <= 0 else max(n * 2, int(n * min_time / dt))
    calls = max(1, int(round(n * min_time / dt))) if dt > 0 and min_time > 0 else 1

    def timer() -> Tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            r = fn()
        sync(r)
        wall = time.perf_counter() - t0
        return wall / calls, (time.process_time() - c0) / wall if wall > 0 else float("nan")

    return calls, timer


# OpenBLAS's idle workers keep polling (sched_yield) for about 2^28 cycles, ~0.1 s here, after
# each call; whatever runs next on the 2 cores meanwhile loses up to half its speed (chainrule's
# A^T B at n = 1024 measured 98 GFLOP/s straight after a NumPy call, 139 after 0.05 s, 187 after
# 0.3 s). So the pause after NumPy or scikit-learn is at least this long.
OPENBLAS_LINGER = 0.3


def settle_time(previous: Optional[str], settle: float) -> float:
    """Seconds to wait before timing the next system, given the one that ran before it."""
    if previous in ("numpy", "sklearn"):
        return max(settle, OPENBLAS_LINGER)
    return settle


def _interleaved(timers: Dict[str, Callable[[], Tuple[float, float]]], reps: int, settle: float
                 ) -> Dict[str, List[Tuple[float, float]]]:
    """(seconds per call, cores busy) of each timer, reps times, systems interleaved (rotating
    order) so that machine noise hits them alike; settle seconds between systems (longer after
    NumPy, see settle_time) lets the previous system's spinning pool threads go idle."""
    out: Dict[str, List[Tuple[float, float]]] = {k: [] for k in timers}
    names = list(timers)
    previous: Optional[str] = None
    for r in range(reps):
        for k in names[r % len(names):] + names[:r % len(names)]:
            if settle > 0 and len(names) > 1:
                time.sleep(settle_time(previous, settle))
            out[k].append(timers[k]())
            previous = k
    return out


def _median(xs: Sequence[float]) -> float:
    return float(np.median(xs)) if len(xs) else float("nan")


# ==================================================================== gemm
def _gemm_callables(ops: Optional[Any], op: str, dtype: type, n: int, systems: Sequence[str],
                    rng: np.random.Generator) -> Dict[str, Tuple[Callable[[], Any], Any]]:
    """system -> (call, sync) computing C = op(A)·op(B) on fresh n×n operands."""
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype)
    ta, tb = op[0] == "T", op[1] == "T"
    A, B = (a.T if ta else a), (b.T if tb else b)   # views; NumPy passes the transpose to BLAS
    calls: Dict[str, Tuple[Callable[[], Any], Any]] = {}
    for s in systems:
        if s == "chainrule" and ops is not None:
            calls[s] = (lambda: ops.gemm(a, b, trans_a=ta, trans_b=tb, out=c), None)
        elif s == "numpy":
            calls[s] = (lambda: np.matmul(A, B, out=c), None)
        elif s == "torch":
            import torch
            tA, tB, tC = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
            tA, tB = (tA.T if ta else tA), (tB.T if tb else tB)
            calls[s] = (lambda: torch.mm(tA, tB, out=tC), None)
        elif s == "jax":
            import jax
            f = jax.jit(lambda x, y: (x.T if ta else x) @ (y.T if tb else y))
            ja, jb = jax.device_put(a), jax.device_put(b)
            calls[s] = (lambda: f(ja, jb), jax.block_until_ready)
    return calls


def gemm_sweep(ops: Optional[Any], sizes: Sequence[int], *, reps: int, min_time: float,
               settle: float, peers: Sequence[str] = (), dtypes: Sequence[type] = (
                   np.float32, np.float64), ops_list: Sequence[str] = GEMM_OPS,
               check: bool = True, seed: int = 0) -> List[Dict[str, Any]]:
    """GFLOP/s of every (dtype, op, n): chainrule and NumPy always, the peers (torch, jax) for NN.

    With check, chainrule's result is compared with NumPy's first (relative max error).
    Returns one row per case: {"dtype", "op", "n", "gflops": {system: median}, "samples", "err"}.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for dtype in dtypes:
        for op in ops_list:
            for n in sizes:
                systems = ["chainrule", "numpy"] + (list(peers) if op == "NN" else [])
                row: Dict[str, Any] = {"dtype": np.dtype(dtype).name, "op": op, "n": n,
                                       "gflops": {}, "samples": {}, "cores": {}, "errors": {}}
                if ops is None:
                    row["errors"]["chainrule"] = "ops not available"
                x64 = None
                if "jax" in systems and dtype == np.float64:
                    import jax
                    x64 = jax.enable_x64(True)
                    x64.__enter__()
                try:
                    calls = _gemm_callables(ops, op, dtype, n, systems, rng)
                    if check and "chainrule" in calls:
                        row["max_rel_err"] = _gemm_error(ops, calls, op, dtype, n, rng)
                    timers = {}
                    for s, (fn, sync) in calls.items():
                        try:
                            timers[s] = time_call(fn, min_time, sync)[1]
                        except Exception as e:  # noqa: BLE001 - report, keep going
                            row["errors"][s] = f"{type(e).__name__}: {e}"
                    samples = _interleaved(timers, reps, settle)
                finally:
                    if x64 is not None:
                        x64.__exit__(None, None, None)
                flops = 2.0 * n ** 3
                for s, ts in samples.items():
                    row["samples"][s] = [flops / t / 1e9 for t, _ in ts]
                    row["gflops"][s] = _median(row["samples"][s])
                    row["cores"][s] = _median([c for _, c in ts])
                rows.append(row)
    return rows


def _gemm_error(ops: Any, calls: Dict[str, Any], op: str, dtype: type, n: int,
                rng: np.random.Generator) -> float:
    m = min(n, 97)  # a small odd shape: exercises the edges, checked in a blink
    a = rng.standard_normal((m, m + 3)).astype(dtype)
    b = rng.standard_normal((m + 3, m + 1)).astype(dtype)
    A = np.ascontiguousarray(a.T) if op[0] == "T" else a
    B = np.ascontiguousarray(b.T) if op[1] == "T" else b
    got = np.asarray(ops.gemm(A, B, trans_a=op[0] == "T", trans_b=op[1] == "T"))
    want = a.astype(np.float64) @ b.astype(np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


# ==================================================================== activations
def _np_act(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0)
    if name == "tanh":
        return np.tanh(x)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _np_act_backward(name: str, dy: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if name == "relu":
        return dy * (y > 0)
    if name == "tanh":
        return dy * (1 - y * y)
    return dy * (y * (1 - y))


def activation_bench(ops: Optional[Any], *, n: int = 1 << 20, reps: int, min_time: float,
                     settle: float, dtypes: Sequence[type] = (np.float32, np.float64),
                     seed: int = 0) -> List[Dict[str, Any]]:
    """Melem/s of relu, tanh, sigmoid forward (y = f(x)) and backward (dx = dy·f'(x), from the
    stored output y): chainrule.ops vs NumPy, each returning a new array as a user would."""
    rng = np.random.default_rng(seed)
    rows = []
    for dtype in dtypes:
        x = (rng.standard_normal(n) * 3).astype(dtype)
        dy = rng.standard_normal(n).astype(dtype)
        for name in ACTIVATIONS:
            y = _np_act(name, x)
            for direction in ("forward", "backward"):
                row: Dict[str, Any] = {"dtype": np.dtype(dtype).name, "op": name,
                                       "dir": direction, "n": n, "melems": {}, "errors": {}}
                calls: Dict[str, Callable[[], Any]] = {}
                if direction == "forward":
                    calls["numpy"] = lambda name=name: _np_act(name, x)
                    if ops is not None:
                        calls["chainrule"] = lambda name=name: getattr(ops, name)(x)
                else:
                    calls["numpy"] = lambda name=name, y=y: _np_act_backward(name, dy, x, y)
                    if ops is not None:
                        calls["chainrule"] = lambda name=name, y=y: ops.activation_backward(
                            name, dy, x=x, y=y)
                if ops is None:
                    row["errors"]["chainrule"] = "ops not available"
                timers = {}
                for s, fn in calls.items():
                    try:
                        if s == "chainrule":  # same numbers as NumPy's, before timing
                            want = calls["numpy"]().astype(np.float64)
                            got = np.asarray(fn(), np.float64)
                            row["max_abs_err"] = float(np.max(np.abs(got - want)))
                        timers[s] = time_call(fn, min_time)[1]
                    except Exception as e:  # noqa: BLE001
                        row["errors"][s] = f"{type(e).__name__}: {e}"
                for s, ts in _interleaved(timers, reps, settle).items():
                    row["melems"][s] = _median([n / t / 1e6 for t, _ in ts])
                rows.append(row)
    return rows


# ==================================================================== dense layer
def _one_layer_model(W: np.ndarray, b: np.ndarray) -> Any:
    """A chainrule Model of one Dense layer holding W and b (its predict is the layer forward
    with the weight kept laid out between calls, plus the Model's input checks)."""
    import chainrule

    O, I = W.shape
    model = chainrule.Model([chainrule.Dense(I, O)], dtype=W.dtype.name, seed=0)
    model.load_state_dict({"0.weight": W, "0.bias": b})
    return model


def dense_bench(ops: Optional[Any], shapes: Sequence[Tuple[int, int, int]] = DENSE_SHAPES, *,
                reps: int, min_time: float, settle: float,
                dtypes: Sequence[type] = (np.float32,), seed: int = 0) -> List[Dict[str, Any]]:
    """GFLOP/s of y = x·Wᵀ + b (2·B·I·O) and of its backward dx = dy·W, dW += dyᵀ·x,
    db += Σ dy (4·B·I·O), chainrule.ops vs NumPy; for a single row also Model.predict of a
    one-layer model (pass "predict"), which keeps the weight laid out between calls."""
    rng = np.random.default_rng(seed)
    rows = []
    for dtype in dtypes:
        for (B, I, O) in shapes:
            x = rng.standard_normal((B, I)).astype(dtype)
            W = (rng.standard_normal((O, I)) / np.sqrt(I)).astype(dtype)
            b = rng.standard_normal(O).astype(dtype)
            dy = rng.standard_normal((B, O)).astype(dtype)
            dW = np.zeros((O, I), dtype)
            db = np.zeros(O, dtype)

            def np_fwd() -> np.ndarray:
                y = x @ W.T
                y += b
                return y

            def np_bwd() -> Any:
                dx = dy @ W
                dW[...] += dy.T @ x
                db[...] += dy.sum(axis=0)
                return dx

            passes = [("forward", 2.0 * B * I * O), ("backward", 4.0 * B * I * O)]
            if B == 1:  # decode-like: a layer's weight kept laid out from one call to the next
                passes.append(("predict", 2.0 * B * I * O))
            for direction, flops in passes:
                row: Dict[str, Any] = {"dtype": np.dtype(dtype).name, "shape": (B, I, O),
                                       "dir": direction, "gflops": {}, "errors": {}}
                calls: Dict[str, Callable[[], Any]] = {
                    "numpy": np_bwd if direction == "backward" else np_fwd}
                if ops is None:
                    row["errors"]["chainrule"] = "ops not available"
                elif direction == "forward":
                    calls["chainrule"] = lambda: ops.dense_forward(x, W, b)
                elif direction == "predict":
                    try:
                        model = _one_layer_model(W, b)
                        calls["chainrule"] = lambda: model.predict(x)
                        got = np.asarray(model.predict(x), np.float64)
                        row["max_abs_err"] = float(np.max(np.abs(got - np_fwd())))
                    except Exception as e:  # noqa: BLE001
                        row["errors"]["chainrule"] = f"{type(e).__name__}: {e}"
                else:
                    calls["chainrule"] = lambda: ops.dense_backward(dy, x, W, dweight=dW,
                                                                    dbias=db)
                if ops is not None and direction == "forward":
                    try:
                        got = np.asarray(ops.dense_forward(x, W, b), np.float64)
                        row["max_abs_err"] = float(np.max(np.abs(got - np_fwd())))
                    except Exception as e:  # noqa: BLE001
                        row["errors"]["chainrule"] = f"{type(e).__name__}: {e}"
                        calls.pop("chainrule")
                timers = {}
                for s, fn in calls.items():
                    try:
                        timers[s] = time_call(fn, min_time)[1]
                    except Exception as e:  # noqa: BLE001
                        row["errors"][s] = f"{type(e).__name__}: {e}"
                for s, ts in _interleaved(timers, reps, settle).items():
                    row["gflops"][s] = _median([flops / t / 1e9 for t, _ in ts])
                rows.append(row)
    return rows
