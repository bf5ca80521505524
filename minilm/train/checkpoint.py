"""Safe, atomic checkpoints in safetensors: nothing is ever pickled or unpickled.

A checkpoint is one ``.safetensors`` file: a little-endian u64 header length, a JSON
header (name -> dtype, shape, byte range, plus a ``__metadata__`` dict of strings) and
the raw tensor bytes. minilm stores in ``__metadata__``:

- ``"minilm"``: the caller's ``meta`` dict as JSON (Python's ``json``, so integers of
  any size round-trip exactly — NumPy's PCG64 state is a 128-bit integer);
- ``"minilm_format_version"``: ``"1"``;
- ``"minilm_aliases"`` (only when needed): JSON ``{name: stored_name}`` for tensors
  that are the very same memory as another (tied weights are stored once).

Two layers:

1. :func:`save_checkpoint` / :func:`load_checkpoint`: a flat ``{name: array}`` dict and
   a JSON-able ``meta`` dict. Writes go to a temporary file in the target's directory,
   are flushed and ``fsync``-ed, then ``os.replace``-d onto the target (and the
   directory is fsync-ed), so a crash or ``kill -9`` mid-save leaves the previous
   checkpoint intact. (A killed process leaves its temporary directory
   ``.<name>.<host>.<pid>.<random>.tmp`` behind; it is never read, and the next save to
   the same path on that host removes it once that process is gone.) Loading validates
   the header against the file size and turns every failure into a ``ValueError``
   naming the file.
2. :func:`flatten_state` / :func:`unflatten_state`: any nested structure of dicts,
   lists and tuples whose leaves are arrays, minilm Tensors or JSON scalars, to
   ``(tensors, meta)`` and back, exactly (key types, containers, dtypes, 0-d arrays).

What a *training* checkpoint contains (model, optimizer and scheduler state, step,
RNG states, tokenizer) is :mod:`minilm.train.training_state`, built on the two layers
here; this module knows nothing about training and never imports it.

Loading reads the whole file into memory (about twice the checkpoint's size at peak).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy as stnp

from ..backends import is_device_array, to_host
from ..tensor import Tensor

__all__ = [
    "FORMAT_VERSION",
    "META_KEY",
    "CheckpointError",
    "CheckpointNotFoundError",
    "checkpoint_error",
    "decode_checkpoint",
    "flatten_state",
    "load_checkpoint",
    "read_safetensors",
    "save_checkpoint",
    "unflatten_state",
]

FORMAT_VERSION = 1
META_KEY = "minilm"
VERSION_KEY = "minilm_format_version"
ALIAS_KEY = "minilm_aliases"
_RESERVED = "__metadata__"  # safetensors' own header key; never a tensor name

# The dtypes safetensors stores and its NumPy API loads back.
_SUPPORTED = {np.dtype(t) for t in (
    np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
    np.float16, np.float32, np.float64, np.complex64,
)}
_HEADER_LIMIT = 100_000_000  # safetensors refuses larger headers


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: truncated, corrupted, not a minilm
    checkpoint, an unsupported format version, or not matching the model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (both a ``ValueError`` and a
    ``FileNotFoundError``)."""


# =========================================================================== arrays
def _host_array(value: Any, name: str, op: str) -> np.ndarray:
    """``value`` (ndarray, NumPy scalar, minilm Tensor, CuPy array) as a host ndarray."""
    if isinstance(value, Tensor):
        value = value.data
    if is_device_array(value):
        value = to_host(value)
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{op}: tensor {name!r} is a {type(value).__name__}, not an array")
    if value.dtype.newbyteorder("=") not in _SUPPORTED:
        raise TypeError(
            f"{op}: tensor {name!r} has dtype {value.dtype}, which safetensors cannot store "
            f"(supported: {', '.join(sorted(str(d) for d in _SUPPORTED))})"
        )
    return value


def _device_pointer(value: Any) -> int:
    """The device address of a device array (CuPy: ``.data.ptr``)."""
    interface = getattr(value, "__cuda_array_interface__", None)
    if interface is not None:
        return interface["data"][0]
    return value.__array_interface__["data"][0]  # a host-memory stand-in (tests)


def _identity(value: Any) -> tuple | None:
    """A key equal for two arrays exactly when they are the same memory seen the same
    way (pointer, shape, strides, dtype); ``None`` when aliasing does not matter."""
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        return ("np", value.__array_interface__["data"][0], value.shape, value.strides,
                value.dtype.str)
    if is_device_array(value) and getattr(value, "size", 0):
        return ("device", _device_pointer(value), value.shape, value.strides, value.dtype.str)
    return None


def _prepare(tensors: Mapping, op: str) -> tuple:
    """Contiguous little-endian host arrays, with repeated memory turned into aliases."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"{op}: tensors must be a dict of name -> array, got {type(tensors).__name__}")
    arrays: dict = {}
    aliases: dict = {}
    first_name: dict = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"{op}: tensor names must be strings, got {name!r}")
        if name == _RESERVED:
            raise ValueError(f"{op}: {_RESERVED!r} is reserved by safetensors and cannot name a tensor")
        ident = _identity(value)
        if ident is not None and ident in first_name:
            aliases[name] = first_name[ident]
            continue
        arr = _host_array(value, name, op)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if not arr.flags.c_contiguous:  # safetensors reads raw memory (and ascontiguousarray
            arr = arr.copy(order="C")   # would turn a 0-d array into 1-d)
        arrays[name] = arr
        if ident is not None:
            first_name[ident] = name
    return arrays, aliases


# =========================================================================== files
def _write_safetensors(path: str, arrays: dict, metadata: dict) -> None:
    """Serialize into ``path`` (inside the temporary directory: safetensors itself may
    write through a scratch file beside ``path``). Tests replace this to simulate a
    crash half-way through a write."""
    stnp.save_file(arrays, path, metadata=metadata)


def _fsync_path(path: str, directory: bool = False) -> None:
    flags = os.O_RDONLY if directory else os.O_RDWR
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open directories; best effort
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _host() -> str:
    return socket.gethostname().replace(os.sep, "_") or "host"


def _remove_stale_temps(directory: str, base: str) -> None:
    """Delete temporary directories of earlier saves to ``base`` made on this host by
    processes that no longer exist (killed mid-save). Best effort, never raises."""
    if os.name != "posix":  # os.kill(pid, 0) only probes on POSIX (Windows would kill)
        return
    prefix, host = f".{base}.", _host()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        parts = name[len(prefix):-len(".tmp")].rsplit(".", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # still running (or not ours to signal): leave it
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def save_checkpoint(path: str | os.PathLike, tensors: Mapping, meta: dict | None = None) -> None:
    """Write ``tensors`` (name -> array) and ``meta`` (a JSON-able dict) to one
    safetensors file at ``path``, atomically.

    Arrays may be NumPy arrays, NumPy scalars, minilm Tensors or CuPy arrays (copied to
    the host); they are made contiguous. Names bound to the same memory (tied weights)
    are stored once and recorded as aliases. The bytes go to a file in a temporary
    directory ``.<name>.<host>.<pid>.<random>.tmp`` beside ``path``, are fsync-ed, and
    ``os.replace`` swaps the file in: readers see either the old or the new checkpoint,
    never a mixture, and an error (or Ctrl-C) during the write removes the temporary
    directory and leaves ``path`` as it was.
    """
    op = "save_checkpoint"
    path = os.fspath(path)
    meta = {} if meta is None else meta
    if not isinstance(meta, Mapping):
        raise TypeError(f"{op}: meta must be a dict, got {type(meta).__name__}")
    arrays, aliases = _prepare(tensors, op)
    try:
        meta_json = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{op}: meta for {path} is not JSON-serializable ({exc}); put arrays in tensors "
            "or use flatten_state()"
        ) from exc
    metadata = {META_KEY: meta_json, VERSION_KEY: str(FORMAT_VERSION)}
    if aliases:
        metadata[ALIAS_KEY] = json.dumps(aliases)

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{op}: directory {directory} of {path} does not exist")
    base = os.path.basename(path)
    _remove_stale_temps(directory, base)
    tmp_dir = os.path.join(directory, f".{base}.{_host()}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    tmp = os.path.join(tmp_dir, base)
    try:
        os.mkdir(tmp_dir)
        _write_safetensors(tmp, arrays, metadata)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if isinstance(exc, safetensors.SafetensorError):
            raise ValueError(f"{op}: could not write {path}: {exc}") from exc
        raise
    shutil.rmtree(tmp_dir, ignore_errors=True)
    _fsync_path(directory, directory=True)


def checkpoint_error(path: str, why: str) -> CheckpointError:
    """The error for an unusable checkpoint file: ``checkpoint <path>: <why>``."""
    return CheckpointError(f"checkpoint {path}: {why}")


def read_safetensors(path: str) -> tuple:
    """(tensors, metadata) of any safetensors file, every failure a CheckpointError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise CheckpointNotFoundError(f"checkpoint {path}: no such file") from exc
    except OSError as exc:
        raise checkpoint_error(path, f"cannot be read ({exc})") from exc
    size = len(data)
    if size < 8:
        raise checkpoint_error(path, f"only {size} bytes, truncated or not a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n > size - 8 or n > _HEADER_LIMIT:
        raise checkpoint_error(path, f"header length {n} exceeds the file size {size}: "
                               "truncated or not a safetensors file")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise checkpoint_error(path, f"corrupted header, not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise checkpoint_error(path, "corrupted header, not a JSON object")
    metadata = header.pop(_RESERVED, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise checkpoint_error(path, "corrupted header, __metadata__ is not a dict of strings")
    end = 0
    for name, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
            raise checkpoint_error(path, f"corrupted header entry for tensor {name!r}")
        end = max(end, offsets[1])
    if 8 + n + end > size:
        raise checkpoint_error(path, f"truncated: the header promises {8 + n + end} bytes, "
                               f"the file has {size}")
    if 8 + n + end < size:
        raise checkpoint_error(path, f"corrupted: {size - 8 - n - end} unexpected bytes after "
                               "the tensor data")
    try:
        tensors = stnp.load(data)
    except Exception as exc:  # SafetensorError, KeyError (unknown dtype), ValueError
        raise checkpoint_error(path, f"corrupted safetensors file ({type(exc).__name__}: {exc})") from exc
    return tensors, metadata


def load_checkpoint(path: str | os.PathLike) -> tuple:
    """Read a file written by :func:`save_checkpoint`: ``(tensors, meta)``, the tensors
    as writable NumPy arrays (aliases restored as the same array object).

    Raises a :class:`CheckpointError` (a ``ValueError``) naming the file when it is
    missing (:class:`CheckpointNotFoundError`, also a ``FileNotFoundError``), truncated,
    corrupted, a safetensors file without minilm metadata, or of a newer format.
    """
    path = os.fspath(path)
    return decode_checkpoint(path, *read_safetensors(path))


def decode_checkpoint(path: str, tensors: dict, metadata: dict) -> tuple:
    """The minilm layer of :func:`load_checkpoint` on a file already read by
    :func:`read_safetensors`: ``(tensors with aliases restored, meta)``."""
    if META_KEY not in metadata:
        raise checkpoint_error(path, f"not a minilm checkpoint (a safetensors file without {META_KEY!r} "
                               "metadata); load plain weights with load_model_weights()")
    version = metadata.get(VERSION_KEY)
    try:
        version_num = int(version)
    except (TypeError, ValueError):
        version_num = None
    if version_num is None or not 1 <= version_num <= FORMAT_VERSION:
        raise checkpoint_error(path, f"unsupported minilm checkpoint format version {version!r} "
                               f"(this minilm reads versions 1..{FORMAT_VERSION})")
    try:
        meta = json.loads(metadata[META_KEY])
        aliases = json.loads(metadata.get(ALIAS_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise checkpoint_error(path, f"corrupted minilm metadata ({exc})") from exc
    if not isinstance(aliases, dict):
        raise checkpoint_error(path, "corrupted minilm metadata (aliases)")
    for alias, target in aliases.items():
        if target not in tensors:
            raise checkpoint_error(path, f"alias {alias!r} points to a missing tensor {target!r}")
        tensors[alias] = tensors[target]
    return tensors, meta


# =========================================================================== nested state
# The structure is encoded as JSON in which every container is a one-key object and
# every other value a JSON scalar:
#   {"dict": [[key, value], ...]}   keys keep their JSON type (int stays int) and order
#   {"odict": [...]}                an OrderedDict
#   {"list": [...]}, {"tuple": [...]}
#   {"array": name}                 a tensor (ndarray, or a minilm Tensor's array)
#   {"scalar": name}                a NumPy scalar (np.float32(1.5)), stored 0-d
#   {"bytes": name}                 bytes, stored as uint8
#   None / true / 3 / 2.5 / "s"     JSON leaves (NaN and ±inf as Python's json writes them)

_KEY_TYPES = (str, int, float, bool, type(None))


def _plain(x: Any) -> Any:
    """A subclass of a JSON scalar (np.str_, an IntEnum) as the plain Python value."""
    for t in (bool, int, float, str):
        if isinstance(x, t):
            return t(x)
    return x


def flatten_state(state: Any) -> tuple:
    """Split a nested structure into ``(tensors, meta)`` for :func:`save_checkpoint`.

    ``state`` is built of dicts (keys str, int, float, bool or None), lists and tuples;
    its leaves are NumPy arrays or scalars, minilm Tensors, CuPy arrays, bytes, or
    JSON scalars (None, bool, int, float, str). Arrays become tensors named by their
    dotted path (``"optimizer.state.3.exp_avg"``; a clash gets a ``#n`` suffix);
    everything else, with the shape of the structure, goes into ``meta["tree"]``.
    """
    tensors: dict = {}
    host: dict = {}  # id(device array) -> its host copy, so tied CuPy weights stay tied

    def tensor_name(path: list) -> str:
        base = ".".join(path) if path else "_"
        name, i = base, 1
        while name in tensors or name == _RESERVED:
            name, i = f"{base}#{i}", i + 1
        return name

    def walk(x: Any, path: list) -> Any:
        if isinstance(x, np.generic) and x.dtype.kind in "biufc":  # before float: np.float64
            name = tensor_name(path)                                # subclasses it
            tensors[name] = _host_array(np.asarray(x), name, "flatten_state")
            return {"scalar": name}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x if type(x) in (bool, int, float, str) or x is None else _plain(x)
        if isinstance(x, Mapping):
            items = []
            for k, v in x.items():
                if isinstance(k, np.integer):
                    k = int(k)
                if not isinstance(k, _KEY_TYPES):
                    raise TypeError(f"flatten_state: key {k!r} at {'.'.join(path) or '<root>'} is a "
                                    f"{type(k).__name__}; keys must be str, int, float, bool or None")
                items.append([k, walk(v, [*path, str(k)])])
            return {"odict" if isinstance(x, OrderedDict) else "dict": items}
        if isinstance(x, (list, tuple)):
            kids = [walk(v, [*path, str(i)]) for i, v in enumerate(x)]
            return {"tuple" if isinstance(x, tuple) else "list": kids}
        if isinstance(x, (bytes, bytearray)):
            name = tensor_name(path)
            tensors[name] = np.frombuffer(bytes(x), dtype=np.uint8)
            return {"bytes": name}
        if isinstance(x, (np.ndarray, Tensor)) or is_device_array(x):
            name = tensor_name(path)
            raw = x.data if isinstance(x, Tensor) else x
            if id(raw) not in host:
                host[id(raw)] = (raw, _host_array(raw, name, "flatten_state"))
            tensors[name] = host[id(raw)][1]
            return {"array": name}
        raise TypeError(
            f"flatten_state: {'.'.join(path) or '<root>'} is a {type(x).__name__}; leaves must be "
            "arrays, Tensors or JSON scalars (None, bool, int, float, str)"
        )

    tree = walk(state, [])
    return tensors, {"tree": tree}


def unflatten_state(tensors: Mapping, meta: Mapping) -> Any:
    """Rebuild the structure given to :func:`flatten_state` from ``(tensors, meta)``."""
    if not isinstance(meta, Mapping) or "tree" not in meta:
        raise ValueError("unflatten_state: meta has no 'tree' (was it made by flatten_state?)")

    def tensor(name: Any) -> np.ndarray:
        if name not in tensors:
            raise ValueError(f"unflatten_state: tensor {name!r} is missing")
        return tensors[name]

    def build(node: Any) -> Any:
        if not isinstance(node, dict):
            if isinstance(node, list):
                raise ValueError("unflatten_state: malformed tree (bare list)")
            return node
        if len(node) != 1:
            raise ValueError(f"unflatten_state: malformed tree node {list(node)}")
        (tag, body), = node.items()
        if tag in ("dict", "odict"):
            pairs = [(k, build(v)) for k, v in body]
            return OrderedDict(pairs) if tag == "odict" else dict(pairs)
        if tag == "list":
            return [build(v) for v in body]
        if tag == "tuple":
            return tuple(build(v) for v in body)
        if tag == "array":
            return tensor(body)
        if tag == "scalar":
            return tensor(body)[()]
        if tag == "bytes":
            return tensor(body).tobytes()
        raise ValueError(f"unflatten_state: unknown tree node {tag!r}")

    return build(meta["tree"])
