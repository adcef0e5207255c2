"""PyTorch interop: a Model from an ``nn.Sequential`` and back, with the same weights bit for bit.

Module i of the Sequential is layer i of the Model, so parameter names and shapes agree
(``"0.weight"`` (out, in), ``"1.weight_ih_l0"`` (gates·H, I), ...), and a round trip copies every
parameter exactly. torch is imported only when a function here is called.

Conversions, torch <-> chainrule:

- ``nn.Linear`` <-> ``Dense(in, out, bias)``
- ``nn.Sigmoid``, ``nn.Tanh``, ``nn.ReLU``, ``nn.Identity`` <-> the layer of the same name
- ``nn.LeakyReLU(negative_slope)`` <-> ``LeakyReLU(negative_slope)``
- ``nn.Softmax(dim=-1)``, ``nn.LogSoftmax(dim=-1)`` <-> ``Softmax()``, ``LogSoftmax()``
- ``nn.Dropout(p=0)`` -> ``Identity()``
- ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` with batch_first=True, one direction <-> ``RNN`` /
  ``LSTM`` / ``GRU``

Recurrent modules return a tuple (output, state), so a plain ``nn.Sequential`` can hold them but
not run them. ``from_torch`` reads a recurrent module in a Sequential (or a list) as "pass on its
output sequence" (B, T, H), i.e. ``return_sequences=True``; ``return_sequences=False`` (or
``{index: False}``) passes on the last step (B, H) instead, as ``output[:, -1]`` does.
``Model.to_torch()`` gives a Model with recurrent layers back as a :class:`RecurrentSequential`,
an ``nn.Sequential`` that runs them batch-first and keeps these flags; ``from_torch`` reads them::

    seq = nn.Sequential(nn.LSTM(3, 16, batch_first=True), nn.Linear(16, 1))
    model = chainrule.from_torch(seq, return_sequences=False)  # Linear sees h_T: (B, 1) out
    net = model.to_torch()  # RecurrentSequential(return_sequences={0: False}), runnable in torch
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ._validation import check_bool
from .layers import (GRU, LSTM, RNN, Dense, Identity, Layer, LeakyReLU, LogSoftmax, ReLU, Sigmoid,
                     Softmax, Tanh, _Recurrent)
from .losses import Loss
from .model import Model
from .optim import Optimizer

if TYPE_CHECKING:
    import torch

# RecurrentSequential (a torch class, made on first access) is left out: `import *` must not
# need torch.
__all__ = ["from_torch", "to_torch"]

SUPPORTED = ("Linear, Sigmoid, Tanh, ReLU, LeakyReLU, Softmax(dim=-1), LogSoftmax(dim=-1), "
             "Identity, Dropout(p=0), and RNN/LSTM/GRU with batch_first=True and "
             "bidirectional=False (no proj_size; dropout only with num_layers=1)")
_ReturnSequences = Union[None, bool, Mapping[int, bool]]


def _import_torch(what: str) -> Any:
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{what} needs PyTorch, which could not be imported ({e}); install it "
                          "with `pip install torch`") from e
    return torch


# ---------------------------------------------------------------- RecurrentSequential
_recurrent_sequential: Optional[type] = None


_FLAG = "_chainrule_return_sequences"  # a recurrent module's flag in a RecurrentSequential


def _recurrent_sequential_class() -> type:
    """RecurrentSequential, defined on first use so that importing chainrule never imports torch."""
    global _recurrent_sequential
    if _recurrent_sequential is not None:
        return _recurrent_sequential
    nn = _import_torch("RecurrentSequential").nn

    class RecurrentSequential(nn.Sequential):  # type: ignore[name-defined,misc]  # nn: Any
        """An ``nn.Sequential`` that may hold batch-first ``nn.RNN``/``nn.LSTM``/``nn.GRU``.

        Each recurrent module runs on (batch, time, features) from a zero initial state and
        passes on its output sequence (batch, time, hidden), or only the last step
        (batch, hidden) where ``return_sequences[i]`` is False, as chainrule's recurrent layers
        with ``return_sequences`` do. Other modules run as in ``nn.Sequential``.

        Each recurrent module carries its own flag, so that slicing (``net[:2]``), ``insert``,
        ``append`` and deletion keep every module's flag with the module.

        Args:
            *modules: the modules in order (or one OrderedDict of them, as ``nn.Sequential``).
            return_sequences: ``{index: bool}`` for the recurrent modules; an index left out
                keeps the flag its module already carries (from another RecurrentSequential),
                else True.

        Raises:
            ValueError: return_sequences names a module that is not recurrent.
        """

        def __init__(self, *modules: Any,
                     return_sequences: Optional[Mapping[int, bool]] = None) -> None:
            super().__init__(*modules)
            rec = [i for i, m in enumerate(self) if isinstance(m, nn.RNNBase)]
            flags = dict(return_sequences or {})
            for i in flags:
                if i not in rec:
                    raise ValueError(f"return_sequences names module {i!r}, which is not a "
                                     f"recurrent module; the recurrent modules are {rec}")
            for i in rec:
                flag = (check_bool(f"return_sequences[{i}]", flags[i]) if i in flags
                        else getattr(self[i], _FLAG, True))
                object.__setattr__(self[i], _FLAG, flag)  # a plain attribute, not a submodule

        @property
        def return_sequences(self) -> Dict[int, bool]:
            """``{index: flag}`` of the recurrent modules, as they stand now."""
            return {i: getattr(m, _FLAG, True) for i, m in enumerate(self)
                    if isinstance(m, nn.RNNBase)}

        def forward(self, x: Any) -> Any:
            for i, m in enumerate(self):
                if not isinstance(m, nn.RNNBase):
                    x = m(x)
                    continue
                if not m.batch_first or x.dim() != 3:
                    raise ValueError(f"module {i} ({type(m).__name__}) runs batch-first on "
                                     f"(batch, time, features): it needs batch_first=True and a "
                                     f"3-D input, got batch_first={m.batch_first} and an input "
                                     f"of shape {tuple(x.shape)}")
                x = m(x)[0]
                if not getattr(m, _FLAG, True):
                    x = x[:, -1]
            return x

        def extra_repr(self) -> str:
            return f"return_sequences={self.return_sequences}"

    # Pickle (and torch.save of a whole module) finds the class as chainrule.interop's attribute,
    # which the module-level __getattr__ below provides.
    RecurrentSequential.__module__ = __name__
    RecurrentSequential.__qualname__ = "RecurrentSequential"
    _recurrent_sequential = RecurrentSequential
    return RecurrentSequential


def __getattr__(name: str) -> Any:
    if name == "RecurrentSequential":
        return _recurrent_sequential_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- torch -> chainrule
def _refuse_hooks(where: str, m: Any) -> None:
    """Forward hooks change what a module computes (the old nn.utils.spectral_norm computes the
    weight in one); only the module's own forward and parameters convert."""
    hooks = [k for k in ("_forward_hooks", "_forward_pre_hooks") if getattr(m, k, None)]
    if hooks:
        raise ValueError(f"{where} ({type(m).__name__}) has forward hooks ({', '.join(hooks)}), "
                         "which change its outputs and do not convert; remove them (spectral_norm:"
                         " use torch.nn.utils.parametrizations.spectral_norm, which converts)")


def _layer_from_module(i: int, m: Any, nn: Any, return_sequences: bool
                       ) -> Tuple[Layer, List[str]]:
    """The chainrule layer for torch module m (at index i) and its parameter attribute names."""

    def unsupported(why: str) -> ValueError:
        return ValueError(f"module {i} ({m!r}) cannot be converted: {why}. chainrule converts "
                          f"{SUPPORTED}.")

    if not isinstance(m, nn.Module):
        raise TypeError(f"item {i} must be a torch.nn.Module, got {type(m).__name__} {m!r}")
    bases = (nn.Linear, nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.Softmax, nn.LogSoftmax,
             nn.Identity, nn.Dropout, nn.RNN, nn.LSTM, nn.GRU)
    base = next((b for b in bases if isinstance(m, b)), None)
    if base is None:
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            raise unsupported("it is a nested container; flatten it into one nn.Sequential")
        raise unsupported(f"{type(m).__name__} has no chainrule counterpart")
    if type(m).forward is not base.forward:
        raise unsupported(f"{type(m).__name__} subclasses nn.{base.__name__} but overrides "
                          "forward, so its outputs may differ")
    if any(p.is_meta for p in m.parameters()):
        raise unsupported("its parameters are on the meta device (shapes without data); "
                          "materialize them first (e.g. module.to_empty(device='cpu') and an "
                          "initialization)")
    if any(nn.parameter.is_lazy(p) for p in m.parameters()):
        raise unsupported("its parameters are not initialized yet (a lazy module); run one "
                          "forward through it first")
    _refuse_hooks(f"module {i}", m)  # (after the lazy check: a lazy module's hook builds it)

    if base is nn.Linear:
        bias = m.bias is not None
        return Dense(m.in_features, m.out_features, bias=bias), (["weight", "bias"] if bias
                                                                  else ["weight"])
    if base is nn.Softmax or base is nn.LogSoftmax:
        if m.dim != -1:
            implicit = " (implicit: dim 0 for 3-D input)" if m.dim is None else ""
            raise unsupported(f"{base.__name__} over dim={m.dim}{implicit}; chainrule's acts over "
                              f"the last axis: use nn.{base.__name__}(dim=-1)")
        return (Softmax() if base is nn.Softmax else LogSoftmax()), []
    if base is nn.Dropout:
        if m.p != 0:
            raise unsupported(f"Dropout(p={m.p}) has no chainrule counterpart (only p=0, which is "
                              "the identity, converts); remove it")
        return Identity(), []
    simple = {nn.Sigmoid: Sigmoid, nn.Tanh: Tanh, nn.ReLU: ReLU, nn.Identity: Identity}
    if base in simple:
        return simple[base](), []
    if base is nn.LeakyReLU:
        return LeakyReLU(float(m.negative_slope)), []

    # nn.RNN, nn.LSTM, nn.GRU
    if not m.batch_first:
        raise unsupported("batch_first=False; chainrule's recurrent layers take (batch, time, "
                          "features): build it with batch_first=True (the weights are the same)")
    if m.bidirectional:
        raise unsupported("bidirectional=True; chainrule's recurrent layers run forward in time "
                          "only")
    if getattr(m, "proj_size", 0):
        raise unsupported(f"proj_size={m.proj_size} (a projected LSTM)")
    if m.dropout and m.num_layers > 1:
        raise unsupported(f"dropout={m.dropout} between stacked layers; only dropout=0 converts")
    kwargs: Dict[str, Any] = dict(num_layers=m.num_layers, bias=m.bias,
                                  return_sequences=return_sequences)
    layer: Layer
    if base is nn.RNN:
        layer = RNN(m.input_size, m.hidden_size, nonlinearity=m.nonlinearity, **kwargs)
    else:
        layer = (LSTM if base is nn.LSTM else GRU)(m.input_size, m.hidden_size, **kwargs)
    names = []
    for k in range(m.num_layers):
        names += [f"weight_ih_l{k}", f"weight_hh_l{k}"]
        if m.bias:
            names += [f"bias_ih_l{k}", f"bias_hh_l{k}"]
    return layer, names


def _return_sequences(module: Any, modules: List[Any], nn: Any,
                      return_sequences: _ReturnSequences) -> Dict[int, bool]:
    rec = [i for i, m in enumerate(modules) if isinstance(m, nn.RNNBase)]
    if return_sequences is None:  # the flags the modules carry (from a RecurrentSequential)
        return {i: bool(getattr(modules[i], _FLAG, True)) for i in rec}
    if isinstance(return_sequences, (bool, np.bool_)):
        return {i: bool(return_sequences) for i in rec}
    if not isinstance(return_sequences, Mapping):
        raise TypeError(f"return_sequences must be None, a bool or a dict {{index: bool}}, got "
                        f"{type(return_sequences).__name__}")
    for i in return_sequences:
        if i not in rec:
            raise ValueError(f"return_sequences names module {i!r}, which is not a recurrent "
                             f"module; the recurrent modules are {rec}")
    return {i: check_bool(f"return_sequences[{i}]", return_sequences.get(i, True)) for i in rec}


def _infer_dtype(tensors: Dict[str, Any], th: Any) -> str:
    kinds = sorted({str(t.dtype) for t in tensors.values()})
    if not kinds:
        return "float32"
    if len(kinds) > 1:
        raise ValueError(f"the parameters mix dtypes {kinds}; pass dtype='float32' or "
                         "dtype='float64' to convert them all to one")
    dt = next(iter(tensors.values())).dtype
    if dt not in (th.float32, th.float64):
        first = next(iter(tensors))
        raise ValueError(f"the parameters are {dt} (the first, {first!r}, from module "
                         f"{first.split('.')[0]}), but chainrule computes in float32 or float64; "
                         "pass dtype='float32' or dtype='float64' to convert them")
    return "float32" if dt == th.float32 else "float64"


def from_torch(module: Any, loss: Union[str, Loss] = "mse",
               optimizer: Union[None, str, Optimizer] = None, dtype: Any = None,
               seed: Optional[int] = None, return_sequences: _ReturnSequences = None) -> Model:
    """A Model with the layers and weights of a torch ``nn.Sequential`` (or list of modules).

    Module i becomes layer i with the same parameters, copied bit for bit (``Dropout(p=0)`` and
    ``nn.Identity`` become ``Identity()``, keeping the indices). See the module docstring for the
    layers that convert.

    Args:
        module: an ``nn.Sequential`` (a :class:`RecurrentSequential` too), an ``nn.ModuleList``,
            a list or tuple of modules, or one module.
        loss: the Model's loss (a name or a chainrule Loss).
        optimizer: the Model's optimizer; default ``SGD(lr=0.01)``.
        dtype: ``"float32"`` or ``"float64"``; None takes the parameters' dtype (float32 for a
            module without parameters). Given, the parameters are converted to it.
        seed: the Model's seed (its shuffling; the weights come from the module).
        return_sequences: for the recurrent modules: True passes on the output sequence, False
            its last step; a bool for all or ``{index: bool}``. None: a RecurrentSequential's
            own flags, else True.

    Returns:
        The Model.

    Raises:
        ValueError: a module that does not convert (named, with what does), mixed or
            non-float32/float64 parameters without dtype, non-finite parameters.
        TypeError: an item that is not a torch module.
        ImportError: torch cannot be imported.
    """
    th = _import_torch("from_torch")
    nn = th.nn
    if isinstance(module, nn.Sequential) and not isinstance(module,
                                                            _recurrent_sequential_class()):
        if type(module).forward is not nn.Sequential.forward:
            raise ValueError(f"{type(module).__name__} subclasses nn.Sequential but overrides "
                             "forward, so its outputs may differ from its modules run in order; "
                             f"chainrule converts {SUPPORTED}.")
    if isinstance(module, (nn.Sequential, nn.ModuleList)):  # (each module is checked below)
        _refuse_hooks("the container", module)
    if isinstance(module, (nn.Sequential, nn.ModuleList, list, tuple)):
        modules = list(module)
    elif isinstance(module, nn.Module):
        modules = [module]
    else:
        raise TypeError(f"module must be a torch.nn.Sequential or a list of torch modules, got "
                        f"{type(module).__name__}")
    if not modules:
        raise ValueError("module holds no layers; a Model needs at least one")
    flags = _return_sequences(module, modules, nn, return_sequences)
    layers: List[Layer] = []
    tensors: Dict[str, Any] = {}
    for i, m in enumerate(modules):
        layer, names = _layer_from_module(i, m, nn, flags.get(i, True))
        layers.append(layer)
        for n in names:
            t = getattr(m, n)  # an attribute, not named_parameters: parametrized modules compute it
            if not t.is_floating_point():
                raise ValueError(f"module {i} ({m!r}): {n} has dtype {t.dtype}; expected floats")
            tensors[f"{i}.{n}"] = t
    model = Model(layers, loss=loss, optimizer=optimizer,
                  dtype=_infer_dtype(tensors, th) if dtype is None else dtype, seed=seed)
    if tensors:
        names = model.parameter_names()
        if sorted(names) != sorted(tensors):  # the layer classes and the core disagree: a bug
            raise RuntimeError(f"chainrule names the parameters {names}, the torch modules "
                               f"{list(tensors)}")
        tdtype = th.float32 if model.dtype == np.float32 else th.float64
        model.load_state_dict({n: t.detach().to(device="cpu", dtype=tdtype).numpy()
                               for n, t in tensors.items()})  # (meta refused per module above)
    return model


# ---------------------------------------------------------------- chainrule -> torch
def to_torch(model: Model) -> "torch.nn.Module":
    """The Model as a torch module with the same weights (bit for bit) and dtype.

    Returns:
        An ``nn.Sequential``, or a :class:`RecurrentSequential` when the Model has recurrent
        layers (run batch-first; each passes on its output sequence or its last step, as its
        ``return_sequences`` says). Module i holds layer i's parameters under the same names.

    Raises:
        ImportError: torch cannot be imported.
        NotFittedError: the Model has no weights yet (no input size known).
        ValueError: a layer without a torch counterpart.
    """
    th = _import_torch("Model.to_torch()")
    nn = th.nn
    tdtype = th.float32 if model.dtype == np.float32 else th.float64
    has_params = any(isinstance(layer, (Dense, _Recurrent)) for layer in model.layers)
    f = model.n_features_in
    if has_params and f is None:
        model._require_net()  # raises NotFittedError, with its advice
    modules: List[Any] = []
    flags: Dict[int, bool] = {}
    for i, layer in enumerate(model.layers):
        m: Any
        if isinstance(layer, Dense):
            m = nn.Linear(f, layer.out_features, bias=layer.bias, dtype=tdtype)
        elif isinstance(layer, _Recurrent):
            kwargs: Dict[str, Any] = dict(num_layers=layer.num_layers, bias=layer.bias,
                                          batch_first=True, dtype=tdtype)
            if isinstance(layer, RNN):
                m = nn.RNN(f, layer.hidden_size, nonlinearity=layer.nonlinearity, **kwargs)
            elif isinstance(layer, LSTM):
                m = nn.LSTM(f, layer.hidden_size, **kwargs)
            elif isinstance(layer, GRU):
                m = nn.GRU(f, layer.hidden_size, **kwargs)
            else:
                raise ValueError(f"layer {i} ({layer!r}) has no torch counterpart here")
            flags[i] = layer.return_sequences
        elif isinstance(layer, LeakyReLU):
            m = nn.LeakyReLU(layer.negative_slope)
        elif isinstance(layer, (Softmax, LogSoftmax)):
            m = (nn.Softmax if isinstance(layer, Softmax) else nn.LogSoftmax)(dim=-1)
        elif type(layer) is Sigmoid:
            m = nn.Sigmoid()
        elif type(layer) is Tanh:
            m = nn.Tanh()
        elif type(layer) is ReLU:
            m = nn.ReLU()
        elif type(layer) is Identity:
            m = nn.Identity()
        else:
            raise ValueError(f"layer {i} ({layer!r}) has no torch counterpart here; "
                             f"chainrule.interop converts {SUPPORTED}")
        modules.append(m)
        if f is not None:
            f = layer.output_features(f)
    net: "torch.nn.Module"
    if flags:
        net = _recurrent_sequential_class()(*modules, return_sequences=flags)
    else:
        net = nn.Sequential(*modules)
    if has_params:
        # copy_ into each parameter: the bits of the Model's (owning) arrays, unchanged.
        net.load_state_dict({n: th.from_numpy(a) for n, a in model.state_dict().items()},
                            strict=True)
    return net
