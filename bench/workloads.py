"""The workloads of PERFORMANCE.md as data: network, loss, batch, data shapes, and FLOP counts.

Every system builds its network from a :class:`Workload`, starts from the same initial weights
(:func:`init_params`, named and shaped as PyTorch names them) and trains on the same float32 data
(:func:`make_data`). Only NumPy is needed here.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["Workload", "WORKLOADS", "TRAINING", "ALL_NAMES", "get", "make_data", "init_params",
           "batches", "step_flops"]

LR = 0.01  # plain SGD, no momentum, no weight decay, for every system


@dataclass(frozen=True)
class Workload:
    """One benchmarked training problem.

    kind "mlp": Dense layers of ``sizes`` with ``activation`` between them (none after the last).
    kind "rnn"/"lstm": one recurrent layer sizes = (I, H), then Dense(H, 1) on every step.
    """

    name: str
    kind: str                      # "mlp", "rnn", "lstm", "gemm", "kernels"
    sizes: Tuple[int, ...] = ()    # mlp: (in, hidden..., out); rnn/lstm: (I, H)
    activation: str = "relu"       # hidden activation of an mlp
    loss: str = "mse"              # "bce_with_logits", "cross_entropy", "mse"
    batch: int = 0
    n_samples: int = 0             # rows (sequences) in the training set
    T: int = 0                     # time steps (rnn, lstm)
    lr: float = LR
    description: str = ""
    figure: str = "steps/s"
    gemm_sizes: Tuple[int, ...] = ()

    @property
    def recurrent(self) -> bool:
        return self.kind in ("rnn", "lstm")

    @property
    def n_batches(self) -> int:
        """Full minibatches in the training set (a partial last batch is dropped)."""
        return self.n_samples // self.batch

    @property
    def n_classes(self) -> int:
        return self.sizes[-1] if self.loss == "cross_entropy" else 0


WORKLOADS: Dict[str, Workload] = OrderedDict((w.name, w) for w in [
    Workload("gemm", "gemm", figure="GFLOP/s", gemm_sizes=(32, 64, 128, 256, 512, 1024, 2048),
             description="C = A·B (and Aᵀ·B, A·Bᵀ), square n, float32 and float64"),
    # The XOR set is one batch of 4 points; it is repeated so that one epoch holds many steps
    # (each step still sees exactly the 4 XOR points).
    Workload("xor", "mlp", (2, 8, 1), "tanh", "bce_with_logits", batch=4, n_samples=4 * 4096,
             description="2-8-1 tanh, BCE-with-logits, the 4 XOR points"),
    Workload("digits", "mlp", (64, 128, 10), "relu", "cross_entropy", batch=32, n_samples=1797,
             description="64-128-10 relu, cross-entropy, load_digits 1797×64"),
    Workload("mnist", "mlp", (784, 256, 256, 10), "relu", "cross_entropy", batch=128,
             n_samples=60000, description="784-256-256-10 relu, cross-entropy, 60000×784 random"),
    Workload("wide", "mlp", (1024, 1024, 1024, 1024), "relu", "mse", batch=256, n_samples=4096,
             description="1024-1024-1024-1024 relu, MSE, 4096×1024 random"),
    Workload("rnn", "rnn", (16, 128), "tanh", "mse", batch=32, n_samples=2048, T=64,
             description="Elman tanh I=16 H=128 T=64, Dense(128→1) per step, MSE"),
    Workload("rnnlong", "rnn", (8, 64), "tanh", "mse", batch=16, n_samples=1024, T=512,
             description="Elman tanh I=8 H=64 T=512, Dense(64→1) per step, MSE"),
    Workload("lstm", "lstm", (16, 128), "tanh", "mse", batch=32, n_samples=2048, T=64,
             description="LSTM I=16 H=128 T=64, Dense(128→1) per step, MSE"),
    Workload("kernels", "kernels", figure="GFLOP/s, Melem/s",
             gemm_sizes=(32, 64, 128, 256, 512, 1024, 2048),
             description="chainrule.ops kernels alone vs NumPy: gemm NN/TN/NT, activations, dense"),
])
TRAINING: List[str] = [n for n, w in WORKLOADS.items() if w.kind in ("mlp", "rnn", "lstm")]
ALL_NAMES: List[str] = list(WORKLOADS)
DEFAULT_NAMES: List[str] = [n for n in ALL_NAMES if n != "kernels"]  # gemm runs the kernel sweep

# Tiny shapes for the smoke test: same structure (layers, losses, activations), minutes → seconds.
_SMOKE = {
    "gemm": dict(gemm_sizes=(16, 33)),
    "kernels": dict(gemm_sizes=(16, 33)),
    "xor": dict(n_samples=4 * 8),
    "digits": dict(sizes=(64, 16, 10), n_samples=8 * 32),
    "mnist": dict(sizes=(48, 16, 16, 10), batch=16, n_samples=8 * 16),
    "wide": dict(sizes=(32, 32, 32, 32), batch=16, n_samples=8 * 16),
    "rnn": dict(sizes=(4, 8), batch=4, n_samples=4 * 4, T=5),
    "rnnlong": dict(sizes=(3, 6), batch=2, n_samples=2 * 4, T=9),
    "lstm": dict(sizes=(4, 8), batch=4, n_samples=4 * 4, T=5),
}


def get(name: str, smoke: bool = False, quick: bool = False) -> Workload:
    """The workload called name; smoke shrinks every shape, quick caps the gemm sizes at 512."""
    w = WORKLOADS[name]
    if smoke:
        return replace(w, **_SMOKE[name])
    if quick and w.gemm_sizes:
        return replace(w, gemm_sizes=tuple(n for n in w.gemm_sizes if n <= 512))
    return w


def make_data(w: Workload, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Training data (X, y), float32 (y int64 class indices for cross-entropy), full batches only.

    mlp: X (N, in); y (N, 1) float for bce/mse-with-1-output, (N, out) for mse, (N,) for
    cross-entropy. rnn/lstm: X (N, T, I), y (N, T, 1).
    """
    rng = np.random.default_rng(seed)
    n = w.n_batches * w.batch
    if w.name == "xor":
        pts = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        X = np.tile(pts, (n // 4, 1))
        y = (X[:, :1] != X[:, 1:]).astype(np.float32)
        return X, y
    if w.name == "digits" and w.sizes[0] == 64:
        X, y = _digits(rng)
        if X is not None:
            return X[:n], y[:n]
    if w.recurrent:
        X = rng.standard_normal((n, w.T, w.sizes[0]), dtype=np.float32)
        y = rng.standard_normal((n, w.T, 1), dtype=np.float32)
        return X, y
    X = rng.random((n, w.sizes[0]), dtype=np.float32)
    if w.loss == "cross_entropy":
        y = rng.integers(0, w.sizes[-1], n).astype(np.int64)
    elif w.loss == "bce_with_logits":
        y = rng.integers(0, 2, (n, 1)).astype(np.float32)
    else:
        y = rng.standard_normal((n, w.sizes[-1]), dtype=np.float32)
    return X, y


def _digits(rng: np.random.Generator) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """scikit-learn's load_digits scaled to [0, 1], or random data of its shape without it."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        X = rng.random((1797, 64), dtype=np.float32)
        return X, rng.integers(0, 10, 1797).astype(np.int64)
    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def init_params(w: Workload, seed: int = 0) -> "OrderedDict[str, np.ndarray]":
    """Initial weights, PyTorch's names, shapes and U(−1/√fan_in, 1/√fan_in) init, float32.

    mlp: "{2k}.weight" (out, in), "{2k}.bias" (out) for the k-th Dense (activations sit at odd
    indices, as in nn.Sequential). rnn/lstm: "0.weight_ih_l0" (G·H, I), "0.weight_hh_l0"
    (G·H, H), "0.bias_ih_l0", "0.bias_hh_l0" (G·H) with G = 1 (rnn) or 4 (lstm, gates i, f, g, o),
    then the head "1.weight" (1, H), "1.bias" (1).
    """
    rng = np.random.default_rng(seed + 1000)
    p: "OrderedDict[str, np.ndarray]" = OrderedDict()

    def u(shape: Tuple[int, ...], fan_in: int) -> np.ndarray:
        b = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-b, b, shape).astype(np.float32)

    if w.kind == "mlp":
        for k in range(len(w.sizes) - 1):
            i, o = w.sizes[k], w.sizes[k + 1]
            p[f"{2 * k}.weight"] = u((o, i), i)
            p[f"{2 * k}.bias"] = u((o,), i)
        return p
    I, H = w.sizes
    G = 4 if w.kind == "lstm" else 1
    p["0.weight_ih_l0"] = u((G * H, I), H)
    p["0.weight_hh_l0"] = u((G * H, H), H)
    p["0.bias_ih_l0"] = u((G * H,), H)
    p["0.bias_hh_l0"] = u((G * H,), H)
    p["1.weight"] = u((1, H), H)
    p["1.bias"] = u((1,), H)
    return p


def batches(w: Workload, X: np.ndarray, y: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The training set as a list of (xb, yb) views, one per step, in order."""
    B = w.batch
    return [(X[i * B:(i + 1) * B], y[i * B:(i + 1) * B]) for i in range(w.n_batches)]


def step_flops(w: Workload) -> float:
    """Multiply-add FLOPs of one training step (forward, weight and input gradients; no input
    gradient for the data itself), counting only the matrix products: 2·B·I·O per product."""
    B = w.batch
    if w.kind == "mlp":
        fl = 0.0
        for k in range(len(w.sizes) - 1):
            mm = 2.0 * B * w.sizes[k] * w.sizes[k + 1]
            fl += 3 * mm if k > 0 else 2 * mm
        return fl
    I, H = w.sizes
    G = 4 if w.kind == "lstm" else 1
    per_t = 2.0 * B * G * H * (I + H) * 2 + 2.0 * B * G * H * H + 2.0 * B * H * 3
    return per_t * w.T
