"""The Model against PyTorch: same weights, same data -> same outputs, losses, gradients, updates.

Every network is built twice, as chainrule layers and as a float64 ``torch.nn.Sequential``; the
torch state dict is loaded into the Model (the parameter names agree), and every quantity is
compared in float64 with rtol 1e-10 (float32 runs get a loose tolerance).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import chainrule as cr

torch = pytest.importorskip("torch")
F = torch.nn.functional

RTOL, ATOL = 1e-10, 1e-12

ACTIVATIONS = {
    "sigmoid": (cr.Sigmoid, torch.nn.Sigmoid),
    "tanh": (cr.Tanh, torch.nn.Tanh),
    "relu": (cr.ReLU, torch.nn.ReLU),
    "leaky_relu": (lambda: cr.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    "softmax": (cr.Softmax, lambda: torch.nn.Softmax(dim=-1)),
    "log_softmax": (cr.LogSoftmax, lambda: torch.nn.LogSoftmax(dim=-1)),
    "identity": (cr.Identity, torch.nn.Identity),
}

# Loss cases: chainrule loss name, how the net ends, and the targets.
LOSS_CASES = ["mse", "bce", "bce_with_logits", "ce_index", "ce_prob"]


def build(arch, loss="mse", optimizer=None, dtype="float64", seed=0):
    """arch: ("dense", in, out, bias) tuples and activation names, in order."""
    cr_layers, t_layers = [], []
    for a in arch:
        if isinstance(a, tuple):
            _, i, o, bias = a
            cr_layers.append(cr.Dense(i, o, bias=bias))
            t_layers.append(torch.nn.Linear(i, o, bias=bias))
        else:
            c, t = ACTIVATIONS[a]
            cr_layers.append(c())
            t_layers.append(t())
    torch.manual_seed(seed)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    seq = torch.nn.Sequential(*t_layers).to(tdtype)
    for p in seq.parameters():  # wider than torch's init, so the activations leave their linear range
        torch.nn.init.uniform_(p, -1.0, 1.0)
    model = cr.Model(cr_layers, loss=loss, optimizer=optimizer, dtype=dtype, seed=seed)
    model.load_state_dict(seq.state_dict())
    for k, v in seq.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v.numpy())
    return model, seq


def case(loss_case, act, rng, n=7, bias_last=False, dtype="float64"):
    """A net Dense(4, 6) -> act -> Dense(6, C) [-> Sigmoid], its loss name and its targets."""
    C = 2 if loss_case.startswith("bce") else 3
    arch = [("dense", 4, 6, True), act, ("dense", 6, C, bias_last)]
    if loss_case == "mse":
        y = rng.standard_normal((n, C))
    elif loss_case == "bce":
        arch.append("sigmoid")
        y = rng.uniform(0, 1, (n, C))  # soft targets exercise both terms
    elif loss_case == "bce_with_logits":
        y = rng.integers(0, 2, (n, C)).astype(np.float64)
    elif loss_case == "ce_index":
        y = rng.integers(0, C, n)
    else:
        y = rng.dirichlet(np.ones(C), n)
    name = "cross_entropy" if loss_case.startswith("ce") else loss_case
    return arch, name, y


def torch_loss(out, y, name, reduction="mean"):
    if name == "mse":
        return F.mse_loss(out, torch.as_tensor(y, dtype=out.dtype), reduction=reduction)
    if name == "bce":
        return F.binary_cross_entropy(out, torch.as_tensor(y, dtype=out.dtype), reduction=reduction)
    if name == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(out, torch.as_tensor(y, dtype=out.dtype),
                                                  reduction=reduction)
    if np.asarray(y).dtype.kind in "iu":
        return F.cross_entropy(out, torch.as_tensor(y, dtype=torch.long), reduction=reduction)
    return F.cross_entropy(out, torch.as_tensor(y, dtype=out.dtype), reduction=reduction)


def assert_close(a, b, rtol=RTOL, atol=ATOL, what=""):
    if hasattr(b, "detach"):
        b = b.detach().numpy()
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


def assert_same_params(model, seq, rtol=RTOL, atol=ATOL):
    tsd = seq.state_dict()
    sd = model.state_dict()
    assert list(sd) == list(tsd)
    for k in sd:
        assert_close(sd[k], tsd[k], rtol, atol, what=k)


def assert_same_grads(model, seq, rtol=RTOL, atol=ATOL):
    named = dict(seq.named_parameters())
    grads = model.grads
    assert list(grads) == list(named)
    for k, g in grads.items():
        assert_close(g, named[k].grad, rtol, atol, what=f"grad of {k}")


# ---------------------------------------------------------------------------------------------
# forward, loss, gradients, input gradient
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss_case", LOSS_CASES)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_forward_loss_and_gradients_match_torch(act, loss_case, reduction, rng):
    arch, name, y = case(loss_case, act, rng, bias_last=(reduction == "sum"))
    X = rng.standard_normal((7, 4))
    model, seq = build(arch, loss=_loss(name, reduction))
    out = model.forward(X)
    loss = model.backward(y)

    xt = torch.tensor(X, requires_grad=True)
    tout = seq(xt)
    tl = torch_loss(tout, y, name, reduction)
    tl.backward()

    assert_close(out, tout, what="forward output")
    assert isinstance(loss, float)
    assert math.isclose(loss, tl.item(), rel_tol=RTOL, abs_tol=ATOL)
    assert_same_grads(model, seq)
    assert model.input_grad.shape == X.shape
    assert_close(model.input_grad, xt.grad, what="input_grad")


def _loss(name, reduction):
    return {"mse": cr.MSELoss, "bce": cr.BCELoss, "bce_with_logits": cr.BCEWithLogitsLoss,
            "cross_entropy": cr.CrossEntropyLoss}[name](reduction=reduction)


@pytest.mark.parametrize("bias", [(True, True), (False, True), (True, False), (False, False)])
def test_dense_with_and_without_bias(bias, rng):
    arch = [("dense", 3, 5, bias[0]), "tanh", ("dense", 5, 2, bias[1])]
    model, seq = build(arch)
    assert ("0.bias" in model.state_dict()) == bias[0]
    assert ("2.bias" in model.state_dict()) == bias[1]
    X, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    out = model.forward(X)
    model.backward(y)
    xt = torch.tensor(X, requires_grad=True)
    F.mse_loss(seq(xt), torch.tensor(y)).backward()
    assert_close(out, seq(torch.tensor(X)))
    assert_same_grads(model, seq)
    assert_close(model.input_grad, xt.grad)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_backward_from_grad_output_matches_torch(act, rng):
    model, seq = build([("dense", 4, 5, True), act, ("dense", 5, 3, True), act])
    X, G = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    model.forward(X)
    assert model.backward(grad_output=G) is None
    xt = torch.tensor(X, requires_grad=True)
    seq(xt).backward(torch.tensor(G))
    assert_same_grads(model, seq)
    assert_close(model.input_grad, xt.grad)


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
def test_kink_at_exactly_zero_takes_torch_subgradient(act):
    """Pre-activations of exactly 0: ReLU passes no gradient, LeakyReLU passes the slope."""
    model, seq = build([("dense", 2, 3, False), act, ("dense", 3, 1, True)])
    W = np.array([[1.0, 1.0], [1.0, -1.0], [0.0, 1.0]])
    model.load_state_dict({**model.state_dict(), "0.weight": W})
    seq[0].weight.data = torch.tensor(W)
    X = np.array([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])  # every row has a zero pre-activation
    y = np.ones((3, 1))
    model.forward(X)
    model.backward(y)
    xt = torch.tensor(X, requires_grad=True)
    F.mse_loss(seq(xt), torch.tensor(y)).backward()
    # The wrong subgradient would be off by O(1); the rest is summation order.
    assert_same_grads(model, seq, rtol=1e-12, atol=1e-14)
    assert_close(model.input_grad, xt.grad, rtol=1e-12, atol=1e-14)


def _compare_loaded(arch, loss, state, X, y, dtype, tol):
    model, seq = build(arch, loss=loss, dtype=dtype)
    model.load_state_dict(state)
    seq.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    out = model.forward(X)
    value = model.backward(y)
    xt = torch.tensor(X, requires_grad=True)
    tout = seq(xt)
    tl = torch_loss(tout, y, loss)
    tl.backward()
    assert np.isfinite(value) and math.isclose(value, tl.item(), rel_tol=tol["rtol"])
    assert_close(out, tout, **tol)
    assert_same_grads(model, seq, **tol)
    assert_close(model.input_grad, xt.grad, **tol)
    return value


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_clamps_saturated_probabilities_as_torch(dtype):
    """Logits of +-120 make the sigmoid exactly 1 (and 0 in float32): log(1 - p) is clamped at
    -100 and p (1 - p) at 1e-12, as in torch; a third row stays in the sigmoid's linear range."""
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == "float32" else dict(rtol=RTOL, atol=ATOL)
    X = np.array([[1.0, 1.0], [-1.0, -1.0], [0.01, 0.005]], dtype=dtype)
    y = np.array([[0.0], [1.0], [1.0]])
    state = {"0.weight": np.array([[60.0, 60.0]]), "0.bias": np.zeros(1)}
    value = _compare_loaded([("dense", 2, 1, True), "sigmoid"], "bce", state, X, y, dtype, tol)
    assert value > 200 / 3 - 1  # two rows at the -100 clamp


@pytest.mark.parametrize("loss_case", ["bce_with_logits", "ce_index"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_losses_on_huge_logits_stay_finite_and_match_torch(loss_case, dtype):
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == "float32" else dict(rtol=RTOL, atol=1e-9)
    X = np.array([[1.0, 1.0], [-1.0, -1.0], [0.1, 0.2]], dtype=dtype)
    W = np.array([[500.0, -500.0], [-500.0, 400.0], [300.0, 500.0]])
    state = {"0.weight": W, "0.bias": np.array([0.0, 100.0, -100.0])}
    y = np.eye(3)[[0, 2, 1]] if loss_case == "bce_with_logits" else np.array([0, 1, 2])
    loss = "cross_entropy" if loss_case == "ce_index" else loss_case
    _compare_loaded([("dense", 2, 3, True)], loss, state, X, y, dtype, tol)


def test_gradients_accumulate_until_zero_grad(rng):
    model, seq = build([("dense", 3, 4, True), "tanh", ("dense", 4, 2, True)])
    X1, X2 = rng.standard_normal((5, 3)), rng.standard_normal((3, 3))
    y1, y2 = rng.standard_normal((5, 2)), rng.standard_normal((3, 2))
    for X, y in ((X1, y1), (X2, y2)):
        model.forward(X)
        model.backward(y)
        F.mse_loss(seq(torch.tensor(X)), torch.tensor(y)).backward()
    assert_same_grads(model, seq)
    model.zero_grad()
    for g in model.grads.values():
        assert not g.any()


def test_sequence_input_applies_dense_per_time_step(rng):
    """Dense on (B, T, F) acts on every step, as torch.nn.Linear on 3-D input."""
    model, seq = build([("dense", 3, 4, True), "relu", ("dense", 4, 2, True)])
    X, y = rng.standard_normal((5, 6, 3)), rng.standard_normal((5, 6, 2))
    out = model.forward(X)
    assert out.shape == (5, 6, 2)
    model.backward(y)
    xt = torch.tensor(X, requires_grad=True)
    tout = seq(xt)
    F.mse_loss(tout, torch.tensor(y)).backward()
    assert_close(out, tout)
    assert_same_grads(model, seq)
    assert model.input_grad.shape == X.shape
    assert_close(model.input_grad, xt.grad)


def test_weights_load_into_torch_and_predict_the_same(rng):
    """The other direction: chainrule's own initial weights, loaded into torch."""
    model = cr.Model([cr.Dense(3, 5), cr.LeakyReLU(0.1), cr.Dense(5, 4)], loss="cross_entropy",
                     dtype="float64", seed=3)
    seq = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.LeakyReLU(0.1),
                              torch.nn.Linear(5, 4)).double()
    seq.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    X = rng.standard_normal((8, 3))
    with torch.no_grad():
        logits = seq(torch.tensor(X))
    assert_close(model.predict(X), logits)
    assert_close(model.predict_proba(X), torch.softmax(logits, -1))
    np.testing.assert_array_equal(model.predict_classes(X), logits.argmax(-1).numpy())


# ---------------------------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------------------------

SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, dampening=0.3),
    dict(lr=0.1, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.05),
    dict(lr=0.1, momentum=0.5, weight_decay=0.05),
    dict(lr=0.1, momentum=0.9, maximize=True),
]
ADAM_CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, maximize=True),
    dict(lr=0.05, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.01, amsgrad=True),
]
OPTIMIZERS = ([("sgd", c) for c in SGD_CONFIGS] + [("adam", c) for c in ADAM_CONFIGS])
TORCH_STATE_NAMES = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def make_optimizers(kind, cfg, seq):
    if kind == "sgd":
        return cr.SGD(**cfg), torch.optim.SGD(seq.parameters(), foreach=False, **cfg)
    return cr.Adam(**cfg), torch.optim.Adam(seq.parameters(), foreach=False, **cfg)


@pytest.mark.parametrize("steps", [1, 10])
@pytest.mark.parametrize("kind,cfg", OPTIMIZERS, ids=[f"{k}-{c}" for k, c in OPTIMIZERS])
def test_optimizer_steps_match_torch(kind, cfg, steps, rng):
    arch = [("dense", 3, 6, True), "tanh", ("dense", 6, 3, False)]
    model, seq = build(arch, loss="cross_entropy")
    opt, topt = make_optimizers(kind, cfg, seq)
    model.optimizer = opt
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 3, 40)
    for s in range(steps):
        xb, yb = X[4 * s:4 * s + 4], y[4 * s:4 * s + 4]
        model.zero_grad()
        model.forward(xb)
        loss = model.backward(yb)
        model.step()
        topt.zero_grad()
        tl = F.cross_entropy(seq(torch.tensor(xb)), torch.tensor(yb))
        tl.backward()
        topt.step()
        assert math.isclose(loss, tl.item(), rel_tol=RTOL, abs_tol=ATOL)
    assert_same_params(model, seq)

    # The optimizer state carries PyTorch's names and values.
    state = model.optimizer_state()
    assert state["step"] == steps
    named = dict(seq.named_parameters())
    for name, bufs in state["params"].items():
        tstate = topt.state[named[name]]
        expected = {k for k in TORCH_STATE_NAMES if tstate.get(k) is not None}
        assert set(bufs) == expected, name
        for k in expected:
            assert_close(bufs[k], tstate[k], what=f"{name}.{k}")


def step_both(model, seq, topt, xb, yb):
    """One cross-entropy step of the chainrule model and of its torch twin."""
    model.zero_grad()
    model.forward(xb)
    model.backward(yb)
    model.step()
    topt.zero_grad()
    F.cross_entropy(seq(torch.tensor(xb)), torch.tensor(yb)).backward()
    topt.step()


@pytest.mark.parametrize("kind,cfg,change,back", [
    ("sgd", {"lr": 0.1, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.5}, {}),
    ("sgd", {"lr": 0.1}, {"lr": 0.05, "momentum": 0.9, "nesterov": True}, {}),  # buffer starts
    ("sgd", {"lr": 0.1, "momentum": 0.9}, {"momentum": 0.0}, {"momentum": 0.9}),  # kept meanwhile
    ("adam", {"lr": 0.01}, {"lr": 0.003, "betas": (0.8, 0.99), "weight_decay": 0.1}, {}),
])
def test_hyperparameters_changed_mid_training_match_a_torch_param_group_edit(kind, cfg, change,
                                                                            back, rng):
    arch = [("dense", 3, 6, True), "tanh", ("dense", 6, 3, False)]
    model, seq = build(arch, loss="cross_entropy")
    opt, topt = make_optimizers(kind, cfg, seq)
    model.optimizer = opt
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 3, 40)
    for s in range(10):
        for k, v in {4: change, 7: back}.get(s, {}).items():
            setattr(model.optimizer, k, v)
            topt.param_groups[0][k] = v
        step_both(model, seq, topt, X[4 * s:4 * s + 4], y[4 * s:4 * s + 4])
    assert_same_params(model, seq)


@pytest.mark.parametrize("kind,cfg", [("sgd", {"lr": 0.1, "momentum": 0.9}),
                                      ("adam", {"lr": 0.01, "amsgrad": True})])
def test_load_optimizer_state_replaces_the_whole_state_as_torch(kind, cfg, rng):
    # a state saved before the first step lacks the buffers: after loading it, they start
    # afresh in torch; chainrule kept its later buffers and drifted away
    arch = [("dense", 3, 4, True), "tanh", ("dense", 4, 3, False)]
    model, seq = build(arch, loss="cross_entropy")
    opt, topt = make_optimizers(kind, cfg, seq)
    model.optimizer = opt
    early, tearly = model.optimizer_state(), copy.deepcopy(topt.state_dict())
    X, y = rng.standard_normal((24, 3)), rng.integers(0, 3, 24)

    for s in range(6):
        if s == 3:
            model.load_optimizer_state(early)
            topt.load_state_dict(tearly)
        step_both(model, seq, topt, X[4 * s:4 * s + 4], y[4 * s:4 * s + 4])
    assert_same_params(model, seq)


def test_adam_with_sum_reduction_and_bce_matches_torch(rng):
    model, seq = build([("dense", 2, 5, True), "relu", ("dense", 5, 1, True), "sigmoid"],
                       loss=cr.BCELoss(reduction="sum"))
    model.optimizer = cr.Adam(lr=0.02)
    topt = torch.optim.Adam(seq.parameters(), lr=0.02, foreach=False)
    X, y = rng.standard_normal((12, 2)), rng.integers(0, 2, (12, 1)).astype(float)
    for _ in range(10):
        model.zero_grad()
        model.forward(X)
        model.backward(y)
        model.step()
        topt.zero_grad()
        F.binary_cross_entropy(seq(torch.tensor(X)), torch.tensor(y), reduction="sum").backward()
        topt.step()
    assert_same_params(model, seq)


# ---------------------------------------------------------------------------------------------
# gradient clipping
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("max_norm", [0.05, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, rng):
    model, seq = build([("dense", 3, 5, True), "tanh", ("dense", 5, 2, True)])
    X, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    model.forward(X)
    model.backward(y)
    F.mse_loss(seq(torch.tensor(X)), torch.tensor(y)).backward()
    before = model.grads
    norm = model.clip_grad_norm(max_norm, norm_type=norm_type)
    tnorm = torch.nn.utils.clip_grad_norm_(seq.parameters(), max_norm, norm_type=norm_type,
                                           foreach=False)
    assert isinstance(norm, float)
    assert math.isclose(norm, tnorm.item(), rel_tol=RTOL)
    assert_same_grads(model, seq)
    clipped = max_norm < norm
    changed = any(not np.array_equal(before[k], g) for k, g in model.grads.items())
    assert changed == clipped


def test_clip_grad_value_matches_torch(rng):
    model, seq = build([("dense", 3, 5, True), "tanh", ("dense", 5, 2, True)])
    X, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    model.forward(X)
    model.backward(y)
    F.mse_loss(seq(torch.tensor(X)), torch.tensor(y)).backward()
    g = np.concatenate([v.ravel() for v in model.grads.values()])
    clip = float(np.median(np.abs(g)))  # clamps about half the elements
    model.clip_grad_value(clip)
    torch.nn.utils.clip_grad_value_(seq.parameters(), clip)
    assert_same_grads(model, seq)
    assert max(np.abs(v).max() for v in model.grads.values()) == clip


# ---------------------------------------------------------------------------------------------
# float32
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss_case", ["mse", "ce_index", "bce"])
def test_float32_forward_and_gradients_match_torch(loss_case, rng):
    arch, name, y = case(loss_case, "tanh", rng)
    model, seq = build(arch, loss=name, dtype="float32")
    X = rng.standard_normal((7, 4)).astype(np.float32)
    out = model.forward(X)
    assert out.dtype == np.float32
    loss = model.backward(y)
    xt = torch.tensor(X, requires_grad=True)
    tout = seq(xt)
    tl = torch_loss(tout, y, name)
    tl.backward()
    assert_close(out, tout, rtol=1e-5, atol=1e-6)
    assert math.isclose(loss, tl.item(), rel_tol=1e-5)
    assert_same_grads(model, seq, rtol=1e-4, atol=1e-6)
    assert_close(model.input_grad, xt.grad, rtol=1e-4, atol=1e-6)


def test_float32_adam_training_tracks_torch(rng):
    model, seq = build([("dense", 3, 8, True), "relu", ("dense", 8, 1, True)], dtype="float32")
    model.optimizer = cr.Adam(lr=0.01)
    topt = torch.optim.Adam(seq.parameters(), lr=0.01, foreach=False)
    X = rng.standard_normal((32, 3)).astype(np.float32)
    y = (X[:, :1] ** 2).astype(np.float32)
    model.fit(X, y, epochs=5, batch_size=8, shuffle=False)
    for _ in range(5):
        for b in range(0, 32, 8):
            topt.zero_grad()
            F.mse_loss(seq(torch.tensor(X[b:b + 8])), torch.tensor(y[b:b + 8])).backward()
            topt.step()
    assert_same_params(model, seq, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# fit against the same loop in torch
# ---------------------------------------------------------------------------------------------

FIT_CASES = [
    ("mse", "sgd", dict(lr=0.05, momentum=0.9), None, "mean"),
    ("mse", "sgd", dict(lr=0.01), None, "sum"),
    ("ce_index", "adam", dict(lr=0.01), None, "mean"),
    ("ce_prob", "sgd", dict(lr=0.1, nesterov=True, momentum=0.8), 0.5, "mean"),
    ("bce_with_logits", "adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01), 0.3, "sum"),
]


@pytest.mark.parametrize("loss_case,kind,cfg,clip,reduction", FIT_CASES)
def test_fit_without_shuffle_equals_torch_loop(loss_case, kind, cfg, clip, reduction, rng):
    arch, name, y = case(loss_case, "tanh", rng, n=24)
    X = rng.standard_normal((24, 4))
    model, seq = build(arch, loss=_loss(name, reduction))
    opt, topt = make_optimizers(kind, cfg, seq)
    model.optimizer = opt
    hist = model.fit(X, y, epochs=4, batch_size=6, shuffle=False, clip_grad_norm=clip)

    losses, norms = [], []
    for _ in range(4):
        ep_losses, ep_norms = [], []
        for b in range(0, 24, 6):
            topt.zero_grad()
            tl = torch_loss(seq(torch.tensor(X[b:b + 6])), y[b:b + 6], name, reduction)
            tl.backward()
            if clip is not None:
                ep_norms.append(torch.nn.utils.clip_grad_norm_(seq.parameters(), clip).item())
            topt.step()
            ep_losses.append(tl.item())
        losses.append(np.mean(ep_losses))
        norms.append(ep_norms)
    assert hist.epochs == 4
    np.testing.assert_allclose(hist.loss, losses, rtol=RTOL)
    assert_same_params(model, seq)
    if clip is not None:
        np.testing.assert_allclose(hist.grad_norm, [np.mean(n) for n in norms], rtol=RTOL)
        np.testing.assert_allclose(hist.grad_norm_max, [np.max(n) for n in norms], rtol=RTOL)
    else:
        assert "grad_norm" not in hist
