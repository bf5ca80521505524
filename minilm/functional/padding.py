"""Padding and triangular masks: pad (constant, reflect, replicate, circular),
triu, tril.

pad's backward takes back the slice of the gradient at x's entries (constant mode),
or sums each padded entry's gradient onto the entry it copies (the other modes, with
``xp.add.at``). triu/tril's backward masks the gradient as the forward masked x.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from ..autograd import Function
from ..tensor import Tensor
from ._util import int_tuple, take_backward

__all__ = ["pad", "tril", "triu"]


# ---------------------------------------------------------------------------- padding


def _pad_map(xp: Any, mode: str, n: int, lo: int, hi: int) -> Any:
    """For each output position along a dim, the input position it copies."""
    j = xp.arange(-lo, n + hi)
    if mode == "replicate":
        return xp.clip(j, 0, n - 1)
    if mode == "circular":
        return j % n
    j = xp.abs(j)  # reflect: mirror at 0, then at n - 1 (the edge is not repeated)
    return xp.where(j > n - 1, 2 * (n - 1) - j, j)


def _check_pad(x: Tensor, pad_t: tuple, mode: str) -> list:
    """pad's (lo, hi) pairs, first dim first, checked against x's shape and the mode."""
    if len(pad_t) % 2 or len(pad_t) // 2 > x.ndim:
        raise ValueError(
            f"pad: pad {pad_t} must have an even length of at most 2 * ndim for a tensor "
            f"of shape {x.shape}"
        )
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise ValueError(
            f"pad: mode must be 'constant', 'reflect', 'replicate' or 'circular', got {mode!r}"
        )
    k = len(pad_t) // 2
    pairs = [(0, 0)] * (x.ndim - k) + [(pad_t[2 * i], pad_t[2 * i + 1]) for i in range(k)][::-1]
    for d, ((lo, hi), n) in enumerate(zip(pairs, x.shape)):
        if lo == hi == 0:
            continue
        limit = {"constant": None, "reflect": n - 1, "replicate": None, "circular": n}[mode]
        if (max(-lo, 0) + max(-hi, 0) > n or (mode != "constant" and n == 0)
                or (limit is not None and max(lo, hi) > limit)):
            raise ValueError(
                f"pad: padding {(lo, hi)} of dim {d} (size {n}) is invalid in mode "
                f"{mode!r} for a tensor of shape {x.shape}"
            )
    return pairs


class Pad(Function):
    """y = x with ``pads[d] = (lo, hi)`` entries added before/after along each dim d
    (negative values crop); dx = the slice of g at x's entries (constant mode), or g
    summed back onto the entries each padded entry copies (reflect/replicate/circular)."""

    @staticmethod
    def forward(ctx, x, pads, mode, value):
        xp = ctx.xp
        ctx.in_shape, ctx.pads, ctx.mode = x.shape, pads, mode
        if mode == "constant":
            crop = tuple(slice(max(-lo, 0), n - max(-hi, 0))
                         for (lo, hi), n in zip(pads, x.shape))
            widths = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
            return xp.pad(x[crop], widths, mode="constant", constant_values=value)
        ctx.maps = [None if lo == hi == 0 else _pad_map(xp, mode, n, lo, hi)
                    for (lo, hi), n in zip(pads, x.shape)]
        for d, m in enumerate(ctx.maps):
            if m is not None:
                x = xp.take(x, m, axis=d)
        return x

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        if ctx.mode == "constant":
            keep = tuple(slice(max(lo, 0), max(lo, 0) + n - max(-lo, 0) - max(-hi, 0))
                         for (lo, hi), n in zip(ctx.pads, ctx.in_shape))
            widths = [(max(-lo, 0), max(-hi, 0)) for lo, hi in ctx.pads]
            gx = g[keep]
            if any(a or b for a, b in widths):
                gx = xp.pad(gx, widths)
            return gx, None, None, None
        for d, m in enumerate(ctx.maps):
            if m is not None:
                g = take_backward(xp, g, m, ctx.in_shape[d], d)
        return g, None, None, None


def pad(x: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """``torch.nn.functional.pad``: ``pad = (left, right, top, bottom, ...)`` pads the
    last dim first; modes "constant" (with ``value``), "reflect", "replicate", "circular"."""
    return Pad.apply(x, _check_pad(x, int_tuple("pad", (pad,)), mode), mode, value)


# ---------------------------------------------------------------------------- triangles


def _tri_keep(op: str, xp: Any, shape: tuple, k: int, upper: bool) -> Any:
    """Bool (rows, cols) mask of the kept entries: col - row >= k (upper) or <= k."""
    if len(shape) < 2:
        raise ValueError(f"{op}: needs a tensor with at least 2 dims, got shape {shape}")
    rows = xp.arange(shape[-2]).reshape(-1, 1)
    cols = xp.arange(shape[-1]).reshape(1, -1)
    return cols - rows >= k if upper else cols - rows <= k


class Triu(Function):
    """y = x where col - row >= k else 0 (on the last two dims);  dx = g masked alike."""

    @staticmethod
    def forward(ctx, x, diagonal):
        ctx.keep = _tri_keep("triu", ctx.xp, x.shape, diagonal, upper=True)
        return ctx.xp.where(ctx.keep, x, ctx.xp.zeros((), dtype=x.dtype))

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.where(ctx.keep, g, ctx.xp.zeros((), dtype=g.dtype)), None


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    """Upper triangle of the last two dims (``diagonal`` > 0 moves it up-right)."""
    return Triu.apply(x, operator.index(diagonal))


class Tril(Function):
    """y = x where col - row <= k else 0 (on the last two dims);  dx = g masked alike."""

    @staticmethod
    def forward(ctx, x, diagonal):
        ctx.keep = _tri_keep("tril", ctx.xp, x.shape, diagonal, upper=False)
        return ctx.xp.where(ctx.keep, x, ctx.xp.zeros((), dtype=x.dtype))

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.where(ctx.keep, g, ctx.xp.zeros((), dtype=g.dtype)), None


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    """Lower triangle of the last two dims (``diagonal`` > 0 moves it up-right)."""
    return Tril.apply(x, operator.index(diagonal))
