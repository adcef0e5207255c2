"""Next-value prediction on a noisy sine wave with a GRU (or an RNN).

The series is x_t = sin(2π t / period) + ε_t with ε ~ N(0, σ²). Windows of T steps are the inputs;
the targets are the same windows shifted by one step, so the network learns to predict x_{t+1}
from x_0..x_t at every step (a Dense head on every step). Tested on the last part of the series,
never seen in training, against the naive forecast "repeat the last value": its MSE is about
2σ² + the squared step of the sine, while the best any model can do is σ² (the noise is new).

    python examples/sine_wave.py
    python examples/sine_wave.py --cell rnn --quick --plot sine.png
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional, Sequence

import numpy as np

import chainrule as cr


def noisy_sine(n: int, period: float, noise: float, rng: np.random.Generator):
    t = np.arange(n)
    clean = np.sin(2 * np.pi * t / period)
    return clean + noise * rng.normal(size=n), clean


def windows(series: np.ndarray, T: int, starts: np.ndarray):
    """X (n, T, 1) = series[s : s + T], y (n, T, 1) = series[s + 1 : s + T + 1]."""
    idx = starts[:, None] + np.arange(T)[None, :]
    return series[idx][..., None], series[idx + 1][..., None]


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small settings (seconds, for tests)")
    p.add_argument("--cell", choices=["gru", "rnn", "lstm"], default="gru")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.1, help="σ of the added noise")
    p.add_argument("--period", type=float, default=25.0, help="steps per sine period")
    p.add_argument("--plot", metavar="OUT.png", default=None,
                   help="save prediction vs truth and the loss curve (needs matplotlib)")
    args = p.parse_args(argv)
    quick = args.quick
    T, hidden = (24, 16) if quick else (40, 32)
    n_series = 1500 if quick else 4000
    epochs = args.epochs or (8 if quick else 20)
    rng = np.random.default_rng(args.seed)

    series, clean = noisy_sine(n_series + 1, args.period, args.noise, rng)
    split = int(0.7 * n_series)  # train windows lie before split, test windows after it
    X, y = windows(series, T, np.arange(0, split - T))
    Xt, yt = windows(series, T, np.arange(split, n_series - T))

    cell = {"gru": cr.GRU, "rnn": cr.RNN, "lstm": cr.LSTM}[args.cell]
    model = cr.Model([cell(1, hidden), cr.Dense(hidden, 1)], loss="mse",
                     optimizer=cr.Adam(lr=1e-2), dtype="float32", seed=args.seed)
    hist = model.fit(X, y, epochs=epochs, batch_size=32, clip_grad_norm=1.0,
                     validation_data=(Xt, yt))

    # Score the forecast at the last step of each test window, where the model has seen T values.
    pred = model.predict(Xt)[:, -1, 0]
    truth = yt[:, -1, 0]
    naive = Xt[:, -1, 0]  # repeat the last value
    mse = float(np.mean((pred - truth) ** 2))
    naive_mse = float(np.mean((naive - truth) ** 2))
    t_next = np.arange(split, n_series - T) + T  # the index of the predicted value
    clean_mse = float(np.mean((pred - clean[t_next]) ** 2))

    print(f"{args.cell.upper()}(1, {hidden}) + Dense({hidden}, 1), windows of T = {T}, "
          f"{len(X)} train / {len(Xt)} test windows, {epochs} epochs")
    print(f"{'t':>6} {'truth':>8} {'clean':>8} {'model':>8} {'naive':>8}")
    for i in range(0, min(len(pred), 10 * 3), 3):
        print(f"{t_next[i]:>6} {truth[i]:>8.3f} {clean[t_next[i]]:>8.3f} {pred[i]:>8.3f} "
              f"{naive[i]:>8.3f}")
    print(f"test MSE: model {mse:.4f}, naive repeat-last {naive_mse:.4f} "
          f"(noise floor σ² = {args.noise ** 2:.4f}); model vs the clean sine {clean_mse:.4f}")

    if args.plot:
        import matplotlib.pyplot as plt

        from chainrule.plot import plot_history

        fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 4))
        show = slice(0, min(150, len(pred)))
        a0.plot(t_next[show], truth[show], ".", color="0.6", label="noisy truth")
        a0.plot(t_next[show], clean[t_next[show]], color="0.3", label="clean sine")
        a0.plot(t_next[show], pred[show], color="C1", label=f"{args.cell.upper()} forecast")
        a0.set_xlabel("t")
        a0.legend(loc="upper right")
        plot_history(hist, ax=a1)
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"saved {args.plot}")
    return {"mse": mse, "naive_mse": naive_mse, "clean_mse": clean_mse, "history": hist,
            "noise_var": args.noise ** 2}


if __name__ == "__main__":
    main()
