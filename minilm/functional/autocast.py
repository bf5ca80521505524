"""Mixed precision, the arithmetic: rounding to float16 / bfloat16 and the autocast state
that the matrix products consult (the public API is ``minilm.amp``).

Inside ``minilm.amp.autocast(dtype)``, the matrix products (``linear``, ``matmul``,
``einsum``) run "in low precision": their floating inputs are rounded to ``dtype``, the
product is accumulated in float32 (as tensor cores and bf16 GEMMs do) and its result is
rounded to ``dtype`` again. Everything else (norms, softmax, losses, reductions, the
optimizer) stays in float32. The backward of each rounding rounds the incoming gradient
to ``dtype`` as well: the gradient of a low-precision tensor is itself low precision.
This is what makes loss scaling necessary in float16: a gradient below 2^-24 (float16's
smallest subnormal) becomes 0, and one above 65504 becomes inf.

Storage stays float32 (or float64): a "float16 tensor" here is a float32 array whose
values are float16 numbers. NumPy has no bfloat16 and no fast float16 GEMM, so this
emulation is how the CPU backends run mixed precision; the numbers are the ones a real
float16 / bfloat16 GEMM with float32 accumulation gives.

    round_fp16(x) = float32(float16(x))            (round to nearest even; |x| > 65504 -> inf)
    round_bf16(x) = the float32 whose low 16 bits are 0, rounded to nearest even:
                    u = bits(x);  u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
                    (NaN kept NaN)
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..autograd import Function
from ..tensor import Tensor

__all__ = ["autocast_dtype", "native_linear", "round_to", "round_to_low_precision"]

LOW_DTYPES = ("float16", "bfloat16")


class _State(threading.local):
    dtype: str | None = None  # the low-precision dtype in force, or None


_state = _State()


def autocast_dtype() -> str | None:
    """"float16" / "bfloat16" inside ``minilm.amp.autocast`` (this thread), else None."""
    return _state.dtype


def _round_fp16(xp: Any, a: Any) -> Any:
    with np.errstate(over="ignore"):  # overflow to inf is float16's behaviour
        return a.astype(xp.float16).astype(a.dtype)


def _round_bf16(xp: Any, a: Any) -> Any:
    a32 = a.astype(xp.float32, copy=False)
    u = a32.view(xp.uint32)
    rounded = (u + (xp.uint32(0x7FFF) + ((u >> xp.uint32(16)) & xp.uint32(1)))) \
        & xp.uint32(0xFFFF0000)
    out = rounded.view(xp.float32)
    out = xp.where(xp.isnan(a32), a32, out)
    return out.astype(a.dtype, copy=False)


def round_array(xp: Any, a: Any, dtype: str) -> Any:
    """``a`` rounded to ``dtype`` ("float16" or "bfloat16"), in ``a``'s own dtype."""
    if dtype == "float16":
        return _round_fp16(xp, a)
    if dtype == "bfloat16":
        return _round_bf16(xp, a)
    raise ValueError(f"round_to: dtype must be one of {LOW_DTYPES}, got {dtype!r}")


class RoundTo(Function):
    """y = round(x) to a low-precision format; dx = round(g) (the gradient of a
    low-precision tensor is low precision too)."""

    @staticmethod
    def forward(ctx, x, *, dtype):
        ctx.dtype = dtype
        return round_array(ctx.xp, x, dtype)

    @staticmethod
    def backward(ctx, g):
        return round_array(ctx.xp, g, ctx.dtype)


def round_to(x: Tensor, dtype: str) -> Tensor:
    """``x`` rounded to float16 or bfloat16 values (kept in x's dtype), differentiably."""
    if dtype not in LOW_DTYPES:
        raise ValueError(f"round_to: dtype must be one of {LOW_DTYPES}, got {dtype!r}")
    return RoundTo.apply(x, dtype=dtype)


def round_to_low_precision(x: Any) -> Any:
    """Inside autocast, a floating Tensor rounded to the autocast dtype; anything else
    (no autocast, None, integers) unchanged. The matrix products call this on their
    inputs and their result."""
    dtype = _state.dtype
    if dtype is None or not isinstance(x, Tensor) or x.dtype.kind != "f":
        return x
    return RoundTo.apply(x, dtype=dtype)


class NativeLowLinear(Function):
    """``linear`` inside autocast on a backend with real low-precision GEMMs (the CuPy
    backend in float16: cuBLAS on tensor cores, float32 accumulation, CuPy's default
    compute type for half products):
    y = float(half(x) half(W)^T) + half(b), rounded to half;  with h = half(g):
    dx = float(h half(W)), dW = float(h^T half(x)), db = half(sum h).
    The same numbers as the emulated path (``round_to`` around ``linear``) but for the
    order of the float32 sums and one more rounding (the product is written in half
    before the bias is added); the half copies of x and W are what is kept for the
    backward (half the memory of float32)."""

    @staticmethod
    def forward(ctx, x, w, b=None, *, low):
        if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: input shape {x.shape} does not match weight shape "
                             f"{w.shape} (expected input (..., {w.shape[1] if w.ndim == 2 else '?'}))")
        ctx.low, ctx.out_dtype, ctx.has_bias = low, x.dtype, b is not None
        rows = 1
        for n in x.shape[:-1]:
            rows *= n
        x16 = x.reshape(rows, x.shape[-1]).astype(low)
        w16 = w.astype(low)
        ctx.save_for_backward(x16, w16)
        ctx.x_shape = x.shape
        y = ctx.xp.matmul(x16, w16.T)
        if b is not None:
            y = (y.astype(ctx.out_dtype) + b.astype(low).astype(ctx.out_dtype)).astype(low)
        return y.astype(ctx.out_dtype).reshape(x.shape[:-1] + (w.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x16, w16 = ctx.saved
        h = g.reshape(x16.shape[0], w16.shape[0]).astype(ctx.low)
        xp, out = ctx.xp, ctx.out_dtype
        gx = xp.matmul(h, w16).astype(out).reshape(ctx.x_shape) if ctx.needs_input_grad[0] \
            else None
        gw = xp.matmul(h.T, x16).astype(out) if ctx.needs_input_grad[1] else None
        if not ctx.has_bias:
            return gx, gw
        gb = None
        if ctx.needs_input_grad[2]:
            gb = h.astype(out).sum(axis=0).astype(ctx.low).astype(out)
        return gx, gw, gb


def native_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor | None:
    """Inside autocast, ``linear`` in the backend's own low-precision dtype when it has
    one for the autocast dtype (``backend.native_low_precision``); None otherwise (the
    caller then emulates the rounding)."""
    dtype = _state.dtype
    native = getattr(x.backend, "native_low_precision", {}).get(dtype)
    if native is None or x.dtype.kind != "f" or weight.dtype != x.dtype:
        return None
    args = (x, weight) if bias is None else (x, weight, bias)
    return NativeLowLinear.apply(*args, low=native)
