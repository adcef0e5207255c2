"""chainrule <-> PyTorch (from_torch, Model.to_torch), and arrays that outlive the model.

Each network is described once as a spec and built independently on both sides; a conversion
must copy every parameter bit for bit and give the same outputs (float64 to 1e-12: the libraries
sum in different orders) and gradients. A round trip through the other library changes no bit.
The ownership tests and the no-torch tests run without torch.
"""
from __future__ import annotations

import gc
import pickle
import subprocess
import sys
import warnings
from collections import OrderedDict
from typing import Any, Dict, List

import numpy as np
import pytest

import chainrule as cr

try:
    import torch
    nn = torch.nn
except ImportError:
    torch = None  # type: ignore[assignment]
    nn = None  # type: ignore[assignment]

needs_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch")
TOL: Dict[str, Dict[str, Any]] = {"float64": dict(rtol=1e-12, atol=1e-12),
                                  "float32": dict(rtol=1e-5, atol=1e-5)}

# Specs: ("dense", in, out, bias), ("act", name, arg), or
# ("rec", kind, in, hidden, num_layers, bias, return_sequences, nonlinearity).
CASES = {
    "dense_activations": [
        ("dense", 3, 5, True), ("act", "sigmoid", None), ("dense", 5, 4, True),
        ("act", "tanh", None), ("dense", 4, 4, False), ("act", "relu", None),
        ("dense", 4, 6, True), ("act", "leaky_relu", 0.2), ("act", "identity", None),
        ("dense", 6, 3, True), ("act", "softmax", None)],
    "dense_log_softmax": [("dense", 3, 4, True), ("act", "log_softmax", None)],
    "rnn_tanh_seq": [("rec", "rnn", 3, 5, 1, True, True, "tanh"), ("dense", 5, 2, True)],
    "rnn_relu_last": [("rec", "rnn", 3, 5, 1, True, False, "relu"), ("dense", 5, 2, True)],
    "rnn_tanh_2_last": [("rec", "rnn", 3, 5, 2, True, False, "tanh"), ("dense", 5, 2, True)],
    "rnn_relu_2_seq": [("rec", "rnn", 3, 4, 2, True, True, "relu"), ("dense", 4, 2, True)],
    "lstm_1_seq": [("rec", "lstm", 3, 5, 1, True, True, None), ("dense", 5, 2, True)],
    "lstm_1_last": [("rec", "lstm", 3, 5, 1, True, False, None), ("dense", 5, 2, True)],
    "lstm_2_last": [("rec", "lstm", 3, 4, 2, True, False, None), ("dense", 4, 2, True)],
    "lstm_2_seq_nobias": [("rec", "lstm", 3, 4, 2, False, True, None), ("dense", 4, 2, False)],
    "gru_1_last": [("rec", "gru", 3, 5, 1, True, False, None), ("dense", 5, 2, True)],
    "gru_2_seq": [("rec", "gru", 3, 4, 2, True, True, None), ("dense", 4, 2, True)],
    "dense_into_gru": [("dense", 3, 4, True), ("act", "tanh", None),
                       ("rec", "gru", 4, 5, 2, True, False, None), ("dense", 5, 1, True)],
    "lstm_into_rnn": [("rec", "lstm", 3, 4, 1, True, True, None),
                      ("rec", "rnn", 4, 5, 1, True, False, "tanh"), ("dense", 5, 2, True)],
}
DTYPES = ["float64", "float32"]


def is_recurrent(spec):
    return any(s[0] == "rec" for s in spec)


def flags_of(spec):
    return {i: s[6] for i, s in enumerate(spec) if s[0] == "rec"}


def cr_layers(spec):
    acts = {"sigmoid": cr.Sigmoid, "tanh": cr.Tanh, "relu": cr.ReLU, "identity": cr.Identity,
            "softmax": cr.Softmax, "log_softmax": cr.LogSoftmax}
    out: List[cr.Layer] = []
    for s in spec:
        if s[0] == "dense":
            out.append(cr.Dense(s[1], s[2], bias=s[3]))
        elif s[0] == "act":
            out.append(cr.LeakyReLU(s[2]) if s[1] == "leaky_relu" else acts[s[1]]())
        else:
            _, kind, i, h, n, bias, ret, nonlin = s
            kw = dict(num_layers=n, bias=bias, return_sequences=ret)
            out.append(cr.RNN(i, h, nonlinearity=nonlin, **kw) if kind == "rnn" else
                       (cr.LSTM if kind == "lstm" else cr.GRU)(i, h, **kw))
    return out


def torch_modules(spec, dtype, seed=0):
    """The spec as a list of torch modules with weights U(-1, 1) (beyond the linear range)."""
    acts: Dict[str, Any] = {
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "identity": nn.Identity,
        "softmax": lambda: nn.Softmax(dim=-1), "log_softmax": lambda: nn.LogSoftmax(dim=-1)}
    torch.manual_seed(seed)
    out: List[Any] = []
    for s in spec:
        if s[0] == "dense":
            out.append(nn.Linear(s[1], s[2], bias=s[3]))
        elif s[0] == "act":
            out.append(nn.LeakyReLU(s[2]) if s[1] == "leaky_relu" else acts[s[1]]())
        else:
            _, kind, i, h, n, bias, _, nonlin = s
            kw = dict(num_layers=n, bias=bias, batch_first=True)
            out.append(nn.RNN(i, h, nonlinearity=nonlin, **kw) if kind == "rnn" else
                       (nn.LSTM if kind == "lstm" else nn.GRU)(i, h, **kw))
    tdtype = getattr(torch, dtype)
    for m in out:
        m.to(tdtype)
        for p in m.parameters():
            nn.init.uniform_(p, -1.0, 1.0)
    return out


def torch_reference(modules, flags, x):
    """Runs torch modules in order as chainrule would, written apart from chainrule.interop."""
    for i, m in enumerate(modules):
        if isinstance(m, nn.RNNBase):
            x = m(x)[0]
            if not flags.get(i, True):
                x = x[:, -1]
        else:
            x = m(x)
    return x


def inputs(spec, dtype, rng, n=5, T=7):
    features = spec[0][2] if spec[0][0] == "rec" else spec[0][1]
    shape = (n, T, features) if is_recurrent(spec) else (n, features)
    return rng.standard_normal(shape).astype(dtype)


def chainrule_model(spec, dtype, rng, **kw):
    """A Model of the spec with weights U(-1, 1)."""
    model = cr.Model(cr_layers(spec), dtype=dtype, seed=3, **kw)
    model.load_state_dict({k: rng.uniform(-1, 1, v.shape)
                           for k, v in model.state_dict().items()})
    return model


def assert_same_bits(model, torch_state):
    sd = model.state_dict()
    assert list(sd) == list(torch_state)
    for k, v in torch_state.items():
        t = v.detach().numpy()
        assert sd[k].dtype == t.dtype, k
        assert sd[k].tobytes() == t.tobytes(), f"{k} differs"


# ---------------------------------------------------------------------------------------------
# conversions and round trips
# ---------------------------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_from_torch_copies_weights_and_matches_outputs(name, dtype, rng):
    spec = CASES[name]
    mods = torch_modules(spec, dtype)
    flags = flags_of(spec)
    model = cr.from_torch(nn.Sequential(*mods), return_sequences=flags if flags else None)
    assert model.dtype == np.dtype(dtype)
    assert list(model.layers) == cr_layers(spec)
    assert_same_bits(model, nn.Sequential(*mods).state_dict())
    x = inputs(spec, dtype, rng)
    with torch.no_grad():
        want = torch_reference(mods, flags, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), want, **TOL[dtype])


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_to_torch_copies_weights_and_matches_outputs(name, dtype, rng):
    spec = CASES[name]
    model = chainrule_model(spec, dtype, rng)
    net = model.to_torch()
    if is_recurrent(spec):
        assert isinstance(net, cr.interop.RecurrentSequential)
        assert net.return_sequences == flags_of(spec)
    else:
        assert type(net) is nn.Sequential
    assert all(p.dtype == getattr(torch, dtype) for p in net.parameters())
    assert_same_bits(model, net.state_dict())
    x = inputs(spec, dtype, rng)
    with torch.no_grad():
        got = net(torch.from_numpy(x))
        # the wrapper runs the modules exactly as the independent reference does
        assert torch.equal(got, torch_reference(list(net), flags_of(spec), torch.from_numpy(x)))
    np.testing.assert_allclose(got.numpy(), model.predict(x), **TOL[dtype])


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_chainrule_torch_chainrule_round_trip_is_exact(name, dtype, rng):
    spec = CASES[name]
    model = chainrule_model(spec, dtype, rng)
    back = cr.from_torch(model.to_torch())
    assert back.dtype == model.dtype
    assert back.get_config()["layers"] == model.get_config()["layers"]
    for k, v in model.state_dict().items():
        assert back.state_dict()[k].tobytes() == v.tobytes(), k
    x = inputs(spec, dtype, rng)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_torch_chainrule_torch_round_trip_is_exact(name, dtype, rng):
    spec = CASES[name]
    mods = torch_modules(spec, dtype)
    flags = flags_of(spec)
    net = cr.from_torch(mods, return_sequences=flags if flags else None).to_torch()
    before = nn.Sequential(*mods).state_dict()
    after = net.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert after[k].dtype == before[k].dtype and torch.equal(after[k], before[k]), k
    x = torch.from_numpy(inputs(spec, dtype, rng))
    with torch.no_grad():
        assert torch.equal(net(x), torch_reference(mods, flags, x))


@needs_torch
@pytest.mark.parametrize("name", list(CASES))
def test_gradients_match_after_to_torch(name, rng):
    spec = CASES[name]
    model = chainrule_model(spec, "float64", rng)
    net = model.to_torch()
    x = inputs(spec, "float64", rng)
    out = model.forward(x)
    y = rng.standard_normal(out.shape)
    loss = model.backward(y)
    tloss = nn.functional.mse_loss(net(torch.from_numpy(x)), torch.from_numpy(y))
    tloss.backward()
    np.testing.assert_allclose(loss, tloss.item(), rtol=1e-12)
    named = dict(net.named_parameters())
    for k, g in model.grads.items():
        np.testing.assert_allclose(g, named[k].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


@needs_torch
def test_a_recurrent_sequential_pickles_with_its_flags(rng):
    spec = CASES["lstm_into_rnn"]
    net = chainrule_model(spec, "float64", rng).to_torch()
    again = pickle.loads(pickle.dumps(net))
    assert type(again) is type(net) and again.return_sequences == {0: True, 1: False}
    x = torch.from_numpy(inputs(spec, "float64", rng))
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    model = cr.from_torch(again)
    assert [layer.return_sequences for layer in model.layers[:2]] == [True, False]


# ---------------------------------------------------------------------------------------------
# what from_torch accepts
# ---------------------------------------------------------------------------------------------

@needs_torch
def test_containers_lists_and_single_modules_are_accepted():
    mods = torch_modules(CASES["dense_log_softmax"], "float64")
    named = nn.Sequential(OrderedDict([("fc", mods[0]), ("out", mods[1])]))
    for module in (mods, tuple(mods), nn.ModuleList(mods), named):
        model = cr.from_torch(module)
        assert model.parameter_names() == ["0.weight", "0.bias"]  # position, not the given name
        assert model.state_dict()["0.weight"].tobytes() == mods[0].weight.detach().numpy().tobytes()
    single = cr.from_torch(mods[0])
    assert list(single.layers) == [cr.Dense(3, 4)]


@needs_torch
def test_dropout_zero_and_identity_keep_the_indices():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.0), nn.ReLU(), nn.Identity(),
                        nn.Linear(4, 2)).double()
    model = cr.from_torch(seq)
    assert list(model.layers) == [cr.Dense(3, 4), cr.Identity(), cr.ReLU(), cr.Identity(),
                                  cr.Dense(4, 2)]
    assert model.parameter_names() == ["0.weight", "0.bias", "4.weight", "4.bias"]
    x = np.random.default_rng(0).standard_normal((6, 3))
    np.testing.assert_allclose(model.predict(x), seq(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)


@needs_torch
def test_return_sequences_is_read_from_a_bool_or_a_dict_and_defaults_to_true():
    mods = torch_modules(CASES["lstm_into_rnn"], "float64")
    assert [m.return_sequences for m in cr.from_torch(mods).layers[:2]] == [True, True]
    gru = torch_modules(CASES["gru_2_seq"], "float64")
    assert cr.from_torch(gru, return_sequences=False).layers[0].return_sequences is False
    assert [m.return_sequences
            for m in cr.from_torch(mods, return_sequences={1: False}).layers[:2]] == [True, False]
    with pytest.raises(ValueError, match=r"module 2.*not a recurrent.*\[0, 1\]"):
        cr.from_torch(mods, return_sequences={2: False})
    with pytest.raises(ValueError, match=r"module 1.*not a recurrent"):
        cr.interop.RecurrentSequential(nn.LSTM(2, 2, batch_first=True), nn.Tanh(),
                                       return_sequences={1: False})
    with pytest.raises(TypeError, match=r"return_sequences\[1\] must be a bool .*got str 'no'"):
        cr.from_torch(mods, return_sequences={1: "no"})  # not read as True
    assert cr.from_torch(gru, return_sequences=np.False_).layers[0].return_sequences is False


@needs_torch
def test_dtype_comes_from_the_parameters_unless_given():
    torch.manual_seed(0)
    lin64 = nn.Linear(3, 2).double()
    assert cr.from_torch([lin64]).dtype == np.float64
    assert cr.from_torch([nn.Linear(3, 2)]).dtype == np.float32
    assert cr.from_torch([nn.Tanh()]).dtype == np.float32  # no parameters: chainrule's default
    m32 = cr.from_torch([lin64], dtype="float32")
    assert m32.dtype == np.float32
    assert m32.state_dict()["0.weight"].tobytes() == lin64.weight.detach().float().numpy().tobytes()
    with pytest.raises(ValueError, match=r"mix dtypes.*torch.float32.*torch.float64.*dtype="):
        cr.from_torch([nn.Linear(3, 2), nn.Linear(2, 2).double()])
    half = nn.Linear(3, 2).half()
    with pytest.raises(ValueError, match=r"torch.float16.*float32 or float64.*dtype="):
        cr.from_torch([half])
    m = cr.from_torch([half], dtype="float64")
    assert m.state_dict()["0.weight"].tobytes() == half.weight.detach().double().numpy().tobytes()


def _unsupported_cases():
    if torch is None:
        return []

    class MyLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    return [
        ("conv", lambda: nn.Conv2d(1, 1, 3), r"Conv2d has no chainrule counterpart"),
        ("dropout", lambda: nn.Dropout(0.5), r"Dropout\(p=0.5\)"),
        ("batchnorm", lambda: nn.BatchNorm1d(4), r"BatchNorm1d has no chainrule counterpart"),
        ("bidirectional", lambda: nn.GRU(4, 3, batch_first=True, bidirectional=True),
         r"bidirectional=True"),
        ("batch_first_false", lambda: nn.LSTM(4, 3), r"batch_first=False.*batch_first=True"),
        ("proj_size", lambda: nn.LSTM(4, 3, proj_size=2, batch_first=True), r"proj_size=2"),
        ("dropout_between", lambda: nn.RNN(4, 3, num_layers=2, dropout=0.3, batch_first=True),
         r"dropout=0.3 between stacked layers"),
        ("softmax_dim0", lambda: nn.Softmax(dim=0), r"Softmax over dim=0.*dim=-1"),
        ("softmax_dim1", lambda: nn.Softmax(dim=1), r"Softmax over dim=1.*dim=-1"),
        ("softmax_implicit", lambda: nn.Softmax(), r"dim=None \(implicit"),
        ("log_softmax_dim1", lambda: nn.LogSoftmax(dim=1), r"LogSoftmax over dim=1"),
        ("nested", lambda: nn.Sequential(nn.Tanh()), r"nested container"),
        ("overridden_forward", lambda: MyLinear(4, 4), r"MyLinear subclasses nn.Linear but "
                                                       r"overrides forward"),
        ("lazy", lambda: nn.LazyLinear(4), r"not initialized yet"),
    ]


@needs_torch
@pytest.mark.parametrize("make,match", [c[1:] for c in _unsupported_cases()],
                         ids=[c[0] for c in _unsupported_cases()])
def test_unsupported_modules_are_named_with_what_is_supported(make, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about some of these at construction
        bad = make()
    with pytest.raises(ValueError, match=match) as info:
        cr.from_torch(nn.Sequential(nn.Linear(4, 4), bad))
    msg = str(info.value)
    assert msg.startswith(f"module 1 ({type(bad).__name__}(")
    assert "chainrule converts Linear, Sigmoid" in msg and "batch_first=True" in msg


@needs_torch
def test_an_item_that_is_not_a_module_is_a_type_error():
    with pytest.raises(TypeError, match=r"item 1 must be a torch.nn.Module, got Dense"):
        cr.from_torch([nn.Linear(2, 2), cr.Dense(2, 2)])
    with pytest.raises(TypeError, match=r"nn.Sequential or a list.*got str"):
        cr.from_torch("Linear")
    with pytest.raises(ValueError, match="no layers"):
        cr.from_torch(nn.Sequential())


@needs_torch
def test_non_finite_parameters_are_refused():
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"'0.weight' contains NaN"):
        cr.from_torch([lin])


@needs_torch
def test_recurrent_sequential_refuses_what_it_cannot_run_batch_first():
    net = cr.interop.RecurrentSequential(nn.GRU(2, 3, batch_first=True))
    with pytest.raises(ValueError, match=r"module 0 \(GRU\).*3-D input.*\(7, 2\)"):
        net(torch.zeros(7, 2))
    net = cr.interop.RecurrentSequential(nn.GRU(2, 3))
    with pytest.raises(ValueError, match=r"batch_first=False"):
        net(torch.zeros(4, 7, 2))


@needs_torch
def test_recurrent_sequential_flags_travel_with_their_modules():
    # slicing rebuilt the container from its modules and reset every flag to True; insert and
    # delete left the flags on the old indices
    torch.manual_seed(0)
    net = cr.interop.RecurrentSequential(nn.LSTM(3, 4, batch_first=True), nn.Linear(4, 2),
                                         nn.Tanh(), return_sequences={0: False})
    x = torch.zeros(2, 5, 3)
    assert net[:2](x).shape == (2, 2) and net[:2].return_sequences == {0: False}
    assert cr.from_torch(net[:2]).layers[0].return_sequences is False
    net.insert(0, nn.Identity())
    assert net.return_sequences == {1: False} and net(x).shape == (2, 2)
    del net[0]
    assert net.return_sequences == {0: False}
    again = pickle.loads(pickle.dumps(net))
    assert again.return_sequences == {0: False} and again(x).shape == (2, 2)
    with pytest.raises(TypeError, match=r"return_sequences\[0\] must be a bool"):
        cr.interop.RecurrentSequential(nn.GRU(2, 3, batch_first=True),
                                       return_sequences={0: "no"})


@needs_torch
def test_what_a_torch_forward_would_change_is_refused():
    class Residual(nn.Sequential):
        def forward(self, x):
            return x + super().forward(x)
    with pytest.raises(ValueError, match="Residual subclasses nn.Sequential but overrides"):
        cr.from_torch(Residual(nn.Linear(3, 3)))
    hooked = nn.Linear(3, 2)
    hooked.register_forward_hook(lambda m, i, o: o * 2)
    with pytest.raises(ValueError, match=r"module 1 \(Linear\) has forward hooks"):
        cr.from_torch(nn.Sequential(nn.Linear(3, 3), hooked))
    outer = nn.Sequential(nn.Linear(3, 2))
    outer.register_forward_pre_hook(lambda m, i: None)
    with pytest.raises(ValueError, match=r"the container \(Sequential\) has forward hooks"):
        cr.from_torch(outer)
    with pytest.raises(ValueError, match="forward hooks"):  # the old spectral_norm: a pre-hook
        cr.from_torch([nn.utils.spectral_norm(nn.Linear(3, 2))])


@needs_torch
def test_meta_modules_are_refused_and_bfloat16_tensors_load():
    with torch.device("meta"):
        meta = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"module 0 .*on the meta device"):
        cr.from_torch([meta])
    model = cr.Model([cr.Dense(3, 2)], seed=0)
    w = torch.randn(2, 3).to(torch.bfloat16)
    model.load_state_dict({"0.weight": w, "0.bias": torch.zeros(2, dtype=torch.bfloat16)})
    np.testing.assert_array_equal(model.state_dict()["0.weight"], w.float().numpy())
    with pytest.raises(ValueError, match="'0.weight' is on the meta device"):
        model.load_state_dict({"0.weight": torch.empty(2, 3, device="meta"),
                               "0.bias": torch.zeros(2)})


@needs_torch
def test_a_saved_file_without_its_optimizer_keys_is_the_torch_state_dict(tmp_path):
    from safetensors.torch import load_file
    model = cr.Model([cr.Dense(3, 4), cr.Tanh(), cr.Dense(4, 1)], optimizer=cr.Adam(), seed=0)
    model.fit(np.ones((8, 3)), np.ones((8, 1)), epochs=1)  # Adam's moments exist now
    model.save(tmp_path / "m.safetensors")
    tensors = load_file(str(tmp_path / "m.safetensors"))
    assert any(k.startswith("optimizer.") for k in tensors)
    net = model.to_torch()
    net.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optimizer.")})
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(net(torch.from_numpy(x)).detach().numpy(), model.predict(x),
                               rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# to_torch edge cases, and life without torch
# ---------------------------------------------------------------------------------------------

@needs_torch
def test_to_torch_needs_weights_but_not_for_a_parameter_free_model():
    with pytest.raises(cr.NotFittedError, match="no weights yet"):
        cr.Model([cr.Dense(4)]).to_torch()
    net = cr.Model([cr.Tanh(), cr.LeakyReLU(0.3)]).to_torch()
    assert type(net) is nn.Sequential and isinstance(net[1], nn.LeakyReLU)
    assert net[1].negative_slope == 0.3
    lazy = cr.Model([cr.Dense(4), cr.ReLU(), cr.Dense(1)], dtype="float64", seed=0)
    lazy.fit(np.ones((3, 6)), np.ones((3, 1)), epochs=1)  # weights made from the data
    net = lazy.to_torch()
    assert net[0].in_features == 6 and net[2].in_features == 4


@pytest.mark.parametrize("call", ["to_torch", "from_torch"])
def test_without_torch_the_error_says_to_install_it(call, monkeypatch):
    model = cr.Model([cr.Dense(2, 1)], seed=0)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(ImportError, match=r"needs PyTorch.*pip install torch"):
        model.to_torch() if call == "to_torch" else cr.from_torch([object()])


def test_importing_chainrule_does_not_import_torch():
    code = "import sys, chainrule; print('torch' in sys.modules)"
    path = str(__import__("pathlib").Path(cr.__file__).parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": path})
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# arrays handed out stay valid however long the caller keeps them
# ---------------------------------------------------------------------------------------------

def _owner(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


OWNERSHIP = {
    "lstm_adam": ([cr.LSTM(3, 4, num_layers=2), cr.GRU(4, 3, return_sequences=False),
                   cr.Dense(3, 2)], lambda: cr.Adam(lr=0.05, amsgrad=True), (5, 6, 3)),
    "dense_momentum": ([cr.Dense(3, 8), cr.Tanh(), cr.Dense(8, 2)],
                       lambda: cr.SGD(lr=0.1, momentum=0.9), (5, 3)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OWNERSHIP))
def test_returned_arrays_are_owning_copies_that_outlive_the_model(name, dtype, rng):
    layers, opt, shape = OWNERSHIP[name]
    model = cr.Model(layers, optimizer=opt(), dtype=dtype, seed=0)
    X = rng.standard_normal(shape)
    y = rng.standard_normal(shape[:1] + (2,))
    out = model.forward(X)
    model.backward(y)
    model.step()
    handed = {"forward": out, "predict": model.predict(X), "input_grad": model.input_grad}
    handed.update({f"state_dict {k}": v for k, v in model.state_dict().items()})
    handed.update({f"grads {k}": v for k, v in model.grads.items()})
    for p, bufs in model.optimizer_state()["params"].items():
        handed.update({f"optimizer {p} {b}": v for b, v in bufs.items()})
    if name == "lstm_adam":
        h, c = model.final_state(0)
        dh, dc = model.initial_state_grad(0)
        handed.update({"h_n": h, "c_n": c, "dh0": dh, "dc0": dc,
                       "step norms": model.timestep_grad_norms(1)})
    assert any(k.startswith("optimizer") for k in handed)
    for k, a in handed.items():
        owner = _owner(a)  # NumPy's own memory, not a view into the C++ network
        assert owner.base is None and owner.flags.owndata, k
        assert a.flags.writeable, k
    saved = {k: a.copy() for k, a in handed.items()}

    weights = model.state_dict()
    model.fit(X, y, epochs=3, batch_size=2)  # rewrites weights, gradients and optimizer state
    assert any(not np.array_equal(weights[k], v) for k, v in model.state_dict().items())
    for k, a in handed.items():
        np.testing.assert_array_equal(a, saved[k], err_msg=f"{k} changed with training")

    sd = model.state_dict()
    for a in sd.values():
        a[...] = 0  # writing into a copy leaves the model alone
    assert all(np.any(v != 0) for v in model.state_dict().values())

    del model, sd, weights
    gc.collect()
    for seed in range(4):  # new networks of the same sizes reuse the freed memory
        other = cr.Model(OWNERSHIP[name][0], optimizer=opt(), dtype=dtype, seed=seed + 1)
        other.fit(X, y, epochs=2, batch_size=2)
        del other
        gc.collect()
    for k, a in handed.items():
        np.testing.assert_array_equal(a, saved[k], err_msg=f"{k} changed after the model died")
