"""What training a recurrent layer that outputs every step holds, and that holding less changed
no bit.

Memory: a child process reads its peak RSS (ru_maxrss) before and after one fit epoch of
LSTM(return_sequences=True) -> Dense on every step, and the difference must stay below a few
sequence buffers B·T·H beside the BPTT workspace the layer reports. The copies that training
used to make (the output and its gradient time-major, the input time-major, two gradient
buffers between layers, truncated BPTT's whole minibatch) each add one buffer or more, far
past the bound. Bits: fit writes gradients over the activations it no longer needs ("consume"),
while Model.backward() keeps its tape; a manual loop of forward, backward and step must train
the same weights as fit, and "sqrt" as "all", with truncation, stateful batches, stacked cells
and activations on every step.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import chainrule as cr

# One fit epoch in a fresh process: a warm-up fit first (thread pool, kernels, first
# allocations), then the data, then the peak RSS before and after the measured fit.
CHILD = r"""
import json, resource, sys
import numpy as np
import chainrule as cr
T, B, H, F, k = (int(a) for a in sys.argv[1:6])
memory = sys.argv[6]
model = cr.Model([cr.LSTM(F, H), cr.Dense(H, F)], loss="mse", dtype="float32", seed=0)
rng = np.random.default_rng(0)
model.fit(rng.standard_normal((B, 16, F), dtype=np.float32),
          rng.standard_normal((B, 16, F), dtype=np.float32), batch_size=B, bptt_memory=memory)
X = rng.standard_normal((B, T, F), dtype=np.float32)  # float32 directly: no float64 temporary
Y = rng.standard_normal((B, T, F), dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model.fit(X, Y, batch_size=B, bptt_memory=memory, bptt_steps=k or None)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"added": (after - before) * 1024,
                  "workspace": model.bptt_workspace()["peak_workspace_bytes"]}))
"""

MiB = 1 << 20


def _added_bytes(T: int, B: int, H: int, F: int, k: int, memory: str) -> dict:
    # Two threads: the GEMMs keep packing space per thread (one segment's rows, ~6 MiB here).
    env = dict(os.environ, CHAINRULE_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", CHILD, str(T), str(B), str(H), str(F), str(k),
                          memory], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


rss_measurable = pytest.mark.skipif(
    not sys.platform.startswith("linux") or "asan" in os.environ.get("LD_PRELOAD", ""),
    reason="ru_maxrss in KiB is Linux's; under AddressSanitizer the RSS holds its shadow memory "
           "and quarantine too")


@rss_measurable
def test_sqrt_epoch_with_sequence_output_holds_few_sequence_buffers():
    # T = 30000, B = 4, H = 64: a (B, T, H) buffer is 29 MiB; the workspace ~3 MiB. What is left:
    # the LSTM's output (then its gradient), input, targets, Dense output and loss gradient
    # (F = 8: an eighth each), the GEMMs' per-thread packing of one segment. The old copies
    # added ~6 buffers.
    T, B, H, F = 30_000, 4, 64, 8
    seq = B * T * H * 4
    r = _added_bytes(T, B, H, F, 0, "sqrt")
    assert r["workspace"] < seq / 8  # O(sqrt T) indeed
    bound = 3 * seq + r["workspace"] + 16 * MiB
    assert r["added"] < bound, (r, seq)


@rss_measurable
def test_truncated_epoch_holds_no_whole_sequence():
    # bptt_steps = 100 of T = 30000 with F = H = 64: every buffer is 100 steps long. Gathering
    # the minibatch's whole inputs and targets first added two (B, T, F) buffers, 29 MiB each.
    T, B, H, F = 30_000, 4, 64, 64
    seq = B * T * F * 4
    r = _added_bytes(T, B, H, F, 100, "sqrt")
    assert r["added"] < seq / 2 + 8 * MiB, (r, seq)


# ---------------------------------------------------------------------------- the same bits
CELLS = {"rnn": lambda I, H, L: cr.RNN(I, H, num_layers=L),
         "lstm": lambda I, H, L: cr.LSTM(I, H, num_layers=L),
         "gru": lambda I, H, L: cr.GRU(I, H, num_layers=L)}
HEADS = {
    "dense": lambda H: [cr.Dense(H, 2)],
    # an activation reads its output in backward: its gradient cannot go over it
    "mlp": lambda H: [cr.Dense(H, 5), cr.Tanh(), cr.Dense(5, 2)],
    # a second recurrent layer on the first one's output sequence
    "stacked": lambda H: [cr.GRU(H, 3), cr.ReLU(), cr.Dense(3, 2)],
}


def _model(kind: str, L: int, head: str, pre: bool, seed: int = 5) -> cr.Model:
    """kind(num_layers=L) and a head on every step; pre: a Dense below it, so that the recurrent
    layer's input gradient is needed (and goes over its input)."""
    I, H = (3 if pre else 4), 6
    layers = [cr.Dense(4, I)] if pre else []
    layers += [CELLS[kind](I, H, L)] + HEADS[head](H)
    return cr.Model(layers, loss="mse", optimizer=cr.Adam(lr=1e-2), dtype="float32", seed=seed)


def _data(T: int = 23):
    rng = np.random.default_rng(7)
    return (rng.normal(size=(6, T, 4)).astype(np.float32),
            rng.normal(size=(6, T, 2)).astype(np.float32))


def _manual_fit(model: cr.Model, X, Y, batch: int, k, stateful: bool, memory: str):
    """fit(shuffle=False) by hand: forward, backward, step per batch (per chunk of k steps),
    through Model.backward, which keeps its tape (no gradient written over an activation)."""
    T = X.shape[1]
    k = k or T
    rec = [i for i, layer in enumerate(model.layers) if isinstance(layer, (cr.RNN, cr.LSTM, cr.GRU))]
    carried = None
    losses = []
    for b0 in range(0, len(X), batch):
        if not stateful:
            carried = None
        for c0 in range(0, T, k):
            xb, yb = X[b0:b0 + batch, c0:c0 + k], Y[b0:b0 + batch, c0:c0 + k]
            model.zero_grad()
            model.forward(xb, initial_state=carried, bptt_memory=memory)
            losses.append(model.backward(yb))
            model.step()
            if k < T or stateful:
                carried = {i: model.final_state(i) for i in rec}
    return losses


@pytest.mark.parametrize("k, stateful", [(None, False), (5, False), (None, True), (6, True)],
                         ids=["full", "trunc", "stateful", "trunc-stateful"])
@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("kind", list(CELLS))
def test_fit_is_bitwise_a_manual_loop_and_sqrt_is_bitwise_all(kind, head, k, stateful):
    X, Y = _data()
    L = 2 if kind == "lstm" else 1
    pre = kind != "rnn"
    ref = _model(kind, L, head, pre)
    _manual_fit(ref, X, Y, 3, k, stateful, "all")
    for memory in ("all", "sqrt"):
        model = _model(kind, L, head, pre)
        model.fit(X, Y, epochs=1, batch_size=3, shuffle=False, bptt_steps=k, stateful=stateful,
                  bptt_memory=memory)
        for name, w in ref.state_dict().items():
            assert np.array_equal(model.state_dict()[name], w), (memory, name)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("L", [2, 3])
def test_shuffled_truncated_stateless_sqrt_is_bitwise_all(kind, L):
    X, Y = _data(31)
    models = {m: _model(kind, L, "mlp", True) for m in ("all", "sqrt")}
    hist = {m: models[m].fit(X, Y, epochs=2, batch_size=4, bptt_steps=7, bptt_memory=m,
                             record_grad_norms=True) for m in models}
    assert hist["all"].loss == hist["sqrt"].loss
    for layer, norms in hist["all"].timestep_grad_norms.items():
        assert np.array_equal(norms[-1], hist["sqrt"].timestep_grad_norms[layer][-1])
    for name, w in models["all"].state_dict().items():
        assert np.array_equal(models["sqrt"].state_dict()[name], w), name


@pytest.mark.parametrize("L", [1, 2, 3])
def test_budget_compares_the_workspace_that_all_reports(L):
    # bptt_workspace() counts what "all" holds, the stacked cells' sequences and gradients
    # included: a budget of exactly that runs "all", one byte less "sqrt".
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 40, 3))
    model = cr.Model([cr.LSTM(3, 5, num_layers=L), cr.Dense(5, 1)], dtype="float64", seed=0)
    model.forward(X, bptt_memory="all")
    model.backward(grad_output=np.ones((3, 40, 1)))
    all_bytes = model.bptt_workspace()["peak_workspace_bytes"]
    seq = 40 * 3 * 5 * 8
    # "all": (T + 1) h and c per cell and 5 gate values per step; with stacking, the gradient
    # between cells (two buffers from three cells on)
    assert all_bytes >= L * 7 * seq + min(L - 1, 2) * seq
    for budget, mode in ((all_bytes, "all"), (all_bytes - 1, "sqrt")):
        fresh = cr.Model([cr.LSTM(3, 5, num_layers=L), cr.Dense(5, 1)], dtype="float64", seed=0)
        fresh.forward(X, bptt_memory=budget)
        fresh.backward(grad_output=np.ones((3, 40, 1)))
        assert fresh.bptt_workspace()["memory"] == mode
