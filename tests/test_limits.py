"""Absurd sizes: a MemoryError or ValueError before anything large is allocated, never a crash or
a visit from the OOM killer (Linux overcommits: a huge malloc often succeeds, and filling it is
what kills). Every request here is refused up front, so no test allocates more than a few MiB,
whatever the machine; the messages tell the up-front refusals from a failed malloc.
"""
from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule import _core

# The core compares requests with MemAvailable + SwapFree (and a cgroup limit); elsewhere it
# cannot know, and a request fails (or not) in malloc.
KNOWS_MEMORY = _core.available_memory() > 0
needs_meminfo = pytest.mark.skipif(not KNOWS_MEMORY, reason="available memory unknown here")
REFUSED = "memory is available"


# ---- layers ----------------------------------------------------------------------------------

@needs_meminfo
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layers", [
    lambda: [cr.Dense(2, 10 ** 12)],                     # a hidden layer of 10**12 units: 8 TB
    lambda: [cr.Dense(10 ** 12, 1)],
    lambda: [cr.Dense(2, 8), cr.ReLU(), cr.Dense(8, 10 ** 12)],
    lambda: [cr.RNN(1, 10 ** 12)],
    lambda: [cr.LSTM(3, 10 ** 11)],
    lambda: [cr.RNN(1, 4, num_layers=10 ** 12)],
    lambda: [cr.GRU(1, 1, num_layers=10 ** 9)],          # tiny cells, but a billion of them
], ids=["dense-out", "dense-in", "deep-dense", "rnn", "lstm", "cells", "tiny-cells"])
def test_huge_layers_are_refused_before_allocating(layers, dtype):
    with pytest.raises(MemoryError, match=REFUSED):
        cr.Model(layers(), dtype=dtype)


@needs_meminfo
def test_huge_lazy_layer_is_refused_at_the_first_data():
    model = cr.Model([cr.Dense(10 ** 12)])  # sized by the first data
    X = np.ones((2, 3), np.float32)
    with pytest.raises(MemoryError, match=REFUSED):
        model.forward(X)


@pytest.mark.parametrize("layers", [
    lambda: [cr.Dense(2 ** 40, 2 ** 40)], lambda: [cr.Dense(2, 2 ** 62)],
    lambda: [cr.LSTM(1, 2 ** 61)],
], ids=["dense-square", "dense-bytes", "lstm-gates"])
def test_size_products_beyond_64_bits_are_value_errors(layers):
    with pytest.raises(ValueError, match="overflows"):
        cr.Model(layers())
