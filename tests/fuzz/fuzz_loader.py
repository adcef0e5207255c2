"""Fuzz target: chainrule's model loader (``from_bytes``), and ``fit`` on arrays decoded from bytes.

The first byte of an input picks the target:

- ``RAW``: the rest is a model file, loaded as it is (the seeds are valid files, so a mutator
  reaches the header parser, the tensor table and the checksum);
- ``FORGED``: the rest picks a valid model file and edits to its architecture, metadata and tensor
  table; the file is then re-signed with a valid checksum, as a forger would, so the edits reach
  the validation behind the checksum and the model construction;
- ``FIT``: the rest decodes an architecture, a loss, an optimizer, arrays X and y (any values:
  NaN, inf, huge, integers) and fit's options; the model is trained, then predicts, evaluates,
  runs forward/backward/step by hand and makes a save/load round trip.

The only allowed outcomes of an input are success or one of ``ALLOWED`` (the documented
exceptions); anything else -- another exception, a crash, a sanitizer report, a hang -- is a
finding. Usable as

    python tests/fuzz/fuzz_loader.py --seconds 600 --corpus DIR   # atheris (pip install atheris)
    python tests/fuzz/fuzz_loader.py --plain --seconds 60 [--corpus DIR] [--seed N]
    python tests/fuzz/fuzz_loader.py --replay FILE...              # rerun saved inputs

and by tests/test_fuzz.py (a bounded, seeded run of the plain loop). atheris is coverage-guided
over chainrule's Python; run it on a normal build: with gcc's libasan preloaded (.ci/sanitize)
the runtime's coverage symbols shadow libFuzzer's and it gets no signal at all. Under the
sanitizers run the plain loop, which mutates the valid seed files and any --corpus (an atheris
corpus, say) with libFuzzer's classic byte mutations.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import random
import struct
import sys
import time
import warnings
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

import chainrule as cr
from chainrule import io as crio

#: Exceptions an input may raise: a damaged file is a ModelFileError (a ValueError); bad values,
#: shapes or types are ValueError / TypeError; an absurd size is MemoryError (or ValueError);
#: training that diverges is FloatingPointError.
ALLOWED = (cr.ModelFileError, ValueError, TypeError, MemoryError, FloatingPointError)
#: The loader documents one exception for every damaged or hostile file: ModelFileError (its
#: subclass says what is wrong). MemoryError stays allowed for a file asking for absurd sizes.
LOADER_ALLOWED = (cr.ModelFileError, MemoryError)

RAW, FORGED, FIT = 0, 1, 2
TARGETS = 3
HANG_SECONDS = 60.0  # one input taking longer than this (under ASan, on a loaded machine) hangs


class Finding(AssertionError):
    """A property of a successful run that does not hold (e.g. a round trip changed the model)."""


# ---------------------------------------------------------------------------------------------
# reading structured values from bytes (a FuzzedDataProvider without atheris)
# ---------------------------------------------------------------------------------------------

class Reader:
    """Consumes the input front to back; past the end every read gives zeros."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out + b"\0" * (n - len(out))

    def u8(self) -> int:
        return self.bytes(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.bytes(4))[0]

    def int_in(self, lo: int, hi: int) -> int:
        """An int in [lo, hi]."""
        span = hi - lo + 1
        return lo + (self.u8() if span <= 256 else self.u32()) % span

    def flag(self) -> bool:
        return bool(self.u8() & 1)

    def rare(self, k: int) -> bool:
        """True one time in k; False past the end, so an exhausted input takes the usual path."""
        return self.u8() % k == k - 1

    def pick(self, options: Sequence[Any]) -> Any:
        return options[self.u8() % len(options)]

    def f64(self) -> float:
        return struct.unpack("<d", self.bytes(8))[0]

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out


INTS = [0, 1, -1, 2, 3, 4, 7, 8, 13, 14, 15, 16, 17, 31, 32, 33, 255, 256, 2 ** 31 - 1, 2 ** 31,
        2 ** 32, 2 ** 40, 10 ** 9, 10 ** 12, 2 ** 53 + 1, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64,
        -2 ** 63, 10 ** 100]
FLOATS = [0.0, -0.0, 0.5, 1.0, -1.0, 1e-300, 5e-324, 1e300, -1e300, 3.4e38, 1e-8, 0.9, 0.999,
          math.inf, -math.inf, math.nan, 1e4, -1e4]
STRINGS = ["", "x", "float16", "float32", "float64", "int64", "relu", "tanh", "Dense", "RNN",
           "LSTM", "GRU", "Softmax", "Layer", "_Recurrent", "sgd", "adam", "mse", "bce",
           "bce_with_logits", "cross_entropy", "sum", "mean", "none", "__class__", "a" * 5000,
           "\u00e9\u0000", "1", "-1", "1e400", "NaN", "99999999999999999999", "[1, 2, 3, 4]",
           "null", "{}", "[" * 2000 + "]" * 2000]


def any_value(r: Reader, depth: int = 0) -> Any:
    """A JSON-able value of any kind, weighted towards the ones that break validation."""
    kind = r.u8() % 12
    if kind <= 3:
        return r.pick(INTS)
    if kind == 4:
        return r.pick(FLOATS)
    if kind == 5:
        return r.pick(STRINGS)
    if kind == 6:
        return r.pick([None, True, False])
    if kind == 7:
        return r.int_in(-3, 70)
    if kind == 8 and depth < 3:
        return [any_value(r, depth + 1) for _ in range(r.int_in(0, 3))]
    if kind == 9 and depth < 3:
        return {r.pick(STRINGS[:24]): any_value(r, depth + 1) for _ in range(r.int_in(0, 3))}
    if kind == 10:
        return r.f64()
    return r.pick([[], {}, [1, 2], {"type": "Dense"}, [[[[[[]]]]]], {"kind": "adam"}])


# ---------------------------------------------------------------------------------------------
# seeds: small valid model files of every layer kind, optimizer and dtype
# ---------------------------------------------------------------------------------------------

def seed_models() -> List[bytes]:
    rng = np.random.default_rng(0)
    out = []
    specs = [
        ([cr.Dense(3, 5), cr.Tanh(), cr.Dense(5, 2)], "mse", cr.SGD(lr=0.05, momentum=0.9),
         "float32", (6, 3), (6, 2)),
        ([cr.Dense(4), cr.LeakyReLU(0.1), cr.Dense(3, bias=False)], "cross_entropy",
         cr.Adam(lr=0.01, amsgrad=True), "float64", (6, 3), (6,)),
        ([cr.RNN(2, 3, nonlinearity="relu"), cr.Dense(3, 1)], "bce_with_logits",
         cr.SGD(lr=0.1), "float32", (4, 5, 2), (4, 5, 1)),
        ([cr.LSTM(2, 3, num_layers=2), cr.Dense(3, 2)], "mse", cr.Adam(), "float64",
         (3, 4, 2), (3, 4, 2)),
        ([cr.GRU(None, 4, return_sequences=False), cr.Sigmoid()], "bce",
         cr.SGD(lr=0.1, momentum=0.5, nesterov=True), "float32", (5, 3, 2), (5, 4)),
    ]
    for layers, loss, opt, dtype, xs, ys in specs:
        model = cr.Model(layers, loss=loss, optimizer=opt, dtype=dtype, seed=1)
        X = rng.standard_normal(xs)
        y = rng.integers(0, 3, ys) if loss == "cross_entropy" else rng.uniform(0, 1, ys)
        model.fit(X, y, epochs=2, batch_size=4)
        out.append(model.to_bytes())
    return out


_SEEDS: List[bytes] = []


def seeds() -> List[bytes]:
    if not _SEEDS:
        _SEEDS.extend(seed_models())
    return _SEEDS


# ---------------------------------------------------------------------------------------------
# the targets
# ---------------------------------------------------------------------------------------------

def _split(blob: bytes) -> Tuple[Dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _assemble(header: Dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _edit_somewhere(r: Reader, tree: Any) -> Any:
    """Replaces one node of a JSON tree (picked by the reader) with any value."""
    if not isinstance(tree, (dict, list)) or not tree or r.rare(4):
        return any_value(r)
    keys = list(tree) if isinstance(tree, dict) else list(range(len(tree)))
    k = keys[r.u8() % len(keys)]
    if isinstance(tree, dict) and r.rare(8):  # sometimes drop or add a key instead
        if r.flag():
            del tree[k]
        else:
            tree[r.pick(STRINGS[:24])] = any_value(r)
        return tree
    tree[k] = _edit_somewhere(r, tree[k])
    return tree


def forge(r: Reader) -> bytes:
    """A valid seed file with edits, re-signed with a valid checksum (unless asked not to)."""
    header, data = _split(r.pick(seeds()))
    meta = header.pop("__metadata__")
    tensors = {k: v for k, v in header.items()}
    offsets = {k: tuple(v["data_offsets"]) for k, v in tensors.items()}
    raws = {k: data[b:e] for k, (b, e) in offsets.items()}
    for _ in range(r.int_in(1, 4)):
        what = r.u8() % 8
        if what <= 2:  # the architecture
            try:
                cfg = json.loads(meta["config"])
            except (KeyError, TypeError, ValueError, RecursionError):  # an earlier edit broke it
                cfg = {}
            meta["config"] = json.dumps(_edit_somewhere(r, cfg))
        elif what == 3:  # another metadata field
            key = r.pick(["format", "format_version", "optimizer_step", "rng_state",
                          "chainrule_version", "config", "checksum", "extra"])
            value = any_value(r)
            meta[key] = value if isinstance(value, str) and r.flag() else json.dumps(value)
        elif what == 4 and tensors:  # a tensor's shape, with data to match
            name = r.pick(sorted(tensors))
            info = tensors[name]
            shape = [r.pick([0, 1, 2, 3, 5, 64, 2 ** 20, 2 ** 31, 10 ** 6])
                     for _ in range(r.int_in(0, 3))]
            info["shape"] = shape
            code = info.get("dtype")
            dtype = crio._DTYPES.get(code, np.dtype("<f4")) if isinstance(code, str) else (
                np.dtype("<f4"))
            nbytes = math.prod(shape) * dtype.itemsize
            if r.flag() and nbytes <= 2 ** 22:  # data to match: the old values, then zeros
                raws[name] = raws[name][:nbytes].ljust(nbytes, b"\0")
        elif what == 5 and tensors:  # a tensor's dtype, name, or presence
            name = r.pick(sorted(tensors))
            op = r.u8() % 4
            if op == 0:
                tensors[name]["dtype"] = r.pick(["F32", "F64", "F16", "I64", "BOOL"])
            elif op == 1:
                new = r.pick(["0.weight", "0.bias", "1.weight", "2.weight",
                              "optimizer.0.weight.exp_avg", "optimizer.0.weight.momentum_buffer",
                              "optimizer.0.weight_ih_l0.exp_avg_sq", "optimizer.x", "x.weight",
                              "0.weight_hh_l1", "optimizer..", name + "x"])
                tensors[new], raws[new] = tensors.pop(name), raws.pop(name)
            else:
                del tensors[name], raws[name]
        elif what == 6 and tensors:  # tensor values: NaN, inf, huge, random
            name = r.pick(sorted(tensors))
            code = tensors[name].get("dtype")
            if (isinstance(code, str) and code in crio._DTYPES and
                    len(raws[name]) % crio._DTYPES[code].itemsize == 0):
                a = np.frombuffer(raws[name], dtype=crio._DTYPES[code]).copy()
                if a.size:
                    a[r.int_in(0, a.size - 1)] = r.pick(FLOATS)
                raws[name] = a.tobytes()
        else:  # a raw header field
            name = r.pick(sorted(tensors)) if tensors else "x"
            tensors.setdefault(name, {})[r.pick(["data_offsets", "shape", "dtype", "extra"])] = (
                any_value(r))
    # Lay the data out in order, as a writer would, unless asked to keep the (edited) offsets.
    keep_offsets = r.rare(8)
    pos, body = 0, b""
    for name in sorted(tensors):
        raw = raws.get(name, b"")
        if not keep_offsets and isinstance(tensors[name], dict):
            tensors[name]["data_offsets"] = [pos, pos + len(raw)]
        body += raw
        pos += len(raw)
    if not r.rare(8):  # re-sign: only validation stands between the edits and the model
        entries = []
        for name in sorted(tensors):
            info = tensors[name]
            try:
                entries.append((name, info["dtype"], tuple(info["shape"]), raws.get(name, b"")))
            except (KeyError, TypeError):
                pass
        meta_str = {k: v for k, v in meta.items() if isinstance(v, str)}
        try:
            meta["checksum"] = crio._checksum(entries, meta_str)
        except TypeError:
            pass
    header = dict(tensors)
    header["__metadata__"] = meta
    return _assemble(header, body)


def _layers(r: Reader, recurrent: bool) -> List[cr.Layer]:
    layers: List[cr.Layer] = []
    for i in range(r.int_in(1, 4)):
        # recurrent models start with a recurrent layer and may stack another; others have none
        k = 6 if recurrent and i == 0 else r.u8() % (8 if recurrent else 6)
        size = r.int_in(1, 9)
        if k <= 2:
            layers.append(cr.Dense(size) if r.flag() else cr.Dense(None, size, bias=r.flag()))
        elif k == 3:
            layers.append(r.pick([cr.Tanh(), cr.ReLU(), cr.Sigmoid(), cr.Identity()]))
        elif k == 4:
            layers.append(cr.LeakyReLU(r.pick(FLOATS)))
        elif k == 5:
            layers.append(r.pick([cr.Softmax(), cr.LogSoftmax()]))
        else:
            cls = r.pick([cr.RNN, cr.LSTM, cr.GRU])
            kw: Dict[str, Any] = dict(num_layers=r.int_in(1, 2), bias=r.flag(),
                                      return_sequences=not r.rare(4))
            if cls is cr.RNN:
                kw["nonlinearity"] = r.pick(["tanh", "relu"])
            layers.append(cls(None, size, **kw))
    return layers


def _output_shape(layers: Sequence[cr.Layer], xshape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The model's output shape for X of xshape, from the layer sizes (as the core derives it)."""
    f, lead = xshape[-1], xshape[:-1]
    for layer in layers:
        f = layer.output_features(f)
        if isinstance(layer, (cr.RNN, cr.LSTM, cr.GRU)) and not layer.return_sequences:
            lead = lead[:1]
    return lead + (f,)


def _array(r: Reader, shape: Tuple[int, ...], kind: str) -> np.ndarray:
    n = int(np.prod(shape))
    if kind == "int":
        return np.frombuffer(r.bytes(n), dtype=np.uint8).astype(np.int64).reshape(shape) - 1
    how = r.u8() % 8
    if how == 1:  # raw float32 bits: NaN, inf, subnormals, huge
        a = np.frombuffer(r.bytes(4 * n), dtype="<f4").astype(np.float64)
    elif how == 2:  # raw float64 bits (mostly beyond float32's range)
        a = np.frombuffer(r.bytes(8 * n), dtype="<f8").copy()
    elif how in (0, 3):  # small integers, as data often is (zeros past the end of the input)
        a = np.frombuffer(r.bytes(n), dtype=np.int8).astype(np.float64) / 16
    else:  # mostly tame values with the odd special one
        a = np.frombuffer(r.bytes(n), dtype=np.uint8).astype(np.float64) / 64 - 2
        if r.rare(3):
            a[r.int_in(0, n - 1)] = r.pick(FLOATS)
    return a.reshape(shape)


def _same_predictions(a: cr.Model, b: cr.Model, X: np.ndarray) -> None:
    pa, pb = a.predict(X), b.predict(X)
    if not np.array_equal(pa, pb, equal_nan=True):
        raise Finding("a saved and reloaded model predicts differently")


def fit_from_bytes(r: Reader) -> str:
    recurrent = r.rare(3)
    layers = _layers(r, recurrent)
    loss = r.pick(["mse", "bce", "bce_with_logits", "cross_entropy"])
    if r.rare(4):
        loss = r.pick([cr.MSELoss(reduction="sum"), cr.CrossEntropyLoss(reduction="sum"),
                       cr.BCEWithLogitsLoss(reduction="sum")])
    # Mostly a valid learning rate (else the constructor's ValueError ends most inputs early).
    lr = r.pick(FLOATS) if r.rare(4) else r.pick([0.1, 0.01, 1.0, 1e3])
    if r.flag():
        opt = cr.SGD(lr=lr, momentum=r.pick([0.0, 0.9, 0.5]),
                     weight_decay=r.pick([0.0, 0.0, 1e-2, 1e30]))
    else:
        opt = cr.Adam(lr=lr, betas=(r.pick([0.9, 0.0, 0.5]), r.pick([0.999, 0.0, 0.5])),
                      eps=r.pick([1e-8, 1e-30, 1.0]), amsgrad=r.flag())
    dtype = r.pick(["float32", "float64"])
    model = cr.Model(layers, loss=loss, optimizer=opt, dtype=dtype, seed=r.u32())
    n, T, F = r.int_in(1, 12), r.int_in(1, 6), r.int_in(1, 6)
    three_d = recurrent or r.rare(4)
    xshape = (n, T, F) if three_d else (n, F)
    X = _array(r, xshape, "float")
    if r.rare(8):
        X = X.astype(r.pick([np.float32, np.int64, np.float16, np.uint8, np.bool_]))
    if r.rare(8):  # a non-contiguous or broadcast view, as a user may pass
        X = r.pick([X[::-1], np.broadcast_to(X[:1], X.shape), X.T.copy().T])
    # Targets shaped like the output most of the time, so that most inputs train; otherwise a
    # mismatch of samples, steps or outputs.
    out_shape = _output_shape(layers, xshape)
    if r.rare(6):
        out_shape = (max(n - 1, 1),) + out_shape[1:-1] + (r.int_in(1, 9),)
    name = model.loss.name
    if name == "cross_entropy" and not r.rare(4):
        y = _array(r, out_shape[:-1], "int") % (out_shape[-1] + r.pick([0, 0, 0, 1]))
    else:
        y = _array(r, out_shape[:-1] if r.rare(5) else out_shape, "float")
        if name == "bce" and not r.rare(4):
            y = np.clip(np.nan_to_num(y), 0, 1)
    kwargs: Dict[str, Any] = dict(
        epochs=r.int_in(0, 3), batch_size=r.pick([None, 1, 2, 3, 5, n, n + 1, 10 ** 12]),
        shuffle=r.flag(), on_nonfinite=r.pick(["raise", "stop", "ignore"]))
    if r.rare(4):
        kwargs["validation_split"] = r.pick([0.25, 0.5, 0.9, 0.0])
    if r.rare(4):
        kwargs["clip_grad_norm"] = r.pick([1.0, 1e-30, 1e30, 0.5])
    if r.rare(4):
        kwargs["clip_grad_value"] = r.pick([1.0, 1e-30, 1e30, 0.5])
    if recurrent and r.rare(3):
        kwargs["bptt_steps"] = r.pick([1, 2, 3, T, T + 1])
        kwargs["stateful"] = r.flag()
    if recurrent and r.rare(3):
        kwargs["bptt_memory"] = r.pick(["all", "sqrt", 1, 4096, 10 ** 12])
        kwargs["record_grad_norms"] = r.flag()
    outcome = "trained"
    try:
        model.fit(X, y, **kwargs)
    except ALLOWED as e:
        outcome = "fit: " + type(e).__name__
    if model._net is None:
        return outcome
    # Whatever fit did, the model must stay usable.
    for _ in range(r.int_in(0, 4)):
        action = r.u8() % 7
        try:
            if action == 0:
                model.predict(X)
            elif action == 1:
                model.evaluate(X, y)
            elif action == 2:
                model.forward(X, bptt_memory=r.pick([None, "sqrt", "all", 64]))
                if r.flag():
                    model.backward(y)
                else:
                    model.backward(grad_output=np.ones(model._last_out_shape))
                model.clip_grad_norm(r.pick([1.0, 1e-3]))
                model.step()
                _ = model.input_grad
                model.zero_grad()
            elif action == 3 and model._recurrent_indices():
                i = model._recurrent_indices()[0]
                layer = model.layers[i]
                h0 = _array(r, (layer.num_layers, X.shape[0], layer.hidden_size), "float")
                state = (h0, h0) if isinstance(layer, cr.LSTM) else h0
                model.forward(X, initial_state=state)
                model.backward(y)
                model.final_state()
                model.initial_state_grad()
                model.timestep_grad_norms()
            elif action == 4 and model.parameter_names():
                sd = model.state_dict()
                key = r.pick(sorted(sd))
                sd[key] = _array(r, (1,) + sd[key].shape if r.rare(4) else sd[key].shape,
                                 "float")
                model.load_state_dict(sd)
            elif action == 5:
                state = model.optimizer_state()
                for bufs in state["params"].values():
                    for k in bufs:
                        bufs[k] = _array(r, bufs[k].shape, "float")
                model.load_optimizer_state(state)
            else:
                blob = model.to_bytes()
                finite = all(np.isfinite(v).all() for v in model.state_dict().values())
                if finite:  # a model that saved must load, and predict the same bits
                    _same_predictions(model, cr.from_bytes(blob), X)
                else:
                    try:
                        cr.from_bytes(blob)
                    except ALLOWED:
                        pass
        except ALLOWED:
            pass
        except RuntimeError as e:
            # backward before any forward, or input_grad before backward: the documented
            # RuntimeError, reached because the forward above failed on its input
            if "first" not in str(e):
                raise
    return outcome


#: (target, outcome) -> count; the outcome is "loaded", "trained" (or "fit: <exception>" when
#: fit refused and the rest ran) or the allowed exception's name (for --stats and tests)
STATS: Counter = Counter()
_TARGET_NAMES = {RAW: "raw", FORGED: "forged", FIT: "fit"}


def run_one(data: bytes) -> None:
    """One input: success or an allowed exception; anything else propagates."""
    if not data:
        return
    target = data[0] % TARGETS
    outcome = "ok"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Forging is the harness's own work: outside the try below, so a slip of it is never
        # taken for an allowed outcome.
        blob = forge(Reader(data[1:])) if target == FORGED else b""
        try:
            if target == RAW:
                outcome = _load(data[1:])
            elif target == FORGED:
                outcome = _load(blob)
            else:
                outcome = fit_from_bytes(Reader(data[1:]))
        except ALLOWED as e:
            outcome = type(e).__name__
    STATS[_TARGET_NAMES[target], outcome] += 1


def _load(blob: bytes) -> str:
    """from_bytes, which may fail only with LOADER_ALLOWED; a model that loads must work."""
    try:
        model = cr.from_bytes(blob)
    except LOADER_ALLOWED as e:
        return type(e).__name__
    _check_loaded(model)
    return "loaded"


def _check_loaded(model: cr.Model) -> None:
    """A model that loaded must work: predict on an input of its size, save again."""
    f = model.n_features_in
    if f is None or f > 4096:
        return
    X = np.linspace(-1, 1, 2 * 3 * f).reshape(2, 3, f)
    if not model._recurrent_indices():
        X = X[:, 0]
    model.predict(X)
    cr.from_bytes(model.to_bytes())


# ---------------------------------------------------------------------------------------------
# the plain mutation loop (no atheris needed), also used by tests/test_fuzz.py
# ---------------------------------------------------------------------------------------------

def seed_inputs() -> List[bytes]:
    """The starting corpus: every valid file as RAW, plus structured starts for the others."""
    out = [bytes([RAW]) + s for s in seeds()]
    rnd = random.Random(0)
    for target in (FORGED, FIT):
        for _ in range(8):
            out.append(bytes([target]) + bytes(rnd.randrange(256) for _ in range(96)))
    return out


def mutate(data: bytes, rnd: random.Random, corpus: Sequence[bytes]) -> bytes:
    """One to four byte-level mutations (libFuzzer's classics), the target byte kept mostly."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(9)
        pos = rnd.randrange(len(b)) if b else 0
        if op == 0 and b:  # flip a bit
            b[pos] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:  # an interesting byte
            b[pos] = rnd.choice([0, 1, 0x7F, 0x80, 0xFF, ord("["), ord("{"), ord('"'), ord("9")])
        elif op == 2:  # insert random bytes
            b[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        elif op == 3 and len(b) > 1:  # delete a range
            del b[pos:pos + rnd.randint(1, min(64, len(b) - pos))]
        elif op == 4 and b:  # an interesting little-endian integer (sizes, header length)
            v = rnd.choice(INTS) % 2 ** 64
            b[pos:pos + 8] = struct.pack("<Q", v)
        elif op == 5 and len(b) > 8:  # copy a chunk elsewhere
            src = rnd.randrange(len(b) - 1)
            chunk = b[src:src + rnd.randint(1, 32)]
            b[pos:pos + len(chunk)] = chunk
        elif op == 6 and corpus:  # splice with another input
            other = rnd.choice(corpus)
            cut = rnd.randrange(len(other) + 1)
            b = b[:pos] + other[cut:]
        elif op == 7 and len(b) > 9:  # a digit in the JSON header for another one
            i = b.find(b"0123456789"[rnd.randrange(10)], 8, min(len(b), 4096))
            if i >= 0:
                b[i] = ord(rnd.choice("0123456789-.e"))
        elif op == 8 and len(b) > 1:  # truncate
            del b[rnd.randrange(1, len(b)):]
    if b and rnd.randrange(8):
        b[0] = data[0] if data else 0
    return bytes(b)


def plain_inputs(seed: int, extra: Sequence[bytes] = ()) -> Iterator[bytes]:
    """Seeds (and extra inputs, e.g. an atheris corpus) first, then mutations of them and fresh
    random inputs, forever."""
    rnd = random.Random(seed)
    corpus = seed_inputs() + [x for x in extra if x]
    yield from corpus
    while True:
        if rnd.randrange(8) == 0:
            yield bytes([rnd.randrange(TARGETS)]) + bytes(
                rnd.randrange(256) for _ in range(rnd.randint(0, 300)))
        else:
            yield mutate(rnd.choice(corpus), rnd, corpus)


def run_plain(seconds: float, seed: int = 0, max_inputs: Optional[int] = None,
              on_input: Optional[Callable[[int, bytes], None]] = None,
              extra: Sequence[bytes] = ()) -> Tuple[int, float]:
    """Runs inputs until the time or count is up; returns (inputs run, seconds taken)."""
    t0 = time.perf_counter()
    count = 0
    for data in plain_inputs(seed, extra):
        if time.perf_counter() - t0 >= seconds or (max_inputs is not None and count >= max_inputs):
            break
        if on_input is not None:
            on_input(count, data)
        run_one(data)
        count += 1
    return count, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def _save_crash(data: bytes, folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"crash-{abs(hash(data)) & 0xFFFFFFFF:08x}")
    with open(path, "wb") as f:
        f.write(data)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="fuzzing time")
    p.add_argument("--plain", action="store_true", help="the plain loop even if atheris exists")
    p.add_argument("--corpus", default=None,
                   help="atheris: corpus folder (seeded when empty); plain: extra inputs to run")
    p.add_argument("--seed", type=int, default=0, help="plain loop: random seed")
    p.add_argument("--replay", nargs="+", default=None, help="run these saved inputs once")
    p.add_argument("--stats", action="store_true", help="plain loop: print outcome counts")
    p.add_argument("--findings", default="fuzz-findings", help="folder for crashing inputs")
    args, rest = p.parse_known_args(argv)
    faulthandler.enable()
    if args.replay:
        for path in args.replay:
            with open(path, "rb") as f:
                run_one(f.read())
            print("ok", path)
        return 0
    if not args.plain:
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("atheris is not installed: the plain mutation loop runs instead")
            args.plain = True
    if args.plain:
        current = {"data": b""}

        def watch(i: int, data: bytes) -> None:
            current["data"] = data
            faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)

        extra = []
        if args.corpus and os.path.isdir(args.corpus):  # e.g. what atheris found, replayed here
            for name in sorted(os.listdir(args.corpus)):
                with open(os.path.join(args.corpus, name), "rb") as f:
                    extra.append(f.read())
        print(f"plain fuzzing: seed {args.seed}, {len(extra)} corpus inputs", flush=True)
        try:
            n, dt = run_plain(args.seconds, seed=args.seed, on_input=watch, extra=extra)
        except BaseException:
            print("finding; input saved to", _save_crash(current["data"], args.findings),
                  file=sys.stderr)
            raise
        finally:
            faulthandler.cancel_dump_traceback_later()
        print(f"plain fuzzing: {n} inputs in {dt:.1f} s ({n / dt:.0f}/s), no findings")
        if args.stats:
            for (target, outcome), count in sorted(STATS.items()):
                print(f"  {target:7s} {outcome:28s} {count}")
        return 0
    return _run_atheris(args, rest)


def _run_atheris(args: argparse.Namespace, rest: List[str]) -> int:
    import atheris

    corpus = args.corpus
    if corpus:
        os.makedirs(corpus, exist_ok=True)
        if not os.listdir(corpus):
            for i, data in enumerate(seed_inputs()):
                with open(os.path.join(corpus, f"seed-{i:02d}"), "wb") as f:
                    f.write(data)
    seeds()  # build the seed models before fuzzing starts (not counted as a slow input)
    # Coverage of chainrule's Python (the loader's validation, Model's checks) guides the
    # mutations; the C++ core is not instrumented for coverage (gcc has no -fsanitize=fuzzer),
    # but runs under ASan/UBSan in .ci/sanitize.
    atheris.instrument_all()
    os.makedirs(args.findings, exist_ok=True)
    libfuzzer_args = [sys.argv[0], f"-max_total_time={int(max(args.seconds, 1))}",
                      f"-timeout={int(HANG_SECONDS)}", "-rss_limit_mb=8192",
                      "-malloc_limit_mb=4096", "-print_final_stats=1",
                      f"-artifact_prefix={args.findings.rstrip('/')}/"]
    libfuzzer_args += rest + ([corpus] if corpus else [])
    atheris.Setup(libfuzzer_args, run_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
