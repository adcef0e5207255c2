"""Input checking at the public boundary, in scikit-learn's wording.

Every array is converted once here to a C-contiguous array of the model's dtype; the caller's
arrays are never modified (a conversion copies; an array that already fits is only read).
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["NotFittedError", "as_numeric", "check_array", "check_positive_int"]


class NotFittedError(ValueError, AttributeError):
    """Raised when a model is used before it has weights (as scikit-learn's NotFittedError)."""


def detached(x: Any) -> Any:
    """A torch tensor's values (as load_state_dict takes them): np.asarray refuses a tensor that
    requires grad, or one on another device; anything else unchanged."""
    if type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu()
    return x


def as_numeric(x: Any, name: str) -> np.ndarray:
    x = detached(x)
    if x is None:
        raise TypeError(f"{name} must be an array-like of numbers, got None")
    if isinstance(x, (str, bytes, dict, set)):
        raise TypeError(f"{name} must be an array-like of numbers, got {type(x).__name__}")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists and the like
        raise ValueError(f"{name} could not be converted to an array: {e}") from None
    if a.dtype.kind in "OUSV":
        try:
            a = a.astype(np.float64)
        except (ValueError, TypeError):
            raise TypeError(f"{name} must contain numbers, got an array of dtype {a.dtype} "
                            f"(e.g. {a.flat[0]!r} cannot be converted to float)") from None
    if a.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {a.dtype}")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must contain numbers, got dtype {a.dtype}")
    return a


def check_array(x: Any, dtype: "np.typing.DTypeLike", *, name: str = "X",
                ndims: Tuple[int, ...] = (2, 3), allow_empty: bool = False) -> np.ndarray:
    """Converts x to a C-contiguous array of dtype with ndim in ndims, all finite."""
    if (type(x) is np.ndarray and x.size > 0 and x.ndim in ndims and x.dtype == dtype
            and x.flags.c_contiguous):
        # Already fits (a predict loop's one sample): only the finiteness check applies.
        _check_finite(x, name, x.dtype)
        return x
    a = as_numeric(x, name)
    if a.ndim not in ndims:
        want = " or ".join(f"{d}D" for d in ndims)
        if a.ndim == 1 and 2 in ndims:
            raise ValueError(
                f"Expected 2D array, got 1D array instead:\n{name}={np.array2string(a, threshold=10)}.\n"
                "Reshape your data either using array.reshape(-1, 1) if your data has a single "
                "feature or array.reshape(1, -1) if it contains a single sample.")
        raise ValueError(f"Expected {want} array for {name}, got {a.ndim}D array of shape "
                         f"{a.shape} instead.")
    if not allow_empty and (a.ndim == 0 or a.shape[0] == 0):
        raise ValueError(f"Found array with 0 sample(s) (shape={a.shape}) while a minimum of 1 "
                         f"is required.")
    if not allow_empty and a.ndim >= 2 and 0 in a.shape[1:]:
        raise ValueError(f"Found array with 0 feature(s) (shape={a.shape}) while a minimum of 1 "
                         f"is required.")
    _check_copy_fits(a, dtype, name)
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: caught below
        out = np.ascontiguousarray(a, dtype=dtype)
    _check_finite(out, name, a.dtype)
    return out


def _check_copy_fits(a: np.ndarray, dtype: Any, name: str) -> None:
    """MemoryError before converting a when the copy cannot fit in the memory available.

    A broadcast view of a terabyte costs its caller nothing; on an overcommitting kernel NumPy
    would get the memory for its copy, and filling it would wake the OOM killer.
    """
    if a.dtype == dtype and a.flags.c_contiguous:
        return  # no copy
    need = a.size * np.dtype(dtype).itemsize
    if need < 64 << 20:
        return
    from . import _core

    avail = int(_core.available_memory())
    if avail and need + (64 << 20) > avail:
        raise MemoryError(f"{name} of shape {a.shape} needs {need / 2**30:.3g} GiB as a "
                          f"contiguous {np.dtype(dtype).name} array, but only "
                          f"{avail / 2**30:.3g} GiB of memory is available")


def _check_finite(a: np.ndarray, name: str, source_dtype: np.dtype) -> None:
    if a.dtype.kind != "f" or a.size == 0:
        return
    if a.dtype in (np.float32, np.float64) and a.flags.c_contiguous:
        from . import _core

        # One pass over the exponent bits, on the pool (a float64 sum of float32 data took
        # 3 ms per 4 M elements, 1-2 % of a fit over the wide benchmark's minibatches).
        if _core.all_finite(a):
            return
    else:
        # One reduction answers "all finite?" cheaply; the detailed scan runs only on failure.
        with np.errstate(invalid="ignore", over="ignore"):
            if np.isfinite(a.sum(dtype=np.float64) * 0):
                return
    if np.isnan(a).any():
        raise ValueError(f"Input {name} contains NaN.")
    if not np.isfinite(a).all():
        note = "" if source_dtype == a.dtype else f" (converted from {source_dtype})"
        raise ValueError(f"Input {name} contains infinity or a value too large for "
                         f"dtype('{a.dtype}'){note}.")


def check_bool(name: str, value: Any) -> bool:
    """value as a bool: True/False or NumPy's bools; anything else (1, "no", None) is refused, as
    scikit-learn's "boolean" parameters refuse it, rather than read by its truth value."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} "
                        f"{value!r}")
    return bool(value)


def _short(value: Any) -> str:
    """repr(value), cut to 60 characters (an int of 400 digits)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_real(name: str, value: Any) -> float:
    """value as a float: a real number of any kind float() takes (int, float, NumPy and torch
    scalars and 0-d arrays, Decimal, Fraction), but not a bool, a string, None or a complex."""
    if (isinstance(value, (bool, np.bool_, str, bytes, complex, np.complexfloating))
            or not (isinstance(value, numbers.Real) or hasattr(value, "__float__"))):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be within the float range, got {_short(value)}") from None
    except (TypeError, ValueError):  # __float__ refused it (an array of several values)
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} "
                        f"{_short(value)}") from None


def check_positive_int(name: str, value: Any, *, allow_zero: bool = False,
                       clamp: bool = False) -> int:
    """value as an int > 0 (>= 0 with allow_zero) below 2**63; with clamp, a larger value
    (a batch or chunk longer than any data) becomes 2**63 - 1."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    v = int(value.__index__())
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else 'a positive int'}, got {v}")
    if v >= 2**63 and clamp:
        return 2**63 - 1
    if v >= 2**63:  # the core counts in signed 64 bits
        raise ValueError(f"{name} must be less than 2**63, got {v}")
    return v
