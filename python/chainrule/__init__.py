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
from ._validation import NotFittedError
from .callbacks import Callback, EarlyStopping
from .history import History
from .io import (ArchitectureError, ChecksumError, HeaderError, ModelFileError,
                 NotAModelFileError, TruncatedFileError, UnsupportedVersionError, from_bytes, load)
from .layers import (GRU, LSTM, RNN, Dense, Identity, Layer, LeakyReLU, LogSoftmax, ReLU, Sigmoid,
                     Softmax, Tanh)
from .losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from .model import Model
from .optim import SGD, Adam, Optimizer

__all__ = [
    "__version__", "Model", "History", "Callback", "EarlyStopping", "NotFittedError",
    "Layer", "Dense", "RNN", "LSTM", "GRU", "Identity", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "Softmax", "LogSoftmax",
    "Loss", "MSELoss", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss",
    "Optimizer", "SGD", "Adam", "load", "from_bytes", "ops",
    "ModelFileError", "TruncatedFileError", "HeaderError", "NotAModelFileError",
    "UnsupportedVersionError", "ChecksumError", "ArchitectureError",
]
