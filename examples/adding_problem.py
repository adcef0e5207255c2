"""The adding problem (Hochreiter & Schmidhuber, 1997): a plain tanh RNN against an LSTM.

Each input step is a pair (value, marker): values are uniform in [0, 1], and exactly two steps
are marked, one in each half of the sequence. The target is the sum of the two marked values.
Predicting the mean, 1, scores MSE = Var(U + U') = 2/12 ≈ 0.167; doing better means carrying a
value across up to T steps. The gradient that would teach that has to flow back over those steps:
in a tanh RNN it shrinks geometrically (‖∂L/∂h_t‖ falls towards t = 0), the LSTM's cell state
carries it. Both models get the same budget: hidden size, optimizer, epochs, clipping.

    python examples/adding_problem.py            # T = 50 and T = 100
    python examples/adding_problem.py --quick    # a small run (seconds)
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, Optional, Sequence

import numpy as np

import chainrule as cr

MEAN_BASELINE = 2.0 / 12.0  # the MSE of always predicting E[target] = 1


def adding_data(n: int, T: int, rng: np.random.Generator):
    """X (n, T, 2) of (value, marker) pairs; y (n, 1) the sum of the two marked values."""
    X = np.zeros((n, T, 2))
    X[:, :, 0] = rng.uniform(0.0, 1.0, size=(n, T))
    half = T // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, T, size=n)
    rows = np.arange(n)
    X[rows, first, 1] = 1.0
    X[rows, second, 1] = 1.0
    y = X[rows, first, 0] + X[rows, second, 0]
    return X, y[:, None]


def build(cell: str, hidden: int, lr: float, seed: int) -> cr.Model:
    layer = (cr.RNN(2, hidden, nonlinearity="tanh", return_sequences=False) if cell == "rnn"
             else cr.LSTM(2, hidden, return_sequences=False))
    return cr.Model([layer, cr.Dense(hidden, 1)], loss="mse", optimizer=cr.Adam(lr=lr),
                    dtype="float32", seed=seed)


def grad_profile(model: cr.Model, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """‖∂L/∂h_t‖ over the batch for every t (top cell), from one forward and backward."""
    model.forward(X)
    model.backward(y)
    model.zero_grad()
    return model.timestep_grad_norms()[-1]


def run(T: int, *, n_train: int, n_test: int, epochs: int, hidden: int, batch_size: int,
        lr: float, clip: float, seed: int, verbose: bool = True) -> Dict[str, Dict[str, float]]:
    rng = np.random.default_rng(seed)
    X, y = adding_data(n_train, T, rng)
    Xt, yt = adding_data(n_test, T, rng)
    results: Dict[str, Dict[str, float]] = {}
    for cell in ("rnn", "lstm"):
        model = build(cell, hidden, lr, seed)
        start = time.perf_counter()
        # The RNN's profile spans many orders of magnitude: that is what this example shows,
        # so fit's own warning about it is turned off (factor inf) and the profile printed.
        hist = model.fit(X, y, epochs=epochs, batch_size=batch_size, clip_grad_norm=clip,
                         grad_norm_warn_factor=float("inf"))
        seconds = time.perf_counter() - start
        mse = model.evaluate(Xt, yt)["loss"]
        profile = grad_profile(model, Xt[:256], yt[:256])
        results[cell] = {"mse": mse, "seconds": seconds, "profile": profile,
                         "first_last_ratio": float(profile[0] / profile[-1]),
                         "train_loss": hist.loss[-1], "model": model}
        if verbose:
            print(f"  {cell.upper():4s} test MSE {mse:.4f}  (predict-the-mean: "
                  f"{MEAN_BASELINE:.3f})  trained in {seconds:.1f} s")
    if verbose:
        picks = sorted({0, T // 4, T // 2, 3 * T // 4, T - 1})
        print(f"  ‖∂L/∂h_t‖ at t = {picks} (loss at t = {T - 1}):")
        for cell, r in results.items():
            vals = "  ".join(f"{r['profile'][t]:.2e}" for t in picks)
            print(f"  {cell.upper():4s} {vals}   first/last = {r['first_last_ratio']:.2e}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> Dict[int, Dict[str, Dict[str, float]]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small settings (seconds, for tests)")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="sequence lengths T (default 50 100; --quick: 30)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=None, help="hidden size (default 32; --quick: 16)")
    p.add_argument("--plot", metavar="OUT.png", default=None,
                   help="save the gradient-norm profiles to this PNG (needs matplotlib)")
    args = p.parse_args(argv)
    if args.quick:
        lengths = args.lengths or [30]
        hidden = args.hidden or 16
        settings = dict(n_train=2000, n_test=500, epochs=args.epochs or 10, batch_size=32)
    else:
        lengths = args.lengths or [50, 100]
        hidden = args.hidden or 32
        settings = dict(n_train=3000, n_test=1000, epochs=args.epochs or 12, batch_size=32)
    out: Dict[int, Dict[str, Dict[str, float]]] = {}
    for T in lengths:
        print(f"Adding problem, T = {T}: tanh RNN vs LSTM, hidden {hidden}, "
              f"{settings['epochs']} epochs of {settings['n_train']} sequences")
        out[T] = run(T, hidden=hidden, lr=2e-2, clip=1.0, seed=args.seed, **settings)
    if args.plot:
        from chainrule.plot import plot_timestep_grad_norms

        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(lengths), figsize=(6 * len(lengths), 4), squeeze=False)
        for ax, T in zip(axes[0], lengths):
            for cell, r in out[T].items():
                plot_timestep_grad_norms(r["profile"], ax=ax)
                ax.get_lines()[-1].set_label(cell.upper())
            ax.set_title(f"adding problem, T = {T}")
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"saved {args.plot}")
    return out


if __name__ == "__main__":
    main()
