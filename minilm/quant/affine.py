"""Affine (uniform) quantization: the integer grid every method of ``minilm.quant``
stores its weights and activations on.

A float x is mapped to a signed integer q and back::

    q  = clamp(round(x / s) + z, qmin, qmax)      (round: half to even, as np.rint)
    x̂  = s · (q − z)

``s`` is the scale (a positive float) and ``z`` the zero point (an integer in
[qmin, qmax]). Symmetric quantization fixes z = 0 and uses the signed range
[−(2^(b−1) − 1), 2^(b−1) − 1] (int8 [−127, 127], int4 [−7, 7]), so the grid is
symmetric around 0 and −qmax and qmax are each other's negatives. Asymmetric
quantization uses the full signed range [−2^(b−1), 2^(b−1) − 1] (int8 [−128, 127],
int4 [−8, 7]) and a zero point that maps x = 0 exactly onto an integer, so 0 (padding,
ReLU zeros) is represented without error.

Conventions of this module:

- Integers are always stored signed: ``int8`` arrays, or for 4 bits two values per byte
  in a ``uint8`` array (:func:`pack_int4`). 2 and 3 bits are allowed for experiments and
  stored one value per int8 byte.
- Scales are float32, or float64 when the input is float64. Zero points are integer
  valued and stored as ``int32`` (symmetric: all zeros), so ``q − z`` never overflows.
- A zero range (all values equal to 0) gets s = 1 and z = 0: nothing divides by 0. A
  scale below the smallest normal float (a range of subnormals) is raised to it.
- Weight granularities for W of shape (out, in): ``"tensor"`` (one scale, shape ()),
  ``"channel"`` (one per output row, shape (out,)), ``"group"`` (one per row and per run
  of ``group_size`` consecutive input columns, shape (out, in // group_size)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends import backend_for_array, is_device_array
from ..tensor import Tensor

__all__ = ["BITS", "GRANULARITIES", "qrange", "qparams_from_range", "quantize", "dequantize",
           "fake_quantize", "quantize_weight", "QuantizedTensor", "pack_int4", "unpack_int4"]

BITS = (2, 3, 4, 8)
GRANULARITIES = ("tensor", "channel", "group")
STATE_FORMAT = "minilm.quant.affine/1"


# ---------------------------------------------------------------------------- checks


def _check_bits(bits: Any, where: str = "quantize") -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in BITS:
        raise ValueError(f"{where}: bits={bits!r} is not supported (choose one of {BITS})")
    return int(bits)


def _xp(*arrays: Any) -> Any:
    """The array module to compute with: a device array's (CuPy) if any of ``arrays`` (or
    a Tensor's data) lives on a device, else NumPy."""
    for a in arrays:
        a = a.data if isinstance(a, Tensor) else a
        if is_device_array(a):
            return backend_for_array(a).xp
    return np


def _float_array(x: Any, name: str, where: str) -> np.ndarray:
    """The float array behind ``x`` (an ndarray, a device array or a Tensor); anything
    else a TypeError. A device array stays on its device."""
    if isinstance(x, Tensor):
        x = x.data
    if is_device_array(x):
        if x.dtype.kind != "f":
            raise TypeError(f"{where}: {name} must have a floating dtype, got {x.dtype}")
        return x
    if not isinstance(x, np.ndarray) and not np.isscalar(x):
        raise TypeError(f"{where}: {name} must be a float NumPy array or Tensor, "
                        f"got {type(x).__name__}")
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{where}: {name} must have a floating dtype, got {x.dtype}")
    return x


def _scale_dtype(*arrays: np.ndarray) -> np.dtype:
    """float64 if any input is float64, else float32 (float16 inputs get float32 scales)."""
    return np.dtype(np.float64 if any(a.dtype == np.float64 for a in arrays) else np.float32)


# ---------------------------------------------------------------------------- the grid


def _usable(scale: np.ndarray) -> np.ndarray:
    """s = 1 where the range was 0 (or s underflowed to 0); a subnormal s is raised to the
    smallest normal float, whose steps x / s and s · (q − z) keep full precision."""
    tiny = np.finfo(scale.dtype).tiny
    return np.where(scale > 0, np.maximum(scale, tiny), 1).astype(scale.dtype)


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """(qmin, qmax) of the signed grid: symmetric (−(2^(b−1)−1), 2^(b−1)−1), asymmetric
    (−2^(b−1), 2^(b−1)−1). bits ∈ {2, 3, 4, 8}."""
    bits = _check_bits(bits, "qrange")
    half = 2 ** (bits - 1)
    return (-(half - 1), half - 1) if symmetric else (-half, half - 1)


def qparams_from_range(xmin: Any, xmax: Any, bits: int, symmetric: bool
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero) for values in [xmin, xmax] (arrays broadcast together).

    symmetric:  s = max(|xmin|, |xmax|) / qmax,  z = 0
    asymmetric: the range is first widened to contain 0 (xmin ≤ 0 ≤ xmax), then
                s = (xmax − xmin) / (qmax − qmin),  z = clamp(round(qmin − xmin / s), qmin, qmax)

    A zero range gives s = 1, z = 0. The scale is float32 (float64 if an input is
    float64); the zero point is an int32 array of the scale's shape.
    """
    where = "qparams_from_range"
    bits = _check_bits(bits, where)
    # Python numbers count as float32 for the scale's dtype; arrays keep theirs.
    weak = [type(v) in (int, float) for v in (xmin, xmax)]
    xmin = _float_array(np.float64(xmin) if weak[0] else xmin, "xmin", where)
    xmax = _float_array(np.float64(xmax) if weak[1] else xmax, "xmax", where)
    if not (np.all(np.isfinite(xmin)) and np.all(np.isfinite(xmax))):
        raise ValueError(f"{where}: the range must be finite (xmin={xmin}, xmax={xmax})")
    if np.any(xmin > xmax):
        raise ValueError(f"{where}: xmin > xmax somewhere (xmin={xmin}, xmax={xmax})")
    dtype = _scale_dtype(*[a for a, w in zip((xmin, xmax), weak) if not w])
    qmin, qmax = qrange(bits, symmetric)
    lo = np.minimum(xmin.astype(np.float64), 0.0)
    hi = np.maximum(xmax.astype(np.float64), 0.0)
    if symmetric:
        scale = (np.maximum(-lo, hi) / qmax).astype(dtype)
        zero = np.zeros(scale.shape, np.int32)
        return _usable(scale), zero
    scale = ((hi - lo) / (qmax - qmin)).astype(dtype)
    empty = ~(scale > 0)  # a zero range, or one so small its scale underflows
    scale = _usable(scale)
    zero = np.rint(qmin - lo / scale.astype(np.float64))
    zero = np.where(empty, 0, np.clip(zero, qmin, qmax)).astype(np.int32)
    return scale, zero


def quantize(x: Any, scale: Any, zero: Any, bits: int, symmetric: bool) -> np.ndarray:
    """q = clamp(rint(x / s) + z, qmin, qmax) as int8 (np.rint rounds half to even).
    ``scale`` and ``zero`` broadcast against x. On a device when any of them is there
    (the others are uploaded)."""
    where = "quantize"
    bits = _check_bits(bits, where)
    x = _float_array(x, "x", where)
    xp = _xp(x, scale, zero)
    x, scale = xp.asarray(x), xp.asarray(scale)
    scale_ok = xp.all(xp.isfinite(scale)) & xp.all(scale > 0)
    if not bool(scale_ok & xp.all(xp.isfinite(x))):  # one read of the device, not three
        if not bool(scale_ok):
            raise ValueError(f"{where}: scales must be positive and finite, got {scale}")
        raise ValueError(f"{where}: x of shape {x.shape} holds NaN or inf")
    qmin, qmax = qrange(bits, symmetric)
    ctype = np.result_type(x.dtype, scale.dtype, np.float32)  # compute in float32 at least
    with np.errstate(over="ignore"):  # x / s past the float range is ±inf, clamped below
        t = xp.rint(x.astype(ctype, copy=False) / scale.astype(ctype, copy=False))
    t += xp.asarray(zero).astype(ctype)
    return xp.clip(t, qmin, qmax).astype(np.int8)


def dequantize(q: Any, scale: Any, zero: Any, dtype: Any = None) -> np.ndarray:
    """x̂ = s · (q − z), in ``dtype`` (default: the scale's float dtype). q − z is taken in
    int32 so that int8 operands never wrap around. On a device when any of q, scale,
    zero is there (the others are uploaded)."""
    xp = _xp(q, scale, zero)
    scale = xp.asarray(scale)
    dtype = np.dtype(dtype) if dtype is not None else (
        scale.dtype if np.issubdtype(scale.dtype, np.floating) else np.dtype(np.float32))
    diff = xp.asarray(q).astype(np.int32) - xp.asarray(zero).astype(np.int32)
    return (scale.astype(dtype) * diff.astype(dtype)).astype(dtype, copy=False)


def fake_quantize(x: Any, scale: Any, zero: Any, bits: int, symmetric: bool) -> np.ndarray:
    """dequantize(quantize(x)) in x's float dtype: the value the grid holds for x.
    Plain arrays, no autograd (QAT builds its straight-through Function on top)."""
    xa = _float_array(x, "x", "fake_quantize")
    return dequantize(quantize(xa, scale, zero, bits, symmetric), scale, zero, xa.dtype)


# ---------------------------------------------------------------------------- int4 packing


def pack_int4(q: Any) -> np.ndarray:
    """Two 4-bit values per byte along the last dim: element 2i in the low nibble, 2i+1
    in the high nibble, each as its two's-complement nibble (q & 0xF). An odd last dim is
    padded with one 0. Values must lie in [−8, 7]."""
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise TypeError(f"pack_int4: expected an integer array, got {q.dtype}")
    if q.ndim == 0:
        raise ValueError("pack_int4: expected at least one dimension, got a 0-d array")
    if q.size and (q.min() < -8 or q.max() > 7):
        raise ValueError(f"pack_int4: values must lie in [-8, 7], got [{q.min()}, {q.max()}]")
    nib = (q.astype(np.int16) & 0xF).astype(np.uint8)
    if nib.shape[-1] % 2:
        nib = np.concatenate([nib, np.zeros(nib.shape[:-1] + (1,), np.uint8)], axis=-1)
    return (nib[..., 0::2] | (nib[..., 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: Any, n: int) -> np.ndarray:
    """The int8 values :func:`pack_int4` stored (sign-extended nibbles), the first ``n``
    of the last dim (n must be 2·bytes or 2·bytes − 1); a device (CuPy) array is
    unpacked on the device."""
    xp = backend_for_array(packed).xp if is_device_array(packed) else np
    if xp is np:
        packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise TypeError(f"unpack_int4: expected a uint8 array, got {packed.dtype}")
    if packed.ndim == 0:
        raise ValueError("unpack_int4: expected at least one dimension, got a 0-d array")
    m = packed.shape[-1]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 * m - 1 <= n <= 2 * m:
        raise ValueError(f"unpack_int4: n={n!r} does not fit {m} packed bytes "
                         f"(expected {max(2 * m - 1, 0)} or {2 * m})")
    out = xp.empty(packed.shape[:-1] + (2 * m,), np.int8)
    out[..., 0::2] = (packed & 0xF).astype(np.int8)
    out[..., 1::2] = (packed >> 4).astype(np.int8)
    out = (out ^ 8) - np.int8(8)  # sign-extend a nibble: 0..7 stay, 8..15 → −8..−1
    return out[..., :n].astype(np.int8)


# ---------------------------------------------------------------------------- weights


def _check_granularity(shape: tuple, granularity: Any, group_size: Any, where: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"{where}: granularity={granularity!r} is not one of {GRANULARITIES}")
    if len(shape) == 0:
        raise ValueError(f"{where}: cannot quantize a 0-d array (shape {shape})")
    if granularity in ("channel", "group") and len(shape) != 2:
        raise ValueError(f"{where}: {granularity} granularity needs a 2-D weight (out, in), "
                         f"got shape {shape}")
    if granularity != "group":
        if group_size is not None:
            raise ValueError(f"{where}: group_size={group_size!r} given with "
                             f"granularity={granularity!r} (only 'group' takes one)")
        return
    if group_size is None:
        raise ValueError(f"{where}: group granularity needs a group_size (weight shape {shape})")
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) \
            or group_size <= 0 or shape[1] % group_size:
        raise ValueError(f"{where}: group_size={group_size!r} must be a positive integer "
                         f"dividing the input dim of the weight of shape {shape}")


def _param_shape(shape: tuple, granularity: str, group_size: int | None) -> tuple:
    if granularity == "tensor":
        return ()
    if granularity == "channel":
        return (shape[0],)
    return (shape[0], shape[1] // group_size)


def _blocks(w: np.ndarray, granularity: str, group_size: int | None) -> np.ndarray:
    """w viewed as (units, elements): the rows that share one scale each."""
    if granularity == "tensor":
        return w.reshape(1, -1)
    if granularity == "channel":
        return w.reshape(w.shape[0], -1)
    return w.reshape(-1, group_size)


def quantize_weight(w: Any, bits: int = 8, symmetric: bool = True, granularity: str = "channel",
                    group_size: int | None = None, observer: Any = None) -> QuantizedTensor:
    """Quantize a weight (shape (out, in) for "channel" and "group"; any shape for
    "tensor") on the grid of its min/max at the chosen granularity, or of the range an
    ``observer`` finds (it is reset and fed the weight's blocks as a 2-D (units,
    elements) array; its granularity must be "tensor" for "tensor", else "channel").
    4-bit values are packed two per byte."""
    where = "quantize_weight"
    bits = _check_bits(bits, where)
    w = _float_array(w, "w", where)
    _check_granularity(w.shape, granularity, group_size, where)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{where}: the weight of shape {w.shape} holds NaN or inf")
    blocks = _blocks(w, granularity, group_size)
    if observer is None:
        scale, zero = qparams_from_range(blocks.min(axis=1), blocks.max(axis=1), bits, symmetric)
    else:
        want = "tensor" if granularity == "tensor" else "channel"
        if getattr(observer, "granularity", None) != want:
            raise ValueError(f"{where}: a {granularity} weight needs an observer of "
                             f"granularity {want!r}, got {getattr(observer, 'granularity', None)!r}")
        observer.reset()
        observer.observe(blocks if want == "channel" else w)
        scale, zero = observer.qparams(bits, symmetric)
        scale = np.broadcast_to(np.asarray(scale, _scale_dtype(w)), (blocks.shape[0],))
        zero = np.broadcast_to(np.asarray(zero, np.int32), (blocks.shape[0],))
    q = quantize(blocks, scale.reshape(-1, 1), zero.reshape(-1, 1), bits, symmetric)
    q = q.reshape(w.shape)
    pshape = _param_shape(w.shape, granularity, group_size)
    return QuantizedTensor(
        q=pack_int4(q) if bits == 4 else q,
        scale=scale.reshape(pshape).copy(),
        zero=zero.reshape(pshape).copy(),
        bits=bits, symmetric=bool(symmetric), granularity=granularity,
        group_size=None if group_size is None else int(group_size),
        shape=tuple(int(d) for d in w.shape), dtype=w.dtype.name)


@dataclass
class QuantizedTensor:
    """A quantized weight: its integers, scales and zero points, and what it was.

    q       int8 array of ``shape``; for bits == 4 the packed uint8 array (last dim
            ceil(in / 2), :func:`pack_int4`)
    scale   float32/float64, shape () / (out,) / (out, in // group_size) by granularity
    zero    int32 of the scale's shape (all 0 when symmetric; then not stored or counted)
    shape, dtype   the original float shape and dtype name
    """

    q: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    bits: int
    symmetric: bool
    granularity: str
    group_size: int | None
    shape: tuple
    dtype: str

    @property
    def packed(self) -> bool:
        return self.bits == 4

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def int_values(self) -> np.ndarray:
        """The integers as int8 of ``shape`` (unpacked when 4-bit)."""
        if self.packed:
            return unpack_int4(self.q, self.shape[-1])
        return self.q

    def _expanded(self, a: np.ndarray) -> np.ndarray:
        """A per-block parameter broadcast against the weight of ``shape``."""
        if self.granularity == "tensor":
            return a
        if self.granularity == "channel":
            return a.reshape(-1, 1)
        return _xp(a).repeat(a, self.group_size, axis=1)

    def dequantize(self) -> np.ndarray:
        """x̂ = s · (q − z) as an array of the original shape and dtype."""
        return dequantize(self.int_values(), self._expanded(self.scale),
                          self._expanded(self.zero), self.scale.dtype).astype(self.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes stored: integers + scales (+ zero points when asymmetric)."""
        return int(self.q.nbytes + self.scale.nbytes + (0 if self.symmetric else self.zero.nbytes))

    @property
    def bits_per_weight(self) -> float:
        """nbytes · 8 / numel: the storage cost of one weight, scales included."""
        return self.nbytes * 8 / self.numel

    def to_state(self) -> dict[str, np.ndarray]:
        """The arrays to save: ``q``, ``scale`` and (asymmetric only) ``zero``."""
        state = {"q": self.q, "scale": self.scale}
        if not self.symmetric:
            state["zero"] = self.zero
        return state

    def meta(self) -> dict:
        """Everything else, JSON-able."""
        return {"format": STATE_FORMAT, "bits": self.bits, "symmetric": self.symmetric,
                "granularity": self.granularity, "group_size": self.group_size,
                "shape": list(self.shape), "dtype": self.dtype, "packed": self.packed}

    @classmethod
    def from_state(cls, state: dict, meta: dict) -> QuantizedTensor:
        """Rebuild from :meth:`to_state` and :meth:`meta`; every array's dtype and shape
        is checked against the metadata (a ValueError names what does not match)."""
        where = "QuantizedTensor.from_state"
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            raise ValueError(f"{where}: metadata is not {STATE_FORMAT!r}: {meta!r}")
        try:
            bits = _check_bits(meta["bits"], where)
            symmetric, granularity = meta["symmetric"], meta["granularity"]
            group_size, dtype = meta["group_size"], np.dtype(meta["dtype"])
            shape = tuple(int(d) for d in meta["shape"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: incomplete or malformed metadata {meta!r} ({e})") from e
        if not isinstance(symmetric, bool) or not np.issubdtype(dtype, np.floating):
            raise ValueError(f"{where}: malformed metadata {meta!r}")
        _check_granularity(shape, granularity, group_size, where)
        pshape = _param_shape(shape, granularity, group_size)
        qshape = shape[:-1] + ((shape[-1] + 1) // 2,) if bits == 4 else shape
        want = {"q": (np.uint8 if bits == 4 else np.int8, qshape)}
        want["scale"] = (np.float64 if dtype == np.float64 else np.float32, pshape)
        if not symmetric:
            want["zero"] = (np.int32, pshape)
        extra = set(state) - set(want)
        if extra:
            raise ValueError(f"{where}: unexpected arrays {sorted(extra)}")
        arrays = {}
        for name, (dt, shp) in want.items():
            if name not in state:
                raise ValueError(f"{where}: missing array {name!r}")
            a = np.asarray(state[name])
            if a.dtype != dt or a.shape != shp:
                raise ValueError(f"{where}: {name!r} is {a.dtype}{a.shape}, "
                                 f"expected {np.dtype(dt)}{shp}")
            arrays[name] = a
        scale = arrays["scale"]
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError(f"{where}: scales must be positive and finite")
        qmin, qmax = qrange(bits, symmetric)
        zero = arrays.get("zero", np.zeros(pshape, np.int32))
        if zero.size and (zero.min() < qmin or zero.max() > qmax):
            raise ValueError(f"{where}: zero points outside [{qmin}, {qmax}]")
        out = cls(q=arrays["q"], scale=scale, zero=zero, bits=bits, symmetric=symmetric,
                  granularity=granularity, group_size=group_size, shape=shape, dtype=dtype.name)
        ints = out.int_values()
        if ints.size and (ints.min() < qmin or ints.max() > qmax):
            raise ValueError(f"{where}: integers outside [{qmin}, {qmax}]")
        return out
