"""chainrule: backpropagation done right.

A C++ core (dense kernels, activations, losses, BPTT) behind a small NumPy ``Model`` API::

    import chainrule as cr
    model = cr.Model([cr.Dense(2, 8), cr.Tanh(), cr.Dense(8, 1)], loss="bce_with_logits",
                     optimizer=cr.SGD(lr=0.5), seed=0)
    model.fit(X, y, epochs=500, batch_size=4)
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import ops  # noqa: F401  (the functional layer over the kernels)
from . import plot  # noqa: F401  (matplotlib is imported only when a plot is drawn)
from ._validation import NotFittedError
from .callbacks import Callback, EarlyStopping
from .history import History
from .interop import from_torch
from .io import (ArchitectureError, ChecksumError, HeaderError, ModelFileError,
                 NotAModelFileError, TruncatedFileError, UnsupportedVersionError, from_bytes, load)
from .layers import (GRU, LSTM, RNN, Dense, Identity, Layer, LeakyReLU, LogSoftmax, ReLU, Sigmoid,
                     Softmax, Tanh)
from .losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from .model import Model
from .optim import SGD, Adam, Optimizer


def cmake_dir() -> str:
    """The folder holding chainrule's CMake package (for ``find_package(chainrule)``): pass it
    as ``-DCMAKE_PREFIX_PATH`` to link the C++ core (``chainrule::core``) without Python."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.isfile(os.path.join(here, "lib", "cmake", "chainrule", "chainruleConfig.cmake")):
        raise FileNotFoundError("this chainrule has no C++ package beside it (a development tree "
                                "run from source?); install it with pip to get one")
    return here


def get_num_threads() -> int:
    """Threads the C++ core may use (the caller included)."""
    return int(ops._core.get_num_threads())


def set_num_threads(n: int) -> None:
    """Sets the threads the C++ core may use (1 <= n <= 1024). Results are bitwise the same for
    any n.

    The default is the environment variable ``CHAINRULE_NUM_THREADS``, else the CPU count.
    """
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if not 1 <= int(n) <= ops._core.MAX_THREADS:
        raise ValueError(f"n must be in [1, {ops._core.MAX_THREADS}], got {n}")
    ops._core.set_num_threads(int(n))

def _warn_about_ignored_environment() -> None:
    """The core ignores a CHAINRULE_NUM_THREADS or CHAINRULE_ISA it cannot use (the default is
    always correct); say so, rather than let a typo pass as a setting."""
    import os
    import re
    import warnings

    threads = os.environ.get("CHAINRULE_NUM_THREADS")
    if threads is not None:
        m = re.fullmatch(r"\s*[+-]?\d+", threads)  # what the core's strtol takes whole
        if not (m and 1 <= int(threads) <= ops._core.MAX_THREADS):
            warnings.warn(f"CHAINRULE_NUM_THREADS={threads!r} is not a whole number in [1, "
                          f"{ops._core.MAX_THREADS}]; ignored, using {get_num_threads()} threads",
                          RuntimeWarning, stacklevel=3)
    isa = os.environ.get("CHAINRULE_ISA")
    if isa is not None and isa not in ops.supported_isas():
        warnings.warn(f"CHAINRULE_ISA={isa!r} is not one of this CPU's paths "
                      f"{list(ops.supported_isas())}; ignored, using {ops.gemm_isa()!r}",
                      RuntimeWarning, stacklevel=3)


_warn_about_ignored_environment()

__all__ = [
    "__version__", "Model", "History", "Callback", "EarlyStopping", "NotFittedError",
    "Layer", "Dense", "RNN", "LSTM", "GRU", "Identity", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "Softmax", "LogSoftmax",
    "Loss", "MSELoss", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss",
    "Optimizer", "SGD", "Adam", "load", "from_bytes", "ops", "plot", "get_num_threads",
    "set_num_threads", "cmake_dir",
    "from_torch",
    "ModelFileError", "TruncatedFileError", "HeaderError", "NotAModelFileError",
    "UnsupportedVersionError", "ChecksumError", "ArchitectureError",
]
