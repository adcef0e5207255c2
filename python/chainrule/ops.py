"""Functional kernels over NumPy arrays: GEMM, activations, losses and the dense layer.

Every function accepts array-likes, computes in float32 when all of its floating-point inputs are
float32 and in float64 otherwise (integer and other float inputs become float64), converts each
input at most once to a C-contiguous array, and never modifies its inputs. Results are new arrays,
except where an ``out`` or accumulator argument says otherwise. The work runs in chainrule's C++
core with the GIL released (except :func:`gemm` products under 32³ multiply-adds, about a
microsecond, where releasing it would cost more than the product).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

try:
    from . import _core
except ImportError as e:  # a source tree without the built extension, or a broken install
    raise ImportError(f"chainrule's compiled core (the _core extension) cannot be loaded: {e}. "
                      "Install chainrule with pip install . from its source folder, or build "
                      "it in place with ./dev-build.sh") from e
from ._validation import check_bool, check_real, detached

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "REDUCTIONS",
    "gemm",
    "gemm_isa",
    "supported_isas",
    "set_isa",
    "activation",
    "activation_backward",
    "identity",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "softmax",
    "log_softmax",
    "loss",
    "loss_grad",
    "dense_forward",
    "dense_backward",
]

_gemm_fast = _core.gemm_fast

ACTIVATIONS: Tuple[str, ...] = (
    "identity",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "softmax",
    "log_softmax",
)
LOSSES: Tuple[str, ...] = ("mse", "bce", "bce_with_logits", "cross_entropy")
REDUCTIONS: Tuple[str, ...] = ("mean", "sum")

# The derivative of these is a function of the output y alone (tanh' = 1 - y^2, sigmoid' = y(1 - y),
# relu' = [y > 0], ...): the C++ backward reads y and ignores x.
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_NEEDS_ONLY_Y = frozenset(("identity", "sigmoid", "tanh", "relu", "softmax", "log_softmax"))


# ---- input handling ------------------------------------------------------------------------


def _as_numeric(x: ArrayLike, name: str) -> np.ndarray:
    """x as an ndarray of real numbers (no copy when it already is one)."""
    try:
        arr = np.asarray(detached(x))
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name} could not be converted to a numeric array: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers, got an array of dtype {arr.dtype} instead"
        )
    return arr


def _float_dtype(*arrays: np.ndarray) -> "type[np.floating]":
    """float32 when every array is float32 (in either byte order), float64 otherwise."""
    return (np.float32 if all(a.dtype.newbyteorder("=") == np.float32 for a in arrays)
            else np.float64)


def _contiguous(arr: np.ndarray, dtype: type) -> np.ndarray:
    """arr as a C-contiguous array of dtype, copied only when it is not one already."""
    return np.ascontiguousarray(arr, dtype=dtype).reshape(arr.shape)


def _check_name(name: str, allowed: Sequence[str], what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, got {type(name).__name__} instead")
    if name not in allowed:
        raise ValueError(
            f"Unknown {what} {name!r}; expected one of {', '.join(repr(a) for a in allowed)}"
        )
    return name


def _as_real(value: float, name: str) -> float:
    return check_real(name, value)


def _ndim_error(name: str, arr: np.ndarray, expected: str) -> ValueError:
    return ValueError(
        f"Expected {expected} array for {name}, got {arr.ndim}D array of shape {arr.shape} instead"
    )


def _rows(arr: np.ndarray) -> np.ndarray:
    """A view of arr as 2-D (rows, last axis); a 0-d array is one row of one element."""
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    return arr.reshape(int(np.prod(arr.shape[:-1], dtype=np.int64)), arr.shape[-1])


def _check_output(
    out: object, name: str, shape: Tuple[int, ...], dtype: type, *, row_strided: bool = False
) -> np.ndarray:
    """out as given, after checking it can be written in place with the expected shape/dtype."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__} instead")
    if out.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {out.dtype}, but the result is {np.dtype(dtype)}; pass an array of "
            f"dtype {np.dtype(dtype)} (inputs that are all float32 give float32, anything else "
            f"float64)"
        )
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, but the result has shape {tuple(shape)}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable array")
    if row_strided:
        # Rows must be contiguous; the row stride becomes the BLAS leading dimension.
        isz = out.itemsize
        rows, cols = out.shape
        unit_cols = out.size == 0 or cols <= 1 or out.strides[1] == isz
        rows_ok = (
            rows <= 1
            or cols == 0
            or (out.strides[0] > 0 and out.strides[0] % isz == 0 and out.strides[0] >= cols * isz)
        )
        ok = unit_cols and rows_ok
        if not ok:
            raise ValueError(
                f"{name} must be row-major with contiguous rows (C-contiguous, or a column slice "
                f"of a C-contiguous array such as big[:, 2:5]), got strides {out.strides}"
            )
    elif not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; np.ascontiguousarray makes such an array")
    return out


# ---- GEMM ----------------------------------------------------------------------------------


def gemm(
    a: ArrayLike,
    b: ArrayLike,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    alpha: float = 1.0,
    beta: float = 0.0,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """General matrix multiply, BLAS-style.

    out = alpha * op(a) @ op(b) + beta * out, with op(a) = a.T if trans_a else a.

    Args:
        a: 2-D array; op(a) has shape (M, K).
        b: 2-D array; op(b) has shape (K, N).
        trans_a: Use a.T (a is stored (K, M)).
        trans_b: Use b.T (b is stored (N, K)).
        alpha: Scale of the product.
        beta: Scale of the existing out. When beta == 0, out is not read, so NaN or garbage in it
            does not propagate (the BLAS convention).
        out: Array of shape (M, N) to write the result into, of the result dtype (float32 when a
            and b are both float32, float64 otherwise). It must be row-major with contiguous
            rows: C-contiguous, or a column slice of a C-contiguous array such as big[:, 2:5]
            (its row stride is used as the leading dimension). Required when beta != 0.

    Returns:
        out, or a new (M, N) array when out is None.

    Raises:
        TypeError: a or b is not numeric, or out is not an ndarray of the result dtype.
        ValueError: a or b is not 2-D, the inner dimensions differ, beta != 0 without out, or out
            has the wrong shape or layout, is read-only or overlaps a or b.
    """
    # Fast path, all in C++: what callers in a loop pass (C-contiguous 2-D ndarrays of one float
    # dtype, plain scalars, no or a fitting out). It returns None for anything else, and every
    # other case and every error goes the checked way below.
    c = _gemm_fast(a, b, out, trans_a, trans_b, alpha, beta)
    if c is not None:
        return c  # type: ignore[no-any-return]
    a_arr = _as_numeric(a, "a")
    b_arr = _as_numeric(b, "b")
    if a_arr.ndim != 2:
        raise _ndim_error("a", a_arr, "2D")
    if b_arr.ndim != 2:
        raise _ndim_error("b", b_arr, "2D")
    alpha = _as_real(alpha, "alpha")
    beta = _as_real(beta, "beta")
    trans_a, trans_b = check_bool("trans_a", trans_a), check_bool("trans_b", trans_b)
    m, k = a_arr.shape[::-1] if trans_a else a_arr.shape
    kb, n = b_arr.shape[::-1] if trans_b else b_arr.shape
    if k != kb:
        raise ValueError(
            f"gemm inner dimensions differ: op(a) has shape {(m, k)} (a {a_arr.shape}"
            f"{', transposed' if trans_a else ''}) but op(b) has shape {(kb, n)} (b {b_arr.shape}"
            f"{', transposed' if trans_b else ''}); expected op(a).shape[1] == op(b).shape[0]"
        )
    dt = _float_dtype(a_arr, b_arr)
    if out is None:
        if beta != 0.0:
            raise ValueError(
                f"beta={beta} scales the existing out, but out is None; pass out, or beta=0"
            )
        out = np.empty((m, n), dtype=dt)
    else:
        _check_output(out, "out", (m, n), dt, row_strided=True)
    _core.gemm(_contiguous(a_arr, dt), _contiguous(b_arr, dt), out, trans_a, trans_b, alpha, beta)
    return out


# ---- activations ---------------------------------------------------------------------------


def activation(name: str, x: ArrayLike, negative_slope: float = 0.01) -> np.ndarray:
    """Applies an activation function elementwise (softmax and log_softmax along the last axis).

    y = f(x), f one of identity, sigmoid, tanh, relu, leaky_relu, softmax, log_softmax.

    Args:
        name: One of ACTIVATIONS.
        x: Array of any shape.
        negative_slope: Slope of leaky_relu for x <= 0 (ignored by the others).

    Returns:
        A new array y with the shape of x.

    Raises:
        TypeError: x is not numeric, or name is not a str.
        ValueError: name is not a known activation.
    """
    _check_name(name, ACTIVATIONS, "activation")
    slope = _as_real(negative_slope, "negative_slope")
    x_arr = _as_numeric(x, "x")
    dt = _float_dtype(x_arr)
    xc = _contiguous(x_arr, dt)
    y = np.empty(x_arr.shape, dtype=dt)
    _core.activation_forward(_rows(y), _rows(xc), name, slope)
    return y


def identity(x: ArrayLike) -> np.ndarray:
    """y = x (a new array)."""
    return activation("identity", x)


def sigmoid(x: ArrayLike) -> np.ndarray:
    """y = 1 / (1 + exp(-x))."""
    return activation("sigmoid", x)


def tanh(x: ArrayLike) -> np.ndarray:
    """y = tanh(x)."""
    return activation("tanh", x)


def relu(x: ArrayLike) -> np.ndarray:
    """y = max(x, 0) (NaN stays NaN)."""
    return activation("relu", x)


def leaky_relu(x: ArrayLike, negative_slope: float = 0.01) -> np.ndarray:
    """y = x if x > 0 else negative_slope * x."""
    return activation("leaky_relu", x, negative_slope)


def softmax(x: ArrayLike) -> np.ndarray:
    """y_i = exp(x_i) / sum_j exp(x_j) along the last axis (computed stably)."""
    return activation("softmax", x)


def log_softmax(x: ArrayLike) -> np.ndarray:
    """y_i = x_i - log(sum_j exp(x_j)) along the last axis (computed stably)."""
    return activation("log_softmax", x)


def activation_backward(
    name: str,
    dy: ArrayLike,
    x: Optional[ArrayLike] = None,
    y: Optional[ArrayLike] = None,
    negative_slope: float = 0.01,
) -> np.ndarray:
    """Gradient of an activation: the vector-Jacobian product with dy.

    dx = dy * f'(x) elementwise; for softmax dx = y * (dy - sum(dy * y)), for log_softmax
    dx = dy - softmax(x) * sum(dy), the sums along the last axis.

    Args:
        name: One of ACTIVATIONS.
        dy: Gradient of the loss with respect to the output y.
        x: The forward input, or None when y is given.
        y: The forward output, or None to compute it from x. Passing it saves recomputing it; the
            derivative is evaluated from y wherever that is exact (tanh' = 1 - y^2,
            sigmoid' = y (1 - y)).
        negative_slope: Slope of leaky_relu for x <= 0.

    Returns:
        dx, a new array with the shape of dy.

    Raises:
        TypeError: An input is not numeric.
        ValueError: Both x and y are None, the shapes of dy, x and y differ, or leaky_relu with
            negative_slope < 0 is given y alone (the sign of x cannot be recovered from y).
    """
    _check_name(name, ACTIVATIONS, "activation")
    slope = _as_real(negative_slope, "negative_slope")
    if x is None and y is None:
        raise ValueError("activation_backward needs the forward input x or the output y; got neither")
    dy_arr = _as_numeric(dy, "dy")
    x_arr = None if x is None else _as_numeric(x, "x")
    y_arr = None if y is None else _as_numeric(y, "y")
    for arg, arr in (("x", x_arr), ("y", y_arr)):
        if arr is not None and arr.shape != dy_arr.shape:
            raise ValueError(
                f"dy has shape {dy_arr.shape} but {arg} has shape {arr.shape}; expected the same shape"
            )
    dt = _float_dtype(*(a for a in (dy_arr, x_arr, y_arr) if a is not None))
    dyc = _contiguous(dy_arr, dt)
    if y_arr is None:
        assert x_arr is not None  # checked above: x or y is given
        xc = _contiguous(x_arr, dt)
        yc = activation(name, xc, slope)
    else:
        yc = _contiguous(y_arr, dt)
        if x_arr is not None:
            xc = _contiguous(x_arr, dt)
        elif name in _NEEDS_ONLY_Y:
            xc = yc  # not read by the kernel
        elif slope >= 0:
            # leaky_relu' depends on x > 0 only, and for a slope >= 0, y > 0 exactly when x > 0.
            xc = yc
        else:
            raise ValueError(
                f"leaky_relu with negative_slope={slope} < 0 needs x for its backward pass: the sign "
                f"of x cannot be recovered from y; pass x"
            )
    dx = np.empty(dy_arr.shape, dtype=dt)
    _core.activation_backward(_rows(dx), _rows(dyc), _rows(xc), _rows(yc), name, slope)
    return dx


# ---- losses --------------------------------------------------------------------------------


def _loss_impl(
    name: str, pred: ArrayLike, target: ArrayLike, reduction: str, want_grad: bool
) -> Tuple[float, Optional[np.ndarray]]:
    _check_name(name, LOSSES, "loss")
    _check_name(reduction, REDUCTIONS, "reduction")
    p_arr = _as_numeric(pred, "pred")
    t_arr = _as_numeric(target, "target")
    dt = _float_dtype(p_arr)  # the target follows the prediction's dtype
    pc = _contiguous(p_arr, dt)
    grad = np.empty(p_arr.shape, dtype=dt) if want_grad else None
    if name == "cross_entropy":
        if p_arr.ndim != 2:
            raise _ndim_error("pred", p_arr, "2D (N, C) logits")
        n, c = p_arr.shape
        if t_arr.dtype.kind in "iu":
            if t_arr.shape != (n,):
                raise ValueError(
                    f"pred has shape {p_arr.shape} but the class-index target has shape "
                    f"{t_arr.shape}; expected target of shape ({n},) with values in [0, {c})"
                )
            if t_arr.dtype == np.uint64 and n and t_arr.max() >= c:  # int64 would wrap it
                r = int(np.argmax(t_arr >= c))
                raise ValueError(f"class target {t_arr[r]} at row {r} is out of range; expected "
                                 f"0 <= target < {c}")
            value = _core.cross_entropy_index(
                grad, pc, np.ascontiguousarray(t_arr, dtype=np.int64), reduction
            )
        else:
            if t_arr.shape != p_arr.shape:
                if t_arr.shape == (n,):
                    raise TypeError(
                        f"cross_entropy class targets must be integers, got dtype {t_arr.dtype}; "
                        f"cast them with target.astype(np.int64), or pass class probabilities of "
                        f"shape {p_arr.shape}"
                    )
                raise ValueError(
                    f"pred has shape {p_arr.shape} but target has shape {t_arr.shape}; expected "
                    f"integer class indices of shape ({n},) or class probabilities of shape "
                    f"{p_arr.shape}"
                )
            value = _core.loss(grad, pc, _contiguous(t_arr, dt), name, reduction)
    else:
        if t_arr.shape != p_arr.shape:
            raise ValueError(
                f"pred has shape {p_arr.shape} but target has shape {t_arr.shape}; expected the "
                f"same shape (reshape one of them, e.g. target.reshape(pred.shape))"
            )
        flat = (1, p_arr.size)
        value = _core.loss(
            None if grad is None else grad.reshape(flat),
            pc.reshape(flat),
            _contiguous(t_arr, dt).reshape(flat),
            name,
            reduction,
        )
    return float(value), grad


def loss(name: str, pred: ArrayLike, target: ArrayLike, reduction: str = "mean") -> float:
    """Loss value with PyTorch's formulas.

    mse: (p - t)^2; bce: -(t log p + (1 - t) log(1 - p)), logs clamped at -100;
    bce_with_logits: (1 - t) x - log sigmoid(x); cross_entropy: -sum_c t_c log_softmax(x)_c per row.

    Args:
        name: One of LOSSES.
        pred: Predictions. For cross_entropy, logits of shape (N, C); otherwise any shape (bce
            expects probabilities in [0, 1], bce_with_logits logits).
        target: Same shape as pred; for cross_entropy either integer class indices of shape (N,)
            or class probabilities of shape (N, C). Cast to the dtype of pred.
        reduction: 'mean' (divide by the number of elements, or by N for cross_entropy) or 'sum'.

    Returns:
        The loss as a Python float (accumulated in double precision).

    Raises:
        TypeError: An input is not numeric, or cross_entropy gets float class indices.
        ValueError: Unknown name or reduction, mismatched shapes, an empty batch, a class index
            out of range, or bce predictions outside [0, 1].
    """
    return _loss_impl(name, pred, target, reduction, want_grad=False)[0]


def loss_grad(
    name: str, pred: ArrayLike, target: ArrayLike, reduction: str = "mean"
) -> Tuple[float, np.ndarray]:
    """Loss value and its gradient with respect to pred, in one pass.

    grad = dL/dpred: mse 2(p - t); bce (p - t) / max(p(1 - p), 1e-12); bce_with_logits
    sigmoid(x) - t; cross_entropy softmax(x) sum_c t_c - t; each divided by the mean's count.

    Args:
        name: One of LOSSES.
        pred: Predictions, as for loss().
        target: Targets, as for loss().
        reduction: 'mean' or 'sum'.

    Returns:
        (loss, grad): the loss as a Python float, and a new array of the shape and dtype of pred.

    Raises:
        TypeError: As for loss().
        ValueError: As for loss().
    """
    value, grad = _loss_impl(name, pred, target, reduction, want_grad=True)
    assert grad is not None
    return value, grad


# ---- dense ---------------------------------------------------------------------------------


def _dense_inputs(
    x: ArrayLike, weight: ArrayLike, fn: str
) -> Tuple[np.ndarray, np.ndarray]:
    x_arr = _as_numeric(x, "x")
    w_arr = _as_numeric(weight, "weight")
    if w_arr.ndim != 2:
        raise _ndim_error("weight", w_arr, "2D (out_features, in_features)")
    if x_arr.ndim == 0:
        raise _ndim_error("x", x_arr, "1D or higher (..., in_features)")
    if x_arr.shape[-1] != w_arr.shape[1]:
        raise ValueError(
            f"{fn}: x has shape {x_arr.shape} and weight has shape {w_arr.shape}; x has "
            f"{x_arr.shape[-1]} features, but weight is expecting {w_arr.shape[1]}"
        )
    return x_arr, w_arr


def _fast_accumulator(acc: Optional[np.ndarray], shape: Tuple[int, ...], dtype: np.dtype) -> bool:
    """acc is None, or an ndarray the core can add into as it is."""
    return acc is None or (type(acc) is np.ndarray and acc.dtype == dtype and acc.shape == shape
                           and acc.flags.c_contiguous and acc.flags.writeable)


def dense_forward(
    x: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None
) -> np.ndarray:
    """Fully connected layer, as torch.nn.functional.linear.

    y = x @ weight.T + bias.

    Args:
        x: Input of shape (..., I); a 1-D x is one sample.
        weight: Weight of shape (O, I).
        bias: Bias of shape (O,), or None.

    Returns:
        A new array y of shape (..., O).

    Raises:
        TypeError: An input is not numeric.
        ValueError: The shapes do not fit together.
    """
    # The common call, 2-D C-contiguous ndarrays of one float dtype, goes straight to the core
    # (the checks below cost ~11 us, twice the arithmetic of a 32 x 64 x 128 layer). The core
    # checks shapes itself and raises the same ValueError.
    if (type(x) is np.ndarray and type(weight) is np.ndarray and x.ndim == 2
            and weight.ndim == 2 and x.dtype == weight.dtype and x.dtype in _FAST_DTYPES
            and x.flags.c_contiguous and weight.flags.c_contiguous
            and x.shape[1] == weight.shape[1]
            and (bias is None or (type(bias) is np.ndarray and bias.dtype == x.dtype
                                  and bias.shape == weight.shape[:1]
                                  and bias.flags.c_contiguous))):
        y = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
        _core.dense_forward(y, x, weight, bias)
        return y
    x_arr, w_arr = _dense_inputs(x, weight, "dense_forward")
    out_features = w_arr.shape[0]
    b_arr = None if bias is None else _as_numeric(bias, "bias")
    if b_arr is not None and b_arr.shape != (out_features,):
        raise ValueError(
            f"bias has shape {b_arr.shape} but weight has shape {w_arr.shape}; expected bias of "
            f"shape ({out_features},)"
        )
    dt = _float_dtype(*(a for a in (x_arr, w_arr, b_arr) if a is not None))
    x2 = _rows(_contiguous(x_arr, dt))
    y = np.empty(x_arr.shape[:-1] + (out_features,), dtype=dt)
    _core.dense_forward(
        _rows(y),
        x2,
        _contiguous(w_arr, dt),
        None if b_arr is None else _contiguous(b_arr, dt),
    )
    return y


def dense_backward(
    dy: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    *,
    dweight: Optional[np.ndarray] = None,
    dbias: Optional[np.ndarray] = None,
    need_input_grad: bool = True,
) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """Backward pass of the fully connected layer y = x @ weight.T + bias.

    dx = dy @ weight, dweight += dy.T @ x, dbias += dy summed over samples.

    Args:
        dy: Gradient of the loss with respect to y, shape (..., O).
        x: The forward input, shape (..., I) with the same leading shape as dy.
        weight: Weight of shape (O, I).
        dweight: Accumulator of shape (O, I), C-contiguous, of the computation dtype (float32
            when dy, x and weight are all float32, else float64). The gradient is added to it in
            place. None to get a fresh array.
        dbias: Accumulator of shape (O,), the same rules as dweight.
        need_input_grad: Compute dx; False skips that GEMM and returns None for dx.

    Returns:
        (dx, dweight, dbias): dx a new array shaped like x (or None), and the accumulators, the
        ones passed in when given.

    Raises:
        TypeError: An input is not numeric, or an accumulator is not an ndarray of the computation
            dtype.
        ValueError: The shapes do not fit together, or an accumulator is not C-contiguous, is
            read-only or overlaps an input.
    """
    if (type(x) is np.ndarray and type(weight) is np.ndarray and type(dy) is np.ndarray
            and x.ndim == 2 and weight.ndim == 2 and dy.ndim == 2
            and x.dtype == weight.dtype == dy.dtype and x.dtype in _FAST_DTYPES
            and x.flags.c_contiguous and weight.flags.c_contiguous and dy.flags.c_contiguous
            and x.shape[1] == weight.shape[1] and dy.shape == (x.shape[0], weight.shape[0])
            and _fast_accumulator(dweight, weight.shape, x.dtype)
            and _fast_accumulator(dbias, weight.shape[:1], x.dtype)):
        # 2-D C-contiguous inputs of one float dtype, accumulators absent or ready to be written:
        # straight to the core (which still refuses overlapping outputs).
        dw = np.zeros(weight.shape, dtype=x.dtype) if dweight is None else dweight
        db = np.zeros(weight.shape[:1], dtype=x.dtype) if dbias is None else dbias
        dx_fast = np.empty(x.shape, dtype=x.dtype) if need_input_grad else None
        _core.dense_backward(dx_fast, dw, db, dy, x, weight)
        return dx_fast, dw, db
    x_arr, w_arr = _dense_inputs(x, weight, "dense_backward")
    dy_arr = _as_numeric(dy, "dy")
    out_features, in_features = w_arr.shape
    expected_dy = x_arr.shape[:-1] + (out_features,)
    if dy_arr.shape != expected_dy:
        raise ValueError(
            f"dy has shape {dy_arr.shape} but x has shape {x_arr.shape} and weight {w_arr.shape}; "
            f"expected dy of shape {expected_dy}"
        )
    dt = _float_dtype(dy_arr, x_arr, w_arr)
    if dweight is None:
        dweight = np.zeros((out_features, in_features), dtype=dt)
    else:
        _check_output(dweight, "dweight", (out_features, in_features), dt)
    if dbias is None:
        dbias = np.zeros((out_features,), dtype=dt)
    else:
        _check_output(dbias, "dbias", (out_features,), dt)
    dx = np.empty(x_arr.shape, dtype=dt) if need_input_grad else None
    _core.dense_backward(
        None if dx is None else _rows(dx),
        dweight,
        dbias,
        _rows(_contiguous(dy_arr, dt)),
        _rows(_contiguous(x_arr, dt)),
        _contiguous(w_arr, dt),
    )
    return dx, dweight, dbias


# ---- instruction-set paths -----------------------------------------------------------------
def gemm_isa() -> str:
    """The instruction-set path the C++ kernels run on: "baseline", "avx2" or "avx512".

    One path serves them all: the GEMM and its packing, the activations, losses, optimizer
    updates and clipping, and the recurrent cells.

    Picked at import as the best this CPU supports; the environment variable ``CHAINRULE_ISA``
    (set before import) or :func:`set_isa` chooses another. Every path computes the same bits.
    """
    return str(_core.gemm_isa())


def supported_isas() -> Tuple[str, ...]:
    """The ISA paths this CPU supports, oldest first."""
    return tuple(_core.gemm_supported_isas())


def set_isa(name: str) -> None:
    """Switches every C++ kernel (GEMM, elementwise, recurrent cells) to another supported ISA
    path (tests use it to run them all).

    Raises:
        ValueError: the name is unknown or this CPU does not support it.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    _core.gemm_set_isa(name)
