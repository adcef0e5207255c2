"""Shared fixtures for the Model API tests: a seeded generator and small data sets.

Nothing here imports torch: the suite must run (with the torch tests skipped) where it is absent.
Every fixture is deterministic, so a failure reproduces exactly.
"""
from __future__ import annotations

import importlib.abc
import sys

import numpy as np
import pytest


class _TorchBlocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked for this run)")
        return None


# A run "without torch" is often made with sys.modules["torch"] = None. SciPy's array-API
# helpers (reached through sklearn.metrics) look torch up in sys.modules and getattr() it, so
# that None breaks their import. Block torch with an import hook instead: still unimportable.
if "torch" in sys.modules and sys.modules["torch"] is None:
    del sys.modules["torch"]
    sys.meta_path.insert(0, _TorchBlocker())


@pytest.fixture(autouse=True)
def restore_core_settings():
    """Every test leaves the process as it found it: the ISA path, the thread count, the GEMM
    block table and its skinny-path setting (tests switch all four to reach every path)."""
    from chainrule import _core, get_num_threads, ops, set_num_threads
    isa, threads, blocking = ops.gemm_isa(), get_num_threads(), _core.gemm_get_blocking()
    skinny = _core.gemm_get_skinny()
    yield
    ops.set_isa(isa)
    set_num_threads(threads)
    _core.gemm_set_blocking(*blocking)
    _core.gemm_set_skinny(skinny)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


@pytest.fixture
def xor():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return X, y


@pytest.fixture
def regression(rng):
    """X (64, 3) and y (64, 2) with a learnable (tanh-shaped) relation plus a little noise."""
    X = rng.standard_normal((64, 3))
    W = rng.standard_normal((3, 2))
    y = np.tanh(X @ W) + 0.05 * rng.standard_normal((64, 2))
    return X, y


@pytest.fixture
def blobs(rng):
    """Three Gaussian blobs in 2-D: X (90, 2), integer classes y (90,)."""
    centers = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    y = np.repeat(np.arange(3), 30)
    X = centers[y] + 0.7 * rng.standard_normal((90, 2))
    order = rng.permutation(90)
    return X[order], y[order]
