"""Recurrent layers against PyTorch: same weights, same outputs, states and gradients.

Every case copies chainrule's weights into the matching torch.nn module (the names are PyTorch's,
so the copy is by name) and compares in float64 to ~1e-12: outputs, final states, every parameter
gradient, dL/dX, dL/dh0 (and dL/dc0), one SGD step, truncated BPTT runs and per-step gradient norms.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402

F64 = dict(rtol=1e-10, atol=1e-12)

# kind -> (chainrule layer, torch module, torch cell, extra kwargs)
KINDS = {
    "rnn_tanh": (cr.RNN, torch.nn.RNN, torch.nn.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (cr.RNN, torch.nn.RNN, torch.nn.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (cr.LSTM, torch.nn.LSTM, torch.nn.LSTMCell, {}),
    "gru": (cr.GRU, torch.nn.GRU, torch.nn.GRUCell, {}),
}


def tt(a: np.ndarray, grad: bool = False) -> "torch.Tensor":
    return torch.tensor(np.asarray(a), requires_grad=grad)


def npy(t: "torch.Tensor") -> np.ndarray:
    return t.detach().numpy()


class TorchNet(torch.nn.Module):
    """The torch twin of ``[Recurrent, (Dense)]``: per-step Linear on the sequence, as
    chainrule's Dense acts on (B, T, H)."""

    def __init__(self, rnn: "torch.nn.Module", head: "torch.nn.Module | None", last: bool):
        super().__init__()
        self.rnn, self.head, self.last = rnn, head, last

    def forward(self, x, state=None):
        out, hn = self.rnn(x, state)
        if self.last:
            out = out[:, -1]
        if self.head is not None:
            out = self.head(out)
        return out, hn


def make_pair(kind: str, I: int, H: int, L: int = 1, *, bias: bool = True,
              return_sequences: bool = True, head: "int | None" = None, loss: str = "mse",
              optimizer=None, dtype: str = "float64", seed: int = 0):
    """A chainrule model and its torch twin holding the same weights (copied by name)."""
    cr_cls, t_cls, _, kw = KINDS[kind]
    layers = [cr_cls(I, H, num_layers=L, bias=bias, return_sequences=return_sequences, **kw)]
    if head is not None:
        layers.append(cr.Dense(H, head))
    model = cr.Model(layers, loss=loss, optimizer=optimizer or cr.SGD(lr=0.1), dtype=dtype,
                     seed=seed)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    rnn = t_cls(I, H, num_layers=L, bias=bias, batch_first=True, **kw)
    lin = torch.nn.Linear(H, head) if head is not None else None
    net = TorchNet(rnn, lin, not return_sequences).to(tdtype)
    sd = model.state_dict()
    with torch.no_grad():
        for name, p in net.rnn.named_parameters():
            p.copy_(torch.from_numpy(sd["0." + name]))
        if lin is not None:
            lin.weight.copy_(torch.from_numpy(sd["1.weight"]))
            lin.bias.copy_(torch.from_numpy(sd["1.bias"]))
    return model, net


def torch_named_grads(net: "torch.nn.Module") -> dict:
    out = {}
    for name, p in net.rnn.named_parameters():
        out["0." + name] = npy(p.grad)
    if net.head is not None:
        for name, p in net.head.named_parameters():
            out["1." + name] = npy(p.grad)
    return out


def torch_named_params(net: "torch.nn.Module") -> dict:
    out = {"0." + n: npy(p) for n, p in net.rnn.named_parameters()}
    if net.head is not None:
        out.update({"1." + n: npy(p) for n, p in net.head.named_parameters()})
    return out


def assert_same_params(model: cr.Model, expected: dict, **tol) -> None:
    got = model.state_dict()
    assert set(got) == set(expected)
    for name in got:
        np.testing.assert_allclose(got[name], expected[name], err_msg=name, **(tol or F64))


# ---------------------------------------------------------------------------- one forward/backward
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "h0"])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 2, 5, 17])
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("kind", list(KINDS))
def test_forward_backward_step_match_torch(kind, L, T, B, with_state):
    I, H = 3, 4
    rng = np.random.default_rng(1000 * L + 10 * T + B)
    model, net = make_pair(kind, I, H, L, seed=T + B)
    X = rng.normal(size=(B, T, I))
    Y = rng.normal(size=(B, T, H))
    lstm = kind == "lstm"
    h0 = rng.normal(size=(L, B, H)) if with_state else np.zeros((L, B, H))
    c0 = rng.normal(size=(L, B, H)) if with_state else np.zeros((L, B, H))
    state = ((h0, c0) if lstm else h0) if with_state else None

    out = model.forward(X, initial_state=state)
    model.zero_grad()
    loss = model.backward(Y)

    xt, h0t, c0t = tt(X, True), tt(h0, True), tt(c0, True)
    tout, tstate = net(xt, (h0t, c0t) if lstm else h0t)
    tloss = torch.nn.functional.mse_loss(tout, tt(Y))
    tloss.backward()

    np.testing.assert_allclose(out, npy(tout), **F64)
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    if lstm:
        hn, cn = model.final_state()
        np.testing.assert_allclose(hn, npy(tstate[0]), **F64)
        np.testing.assert_allclose(cn, npy(tstate[1]), **F64)
        dh0, dc0 = model.initial_state_grad()
        np.testing.assert_allclose(dh0, npy(h0t.grad), **F64)
        np.testing.assert_allclose(dc0, npy(c0t.grad), **F64)
    else:
        np.testing.assert_allclose(model.final_state(), npy(tstate), **F64)
        np.testing.assert_allclose(model.initial_state_grad(), npy(h0t.grad), **F64)
    np.testing.assert_allclose(model.input_grad, npy(xt.grad), **F64)
    tgrads = torch_named_grads(net)
    grads = model.grads
    assert list(grads) == list(tgrads)  # same names, same order as the torch state dict
    for name, g in grads.items():
        np.testing.assert_allclose(g, tgrads[name], err_msg=name, **F64)

    # One SGD step moves both the same way.
    model.step()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    opt.step()
    assert_same_params(model, torch_named_params(net))


# ---------------------------------------------------------------------------- variants
def _compare_one(model, net, X, Y, torch_loss, *, yi=None):
    out = model.forward(X)
    model.zero_grad()
    loss = model.backward(Y if yi is None else yi)
    xt = tt(X, True)
    tout, _ = net(xt)
    tl = torch_loss(tout)
    tl.backward()
    np.testing.assert_allclose(out, npy(tout), **F64)
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(model.input_grad, npy(xt.grad), **F64)
    tgrads = torch_named_grads(net)
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, tgrads[name], err_msg=name, **F64)


@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("kind", list(KINDS))
def test_return_sequences_false_matches_torch_last_step(kind, L):
    rng = np.random.default_rng(7)
    model, net = make_pair(kind, 3, 5, L, return_sequences=False, seed=3)
    X, Y = rng.normal(size=(4, 6, 3)), rng.normal(size=(4, 5))
    _compare_one(model, net, X, Y, lambda o: torch.nn.functional.mse_loss(o, tt(Y)))
    assert model.predict(X).shape == (4, 5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_dense_after_sequence_is_per_step_linear(kind):
    rng = np.random.default_rng(8)
    model, net = make_pair(kind, 2, 4, 2, head=3, seed=4)
    X, Y = rng.normal(size=(3, 7, 2)), rng.normal(size=(3, 7, 3))
    _compare_one(model, net, X, Y, lambda o: torch.nn.functional.mse_loss(o, tt(Y)))


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_cross_entropy_on_sequences_with_class_targets(kind):
    # (B, T) class indices = torch's CrossEntropyLoss on the flattened (B*T, C) logits.
    rng = np.random.default_rng(9)
    C = 5
    model, net = make_pair(kind, 3, 4, 1, head=C, loss="cross_entropy", seed=5)
    X = rng.normal(size=(3, 6, 3))
    yi = rng.integers(0, C, size=(3, 6))
    _compare_one(model, net, X, None, yi=yi,
                 torch_loss=lambda o: torch.nn.functional.cross_entropy(
                     o.reshape(-1, C), torch.from_numpy(yi.reshape(-1))))


@pytest.mark.parametrize("kind", list(KINDS))
def test_bias_false(kind):
    rng = np.random.default_rng(10)
    model, net = make_pair(kind, 3, 4, 2, bias=False, seed=6)
    assert not any("bias" in n for n in model.parameter_names())
    X, Y = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 4))
    _compare_one(model, net, X, Y, lambda o: torch.nn.functional.mse_loss(o, tt(Y)))


def test_float32_lstm_matches_torch_loosely():
    rng = np.random.default_rng(11)
    model, net = make_pair("lstm", 3, 8, 2, head=2, dtype="float32", seed=7)
    X = rng.normal(size=(4, 20, 3)).astype(np.float32)
    Y = rng.normal(size=(4, 20, 2)).astype(np.float32)
    out = model.forward(X)
    model.zero_grad()
    model.backward(Y)
    assert out.dtype == np.float32
    xt = tt(X, True)
    tout, _ = net(xt)
    torch.nn.functional.mse_loss(tout, tt(Y)).backward()
    np.testing.assert_allclose(out, npy(tout), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.input_grad, npy(xt.grad), rtol=1e-3, atol=1e-6)
    tgrads = torch_named_grads(net)
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, tgrads[name], rtol=1e-3, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------- truncated BPTT
def torch_tbptt(net, X, Y, *, epochs, batch_size, k, lr, momentum, stateful, lstm):
    """PyTorch's chunk-and-detach loop; returns the per-epoch mean of the chunk losses."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    n, T = X.shape[:2]
    means = []
    for _ in range(epochs):
        losses, state = [], None
        for s in range(0, n, batch_size):
            xb, yb = tt(X[s:s + batch_size]), tt(Y[s:s + batch_size])
            if not stateful:
                state = None
            for c in range(0, T, k):
                out, state = net(xb[:, c:c + k], state)
                loss = torch.nn.functional.mse_loss(out, yb[:, c:c + k])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                state = tuple(s_.detach() for s_ in state) if lstm else state.detach()
        means.append(float(np.mean(losses)))
    return means


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_truncated_bptt_equals_torch_chunk_and_detach(kind, stateful):
    rng = np.random.default_rng(12)
    n, T, I, k, bs = 6, 11, 2, 4, 3  # chunks 4, 4, 3: the last one short
    X, Y = rng.normal(size=(n, T, I)), rng.normal(size=(n, T, 1))
    model, net = make_pair(kind, I, 5, 2, head=1, seed=8,
                           optimizer=cr.SGD(lr=0.05, momentum=0.9))
    hist = model.fit(X, Y, epochs=3, batch_size=bs, shuffle=False, bptt_steps=k,
                     stateful=stateful)
    means = torch_tbptt(net, X, Y, epochs=3, batch_size=bs, k=k, lr=0.05, momentum=0.9,
                        stateful=stateful, lstm=kind == "lstm")
    # Every chunk holds the same number of sequences, so History's sample-weighted mean is the
    # plain mean of the chunk losses.
    np.testing.assert_allclose(hist.loss, means, rtol=1e-10)
    assert_same_params(model, torch_named_params(net))


def test_stateful_without_truncation_carries_state_across_batches():
    rng = np.random.default_rng(13)
    n, T, bs = 4, 5, 2
    X, Y = rng.normal(size=(n, T, 2)), rng.normal(size=(n, T, 1))
    model, net = make_pair("lstm", 2, 3, 1, head=1, seed=9, optimizer=cr.SGD(lr=0.1))
    hist = model.fit(X, Y, epochs=2, batch_size=bs, shuffle=False, stateful=True)
    means = torch_tbptt(net, X, Y, epochs=2, batch_size=bs, k=T, lr=0.1, momentum=0.0,
                        stateful=True, lstm=True)
    np.testing.assert_allclose(hist.loss, means, rtol=1e-10)
    assert_same_params(model, torch_named_params(net))


# ---------------------------------------------------------------------------- per-step norms
def torch_step_norms(model: cr.Model, kind: str, X: np.ndarray, grad_out: np.ndarray,
                     return_sequences: bool) -> np.ndarray:
    """‖∂L/∂h_t‖ for every stacked cell and step, from an unrolled torch cell loop where every
    h_t keeps its gradient (the total one: from the output at t and from step t + 1)."""
    _, _, cell_cls, kw = KINDS[kind]
    layer = model.layers[0]
    sd = model.state_dict()
    L, H = layer.num_layers, layer.hidden_size
    cells = []
    for k in range(L):
        cell = cell_cls(X.shape[-1] if k == 0 else H, H, bias=layer.bias, **kw).double()
        with torch.no_grad():
            for name, p in cell.named_parameters():
                p.copy_(torch.from_numpy(sd[f"0.{name}_l{k}"]))
        cells.append(cell)
    B, T = X.shape[:2]
    xt = tt(X)
    hs = [[None] * T for _ in range(L)]
    state = [None] * L
    for t in range(T):
        inp = xt[:, t]
        for k in range(L):
            prev = state[k]
            if prev is None:
                z = torch.zeros(B, H, dtype=torch.float64)
                prev = (z, z) if kind == "lstm" else z
            new = cells[k](inp, prev)
            h = new[0] if kind == "lstm" else new
            h.retain_grad()
            hs[k][t] = h
            state[k] = new
            inp = h
    top = hs[L - 1]
    if return_sequences:
        out = torch.stack(top, dim=1)
    else:
        out = top[-1]
    (out * tt(grad_out)).sum().backward()
    return np.array([[float(torch.linalg.norm(hs[k][t].grad)) for t in range(T)]
                     for k in range(L)])


@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_timestep_grad_norms_are_torch_h_t_grad_norms(kind, return_sequences):
    rng = np.random.default_rng(14)
    model, _ = make_pair(kind, 3, 4, 2, return_sequences=return_sequences, seed=10)
    X = rng.normal(size=(3, 9, 3))
    out = model.forward(X)
    g = rng.normal(size=out.shape)
    model.backward(grad_output=g)
    norms = model.timestep_grad_norms()
    assert norms.shape == (2, 9)
    np.testing.assert_allclose(norms, torch_step_norms(model, kind, X, g, return_sequences),
                               rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------- mixed stacks
def test_mixed_stack_with_initial_states_per_layer():
    # LSTM(2 cells) -> per-step Dense -> Tanh -> GRU (last step) -> Dense, an initial state for
    # each recurrent layer given as {layer index: state}; (B, H) is accepted for one cell.
    rng = np.random.default_rng(15)
    B, T, I = 3, 7, 2
    model = cr.Model([cr.LSTM(I, 4, num_layers=2), cr.Dense(4, 5), cr.Tanh(),
                      cr.GRU(5, 3, return_sequences=False), cr.Dense(3, 2)],
                     dtype="float64", seed=0)
    mods = {"0.": torch.nn.LSTM(I, 4, 2, batch_first=True), "1.": torch.nn.Linear(4, 5),
            "3.": torch.nn.GRU(5, 3, batch_first=True), "4.": torch.nn.Linear(3, 2)}
    sd = model.state_dict()
    with torch.no_grad():
        for pre, mod in mods.items():
            mod.double()
            for n, p in mod.named_parameters():
                p.copy_(torch.from_numpy(sd[pre + n]))
    X, Y = rng.normal(size=(B, T, I)), rng.normal(size=(B, 2))
    h0, c0, g0 = rng.normal(size=(2, B, 4)), rng.normal(size=(2, B, 4)), rng.normal(size=(B, 3))
    out = model.forward(X, initial_state={0: (h0, c0), 3: g0})
    loss = model.backward(Y)

    xt, h0t, c0t, g0t = tt(X, True), tt(h0, True), tt(c0, True), tt(g0[None], True)
    o, (hn, cn) = mods["0."](xt, (h0t, c0t))
    o, gn = mods["3."](torch.tanh(mods["1."](o)), g0t)
    tout = mods["4."](o[:, -1])
    tl = torch.nn.functional.mse_loss(tout, tt(Y))
    tl.backward()

    np.testing.assert_allclose(out, npy(tout), **F64)
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(model.input_grad, npy(xt.grad), **F64)
    dh, dc = model.initial_state_grad(0)
    np.testing.assert_allclose(dh, npy(h0t.grad), **F64)
    np.testing.assert_allclose(dc, npy(c0t.grad), **F64)
    np.testing.assert_allclose(model.initial_state_grad(3), npy(g0t.grad), **F64)
    np.testing.assert_allclose(model.final_state(0)[1], npy(cn), **F64)
    np.testing.assert_allclose(model.final_state(3), npy(gn), **F64)
    grads = model.grads
    for pre, mod in mods.items():
        for n, p in mod.named_parameters():
            np.testing.assert_allclose(grads[pre + n], npy(p.grad), err_msg=pre + n, **F64)
    assert model.timestep_grad_norms(0).shape == (2, T)
    assert model.timestep_grad_norms(3).shape == (1, T)


def test_truncated_bptt_with_class_targets_equals_torch():
    rng = np.random.default_rng(16)
    C, n, T, k, bs = 4, 4, 9, 4, 2
    model, net = make_pair("gru", 2, 5, 1, head=C, loss="cross_entropy", seed=1)
    X, yi = rng.normal(size=(n, T, 2)), rng.integers(0, C, size=(n, T))
    hist = model.fit(X, yi, epochs=2, batch_size=bs, shuffle=False, bptt_steps=k)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for epoch in range(2):
        losses = []
        for s in range(0, n, bs):
            state = None
            for c in range(0, T, k):
                out, state = net(tt(X[s:s + bs, c:c + k]), state)
                loss = torch.nn.functional.cross_entropy(
                    out.reshape(-1, C), torch.from_numpy(yi[s:s + bs, c:c + k].reshape(-1)))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                state = state.detach()
        assert hist.loss[epoch] == pytest.approx(np.mean(losses), rel=1e-10)
    assert_same_params(model, torch_named_params(net))
