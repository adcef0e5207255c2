"""Backpropagation through a long sequence in O(√T) memory: bptt_memory="all" against "sqrt".

An LSTM (the adding problem's) runs forward and backward over sequences of T = 4096 steps. With
"all", BPTT keeps every state and gate of every step: memory grows like T. With "sqrt", it keeps
the state at the start of each segment of ⌈√T⌉ steps and recomputes a segment just before its
backward: about 2√T states instead of T, for one extra forward pass. Both run the same arithmetic
in the same order, so the gradients are bitwise identical; this script measures the peak
workspace and the time of each and checks that.

    python examples/long_sequence_memory.py
    python examples/long_sequence_memory.py --T 16384 --batch 4
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Dict, Optional, Sequence

import numpy as np

import chainrule as cr


def adding_data(n: int, T: int, rng: np.random.Generator):
    """The adding problem's data (see adding_problem.py): X (n, T, 2) of (value, marker) pairs
    with one marker in each half, y (n, 1) the sum of the two marked values."""
    X = np.zeros((n, T, 2))
    X[:, :, 0] = rng.uniform(0.0, 1.0, size=(n, T))
    rows = np.arange(n)
    first, second = rng.integers(0, T // 2, size=n), rng.integers(T // 2, T, size=n)
    X[rows, first, 1] = X[rows, second, 1] = 1.0
    return X, (X[rows, first, 0] + X[rows, second, 0])[:, None]


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def backprop(memory: Any, X: np.ndarray, y: np.ndarray, hidden: int, seed: int
             ) -> Dict[str, Any]:
    """One forward and backward of a fresh LSTM (same seed, so same weights) with that memory."""
    model = cr.Model([cr.LSTM(2, hidden, return_sequences=False), cr.Dense(hidden, 1)],
                     loss="mse", dtype="float32", seed=seed)
    start = time.perf_counter()
    model.forward(X, bptt_memory=memory)
    loss = model.backward(y)
    seconds = time.perf_counter() - start
    ws = model.bptt_workspace()
    return {"loss": loss, "seconds": seconds, "peak_bytes": ws["peak_workspace_bytes"],
            "mode": ws["memory"], "grads": model.grads, "dx": model.input_grad,
            "dh0": model.initial_state_grad()}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small settings (for tests)")
    p.add_argument("--T", type=int, default=None, help="sequence length (default 4096)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="OUT.png", default=None,
                   help="save the per-step gradient norms of the run (needs matplotlib)")
    args = p.parse_args(argv)
    T = args.T or (512 if args.quick else 4096)
    B = args.batch or (4 if args.quick else 8)
    H = args.hidden or (16 if args.quick else 32)
    X, y = adding_data(B, T, np.random.default_rng(args.seed))

    runs = {m: backprop(m, X, y, H, args.seed) for m in ("all", "sqrt")}
    # A byte budget runs "all" when that fits, else "sqrt": half-way between the two is "sqrt".
    budget = (runs["all"]["peak_bytes"] + runs["sqrt"]["peak_bytes"]) // 2
    runs[f"budget {_bytes(budget)}"] = backprop(budget, X, y, H, args.seed)

    print(f"LSTM(2, {H}) + Dense({H}, 1), one forward + backward of {B} sequences of "
          f"T = {T} steps (segments of {int(np.ceil(np.sqrt(T)))})")
    print(f"{'bptt_memory':>22} {'ran as':>7} {'peak workspace':>15} {'time':>8}")
    for name, r in runs.items():
        print(f"{name:>22} {r['mode']:>7} {_bytes(r['peak_bytes']):>15} {r['seconds']:>7.2f}s")
    ref = runs["all"]
    identical = all(
        r["loss"] == ref["loss"] and np.array_equal(r["dx"], ref["dx"])
        and all(np.array_equal(a, b) for a, b in zip(r["dh0"], ref["dh0"]))
        and all(np.array_equal(r["grads"][k], g) for k, g in ref["grads"].items())
        for r in runs.values())
    ratio = runs["all"]["peak_bytes"] / runs["sqrt"]["peak_bytes"]
    print(f"\"sqrt\" holds {ratio:.1f}x less than \"all\"; it recomputes every segment (one "
          f"extra forward pass) and took {runs['sqrt']['seconds'] / runs['all']['seconds']:.2f}x "
          f"the time here.")
    print(f"gradients (every parameter, dL/dX, dL/dh0, dL/dc0) identical bit for bit: "
          f"{identical}")

    if args.plot:
        from chainrule.plot import plot_timestep_grad_norms

        model = cr.Model([cr.LSTM(2, H, return_sequences=False), cr.Dense(H, 1)],
                         dtype="float32", seed=args.seed)
        model.forward(X, bptt_memory="sqrt")
        model.backward(y)
        ax = plot_timestep_grad_norms(model)
        ax.set_title(f"LSTM, T = {T}: ‖∂L/∂h_t‖")
        ax.figure.savefig(args.plot)
        print(f"saved {args.plot}")
    return {"T": T, "identical": identical,
            "peak_bytes": {k: r["peak_bytes"] for k, r in runs.items()},
            "modes": {k: r["mode"] for k, r in runs.items()},
            "seconds": {k: r["seconds"] for k, r in runs.items()}}


if __name__ == "__main__":
    main()
