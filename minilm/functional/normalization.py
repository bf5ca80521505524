"""Normalisation ops: layer norm and RMS norm over the last dims.

The reference arithmetic is the two kernels per op below, written against ``xp`` as the
formulas read and registered by name (``@kernel("layer_norm")``); the op calls
``ctx.backend.layer_norm(...)``, that function on the NumPy backend and a fused override
on the Numba backend (minilm/backends/interface.py). Names and semantics follow
``torch.nn.functional``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..autograd import Function
from ..backends.interface import kernel
from ..tensor import Tensor

__all__ = ["layer_norm", "rms_norm"]


def _fold_trailing(x: Any, n: int) -> Any:
    """View ``x`` with its last ``n`` dims folded into one (layer norm over all of them)."""
    if n == 1:
        return x
    return x.reshape(x.shape[: x.ndim - n] + (-1,))


def _normalized_shape(op: str, x: Tensor, normalized_shape: int | Sequence[int],
                      params: dict) -> tuple:
    """Check that ``normalized_shape`` is the tail of ``x.shape`` and that each
    parameter has exactly that shape; returns it as a tuple."""
    ns = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(int(n) for n in normalized_shape)
    if len(ns) == 0 or len(ns) > x.ndim or x.shape[x.ndim - len(ns):] != ns:
        raise ValueError(
            f"{op}: normalized_shape {ns} must be the last dims of the input, whose shape "
            f"is {x.shape}"
        )
    for name, p in params.items():
        if p is not None and p.shape != ns:
            raise ValueError(f"{op}: {name} has shape {p.shape}, expected normalized_shape {ns}")
    return ns


# ---------------------------------------------------------------------------- layer norm


@kernel("layer_norm")
def layer_norm_kernel(be, x, weight, bias, eps):
    """y = (x - mean) * rstd * weight + bias over the last dim, rstd = 1/sqrt(var + eps)
    (biased variance); returns (y, mean, rstd), the statistics of shape (..., 1)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) * (x - mean)).mean(axis=-1, keepdims=True)
    rstd = 1.0 / be.xp.sqrt(var + eps)
    y = (x - mean) * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mean, rstd


@kernel("layer_norm_backward")
def layer_norm_backward_kernel(be, gy, x, weight, mean, rstd, need_wb=True):
    """With xh = (x - mean) * rstd and g = gy * w:
    dx = rstd * (g - mean(g) - xh * mean(g * xh));  dw = sum(gy * xh);  db = sum(gy),
    the sums over the leading dims (dw, db None unless ``need_wb``)."""
    xh = (x - mean) * rstd
    g = gy * weight if weight is not None else gy
    dx = rstd * (g - g.mean(axis=-1, keepdims=True)
                 - xh * (g * xh).mean(axis=-1, keepdims=True))
    dw = db = None
    if need_wb:
        lead = tuple(range(gy.ndim - 1))
        dw = (gy * xh).sum(axis=lead)
        db = gy.sum(axis=lead)
    return dx, dw, db


class LayerNormFunction(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the normalised (last) dims;
    with xh the normalised x and gw = g w:  dx = rstd (gw - mean(gw) - xh mean(gw xh)),
    dw = sum(g xh), db = sum(g) over the leading dims."""

    @staticmethod
    def forward(ctx, x, weight, bias, *, ndims, eps):
        x2 = _fold_trailing(x, ndims)
        w2 = None if weight is None else weight.reshape(-1)
        b2 = None if bias is None else bias.reshape(-1)
        y, mean, rstd = ctx.backend.layer_norm(x2, w2, b2, eps)
        ctx.save_for_backward(x2, w2, mean, rstd)
        ctx.shapes = x.shape, None if weight is None else weight.shape, \
            None if bias is None else bias.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        x2, w2, mean, rstd = ctx.saved
        x_shape, w_shape, b_shape = ctx.shapes
        need = ctx.needs_input_grad
        dx, dw, db = ctx.backend.layer_norm_backward(
            g.reshape(x2.shape), x2, w2, mean, rstd, bool(need[1] or need[2]))
        return (dx.reshape(x_shape) if need[0] else None,
                dw.reshape(w_shape) if need[1] else None,
                db.reshape(b_shape) if need[2] else None)


def layer_norm(x: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the last ``len(normalized_shape)`` dims to zero mean and unit
    variance (biased), then scale by ``weight`` and shift by ``bias``."""
    ns = _normalized_shape("layer_norm", x, normalized_shape, {"weight": weight, "bias": bias})
    return LayerNormFunction.apply(x, weight, bias, ndims=len(ns), eps=eps)


# ---------------------------------------------------------------------------- RMS norm


@kernel("rms_norm")
def rms_norm_kernel(be, x, weight, eps):
    """y = x * rstd * weight with rstd = 1/sqrt(mean(x^2) + eps) over the last dim;
    returns (y, rstd), rstd of shape (..., 1)."""
    rstd = 1.0 / be.xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    y = x * rstd
    if weight is not None:
        y = y * weight
    return y, rstd


@kernel("rms_norm_backward")
def rms_norm_backward_kernel(be, gy, x, weight, rstd, need_w=True):
    """With xh = x * rstd and g = gy * w:  dx = rstd * (g - xh * mean(g * xh));
    dw = sum(gy * xh) over the leading dims (None unless ``need_w``)."""
    xh = x * rstd
    g = gy * weight if weight is not None else gy
    dx = rstd * (g - xh * (g * xh).mean(axis=-1, keepdims=True))
    dw = (gy * xh).sum(axis=tuple(range(gy.ndim - 1))) if need_w else None
    return dx, dw


class RMSNormFunction(Function):
    """y = x / sqrt(mean(x^2) + eps) * w over the normalised (last) dims;
    with xh = x rstd and gw = g w:  dx = rstd (gw - xh mean(gw xh)), dw = sum(g xh)."""

    @staticmethod
    def forward(ctx, x, weight, *, ndims, eps):
        x2 = _fold_trailing(x, ndims)
        w2 = None if weight is None else weight.reshape(-1)
        y, rstd = ctx.backend.rms_norm(x2, w2, eps)
        ctx.save_for_backward(x2, w2, rstd)
        ctx.shapes = x.shape, None if weight is None else weight.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        x2, w2, rstd = ctx.saved
        x_shape, w_shape = ctx.shapes
        dx, dw = ctx.backend.rms_norm_backward(
            g.reshape(x2.shape), x2, w2, rstd, bool(ctx.needs_input_grad[1]))
        dx = dx.reshape(x_shape) if ctx.needs_input_grad[0] else None
        dw = dw.reshape(w_shape) if ctx.needs_input_grad[1] else None
        return dx, dw


def rms_norm(x: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
             eps: float = 1e-6) -> Tensor:
    """Divide by the root mean square over the last ``len(normalized_shape)`` dims,
    then scale by ``weight`` (no centring, no bias)."""
    ns = _normalized_shape("rms_norm", x, normalized_shape, {"weight": weight})
    return RMSNormFunction.apply(x, weight, ndims=len(ns), eps=eps)
