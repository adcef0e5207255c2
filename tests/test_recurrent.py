"""Recurrent layers without PyTorch: checkpointed BPTT is bitwise "all", its workspace grows like
√T, central differences agree with every gradient, and fit's recurrent options do what they say.

Gradient checks run in float64 on small sizes: L(θ) = Σ out ⊙ R for a fixed random R, so that
∂L/∂out = R and the analytic gradient is one backward(grad_output=R).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import chainrule as cr

CELLS = {
    "rnn_tanh": lambda I, H, **kw: cr.RNN(I, H, nonlinearity="tanh", **kw),
    "rnn_relu": lambda I, H, **kw: cr.RNN(I, H, nonlinearity="relu", **kw),
    "lstm": lambda I, H, **kw: cr.LSTM(I, H, **kw),
    "gru": lambda I, H, **kw: cr.GRU(I, H, **kw),
}


def make(kind: str, I: int = 3, H: int = 4, L: int = 1, *, head: "int | None" = None,
         seed: int = 0, dtype: str = "float64", optimizer=None, **kw) -> cr.Model:
    layers = [CELLS[kind](I, H, num_layers=L, **kw)]
    if head is not None:
        layers.append(cr.Dense(H, head))
    return cr.Model(layers, optimizer=optimizer or cr.SGD(lr=0.1), dtype=dtype, seed=seed)


def state_for(kind: str, rng, L: int, B: int, H: int):
    h0 = rng.normal(size=(L, B, H))
    return (h0, rng.normal(size=(L, B, H))) if kind == "lstm" else h0


def run_backward(model: cr.Model, X, R, state=None, memory=None) -> dict:
    """One forward/backward from zeroed gradients; everything BPTT produced, copied."""
    model.zero_grad()
    out = model.forward(X, initial_state=state, bptt_memory=memory)
    model.backward(grad_output=R(out) if callable(R) else R)
    d0 = model.initial_state_grad()
    return {"out": out, "grads": model.grads, "dx": model.input_grad,
            "dstate": d0 if isinstance(d0, tuple) else (d0,),
            "final": model.final_state(), "norms": model.timestep_grad_norms(),
            "workspace": model.bptt_workspace()}


# ---------------------------------------------------------------------------- checkpointed BPTT
@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_checkpointed_bptt_is_bitwise_all(kind, return_sequences):
    # T = 23 is no perfect square: the last segment is short (S = 5: 5+5+5+5+3).
    rng = np.random.default_rng(1)
    B, T, I, H, L = 3, 23, 3, 4, 2
    model = make(kind, I, H, L, head=2, return_sequences=return_sequences, seed=2)
    X = rng.normal(size=(B, T, I))
    R = rng.normal(size=(B, T, 2) if return_sequences else (B, 2))
    state = state_for(kind, rng, L, B, H)
    ref = run_backward(model, X, R, state, memory="all")
    assert ref["workspace"]["memory"] == "all"
    all_bytes = ref["workspace"]["peak_workspace_bytes"]
    # "sqrt", a budget too small for "all" (so "sqrt"), a budget that fits "all".
    for memory, mode in (("sqrt", "sqrt"), (all_bytes - 1, "sqrt"), (all_bytes, "all")):
        got = run_backward(model, X, R, state, memory=memory)
        assert got["workspace"]["memory"] == mode, memory
        assert np.array_equal(got["out"], ref["out"])
        assert np.array_equal(got["dx"], ref["dx"])
        assert np.array_equal(got["norms"], ref["norms"])
        for a, b in zip(got["dstate"], ref["dstate"]):
            assert np.array_equal(a, b)
        for name, g in ref["grads"].items():
            assert np.array_equal(got["grads"][name], g), (memory, name)
    sqrt_bytes = run_backward(make(kind, I, H, L, head=2, return_sequences=return_sequences),
                              X, R, state, memory="sqrt")["workspace"]["peak_workspace_bytes"]
    assert sqrt_bytes < all_bytes


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_checkpointed_fit_is_bitwise_all(kind):
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(8, 13, 2)), rng.normal(size=(8, 13, 1))
    models = [make(kind, 2, 5, 2, head=1, seed=4, optimizer=cr.Adam(lr=1e-2)) for _ in range(2)]
    hists = [m.fit(X, Y, epochs=2, batch_size=4, bptt_memory=mem, record_grad_norms=True)
             for m, mem in zip(models, ("all", "sqrt"))]
    assert hists[0].loss == hists[1].loss
    assert np.array_equal(hists[0].timestep_grad_norms[0][-1], hists[1].timestep_grad_norms[0][-1])
    for name, w in models[0].state_dict().items():
        assert np.array_equal(models[1].state_dict()[name], w), name


def _peak(kind: str, T: int, memory: str) -> int:
    model = make(kind, 2, 8)
    X = np.random.default_rng(0).normal(size=(1, T, 2))
    run_backward(model, X, np.ones_like, memory=memory)
    return model.bptt_workspace()["peak_workspace_bytes"]


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_sqrt_workspace_grows_like_sqrt_T(kind):
    # T x16: "all" holds every state (x ~16), "sqrt" a checkpoint per segment and one segment
    # (x ~4 = sqrt 16).
    r_all = _peak(kind, 4096, "all") / _peak(kind, 256, "all")
    r_sqrt = _peak(kind, 4096, "sqrt") / _peak(kind, 256, "sqrt")
    assert 14 <= r_all <= 16.5
    assert 3 <= r_sqrt <= 5
    assert _peak(kind, 4096, "sqrt") * 10 < _peak(kind, 4096, "all")


# ---------------------------------------------------------------------------- finite differences
def _numeric(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() in every element of a (perturbed in place)."""
    g = np.empty_like(a)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + eps
        fp = f()
        a.flat[i] = old - eps
        fm = f()
        a.flat[i] = old
        g.flat[i] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("kind", list(CELLS))
def test_gradients_match_central_differences(kind):
    rng = np.random.default_rng(5)
    B, T, I, H, L = 2, 4, 2, 3, 2
    model = make(kind, I, H, L, seed=6)
    X = rng.normal(size=(B, T, I))
    R = rng.normal(size=(B, T, H))
    lstm = kind == "lstm"
    h0, c0 = rng.normal(size=(L, B, H)), rng.normal(size=(L, B, H))
    params = model.state_dict()

    def loss() -> float:
        model.load_state_dict(params)
        out = model.forward(X, initial_state=(h0, c0) if lstm else h0)
        return float(np.sum(out * R))

    loss()
    model.zero_grad()
    model.backward(grad_output=R)
    grads, dx = model.grads, model.input_grad
    dstate = model.initial_state_grad()
    tol = dict(rtol=1e-6, atol=1e-8)
    for name in params:
        np.testing.assert_allclose(grads[name], _numeric(loss, params[name]), err_msg=name, **tol)
    np.testing.assert_allclose(dx, _numeric(loss, X), err_msg="X", **tol)
    if lstm:
        np.testing.assert_allclose(dstate[0], _numeric(loss, h0), err_msg="h0", **tol)
        np.testing.assert_allclose(dstate[1], _numeric(loss, c0), err_msg="c0", **tol)
    else:
        np.testing.assert_allclose(dstate, _numeric(loss, h0), err_msg="h0", **tol)


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_last_step_output_gradients_match_central_differences(kind):
    # return_sequences=False and a Dense head: only h_{T-1} reaches the loss.
    rng = np.random.default_rng(7)
    model = make(kind, 2, 3, 1, head=2, return_sequences=False, seed=8)
    X, R = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 2))
    params = model.state_dict()

    def loss() -> float:
        model.load_state_dict(params)
        return float(np.sum(model.forward(X) * R))

    loss()
    model.zero_grad()
    model.backward(grad_output=R)
    grads, dx = model.grads, model.input_grad
    assert dx.shape == X.shape
    for name in params:
        np.testing.assert_allclose(grads[name], _numeric(loss, params[name]), rtol=1e-6,
                                   atol=1e-8, err_msg=name)
    np.testing.assert_allclose(dx, _numeric(loss, X), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------- gradient norms
def test_timestep_grad_norms_shape_and_last_step_value():
    # Loss on the last step only: ‖∂L/∂h_{T-1}‖ of the top cell is ‖grad_output‖ exactly.
    rng = np.random.default_rng(9)
    model = make("gru", 2, 4, 3, return_sequences=False)
    X, R = rng.normal(size=(5, 7, 2)), rng.normal(size=(5, 4))
    model.forward(X)
    model.backward(grad_output=R)
    norms = model.timestep_grad_norms()
    assert norms.shape == (3, 7)
    assert norms[-1, -1] == pytest.approx(np.linalg.norm(R), rel=1e-14)
    assert np.all(norms > 0)


def test_record_grad_norms_fills_history_with_the_pre_step_profile():
    # One full batch per epoch: epoch 1's profile is that of the initial weights.
    rng = np.random.default_rng(10)
    X, Y = rng.normal(size=(6, 9, 2)), rng.normal(size=(6, 9, 1))
    model = make("lstm", 2, 4, 2, head=1, seed=11)
    probe = make("lstm", 2, 4, 2, head=1, seed=11)
    probe.forward(X)
    probe.backward(Y)
    expected = probe.timestep_grad_norms()
    hist = model.fit(X, Y, epochs=3, batch_size=None, record_grad_norms=True)
    assert list(hist.timestep_grad_norms) == [0]
    profiles = hist.timestep_grad_norms[0]
    assert len(profiles) == 3 and all(p.shape == (2, 9) for p in profiles)
    np.testing.assert_allclose(profiles[0], expected, rtol=1e-12)
    assert not np.array_equal(profiles[0], profiles[2])  # the weights moved in between
    assert make("lstm", 2, 4, 1, head=1).fit(X, Y).timestep_grad_norms == {}


def test_record_grad_norms_averages_batches_and_chunks():
    # Two batches of 3 with truncation k = 4 over T = 9: every step still gets its mean norm.
    rng = np.random.default_rng(12)
    X, Y = rng.normal(size=(6, 9, 2)), rng.normal(size=(6, 9, 1))
    model = make("gru", 2, 4, 1, head=1, seed=13)
    hist = model.fit(X, Y, epochs=1, batch_size=3, shuffle=False, bptt_steps=4,
                     record_grad_norms=True)
    p = hist.timestep_grad_norms[0][0]
    assert p.shape == (1, 9) and np.all(p > 0)


def _end_of_sequence_task(T: int = 60):
    rng = np.random.default_rng(14)
    X = rng.normal(size=(32, T, 1))
    return X, X[:, 0, :]  # recall the first value at the end: the loss sits at t = T - 1


def test_vanishing_gradient_warns_for_a_small_tanh_rnn():
    X, y = _end_of_sequence_task()
    model = cr.Model([cr.RNN(1, 16, return_sequences=False), cr.Dense(16, 1)],
                     optimizer=cr.SGD(lr=0.01), dtype="float64", seed=1)
    sd = model.state_dict()
    sd["0.weight_hh_l0"] *= 0.3  # contraction: ‖∂L/∂h_t‖ shrinks at every step back
    model.load_state_dict(sd)
    with pytest.warns(RuntimeWarning, match="vanishing gradient in layer 0"):
        hist = model.fit(X, y, epochs=1, batch_size=32, record_grad_norms=True)
    p = hist.timestep_grad_norms[0][0][0]
    assert p[0] / p[-1] < 1e-20


def test_no_warning_for_an_lstm_with_an_open_forget_gate():
    X, y = _end_of_sequence_task()
    H = 16
    model = cr.Model([cr.LSTM(1, H, return_sequences=False), cr.Dense(H, 1)],
                     optimizer=cr.SGD(lr=0.01), dtype="float64", seed=1)
    sd = model.state_dict()
    sd["0.bias_ih_l0"][H:2 * H] = 5.0  # forget gate σ(≈5) ≈ 0.99: the cell state carries ∂L/∂c
    model.load_state_dict(sd)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = model.fit(X, y, epochs=2, batch_size=32, record_grad_norms=True)
    p = hist.timestep_grad_norms[0][-1][0]
    assert 1e-2 < p[0] / p[-1] < 1e2


# ---------------------------------------------------------------------------- fit options
def test_clip_grad_norm_records_the_pre_clip_norm_and_clips():
    rng = np.random.default_rng(15)
    X, Y = rng.normal(size=(5, 6, 2)), 10 * rng.normal(size=(5, 6, 1))
    lr, max_norm = 0.1, 0.5
    model = make("lstm", 2, 4, 1, head=1, seed=16, optimizer=cr.SGD(lr=lr))
    probe = make("lstm", 2, 4, 1, head=1, seed=16)
    w0 = probe.state_dict()
    probe.forward(X)
    probe.backward(Y)
    g = probe.grads
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
    assert norm > max_norm  # so the clip acts
    hist = model.fit(X, Y, epochs=2, batch_size=None, clip_grad_norm=max_norm)
    assert len(hist.grad_norm) == 2 and len(hist.grad_norm_max) == 2
    assert hist.grad_norm[0] == pytest.approx(norm, rel=1e-12)
    assert hist.grad_norm_max[0] == hist.grad_norm[0]  # one step per epoch
    # The first step used the clipped gradient; the second epoch's norm is the new one.
    coef = max_norm / (norm + 1e-6)
    probe.load_state_dict({k: w0[k] - lr * coef * g[k] for k in w0})
    probe.zero_grad()
    probe.forward(X)
    probe.backward(Y)
    norm2 = np.sqrt(sum(float(np.sum(v * v)) for v in probe.grads.values()))
    assert hist.grad_norm[1] == pytest.approx(norm2, rel=1e-9)


def test_seed_reproduces_training_bit_for_bit():
    rng = np.random.default_rng(17)
    X, Y = rng.normal(size=(10, 7, 3)), rng.normal(size=(10, 7, 2))

    def train(seed):
        m = make("gru", 3, 5, 2, head=2, seed=seed, dtype="float32", optimizer=cr.Adam(lr=0.01))
        h = m.fit(X, Y, epochs=3, batch_size=4, shuffle=True)
        return m.state_dict(), h.loss

    (w1, l1), (w2, l2), (w3, _) = train(21), train(21), train(22)
    assert l1 == l2
    assert all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert not np.array_equal(w1["0.weight_hh_l0"], w3["0.weight_hh_l0"])


@pytest.mark.parametrize("kind", list(CELLS))
def test_save_load_predicts_bitwise(kind, tmp_path):
    rng = np.random.default_rng(18)
    X, Y = rng.normal(size=(6, 8, 3)), rng.normal(size=(6, 8, 2))
    model = make(kind, 3, 5, 2, head=2, seed=19, dtype="float32", optimizer=cr.Adam(lr=0.01))
    model.fit(X, Y, epochs=2, batch_size=3)
    path = tmp_path / "rnn.safetensors"
    model.save(path)
    loaded = cr.load(path)
    assert [repr(a) for a in loaded.layers] == [repr(a) for a in model.layers]
    assert np.array_equal(loaded.predict(X), model.predict(X))
    # Training goes on identically (optimizer state and generator came along).
    h1 = model.fit(X, Y, epochs=1, batch_size=3)
    h2 = loaded.fit(X, Y, epochs=1, batch_size=3)
    assert h1.loss == h2.loss


def test_final_state_continues_a_split_sequence():
    # Running [0, T) equals running [0, k) then [k, T) from its final state.
    rng = np.random.default_rng(20)
    model = make("lstm", 2, 4, 2, seed=21)
    X = rng.normal(size=(3, 10, 2))
    full = model.forward(X)
    first = model.forward(X[:, :6])
    second = model.forward(X[:, 6:], initial_state=model.final_state())
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), full, rtol=1e-14,
                               atol=1e-15)


# ---------------------------------------------------------------------------- bad input
@pytest.fixture
def lstm_model():
    return make("lstm", 3, 4, 2, head=1)


def test_2d_input_to_a_recurrent_model(lstm_model):
    with pytest.raises(ValueError, match=r"Expected 3D array .*got 2D array.*X\[None\]"):
        lstm_model.forward(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="Expected 3D array"):
        lstm_model.fit(np.zeros((5, 3)), np.zeros((5, 1)))


def test_wrong_feature_count(lstm_model):
    with pytest.raises(ValueError, match="X has 2 features, but Model is expecting 3"):
        lstm_model.predict(np.zeros((2, 4, 2)))


def test_sequences_of_length_zero(lstm_model):
    with pytest.raises(ValueError, match="length 0"):
        lstm_model.forward(np.zeros((2, 0, 3)))
    with pytest.raises(ValueError, match="length 0"):
        lstm_model.fit(np.zeros((2, 0, 3)), np.zeros((2, 0, 1)))


def test_initial_state_of_the_wrong_shape(lstm_model):
    X = np.zeros((2, 4, 3))
    good = np.zeros((2, 2, 4))
    with pytest.raises(ValueError, match=r"h0 has shape \(2, 3, 4\).*\(2, 2, 4\)"):
        lstm_model.forward(X, initial_state=(np.zeros((2, 3, 4)), good))
    with pytest.raises(ValueError, match=r"c0 has shape \(1, 2, 4\)"):
        lstm_model.forward(X, initial_state=(good, np.zeros((1, 2, 4))))
    with pytest.raises(ValueError, match=r"pair \(h0, c0\)"):
        lstm_model.forward(X, initial_state=good)
    rnn = make("rnn_tanh", 3, 4, 1)
    with pytest.raises(ValueError, match=r"h0 has shape \(1, 2, 5\)"):
        rnn.forward(X, initial_state=np.zeros((1, 2, 5)))


def test_bptt_steps_needs_sequence_outputs():
    model = make("gru", 3, 4, 1, head=1, return_sequences=False)
    with pytest.raises(ValueError, match="bptt_steps.*sequence outputs"):
        model.fit(np.zeros((4, 6, 3)), np.zeros((4, 1)), bptt_steps=2)


def test_bptt_options_on_a_dense_model():
    model = cr.Model([cr.Dense(3, 2)], seed=0)
    for kw in ({"bptt_steps": 2}, {"stateful": True}, {"record_grad_norms": True}):
        with pytest.raises(ValueError, match="recurrent layer"):
            model.fit(np.zeros((4, 3)), np.zeros((4, 2)), **kw)


@pytest.mark.parametrize("bad", ["half", "ALL", 0, -5, True, 1.5, [1]])
def test_bad_bptt_memory(bad, lstm_model):
    X, Y = np.zeros((2, 4, 3)), np.zeros((2, 4, 1))
    with pytest.raises(ValueError, match="bptt_memory must be 'all', 'sqrt' or a"):
        lstm_model.forward(X, bptt_memory=bad)
    with pytest.raises(ValueError, match="bptt_memory must be"):
        lstm_model.fit(X, Y, bptt_memory=bad)
    with pytest.raises(ValueError, match="bptt_memory must be"):
        lstm_model.bptt_memory = bad
    assert lstm_model.bptt_memory == "all"


def test_bad_bptt_steps(lstm_model):
    with pytest.raises(ValueError, match="bptt_steps must be a positive int"):
        lstm_model.fit(np.zeros((2, 4, 3)), np.zeros((2, 4, 1)), bptt_steps=0)


def test_bptt_steps_and_budgets_beyond_64_bits(lstm_model):
    X, Y = np.zeros((2, 4, 3)), np.zeros((2, 4, 1))
    before = lstm_model.state_dict()
    h_full = lstm_model.fit(X, Y, epochs=1, shuffle=False)  # longer chunks than T: full BPTT
    lstm_model.load_state_dict(before)
    h_huge = lstm_model.fit(X, Y, epochs=1, shuffle=False, bptt_steps=2**64)
    assert h_full.loss == h_huge.loss
    lstm_model.forward(X, bptt_memory=2**64)  # a budget beyond any memory: always "all"
    assert lstm_model.bptt_workspace()["memory"] == "all"
    lstm_model.bptt_memory = 10**30
    lstm_model.fit(X, Y, epochs=1)


def test_stateful_needs_equal_batches(lstm_model):
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((5, 4, 3)), rng.standard_normal((5, 4, 1))
    before = lstm_model.state_dict()
    with pytest.raises(ValueError, match="stateful=True.*batch_size=2.*last batch of 1"):
        lstm_model.fit(X, Y, batch_size=2, shuffle=False, stateful=True)
    with pytest.raises(ValueError, match="stateful=True.*4 training samples.*last batch of 1"):
        lstm_model.fit(X, Y, batch_size=3, shuffle=False, stateful=True, validation_split=0.2)
    assert all((lstm_model.state_dict()[k] == before[k]).all() for k in before)
    lstm_model.fit(X[:4], Y[:4], batch_size=2, shuffle=False, stateful=True)
    # one batch of everything left after the validation split: nothing to misalign
    lstm_model.fit(X, Y, batch_size=None, stateful=True, validation_split=0.2)
    lstm_model.fit(X, Y, batch_size=5, stateful=True, validation_split=0.2)


def test_stateful_with_several_batches_needs_shuffle_off(lstm_model):
    # shuffled rows would carry each state into an unrelated sequence: refused, not trained
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((4, 4, 3)), rng.standard_normal((4, 4, 1))
    before = lstm_model.state_dict()
    with pytest.raises(ValueError, match="stateful=True.*4 training samples in batches of 2"
                                         ".*shuffle=False"):
        lstm_model.fit(X, Y, batch_size=2, stateful=True)
    assert all((lstm_model.state_dict()[k] == before[k]).all() for k in before)
    lstm_model.fit(X, Y, batch_size=4, stateful=True)  # one batch an epoch: nothing carried


@pytest.mark.parametrize("kw", [{"stateful": "no"}, {"stateful": 1}, {"shuffle": None},
                                {"shuffle": "False"}, {"record_grad_norms": 0}])
def test_fit_flags_must_be_bools(lstm_model, kw):
    X, Y = np.zeros((4, 4, 3)), np.zeros((4, 4, 1))
    name = next(iter(kw))
    with pytest.raises(TypeError, match=f"{name} must be a bool .*got"):
        lstm_model.fit(X, Y, **kw)
    lstm_model.fit(X, Y, **{name: np.bool_(False)})  # NumPy's bools are bools


def test_backward_results_belong_to_the_last_forward(lstm_model):
    # the norms and initial-state gradients of a backward describe its forward's graph; after a
    # new forward they are gone (not reshaped to the new one's T and batch), until its backward
    rng = np.random.default_rng(1)
    lstm_model.forward(rng.standard_normal((4, 5, 3)))
    lstm_model.backward(np.ones((4, 5, 1)))
    assert lstm_model.timestep_grad_norms().shape == (2, 5)
    assert lstm_model.initial_state_grad()[0].shape == (2, 4, 4)
    for X in (rng.standard_normal((4, 8, 3)), rng.standard_normal((2, 5, 3)),
              rng.standard_normal((4, 5, 3))):  # another T, another batch, the same shape
        lstm_model.forward(X)
        with pytest.raises(RuntimeError, match="timestep_grad_norms needs a backward"):
            lstm_model.timestep_grad_norms()
        with pytest.raises(RuntimeError, match="initial_state_grad needs a backward"):
            lstm_model.initial_state_grad()
        lstm_model.backward(np.ones(lstm_model.predict(X).shape))
        assert lstm_model.timestep_grad_norms().shape == (2, X.shape[1])
        assert lstm_model.initial_state_grad()[1].shape == (2, X.shape[0], 4)


@pytest.mark.parametrize("key", ["0", 0.0, 1.5, True])
def test_recurrent_layer_keys_must_be_ints(lstm_model, key):
    X = np.zeros((2, 3, 3))
    with pytest.raises(TypeError, match="layer must be an int index"):
        lstm_model.forward(X, initial_state={key: (np.zeros((2, 2, 4)), np.zeros((2, 2, 4)))})
    lstm_model.forward(X)
    with pytest.raises(TypeError, match="layer must be an int index"):
        lstm_model.final_state(key)


def test_recurrent_layer_index_from_the_end(lstm_model):
    X = np.zeros((2, 3, 3))
    lstm_model.forward(X)
    last = len(lstm_model.layers) - 1
    assert np.array_equal(lstm_model.final_state(-len(lstm_model.layers))[0],
                          lstm_model.final_state(0)[0])
    assert np.array_equal(lstm_model.final_state(np.int64(0))[0], lstm_model.final_state()[0])
    with pytest.raises(ValueError, match=f"layer {last} is not recurrent"):
        lstm_model.final_state(-1)


def test_torch_tensors_that_require_grad_are_read_as_values(lstm_model):
    torch = pytest.importorskip("torch")
    X = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    out = lstm_model.forward(X, initial_state=(h0, c0))
    want = lstm_model.forward(X.detach().numpy(),
                              initial_state=(h0.detach().numpy(), c0.detach().numpy()))
    np.testing.assert_array_equal(out, want)
