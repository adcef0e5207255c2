"""Skinny products: GEMMs with one side 1 to a few wide and a long depth (the weight gradient and
dx of one-feature / one-output layers), against PyTorch, one thread each by default.

    PYTHONPATH=python python bench/skinny.py [--reps 7] [--threads 1] [--json out.json]

Prints one row per case: chainrule and torch median milliseconds over --reps repetitions (each
repetition times enough calls for --min-time seconds) and their ratio. Rows:
  gemm    ops.gemm(op(A) (M, K), op(B) (K, N)) in the four transposes (NN, TN, NT, TT);
  dense   ops.dense_backward (dx, dW, db) against the same three products in torch;
  model   one full-batch epoch (forward, MSE, backward, SGD step) of a small regression net.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable, Dict, List

import numpy as np

import chainrule as cr
from chainrule import ops

GEMM_SHAPES = [(32, 1, 100000), (1, 32, 100000), (64, 8, 20000), (8, 64, 20000)]
DENSE_SHAPES = [(100000, 1, 32), (100000, 32, 1)]  # (B, I, O)
MODELS = [((1, 32, 1), 100000), ((8, 64, 1), 20000)]  # (layer widths, rows)


def timed(fn: Callable[[], object], reps: int, min_time: float) -> float:
    """Median seconds per call over reps repetitions of >= min_time each."""
    fn()
    n, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        if t >= min_time or n >= 1 << 16:
            break
        n = max(2 * n, int(n * min_time / max(t, 1e-9)) + 1)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n)
    return statistics.median(out)


def gemm_cases(torch, dtype) -> Dict[str, Dict[str, Callable[[], object]]]:
    rng = np.random.default_rng(0)
    tdt = {np.float32: torch.float32, np.float64: torch.float64}[dtype] if torch else None
    cases = {}
    for M, N, K in GEMM_SHAPES:
        for ta, tb in [(False, False), (True, False), (False, True), (True, True)]:
            a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
            b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
            c = np.empty((M, N), dtype)
            name = f"gemm {'T' if ta else 'N'}{'T' if tb else 'N'} ({M}x{K})({K}x{N})"
            fns = {"chainrule": lambda a=a, b=b, c=c, ta=ta, tb=tb:
                   ops.gemm(a, b, out=c, trans_a=ta, trans_b=tb)}
            if torch:
                ta_, tb_ = torch.from_numpy(a), torch.from_numpy(b)
                tc = torch.empty((M, N), dtype=tdt)
                opa = ta_.t() if ta else ta_
                opb = tb_.t() if tb else tb_
                fns["torch"] = lambda opa=opa, opb=opb, tc=tc: torch.mm(opa, opb, out=tc)
            cases[name] = fns
    return cases


def dense_cases(torch, dtype) -> Dict[str, Dict[str, Callable[[], object]]]:
    rng = np.random.default_rng(1)
    cases = {}
    for B, I, O in DENSE_SHAPES:
        x = rng.standard_normal((B, I)).astype(dtype)
        w = rng.standard_normal((O, I)).astype(dtype)
        dy = rng.standard_normal((B, O)).astype(dtype)
        dw = np.zeros((O, I), dtype)
        db = np.zeros(O, dtype)
        fns = {"chainrule": lambda x=x, w=w, dy=dy, dw=dw, db=db:
               ops.dense_backward(dy, x, w, dweight=dw, dbias=db)}
        if torch:
            tx, tw, tdy = (torch.from_numpy(v) for v in (x, w, dy))
            tdx, tdw, tdb = torch.empty_like(tx), torch.zeros_like(tw), torch.zeros(O, dtype=tw.dtype)

            def tfn(tx=tx, tw=tw, tdy=tdy, tdx=tdx, tdw=tdw, tdb=tdb):
                torch.mm(tdy, tw, out=tdx)
                tdw.addmm_(tdy.t(), tx)
                tdb.add_(tdy.sum(0))
            fns["torch"] = tfn
        cases[f"dense_backward B={B} I={I} O={O}"] = fns
    return cases


def model_cases(torch, dtype) -> Dict[str, Dict[str, Callable[[], object]]]:
    rng = np.random.default_rng(2)
    cases = {}
    for (i, h, o), rows in MODELS:
        X = rng.standard_normal((rows, i)).astype(dtype)
        y = rng.standard_normal((rows, o)).astype(dtype)
        m = cr.Model([cr.Dense(i, h), cr.ReLU(), cr.Dense(h, o)], loss="mse",
                     optimizer=cr.SGD(lr=1e-3), dtype=np.dtype(dtype).name, seed=0)
        fns = {"chainrule": lambda m=m, X=X, y=y: m.fit(X, y, epochs=1, batch_size=None,
                                                        shuffle=False)}
        if torch:
            tdt = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
            net = torch.nn.Sequential(torch.nn.Linear(i, h), torch.nn.ReLU(),
                                      torch.nn.Linear(h, o)).to(tdt)
            opt = torch.optim.SGD(net.parameters(), lr=1e-3)
            tX, ty = torch.from_numpy(X), torch.from_numpy(y)

            def tstep(net=net, opt=opt, tX=tX, ty=ty):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(tX), ty)
                loss.backward()
                opt.step()
            fns["torch"] = tstep
        cases[f"epoch {i}-{h}-{o} on {rows} rows"] = fns
    return cases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-time", type=float, default=0.1)
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--only", default="", help="substring a case name must contain")
    p.add_argument("--json", default="")
    args = p.parse_args()
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    cr.set_num_threads(args.threads)
    results: List[dict] = []
    print(f"threads={args.threads} isa={ops.gemm_isa()} reps={args.reps} (median ms)")
    print(f"{'case':48s} {'dtype':8s} {'chainrule':>10s} {'torch':>10s} {'ratio':>7s}")
    for dname in args.dtypes.split(","):
        dtype = getattr(np, dname)
        for group in (gemm_cases, dense_cases, model_cases):
            for name, fns in group(torch, dtype).items():
                if args.only not in name:
                    continue
                t = {k: timed(f, args.reps, args.min_time) * 1e3 for k, f in fns.items()}
                ratio = t["chainrule"] / t["torch"] if "torch" in t else float("nan")
                print(f"{name:48s} {dname:8s} {t['chainrule']:10.3f} "
                      f"{t.get('torch', float('nan')):10.3f} {ratio:7.2f}", flush=True)
                results.append({"case": name, "dtype": dname, **t})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
