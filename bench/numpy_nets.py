"""Plain-NumPy training of the benchmark networks: forward, backward by hand, plain SGD.

What a careful NumPy user writes: matrix products through NumPy's BLAS, in-place elementwise
work, the recurrent input projection and all weight gradients as single large products over T·B
rows. Also the float64 reference that ``run.py --check`` compares every system against.
Parameters use PyTorch's names and shapes (see workloads.init_params); W is (out, in).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from workloads import Workload

__all__ = ["NumpyTrainer", "loss_and_grad"]


def _sigmoid(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    # σ(x) = ½·tanh(x/2) + ½: no overflow for large |x|
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def loss_and_grad(z: np.ndarray, t: np.ndarray, loss: str) -> Tuple[float, np.ndarray]:
    """The loss of logits/predictions z against targets t, and ∂L/∂z (PyTorch's mean reduction).

    bce_with_logits: mean(max(z,0) − z·t + log(1+e^{−|z|})), ∂ = (σ(z) − t)/n.
    cross_entropy (t class indices): mean(logsumexp(z) − z_t), ∂ = (softmax(z) − onehot(t))/B.
    mse: mean((z − t)²), ∂ = 2(z − t)/n.
    """
    if loss == "mse":
        d = z - t
        n = d.size
        val = float(np.vdot(d, d)) / n
        d *= 2.0 / n
        return val, d
    if loss == "bce_with_logits":
        n = z.size
        val = float(np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))))
        g = _sigmoid(z, np.empty_like(z))
        g -= t
        g *= 1.0 / n
        return val, g
    if loss == "cross_entropy":
        B = z.shape[0]
        rows = np.arange(B)
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        val = float(np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, t]))
        e /= s
        e[rows, t] -= 1.0
        e *= 1.0 / B
        return val, e
    raise ValueError(f"unknown loss {loss!r}")


class NumpyTrainer:
    """Trains a workload's network with NumPy; ``dtype`` float32 (timed) or float64 (reference)."""

    name = "numpy"

    def __init__(self, w: Workload, params: Dict[str, np.ndarray],
                 data: List[Tuple[np.ndarray, np.ndarray]], dtype: type = np.float32) -> None:
        self.w, self.dtype, self.lr = w, np.dtype(dtype), w.lr
        self.p = {k: np.array(v, dtype=dtype) for k, v in params.items()}
        self.data = [(np.ascontiguousarray(x, dtype=dtype),
                      y if y.dtype.kind == "i" else np.ascontiguousarray(y, dtype=dtype))
                     for x, y in data]
        self.i = 0
        self._step = {"mlp": self._mlp_step, "rnn": self._rnn_step,
                      "lstm": self._lstm_step}[w.kind]

    # ---------------------------------------------------------------- the harness interface
    def run(self, steps: int) -> float:
        """Runs steps minibatch steps, cycling through the data; returns the last loss."""
        loss = 0.0
        for _ in range(steps):
            x, y = self.data[self.i]
            self.i = (self.i + 1) % len(self.data)
            loss = self._step(x, y)
        return loss

    def losses(self, steps: int) -> List[float]:
        """The loss of each of the next steps (computed before that step's update)."""
        return [self.run(1) for _ in range(steps)]

    def params(self) -> Dict[str, np.ndarray]:
        return {k: v.astype(np.float64) for k, v in self.p.items()}

    # ---------------------------------------------------------------- feedforward
    def _mlp_step(self, x: np.ndarray, y: np.ndarray) -> float:
        w, p, lr = self.w, self.p, self.lr
        L = len(w.sizes) - 1
        acts = [x]  # a_0 = x, a_k = act(a_{k-1} W_kᵀ + b_k), the last one without act
        for k in range(L):
            z = acts[-1] @ p[f"{2 * k}.weight"].T
            z += p[f"{2 * k}.bias"]
            if k < L - 1:
                if w.activation == "relu":
                    np.maximum(z, 0, out=z)
                else:
                    np.tanh(z, out=z)
            acts.append(z)
        loss, g = loss_and_grad(acts[-1], y, w.loss)
        for k in range(L - 1, -1, -1):
            W, b = p[f"{2 * k}.weight"], p[f"{2 * k}.bias"]
            dW = g.T @ acts[k]            # ∂L/∂W_k = gᵀ a_{k−1}
            db = g.sum(axis=0)
            if k > 0:
                g = g @ W                 # ∂L/∂a_{k−1}, with the weights before the update
                a = acts[k]               # act'(z) from the stored output
                if w.activation == "relu":
                    g *= a > 0
                else:
                    g *= 1.0 - a * a
            dW *= lr
            W -= dW
            db *= lr
            b -= db
        return loss

    # ---------------------------------------------------------------- Elman RNN
    def _rnn_step(self, x: np.ndarray, y: np.ndarray) -> float:
        p, lr = self.p, self.lr
        Wih, Whh = p["0.weight_ih_l0"], p["0.weight_hh_l0"]
        Wo, bo = p["1.weight"], p["1.bias"]
        B, T, I = x.shape
        H = Whh.shape[0]
        xt = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(T * B, I)   # time-major rows
        Z = xt @ Wih.T                                                       # all steps at once
        Z += p["0.bias_ih_l0"] + p["0.bias_hh_l0"]
        Z = Z.reshape(T, B, H)
        Hs = np.empty((T + 1, B, H), self.dtype)
        Hs[0] = 0.0
        for t in range(T):                      # h_t = tanh(x_t W_ihᵀ + b + h_{t−1} W_hhᵀ)
            zt = Z[t]
            zt += Hs[t] @ Whh.T
            np.tanh(zt, out=Hs[t + 1])
        Hseq = Hs[1:].reshape(T * B, H)
        out = Hseq @ Wo.T
        out += bo
        loss, g = loss_and_grad(out, y.transpose(1, 0, 2).reshape(T * B, 1), "mse")
        dWo, dbo = g.T @ Hseq, g.sum(axis=0)
        dHs = (g @ Wo).reshape(T, B, H)          # ∂L/∂h_t from the head
        dZ = Z                                   # reuse: ∂L/∂z_t overwrites z_t
        dh = np.zeros((B, H), self.dtype)
        for t in range(T - 1, -1, -1):
            dh += dHs[t]
            h = Hs[t + 1]
            np.multiply(h, h, out=dZ[t])
            np.subtract(1.0, dZ[t], out=dZ[t])
            dZ[t] *= dh                          # ∂z_t = ∂h_t ⊙ (1 − h_t²)
            dh = dZ[t] @ Whh                     # ∂h_{t−1} through the recurrence
        dZf = dZ.reshape(T * B, H)
        dWhh = dZf.T @ Hs[:-1].reshape(T * B, H)
        dWih = dZf.T @ xt
        db = dZf.sum(axis=0)
        for name, d in (("0.weight_ih_l0", dWih), ("0.weight_hh_l0", dWhh), ("0.bias_ih_l0", db),
                        ("0.bias_hh_l0", db), ("1.weight", dWo), ("1.bias", dbo)):
            p[name] -= lr * d
        return loss

    # ---------------------------------------------------------------- LSTM
    def _lstm_step(self, x: np.ndarray, y: np.ndarray) -> float:
        p, lr = self.p, self.lr
        Wih, Whh = p["0.weight_ih_l0"], p["0.weight_hh_l0"]
        Wo, bo = p["1.weight"], p["1.bias"]
        B, T, I = x.shape
        H = Whh.shape[1]
        xt = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(T * B, I)
        A = xt @ Wih.T                                # gate pre-activations, (T·B, 4H)
        A += p["0.bias_ih_l0"] + p["0.bias_hh_l0"]
        A = A.reshape(T, B, 4 * H)
        Hs = np.empty((T + 1, B, H), self.dtype)
        Cs = np.empty((T + 1, B, H), self.dtype)
        TC = np.empty((T, B, H), self.dtype)          # tanh(c_t)
        Hs[0] = 0.0
        Cs[0] = 0.0
        for t in range(T):
            a = A[t]
            a += Hs[t] @ Whh.T
            _sigmoid(a[:, :2 * H], a[:, :2 * H])      # i, f
            np.tanh(a[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])  # g
            _sigmoid(a[:, 3 * H:], a[:, 3 * H:])      # o
            i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            c = Cs[t + 1]
            np.multiply(f, Cs[t], out=c)
            c += i * g                                # c_t = f⊙c_{t−1} + i⊙g
            np.tanh(c, out=TC[t])
            np.multiply(o, TC[t], out=Hs[t + 1])      # h_t = o⊙tanh(c_t)
        Hseq = Hs[1:].reshape(T * B, H)
        out = Hseq @ Wo.T
        out += bo
        loss, gl = loss_and_grad(out, y.transpose(1, 0, 2).reshape(T * B, 1), "mse")
        dWo, dbo = gl.T @ Hseq, gl.sum(axis=0)
        dHs = (gl @ Wo).reshape(T, B, H)
        dA = np.empty((T, B, 4 * H), self.dtype)
        dh = np.zeros((B, H), self.dtype)
        dc = np.zeros((B, H), self.dtype)
        for t in range(T - 1, -1, -1):
            a = A[t]
            i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            tc = TC[t]
            dh += dHs[t]
            # ∂c_t = ∂c from t+1 (through f_{t+1}) + ∂h_t ⊙ o ⊙ (1 − tanh²c_t)
            dc += dh * o * (1.0 - tc * tc)
            d = dA[t]
            np.multiply(dc * g, i * (1.0 - i), out=d[:, :H])             # ∂a_i = ∂c⊙g⊙σ'
            np.multiply(dc * Cs[t], f * (1.0 - f), out=d[:, H:2 * H])    # ∂a_f = ∂c⊙c_{t−1}⊙σ'
            np.multiply(dc * i, 1.0 - g * g, out=d[:, 2 * H:3 * H])      # ∂a_g = ∂c⊙i⊙tanh'
            np.multiply(dh * tc, o * (1.0 - o), out=d[:, 3 * H:])        # ∂a_o = ∂h⊙tanh c⊙σ'
            dc *= f
            dh = d @ Whh
        dAf = dA.reshape(T * B, 4 * H)
        dWhh = dAf.T @ Hs[:-1].reshape(T * B, H)
        dWih = dAf.T @ xt
        db = dAf.sum(axis=0)
        for name, d in (("0.weight_ih_l0", dWih), ("0.weight_hh_l0", dWhh), ("0.bias_ih_l0", db),
                        ("0.bias_hh_l0", db), ("1.weight", dWo), ("1.bias", dbo)):
            p[name] -= lr * d
        return loss
