"""Saving and loading models: the safetensors layout, with the architecture in its metadata.

A file holds every parameter under its PyTorch name, the optimizer state (when the optimizer has
any) under ``optimizer.<param>.<buffer>``, and in the
metadata the format version, the architecture as JSON, the generator state and a SHA-256 checksum
over the tensors and the rest of the metadata. Loading never unpickles or executes anything: the header is size-capped JSON,
every field is validated, and each failure raises its own :class:`ModelFileError` (a ValueError).
Saving is atomic: a temporary file in the same folder, fsync, then rename over the target.
Both directions stream: save copies one tensor at a time out of the core into the file (the
checksum is written into the header last), and load reads each tensor straight into its array.

Into PyTorch: the file is plain safetensors, and without the optimizer's tensors it is the
network's state dict::

    tensors = safetensors.torch.load_file(path)
    net.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optimizer.")})
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import struct
from functools import partial
from io import BufferedIOBase, BytesIO
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from . import _core

__all__ = ["save", "load", "to_bytes", "from_bytes", "ModelFileError", "TruncatedFileError",
           "HeaderError", "NotAModelFileError", "UnsupportedVersionError", "ChecksumError",
           "ArchitectureError"]

FORMAT = "chainrule.model"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 16 * 1024 * 1024  # a model header is a few KiB; this bounds what a file can ask
_DTYPES: Dict[str, np.dtype] = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
_DTYPE_CODES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64"}
# safetensors lays the tensors out by dtype, widest first, then by name, after a header padded
# with spaces to a multiple of 8 bytes; _header writes the same bytes (the metadata in key order,
# which safetensors leaves to a hash map: any order is the same file to every reader).
_LAYOUT_RANK = {"F64": 0, "F32": 1}
_CHECKSUM_PLACEHOLDER = "sha256:" + "0" * 64  # as long as every checksum: overwritten in place
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # serde_json's output

# (name, dtype code, shape, fetch): fetch() copies the tensor out of the core
_Tensor = Tuple[str, str, Tuple[int, ...], Callable[[], Optional[np.ndarray]]]


class ModelFileError(ValueError):
    """A file that is not a loadable chainrule model; the message says what is wrong."""


class TruncatedFileError(ModelFileError):
    """The file ends before the header or the data it declares."""


class HeaderError(ModelFileError):
    """The header is not valid: too large, not JSON, or a field out of range."""


class NotAModelFileError(ModelFileError):
    """A valid file of another kind (e.g. a plain safetensors file with no chainrule metadata)."""


class UnsupportedVersionError(ModelFileError):
    """A chainrule model file written by a newer format version."""


class ChecksumError(ModelFileError):
    """The tensor data does not match the checksum the file was written with."""


class ArchitectureError(ModelFileError):
    """The architecture cannot be built, or the tensors do not fit it."""


class _Checksum:
    """The file's SHA-256, fed one tensor at a time: the metadata but the checksum (sorted
    pairs, as JSON), then per tensor in name order ``[name, dtype, shape, nbytes]`` as JSON and
    its bytes."""

    def __init__(self, metadata: Dict[str, str]) -> None:
        self._h = hashlib.sha256()
        # The metadata too (all but the checksum itself): a damaged architecture, optimizer step
        # or generator state would otherwise load as a different model without a word.
        self._h.update(json.dumps(sorted((k, v) for k, v in metadata.items()
                                         if k != "checksum")).encode())

    def add(self, name: str, code: str, shape: Tuple[int, ...], raw: Any) -> None:
        raw = memoryview(raw)
        self._h.update(json.dumps([name, code, list(shape), raw.nbytes]).encode())
        self._h.update(raw)

    def value(self) -> str:
        return "sha256:" + self._h.hexdigest()


def _checksum(tensors: List[Tuple[str, str, Tuple[int, ...], bytes]],
              metadata: Dict[str, str]) -> str:
    h = _Checksum(metadata)
    for name, code, shape, raw in sorted(tensors):
        h.add(name, code, shape, raw)
    return h.value()


def _raw(a: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy."""
    return a.reshape(-1).view(np.uint8).data


def _contents(model: Any) -> Tuple[List[_Tensor], Dict[str, str]]:
    """What the file holds, nothing copied yet: the tensors (parameters under their PyTorch
    names, then the optimizer's buffers under ``optimizer.<param>.<buffer>``) and the metadata,
    its checksum a placeholder."""
    guard = model._guard
    generation = guard.generation  # before the check: a change from here on is seen below
    guard.check_shared()  # not while another thread trains it (as state_dict() refuses)
    net = model._require_net()
    code = _DTYPE_CODES[model.dtype]

    def fetch(name: str, key: str) -> Optional[np.ndarray]:
        # The tensors are copied out one by one as the file is written: a call that changed the
        # model from another thread meanwhile (fit between two epochs, load_state_dict) would
        # mix two states in one file whose checksum holds.
        value = net.get(name, key)
        if guard.generation != generation:
            raise RuntimeError("the model was changed by another thread while it was being "
                               "saved; nothing was written (save it when that call is done)")
        return value

    tensors: List[_Tensor] = [(n, code, tuple(net.param_shape(n)), partial(fetch, n, "value"))
                              for n in net.param_names()]
    tensors += [(f"optimizer.{n}.{bname}", code, tuple(net.param_shape(n)),
                 partial(fetch, n, key)) for n, key, bname in model._optimizer_buffers()]
    from . import __version__
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "chainrule_version": __version__,
        "config": json.dumps(model.get_config()),
        "optimizer_step": str(int(net.optimizer_steps)),
        "rng_state": json.dumps([int(w) for w in net.rng_state()]),
        "checksum": _CHECKSUM_PLACEHOLDER,
    }
    return tensors, metadata


def _header(metadata: Dict[str, str],
            tensors: List[_Tensor]) -> Tuple[bytes, Dict[str, int], int]:
    """The file up to the tensor data (length, then JSON header), each tensor's offset in the
    data, and the file offset of the checksum's value."""
    parts = [b'{"__metadata__":{']
    size, at = len(parts[0]), -1
    for i, (k, v) in enumerate(sorted(metadata.items())):
        key = (("," if i else "") + _json(k) + ":").encode()
        if k == "checksum":
            at = size + len(key) + 1  # past the opening quote
        parts += [key, _json(v).encode()]
        size += len(key) + len(parts[-1])
    parts.append(b"}")
    offsets: Dict[str, int] = {}
    pos = 0
    for name, code, shape, _ in sorted(tensors, key=lambda t: (_LAYOUT_RANK[t[1]], t[0])):
        nbytes = _DTYPES[code].itemsize * math.prod(shape)
        offsets[name] = pos
        parts.append(("," + _json(name) + ":" + _json({"dtype": code, "shape": list(shape),
                                                      "data_offsets": [pos, pos + nbytes]}))
                     .encode())
        pos += nbytes
    parts.append(b"}")
    text = b"".join(parts)
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, offsets, 8 + at


def _write(f: IO[bytes], tensors: List[_Tensor], metadata: Dict[str, str]) -> None:
    """Writes the file to f (seekable, empty), holding one tensor at a time: the header with a
    placeholder for the checksum, the tensors as they are copied out of the core, then the
    checksum of exactly what was written over its placeholder."""
    header, offsets, at = _header(metadata, tensors)
    f.write(header)
    checksum = _Checksum(metadata)
    # The checksum takes the tensors by name, the file by dtype and name: the same order for a
    # model, whose tensors all share its dtype, and the seek finds each one's place otherwise.
    for name, code, shape, fetch in sorted(tensors, key=lambda t: t[0]):
        a = fetch()
        if a is None or a.shape != shape:
            raise RuntimeError(f"tensor {name!r} changed while the model was being saved")
        raw = _raw(np.ascontiguousarray(a, dtype=_DTYPES[code]))  # a view: the file's byte order
        checksum.add(name, code, shape, raw)
        f.seek(len(header) + offsets[name])
        f.write(raw)
        del a, raw  # before the next fetch: one tensor alive at a time
    f.seek(at)
    f.write(checksum.value().encode())
    f.seek(0, os.SEEK_END)


def to_bytes(model: Any) -> bytes:
    """Serialises a model (architecture, weights, optimizer state, generator state)."""
    buf = BytesIO()
    _write(buf, *_contents(model))
    return buf.getvalue()  # the buffer itself, not a copy (CPython)


def _read_exact(f: BufferedIOBase, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:  # shorter than its size said when it was opened
        raise TruncatedFileError(f"the file ended {n - len(data)} bytes early: it was truncated "
                                 "while it was being read")
    return data


def _parse_header(f: BufferedIOBase, size: int) -> Tuple[Dict[str, Any], Dict[str, str], int]:
    """Reads the header of a file of size bytes from f (at its start), leaving f at the data."""
    if size < 8:
        raise TruncatedFileError(f"file is {size} bytes; a model file starts with an 8-byte "
                                 "header length")
    (n,) = struct.unpack("<Q", _read_exact(f, 8))
    if n > MAX_HEADER_BYTES:
        raise HeaderError(f"header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes; "
                          "this is not a chainrule model file, or it is damaged")
    if 8 + n > size:
        raise TruncatedFileError(f"file is {size} bytes but its header needs {8 + n}; the "
                                 "file is truncated")
    try:
        header = json.loads(_read_exact(f, n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # deep nesting: RecursionError
        raise HeaderError(f"header is not valid JSON ({e}); this is not a chainrule model file, "
                          "or it is damaged") from None
    if not isinstance(header, dict):
        raise HeaderError(f"header must be a JSON object, got {type(header).__name__}")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NotAModelFileError(
            "this file has no chainrule model metadata: it is not a chainrule model (a plain "
            "safetensors state dict loads with model.load_state_dict(safetensors.numpy."
            "load_file(path)))")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise HeaderError("metadata values must all be strings")
    return header, meta, 8 + n


def _validate_tensors(header: Dict[str, Any], data_len: int) -> List[Tuple[str, str, Tuple[int, ...], int, int]]:
    out = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise HeaderError(f"tensor {name!r}: entry must have dtype, shape and data_offsets")
        code, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(code, str) or code not in _DTYPES:  # a list would be unhashable
            raise HeaderError(f"tensor {name!r}: dtype {code!r} is not one a model uses "
                              f"({sorted(_DTYPES)})")
        if (not isinstance(shape, list) or len(shape) > 8 or
                not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
                        for d in shape)):
            raise HeaderError(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
        if (not isinstance(offs, list) or len(offs) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise HeaderError(f"tensor {name!r}: data_offsets {offs!r} is not [begin, end]")
        begin, end = offs
        count = 1
        for d in shape:  # Python ints: no overflow, and the bound below rejects absurd products
            count *= d
        nbytes = count * _DTYPES[code].itemsize
        if nbytes >= 2**63:
            raise HeaderError(f"tensor {name!r}: shape {shape} of {code} overflows a 64-bit size")
        if not 0 <= begin <= end or end - begin != nbytes:
            raise HeaderError(f"tensor {name!r}: data_offsets {offs} do not fit shape {shape} of "
                              f"{code}")
        if end > data_len:
            raise TruncatedFileError(f"tensor {name!r} ends at byte {end} of the data, but the "
                                     f"file holds {data_len} bytes of data; the file is truncated")
        out.append((name, code, tuple(shape), begin, end))
    # The tensors must tile the data exactly: no overlap, no gap, nothing after.
    pos = 0
    for name, _, _, begin, end in sorted(out, key=lambda t: (t[3], t[4])):
        if begin != pos:
            raise HeaderError(f"tensor {name!r} starts at {begin}, expected {pos}: overlapping "
                              "or misplaced data")
        pos = end
    if pos != data_len:
        raise TruncatedFileError(f"tensor data is {data_len} bytes but the header describes "
                                 f"{pos}") if pos > data_len else HeaderError(
            f"{data_len - pos} bytes after the last tensor: the file is damaged")
    return out


def _param_count(spec: Dict[str, Any]) -> int:
    """Parameters of one layer as the core builds it (PyTorch's shapes), from its spec."""
    kind, bias = spec.get("kind"), bool(spec.get("bias", True))
    if kind == "dense":
        i, o = spec["in_features"], spec["out_features"]
        return o * i + (o if bias else 0)
    if kind in ("rnn", "lstm", "gru"):
        i, h, cells = spec["in_features"], spec["out_features"], spec["num_layers"]
        g = h * {"rnn": 1, "lstm": 4, "gru": 3}[kind]  # gate rows
        b = 2 * g if bias else 0
        return (g * (i + h) + b) + (cells - 1) * (g * 2 * h + b)  # cell 0, then cells on H inputs
    return 0


def _check_layer_sizes(config: Dict[str, Any], n_params: int) -> None:
    """Refuses layer sizes the file's tensors cannot hold, before anything is allocated.

    The architecture's parameter count (every weight and bias of every stacked cell, computed in
    Python integers) must fit in the parameters the file holds; a config asking for more is
    damaged or forged, and building it first would let a file of a few hundred bytes make the
    model allocate and zero gigabytes.
    """
    from .layers import layer_from_config

    layers = [layer_from_config(c) for c in config["layers"]]
    f = config.get("in_features")
    if f is None:  # the input size as Model finds it: from the first layer that has one
        for layer in layers:
            if hasattr(layer, "in_features") or hasattr(layer, "input_size"):
                f = getattr(layer, "in_features", getattr(layer, "input_size", None))
                break
    if f is None:
        return  # not built on load, so nothing is allocated
    from ._validation import check_positive_int
    f = check_positive_int("in_features", f)  # int(inf) would be an OverflowError
    total = 0
    for i, layer in enumerate(layers):
        total += _param_count(layer.spec(f))
        if total > n_params:
            raise ValueError(f"layer {i} ({layer!r} on {f} features) needs more parameters than "
                             f"the {n_params} the file holds")
        f = layer.output_features(f)


def _read_tensors(f: BufferedIOBase, entries: List[Tuple[str, str, Tuple[int, ...], int, int]]
                  ) -> Dict[str, np.ndarray]:
    """Reads each tensor from f (at the data, which the entries tile) straight into its array."""
    tensors: Dict[str, np.ndarray] = {}
    for name, code, shape, _, _ in sorted(entries, key=lambda t: t[3]):
        a = np.empty(shape, dtype=_DTYPES[code])
        view, done = _raw(a), 0
        while done < len(view):
            got = f.readinto(view[done:])
            if not got:
                raise TruncatedFileError(f"the file ended inside tensor {name!r}: it was "
                                         "truncated while it was being read")
            done += got
        tensors[name] = a
    if f.read(1):
        raise HeaderError("bytes after the last tensor: the file grew while it was being read")
    return tensors


def from_bytes(data: bytes) -> Any:
    """Rebuilds a model from :func:`to_bytes`'s output, validating everything first."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)  # no copy of bytes; a bytearray is copied, as it could change meanwhile
    return _read_model(BytesIO(data), len(data))  # BytesIO shares bytes' buffer


def _read_model(f: BufferedIOBase, size: int) -> Any:
    """Rebuilds the model in f (at its start; size bytes long), validating everything first."""
    from .model import Model

    header, meta, start = _parse_header(f, size)
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise HeaderError(f"format_version {meta.get('format_version')!r} is not an integer") from None
    if version > FORMAT_VERSION or version < 1:
        raise UnsupportedVersionError(f"model file format version {version}; this chainrule "
                                      f"reads versions 1..{FORMAT_VERSION} (upgrade chainrule)")
    entries = _validate_tensors(header, size - start)
    tensors = _read_tensors(f, entries)
    checksum = _Checksum(meta)
    for name, code, shape, _, _ in sorted(entries):
        checksum.add(name, code, shape, _raw(tensors[name]))
    if meta.get("checksum") != checksum.value():
        raise ChecksumError("tensor data does not match the file's checksum: the file is "
                            "damaged")
    try:
        step = int(meta.get("optimizer_step", "0"))
    except (ValueError, TypeError):
        raise HeaderError(f"optimizer_step {meta.get('optimizer_step')!r} is not an "
                          "integer") from None
    try:
        config = json.loads(meta["config"])
        rng = json.loads(meta.get("rng_state", "null"))
    except (KeyError, ValueError, TypeError, RecursionError) as e:
        raise HeaderError(f"metadata is incomplete or malformed: {e}") from None
    # taken out of tensors, so that their arrays are freed once the core holds the values
    params = {k: tensors.pop(k) for k in list(tensors) if not k.startswith("optimizer.")}
    try:
        _check_layer_sizes(config, sum(v.size for v in params.values()))
        model = Model.from_config(config)
    except (ValueError, TypeError, KeyError, AttributeError, MemoryError) as e:
        raise ArchitectureError(f"the saved architecture cannot be built: {e}") from None
    try:
        model.load_state_dict(params, strict=True)
    except (ValueError, TypeError) as e:
        raise ArchitectureError(f"the weights do not fit the saved architecture: {e}") from None
    del params
    opt_params: Dict[str, Dict[str, np.ndarray]] = {}
    for k, v in tensors.items():
        if k.startswith("optimizer."):
            pname, _, bname = k[len("optimizer."):].rpartition(".")
            opt_params.setdefault(pname, {})[bname] = v
    try:
        model.load_optimizer_state({"step": step, "params": opt_params})
        if rng is not None:
            if (not isinstance(rng, list) or len(rng) != 4 or
                    not all(isinstance(w, int) and 0 <= w < 2**64 for w in rng)):
                raise ValueError(f"rng_state {rng!r} is not 4 unsigned 64-bit words")
            model._net.set_rng_state(rng)
    except (ValueError, TypeError) as e:
        raise ArchitectureError(f"the optimizer or generator state does not fit: {e}") from None
    return model


def save(model: Any, path: Union[str, bytes, "os.PathLike[str]"]) -> None:
    """Writes model to path atomically (temporary file in the same folder, fsync, rename).

    A symbolic link is followed: the file it names receives the model and the link stays. An
    existing file keeps its permission bits; a new one gets those open() would give it (0o666
    less the umask). On any failure or interrupt the temporary file is removed and the old file,
    if any, is left as it was. The tensors are copied out of the core one at a time as they are
    written: saving needs memory for the largest tensor, not for the file.
    """
    contents = _contents(model)  # the model's errors before a file exists
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str, bytes or os.PathLike, got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if path.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):  # open() would refuse
        raise IsADirectoryError(errno.EISDIR, "cannot save a model to a path that ends with a "
                                "separator (it names a folder, not a file)", path)
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {path!r}: the folder {folder!r} does not exist")
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    # The temporary name is chosen and kept before the file exists, so that an interrupt at any
    # point lets the handler below remove what was created (mkstemp returns the name only once
    # the file is there).
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{os.urandom(6).hex()}.tmp")
    try:
        # "x": created here (never another's file), 0o666 less the umask, as open() creates.
        # A file object, not a raw descriptor: if an interrupt lands as open() returns, the
        # unreferenced object closes the file as it is dropped.
        with open(tmp, "xb") as f:
            _write(f, *contents)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (best effort: the file is in place already)
        _core.fsync_dir(os.fsencode(folder))  # bytes: any name the file system has
    except (OSError, TypeError, ValueError):
        pass


def load(path: Union[str, "os.PathLike[str]"]) -> Any:
    """Loads a model saved by :meth:`Model.save`, reading each tensor straight into an array:
    besides the model, it needs memory for the tensors once, not for the file's bytes as well.

    Raises:
        ModelFileError: (a ValueError) the file is damaged, truncated, of another kind, or of a
            newer format; the subclass and message say which.
        OSError: the file cannot be read.
    """
    with open(os.fspath(path), "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):  # a pipe, say: no size to read against
            return from_bytes(f.read())
        return _read_model(f, info.st_size)
