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


@pytest.mark.parametrize("make", [
    lambda: cr.Dense(2, 2 ** 63), lambda: cr.Dense(2 ** 64, 3), lambda: cr.RNN(1, 2 ** 63),
    lambda: cr.LSTM(None, 4, num_layers=2 ** 70),
], ids=["dense-out", "dense-in", "rnn", "cells"])
def test_sizes_beyond_64_bits_are_value_errors(make):
    # were RuntimeError from the binding ("Unable to cast Python instance of type int")
    with pytest.raises(ValueError, match=r"less than 2\*\*63"):
        cr.Model([make(), cr.Dense(1)])


@pytest.mark.parametrize("layers", [
    lambda: [cr.Dense(2 ** 40, 2 ** 40)], lambda: [cr.Dense(2, 2 ** 62)],
    lambda: [cr.LSTM(1, 2 ** 61)],
], ids=["dense-square", "dense-bytes", "lstm-gates"])
def test_size_products_beyond_64_bits_are_value_errors(layers):
    with pytest.raises(ValueError, match="overflows"):
        cr.Model(layers())


# ---- inputs ----------------------------------------------------------------------------------

def _calls(model, X, y):
    return {"forward": lambda: model.forward(X), "predict": lambda: model.predict(X),
            "fit": lambda: model.fit(X, y, epochs=1, batch_size=1),
            "evaluate": lambda: model.evaluate(X, y)}


@needs_meminfo
@pytest.mark.parametrize("input_size,call", [
    (1, "forward"), (1, "predict"), (1, "fit"), (1, "evaluate"),
    (None, "forward"), (None, "fit"),  # a lazily sized model is built by these two only
])
def test_a_billion_steps_by_broadcast_is_refused_before_copying(call, input_size):
    # What a user can pass for T = 10**9: a broadcast view (no memory behind it). Its float32 copy
    # would be 4 GB, and one sample's activations through RNN(64) about 1 TB.
    model = cr.Model([cr.RNN(input_size, 64), cr.Dense(64, 1)], seed=0)
    X = np.broadcast_to(np.float32(0.5), (1, 10 ** 9, 1))
    y = np.broadcast_to(np.float32(0.0), (1, 10 ** 9, 1))
    with pytest.raises(MemoryError, match="activations"):
        _calls(model, X, y)[call]()
    # the model is untouched (a lazy one not even built) and works on sensible input
    small = np.full((2, 5, 1), 0.5, np.float32)
    assert model.forward(small).shape == (2, 5, 1)


@needs_meminfo
@pytest.mark.parametrize("call", ["forward", "predict", "fit", "evaluate"])
def test_a_terabyte_batch_by_broadcast_is_refused_before_copying(call):
    model = cr.Model([cr.Dense(4, 3)], seed=0)
    X = np.broadcast_to(np.float32(1.0), (10 ** 12, 4))
    y = np.broadcast_to(np.float32(0.0), (10 ** 12, 3))
    with pytest.raises(MemoryError, match=REFUSED):
        _calls(model, X, y)[call]()


@needs_meminfo
def test_terabyte_targets_by_broadcast_are_refused_before_copying():
    model = cr.Model([cr.Dense(4, 3)], seed=0)
    X = np.ones((2, 4), np.float32)
    y = np.broadcast_to(0.0, (10 ** 12, 3))
    with pytest.raises(MemoryError, match=REFUSED):
        model.fit(X, y)


@needs_meminfo
def test_a_refused_forward_keeps_the_last_tape():
    model = cr.Model([cr.Dense(4, 3)], seed=0)
    X = np.ones((2, 4), np.float32)
    model.forward(X)
    with pytest.raises(MemoryError):
        model.forward(np.broadcast_to(np.float32(1.0), (10 ** 12, 4)))
    assert np.isfinite(model.backward(np.zeros((2, 3))))


def test_huge_batch_size_is_clamped_to_the_samples():
    model = cr.Model([cr.Dense(4, 3)], seed=0)
    X, y = np.ones((5, 4)), np.zeros((5, 3))
    h = model.fit(X, y, epochs=1, batch_size=10 ** 30)
    assert h.epochs == 1
