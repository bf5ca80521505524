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

__all__ = ["autocast_dtype", "round_to", "round_to_low_precision"]

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
