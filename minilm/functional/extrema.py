"""Extrema: max and min (over dims, or along one dim with the index where each is),
amax/amin, argmax/argmin.

An extremum's gradient goes to the entries that hold it: shared evenly among ties for
``amax``/``amin`` (and ``max(x)``/``min(x)`` without a dim), to the one returned index
for ``max(x, dim)``/``min(x, dim)``. argmax/argmin return int64 indices and are not
differentiable. Dims follow PyTorch, as in ``reduce.py``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..autograd import Function
from ..tensor import Tensor
from ._util import check_nonempty, keep_shape, one_axis, reduced_axes
from .math import maximum, minimum

__all__ = [
    "amax",
    "amin",
    "argmax",
    "argmin",
    "max",
    "min",
]


class MaxResult(NamedTuple):
    """``max(x, dim)``: the maxima and their indices (like ``torch.return_types.max``)."""

    values: Tensor
    indices: Tensor


class MinResult(NamedTuple):
    """``min(x, dim)``: the minima and their indices (like ``torch.return_types.min``)."""

    values: Tensor
    indices: Tensor


# ---------------------------------------------------------------------------- amax and amin


def _split_evenly(ctx: Any, g: Any) -> Any:
    """Gradient of an extremum over ``ctx.axes``: g shared evenly by the k entries that
    equal it (k = 1 without ties); a NaN extremum goes to the NaN entries."""
    x, y = ctx.saved
    xp = ctx.xp
    keep = keep_shape(x.shape, ctx.axes)
    y = y.reshape(keep)
    hit = (x == y) | (xp.isnan(x) & xp.isnan(y))
    k = xp.sum(hit, axis=ctx.axes, keepdims=True).astype(g.dtype)
    return xp.where(hit, g.reshape(keep) / k, 0)


class Amax(Function):
    """y = max of x over ``axes``;  dx = g / k at each of the k entries equal to y, 0
    elsewhere (ties share the gradient evenly)."""

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        y = ctx.xp.amax(x, axis=axes, keepdims=keepdim)
        ctx.axes = axes
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        return _split_evenly(ctx, g)


def amax(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Maximum over ``dim`` (int, tuple or None = all); ties share the gradient evenly."""
    axes = reduced_axes("amax", dim, x.shape)
    check_nonempty("amax", x.shape, axes)
    return Amax.apply(x, axes=axes, keepdim=keepdim)


class Amin(Function):
    """y = min of x over ``axes``;  dx = g / k at each of the k entries equal to y, 0
    elsewhere (ties share the gradient evenly)."""

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        y = ctx.xp.amin(x, axis=axes, keepdims=keepdim)
        ctx.axes = axes
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        return _split_evenly(ctx, g)


def amin(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Minimum over ``dim`` (int, tuple or None = all); ties share the gradient evenly."""
    axes = reduced_axes("amin", dim, x.shape)
    check_nonempty("amin", x.shape, axes)
    return Amin.apply(x, axes=axes, keepdim=keepdim)


# ---------------------------------------------------------------------------- max and min along a dim


def _extremum_along(ctx: Any, x: Any, axis: int | None, keepdim: bool, find: Any) -> tuple:
    """(values, int64 indices) of the first extremum along ``axis``; ``find`` is
    ``xp.argmax`` or ``xp.argmin``."""
    xp = ctx.xp
    ctx.shape, ctx.axis = x.shape, axis
    if axis is None:  # a 0-d tensor: its only element, at index 0
        return x.copy(), xp.zeros((), dtype=xp.int64)
    idx = xp.expand_dims(find(x, axis=axis), axis).astype(xp.int64)
    values = xp.take_along_axis(x, idx, axis=axis)
    ctx.save_for_backward(idx)
    if not keepdim:
        values, idx = values.squeeze(axis), idx.squeeze(axis)
    return values, idx


def _to_index(ctx: Any, g: Any) -> Any:
    """Gradient of values taken at one index per row: g at that index, 0 elsewhere."""
    if ctx.axis is None:
        return g
    (idx,) = ctx.saved
    xp = ctx.xp
    n = ctx.shape[ctx.axis]
    positions = xp.arange(n).reshape([n if i == ctx.axis else 1 for i in range(len(ctx.shape))])
    g = g.reshape(idx.shape)
    return xp.where(positions == idx, g, 0)


class MaxDim(Function):
    """(values, indices) = max of x along ``axis`` and the first index where it is;
    dx = g at the returned index, 0 elsewhere."""

    @staticmethod
    def forward(ctx, x, axis, keepdim):
        return _extremum_along(ctx, x, axis, keepdim, ctx.xp.argmax)

    @staticmethod
    def backward(ctx, g, g_indices):
        return _to_index(ctx, g)


def max(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    """``max(x)``: the largest element (0-d; tied maxima share the gradient evenly).
    ``max(x, dim)``: ``(values, indices)`` along ``dim``, the gradient going to the
    returned (first) index. ``max(x, other_tensor)`` is ``maximum(x, other)``."""
    if isinstance(dim, Tensor):
        return maximum(x, dim)
    if dim is None:
        return amax(x, None, keepdim)
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"max: dim must be a single int, got {dim!r}; use amax for several dims")
    axis = one_axis("max", dim, x.shape)
    check_nonempty("max", x.shape, () if axis is None else (axis,))
    return MaxResult(*MaxDim.apply(x, axis=axis, keepdim=keepdim))


class MinDim(Function):
    """(values, indices) = min of x along ``axis`` and the first index where it is;
    dx = g at the returned index, 0 elsewhere."""

    @staticmethod
    def forward(ctx, x, axis, keepdim):
        return _extremum_along(ctx, x, axis, keepdim, ctx.xp.argmin)

    @staticmethod
    def backward(ctx, g, g_indices):
        return _to_index(ctx, g)


def min(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    """``min(x)``: the smallest element (0-d; tied minima share the gradient evenly).
    ``min(x, dim)``: ``(values, indices)`` along ``dim``, the gradient going to the
    returned (first) index. ``min(x, other_tensor)`` is ``minimum(x, other)``."""
    if isinstance(dim, Tensor):
        return minimum(x, dim)
    if dim is None:
        return amin(x, None, keepdim)
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"min: dim must be a single int, got {dim!r}; use amin for several dims")
    axis = one_axis("min", dim, x.shape)
    check_nonempty("min", x.shape, () if axis is None else (axis,))
    return MinResult(*MinDim.apply(x, axis=axis, keepdim=keepdim))


# ---------------------------------------------------------------------------- argmax and argmin (no gradient)


def _arg_extremum(op: str, find_name: str, x: Tensor, dim: Any, keepdim: bool) -> Tensor:
    xp = x.backend.xp
    find = getattr(xp, find_name)
    if dim is None:
        check_nonempty(op, x.shape, tuple(range(x.ndim)))
        out = find(x.data.reshape(-1))
        if keepdim:
            out = xp.asarray(out).reshape((1,) * x.ndim)
    else:
        axis = one_axis(op, dim, x.shape)
        if axis is None:
            out = find(x.data)
        else:
            check_nonempty(op, x.shape, (axis,))
            out = find(x.data, axis=axis)
            if keepdim:
                out = xp.expand_dims(out, axis)
    return Tensor._make(xp.asarray(out, dtype=xp.int64))


def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """int64 index of the (first) maximum along ``dim``; of the flattened tensor when
    ``dim`` is None. Not differentiable."""
    return _arg_extremum("argmax", "argmax", x, dim, keepdim)


def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """int64 index of the (first) minimum along ``dim``; of the flattened tensor when
    ``dim`` is None. Not differentiable."""
    return _arg_extremum("argmin", "argmin", x, dim, keepdim)
