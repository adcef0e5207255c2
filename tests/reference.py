"""Plain-NumPy references for the kernels, written from the formulas (PyTorch's where it has one).

Every function computes in float64 whatever its input dtype, so a float32 kernel can be compared
against the exact-as-possible answer. Shapes follow chainrule.ops: activations act elementwise,
softmax and log_softmax along the last axis; losses take pred and target of one shape, except
cross_entropy, which takes logits (N, C) and class indices (N,) or probabilities (N, C).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

F64 = np.float64


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=F64)


# ---- GEMM ----------------------------------------------------------------------------------


def gemm(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None) -> np.ndarray:
    """alpha op(a) op(b) + beta c in float64; beta == 0 ignores c (BLAS: c is not read)."""
    op_a = _f64(a).T if trans_a else _f64(a)
    op_b = _f64(b).T if trans_b else _f64(b)
    # einsum sums in a plain loop rather than through BLAS, so the reference is independent of
    # the library under comparison.
    prod = np.einsum("ik,kj->ij", op_a, op_b) if op_a.shape[1] else np.zeros(
        (op_a.shape[0], op_b.shape[1])
    )
    out = alpha * prod
    if beta != 0.0:
        out = out + beta * _f64(c)
    return out


def gemm_error_bound(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None,
                     eps: float) -> np.ndarray:
    """Elementwise bound on the rounding error of any summation order of a GEMM.

    |fl(alpha A B + beta C) - (alpha A B + beta C)| <= (K + 2) eps (|alpha| |A| |B| + |beta| |C|)
    (Higham, Accuracy and Stability of Numerical Algorithms, 3.5), plus a few units of the
    smallest normal number for underflow.
    """
    op_a = np.abs(_f64(a).T if trans_a else _f64(a))
    op_b = np.abs(_f64(b).T if trans_b else _f64(b))
    k = op_a.shape[1]
    mag = abs(alpha) * (op_a @ op_b if k else np.zeros((op_a.shape[0], op_b.shape[1])))
    if beta != 0.0:
        mag = mag + abs(beta) * np.abs(_f64(c))
    return (k + 2) * eps * mag + 1e-30


# ---- activations ---------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=-1, keepdims=True)


def activation(name: str, x, negative_slope: float = 0.01) -> np.ndarray:
    """y = f(x)."""
    x = _f64(x)
    with np.errstate(over="ignore", divide="ignore"):
        if name == "identity":
            return x.copy()
        if name == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        if name == "tanh":
            return np.tanh(x)
        if name == "relu":
            return np.where(x < 0, 0.0, x)
        if name == "leaky_relu":
            return np.where(x > 0, x, negative_slope * x)
        if name == "softmax":
            return _softmax(x)
        if name == "log_softmax":
            m = np.max(x, axis=-1, keepdims=True, initial=-np.inf)
            e = np.exp(x - m)
            finite = np.isfinite(m)
            # The maximum contributes exactly 1: log1p of the others' sum is accurate to the last
            # bits where log(1 + small) is not (the kernel computes it this way too).
            if x.ndim >= 1 and x.shape[-1] > 0 and finite.all():
                rest = e.copy()
                np.put_along_axis(rest, np.argmax(x, axis=-1)[..., None], 0.0, axis=-1)
                return x - m - np.log1p(np.sum(rest, axis=-1, keepdims=True))
            return x - m - np.log(np.sum(e, axis=-1, keepdims=True))
    raise ValueError(name)


def activation_backward(name: str, dy, x, negative_slope: float = 0.01) -> np.ndarray:
    """dx = dy J_f(x), the derivative written out from x (not from the output)."""
    dy, x = _f64(dy), _f64(x)
    if name == "identity":
        return dy.copy()
    if name == "sigmoid":
        s = activation("sigmoid", x)
        return dy * s * (1.0 - s)
    if name == "tanh":
        return dy * (1.0 - np.tanh(x) ** 2)
    if name == "relu":
        return np.where(x > 0, dy, 0.0)
    if name == "leaky_relu":
        return np.where(x > 0, dy, negative_slope * dy)
    if name == "softmax":
        # J = diag(s) - s s^T, so dx = s (dy - <dy, s>)
        s = _softmax(x)
        return s * (dy - np.sum(dy * s, axis=-1, keepdims=True))
    if name == "log_softmax":
        # J = I - 1 s^T, so dx = dy - s sum(dy)
        return dy - _softmax(x) * np.sum(dy, axis=-1, keepdims=True)
    raise ValueError(name)


# ---- losses --------------------------------------------------------------------------------


def loss_grad(name: str, pred, target, reduction: str = "mean") -> Tuple[float, np.ndarray]:
    """(loss, dloss/dpred) with PyTorch's formulas.

    'mean' divides by the element count, except cross_entropy, which divides by the N rows.
    """
    p = _f64(pred)
    if name == "mse":
        t = _f64(target)
        elem, grad = (p - t) ** 2, 2.0 * (p - t)
        count = p.size
    elif name == "bce":
        t = _f64(target)
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(p), -100.0)
            log_1mp = np.maximum(np.log1p(-p), -100.0)
        elem = -(t * log_p + (1.0 - t) * log_1mp)
        # torch's EPSILON is the float 1e-12, also in float64
        grad = (p - t) / np.maximum(p * (1.0 - p), float(np.float32(1e-12)))
        count = p.size
    elif name == "bce_with_logits":
        t = _f64(target)
        # (1 - t) x - log sigmoid(x), with log sigmoid(x) = min(x, 0) - log1p(exp(-|x|))
        elem = (1.0 - t) * p - (np.minimum(p, 0.0) - np.log1p(np.exp(-np.abs(p))))
        grad = activation("sigmoid", p) - t
        count = p.size
    elif name == "cross_entropy":
        t = np.asarray(target)
        n, c = p.shape
        if t.dtype.kind in "iu":  # class indices -> one-hot probabilities
            onehot = np.zeros((n, c))
            onehot[np.arange(n), t] = 1.0
            t = onehot
        t = _f64(t)
        logp = activation("log_softmax", p)
        elem = -np.sum(t * logp, axis=1)
        grad = _softmax(p) * np.sum(t, axis=1, keepdims=True) - t
        count = n
    else:
        raise ValueError(name)
    value = float(np.sum(elem))
    if reduction == "mean":
        return value / count, grad / count
    return value, grad


def loss(name: str, pred, target, reduction: str = "mean") -> float:
    return loss_grad(name, pred, target, reduction)[0]


# ---- dense ---------------------------------------------------------------------------------


def dense_forward(x, weight, bias=None) -> np.ndarray:
    """y = x W^T + b, x (..., I), W (O, I), b (O,)."""
    y = _f64(x) @ _f64(weight).T
    return y if bias is None else y + _f64(bias)


def dense_backward(dy, x, weight) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dW, db) = (dy W, dy^T x, sum over samples of dy), leading axes flattened."""
    dy, x, weight = _f64(dy), _f64(x), _f64(weight)
    dy2 = dy.reshape(-1, weight.shape[0])
    x2 = x.reshape(-1, weight.shape[1])
    return dy @ weight, dy2.T @ x2, dy2.sum(axis=0)


# ---- finite differences --------------------------------------------------------------------


def numerical_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences (f(x + h e_i) - f(x - h e_i)) / 2h of a scalar f, in float64."""
    x = np.array(x, dtype=F64)
    g = np.empty_like(x)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + h
        fp = f(x.copy())
        x[idx] = old - h
        fm = f(x.copy())
        x[idx] = old
        g[idx] = (fp - fm) / (2.0 * h)
    return g

