"""Reductions: sum, mean, var, std, max/min (with indices), amax/amin, argmax/argmin,
logsumexp, cumsum, prod, any, all.

Each differentiable reduction is one Function class whose docstring gives the forward
formula and the gradient. The gradient of a reduction is the incoming gradient ``g``
reshaped so that the reduced dims have size 1 (``keepdim`` shape) and broadcast back
over them, times the local derivative.

Dims follow PyTorch: ``dim`` is an int, a tuple of ints or ``None`` (all dims; an empty
tuple also means all dims), negative dims count from the end, and a 0-d tensor accepts
``dim=0`` or ``dim=-1``.
"""

from __future__ import annotations

import math
import operator
from typing import Any, NamedTuple

import numpy as np

from ..autograd import Function
from ..tensor import Tensor, dtype_of
from ._util import norm_dim, norm_dims

__all__ = [
    "all",
    "amax",
    "amin",
    "any",
    "argmax",
    "argmin",
    "cumsum",
    "logsumexp",
    "max",
    "mean",
    "min",
    "prod",
    "std",
    "sum",
    "var",
]


class MaxResult(NamedTuple):
    """``max(x, dim)``: the maxima and their indices (like ``torch.return_types.max``)."""

    values: Tensor
    indices: Tensor


class MinResult(NamedTuple):
    """``min(x, dim)``: the minima and their indices (like ``torch.return_types.min``)."""

    values: Tensor
    indices: Tensor


# ---------------------------------------------------------------------------- dims


def _with_shape(op: str, shape: tuple, fn: Any, *args: Any) -> Any:
    """Call a ``_util`` dim normaliser; add the tensor's shape to its error message."""
    try:
        return fn(op, *args)
    except ValueError as e:
        raise ValueError(f"{e}; the tensor has shape {shape}") from None


def _axes(op: str, dim: Any, shape: tuple) -> tuple:
    """The reduced axes as a sorted tuple; ``None`` or ``()`` means every axis."""
    ndim = len(shape)
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return tuple(range(ndim))
    try:
        if isinstance(dim, (tuple, list)):
            dim = tuple(operator.index(d) for d in dim)
        else:
            dim = operator.index(dim)
    except TypeError:
        raise TypeError(f"{op}: dim must be an int or a tuple of ints, got {dim!r}") from None
    dims = _with_shape(op, shape, norm_dims, dim, ndim)
    return () if ndim == 0 else tuple(sorted(dims))


def _axis(op: str, dim: Any, shape: tuple) -> int | None:
    """One normalised axis (``None`` for a 0-d tensor, which has no axis to index)."""
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{op}: dim must be a single int, got {dim!r}")
    try:
        dim = operator.index(dim)
    except TypeError:
        raise TypeError(f"{op}: dim must be an int, got {dim!r}") from None
    axis = _with_shape(op, shape, norm_dim, dim, len(shape))
    return None if len(shape) == 0 else axis


def _keep_shape(shape: tuple, axes: tuple) -> tuple:
    """``shape`` with the reduced ``axes`` set to 1 (the ``keepdim=True`` result shape)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _count(shape: tuple, axes: tuple) -> int:
    """How many elements each output element is reduced from."""
    return math.prod(shape[i] for i in axes)


def _out_shape(shape: tuple, axes: tuple, keepdim: bool) -> tuple:
    if keepdim:
        return _keep_shape(shape, axes)
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _check_nonempty(op: str, shape: tuple, axes: tuple) -> None:
    """max/min/argmax have no identity: reducing a zero-size dim is an error."""
    empty = [i for i in axes if shape[i] == 0]
    if empty:
        raise ValueError(
            f"{op}: cannot reduce over dim {empty[0]} of size 0 (shape {shape}); "
            "the reduction has no identity"
        )


def _require_float(op: str, dtype: Any) -> None:
    if np.dtype(dtype).kind not in "fc":
        raise TypeError(
            f"{op}: needs a floating-point tensor, got {np.dtype(dtype)}; convert it first "
            "with .float() or .double()"
        )


# ---------------------------------------------------------------------------- sum and mean


class Sum(Function):
    """y = sum of x over ``axes``;  dx = g broadcast back over the reduced axes."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, dtype):
        ctx.shape, ctx.axes, ctx.in_dtype = x.shape, axes, x.dtype
        return ctx.xp.sum(x, axis=axes, keepdims=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        g = g.reshape(_keep_shape(ctx.shape, ctx.axes))
        return ctx.xp.broadcast_to(g, ctx.shape).astype(ctx.in_dtype)  # astype copies


class Mean(Function):
    """y = sum of x over ``axes`` / N (N elements per output);  dx = g / N broadcast back."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, dtype):
        ctx.shape, ctx.axes, ctx.in_dtype = x.shape, axes, x.dtype
        return ctx.xp.mean(x, axis=axes, keepdims=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        n = _count(ctx.shape, ctx.axes)
        g = g.reshape(_keep_shape(ctx.shape, ctx.axes)) / n
        return ctx.xp.broadcast_to(g, ctx.shape).astype(ctx.in_dtype)


def sum(x: Tensor, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
    """Sum over ``dim`` (int, tuple or None = all). ``dtype`` casts before summing;
    bool and integer tensors sum to int64 as in PyTorch."""
    axes = _axes("sum", dim, x.shape)
    return Sum.apply(x, axes=axes, keepdim=keepdim,
                     dtype=None if dtype is None else dtype_of(dtype))


def mean(x: Tensor, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
    """Mean over ``dim`` (int, tuple or None = all); needs a floating-point tensor
    (or a floating ``dtype``), as in PyTorch."""
    dtype = None if dtype is None else dtype_of(dtype)
    _require_float("mean", x.dtype if dtype is None else dtype)
    axes = _axes("mean", dim, x.shape)
    return Mean.apply(x, axes=axes, keepdim=keepdim, dtype=dtype)


# ---------------------------------------------------------------------------- var and std


def _correction(op: str, unbiased: bool, correction: Any) -> float:
    if correction is None:
        return 1.0 if unbiased else 0.0
    if not unbiased:
        raise ValueError(f"{op}: give either unbiased=False or correction=, not both")
    return float(correction)


def _undefined_var(xp: Any, ss: Any) -> Any:
    """Sum of squares over a non-positive number of degrees of freedom: inf, nan for 0/0
    (what dividing by zero gives in PyTorch), without a division warning."""
    return xp.where(ss != 0, xp.inf, xp.nan).astype(ss.dtype)


class Var(Function):
    """y = sum((x - mean)^2) / (N - c) over ``axes`` (c the correction);
    dx = g * 2 (x - mean) / (N - c)  (nan when N - c <= 0)."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, correction):
        xp = ctx.xp
        d = x - xp.mean(x, axis=axes, keepdims=True)
        ss = xp.sum(d * d, axis=axes, keepdims=keepdim)
        ctx.dof = _count(x.shape, axes) - correction
        ctx.axes = axes
        ctx.save_for_backward(d)
        return ss / ctx.dof if ctx.dof > 0 else _undefined_var(xp, xp.asarray(ss))

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved
        if ctx.dof <= 0:
            return ctx.xp.full(d.shape, ctx.xp.nan, dtype=d.dtype)
        g = g.reshape(_keep_shape(d.shape, ctx.axes))
        return g * (2 / ctx.dof) * d


class Std(Function):
    """y = sqrt(sum((x - mean)^2) / (N - c));  dx = g (x - mean) / ((N - c) y), taken
    as 0 where y = 0 (as PyTorch does)."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, correction):
        xp = ctx.xp
        d = x - xp.mean(x, axis=axes, keepdims=True)
        ss = xp.sum(d * d, axis=axes, keepdims=True)
        ctx.dof = _count(x.shape, axes) - correction
        y = xp.sqrt(ss / ctx.dof) if ctx.dof > 0 else _undefined_var(xp, ss)
        ctx.save_for_backward(d, y)
        return y if keepdim else y.reshape(_out_shape(x.shape, axes, False))

    @staticmethod
    def backward(ctx, g):
        d, y = ctx.saved
        xp = ctx.xp
        if ctx.dof <= 0:
            return xp.full(d.shape, xp.nan, dtype=d.dtype)
        g = g.reshape(y.shape)
        positive = y > 0
        coef = xp.where(positive, g / (ctx.dof * xp.where(positive, y, 1)), 0)
        return coef * d


def var(x: Tensor, dim: Any = None, keepdim: bool = False, unbiased: bool = True,
        correction: float | None = None) -> Tensor:
    """Variance over ``dim`` with ``correction`` (default 1, Bessel's;
    ``unbiased=False`` means 0): sum((x - mean)^2) / max(N - correction, 0)."""
    _require_float("var", x.dtype)
    c = _correction("var", unbiased, correction)
    return Var.apply(x, axes=_axes("var", dim, x.shape), keepdim=keepdim, correction=c)


def std(x: Tensor, dim: Any = None, keepdim: bool = False, unbiased: bool = True,
        correction: float | None = None) -> Tensor:
    """Standard deviation: sqrt(var(x, dim, keepdim, unbiased, correction))."""
    _require_float("std", x.dtype)
    c = _correction("std", unbiased, correction)
    return Std.apply(x, axes=_axes("std", dim, x.shape), keepdim=keepdim, correction=c)


# ---------------------------------------------------------------------------- max and min


def _split_evenly(ctx: Any, g: Any) -> Any:
    """Gradient of an extremum over ``ctx.axes``: g shared evenly by the k entries that
    equal it (k = 1 without ties); a NaN extremum goes to the NaN entries."""
    x, y = ctx.saved
    xp = ctx.xp
    keep = _keep_shape(x.shape, ctx.axes)
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


class MinDim(Function):
    """(values, indices) = min of x along ``axis`` and the first index where it is;
    dx = g at the returned index, 0 elsewhere."""

    @staticmethod
    def forward(ctx, x, axis, keepdim):
        return _extremum_along(ctx, x, axis, keepdim, ctx.xp.argmin)

    @staticmethod
    def backward(ctx, g, g_indices):
        return _to_index(ctx, g)


def amax(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Maximum over ``dim`` (int, tuple or None = all); ties share the gradient evenly."""
    axes = _axes("amax", dim, x.shape)
    _check_nonempty("amax", x.shape, axes)
    return Amax.apply(x, axes=axes, keepdim=keepdim)


def amin(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Minimum over ``dim`` (int, tuple or None = all); ties share the gradient evenly."""
    axes = _axes("amin", dim, x.shape)
    _check_nonempty("amin", x.shape, axes)
    return Amin.apply(x, axes=axes, keepdim=keepdim)


def max(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    """``max(x)``: the largest element (0-d; tied maxima share the gradient evenly).
    ``max(x, dim)``: ``(values, indices)`` along ``dim``, the gradient going to the
    returned (first) index. ``max(x, other_tensor)`` is ``maximum(x, other)``."""
    if isinstance(dim, Tensor):
        from .math import maximum

        return maximum(x, dim)
    if dim is None:
        return amax(x, None, keepdim)
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"max: dim must be a single int, got {dim!r}; use amax for several dims")
    axis = _axis("max", dim, x.shape)
    _check_nonempty("max", x.shape, () if axis is None else (axis,))
    return MaxResult(*MaxDim.apply(x, axis=axis, keepdim=keepdim))


def min(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    """``min(x)``: the smallest element (0-d; tied minima share the gradient evenly).
    ``min(x, dim)``: ``(values, indices)`` along ``dim``, the gradient going to the
    returned (first) index. ``min(x, other_tensor)`` is ``minimum(x, other)``."""
    if isinstance(dim, Tensor):
        from .math import minimum

        return minimum(x, dim)
    if dim is None:
        return amin(x, None, keepdim)
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"min: dim must be a single int, got {dim!r}; use amin for several dims")
    axis = _axis("min", dim, x.shape)
    _check_nonempty("min", x.shape, () if axis is None else (axis,))
    return MinResult(*MinDim.apply(x, axis=axis, keepdim=keepdim))


def _arg_extremum(op: str, find_name: str, x: Tensor, dim: Any, keepdim: bool) -> Tensor:
    xp = x.backend.xp
    find = getattr(xp, find_name)
    if dim is None:
        _check_nonempty(op, x.shape, tuple(range(x.ndim)))
        out = find(x.data.reshape(-1))
        if keepdim:
            out = xp.asarray(out).reshape((1,) * x.ndim)
    else:
        axis = _axis(op, dim, x.shape)
        if axis is None:
            out = find(x.data)
        else:
            _check_nonempty(op, x.shape, (axis,))
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


# ---------------------------------------------------------------------------- logsumexp


class LogSumExp(Function):
    """y = m + log(sum(exp(x - m))) over ``axes`` with m = max x (no overflow);
    dx = g * exp(x - y) = g * softmax(x)."""

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        xp = ctx.xp
        m = xp.amax(x, axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # all -inf (or an inf): shift by 0 instead
        y = xp.log(xp.sum(xp.exp(x - m), axis=axes, keepdims=True)) + m
        ctx.save_for_backward(x, y)
        return y if keepdim else y.reshape(_out_shape(x.shape, axes, False))

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        return g.reshape(y.shape) * ctx.xp.exp(x - y)


def logsumexp(x: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    """log(sum(exp(x))) over ``dim`` (int or tuple), computed stably. Integer tensors
    are first converted to float32, as in PyTorch."""
    if x.dtype.kind not in "fc":
        from .math import cast

        x = cast(x, np.dtype(np.float32))
    axes = _axes("logsumexp", dim, x.shape)
    _check_nonempty("logsumexp", x.shape, axes)
    return LogSumExp.apply(x, axes=axes, keepdim=keepdim)


# ---------------------------------------------------------------------------- cumsum and prod


class Cumsum(Function):
    """y_i = sum_{j <= i} x_j along ``axis``;  dx_j = sum_{i >= j} g_i (g's cumsum
    taken from the end)."""

    @staticmethod
    def forward(ctx, x, axis, dtype):
        ctx.axis, ctx.in_dtype = axis, x.dtype
        if axis is None:  # a 0-d tensor is its own cumulative sum
            return ctx.xp.cumsum(x.reshape(1), dtype=dtype).reshape(())
        return ctx.xp.cumsum(x, axis=axis, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        if ctx.axis is None:
            return g.astype(ctx.in_dtype)
        xp, a = ctx.xp, ctx.axis
        return xp.flip(xp.cumsum(xp.flip(g, a), axis=a), a).astype(ctx.in_dtype)


def cumsum(x: Tensor, dim: int, dtype: Any = None) -> Tensor:
    """Cumulative sum along ``dim``; bool and integer tensors accumulate in int64."""
    axis = _axis("cumsum", dim, x.shape)
    return Cumsum.apply(x, axis=axis, dtype=None if dtype is None else dtype_of(dtype))


class Prod(Function):
    """y = prod of x along ``axis`` (all elements when None);  dx_i = g * prod_{j != i} x_j,
    computed as (product of the x before i) * (product of the x after i), exact with zeros."""

    @staticmethod
    def forward(ctx, x, axis, keepdim, dtype):
        ctx.axis, ctx.keepdim, ctx.in_dtype = axis, keepdim, x.dtype
        ctx.save_for_backward(x)
        if axis is None:
            y = ctx.xp.prod(x, dtype=dtype)
            return ctx.xp.reshape(y, (1,) * x.ndim) if keepdim else y
        return ctx.xp.prod(x, axis=axis, keepdims=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        xp = ctx.xp
        if ctx.axis is None:  # every element along one flat axis
            rows, a, g = x.reshape(1, -1), 1, g.reshape(1, 1)
        else:
            rows, a = x, ctx.axis
            g = g.reshape(_keep_shape(x.shape, (a,)))
        rows = xp.moveaxis(rows, a, -1)
        ones = xp.ones(rows.shape[:-1] + (1,), dtype=rows.dtype)
        before = xp.concatenate([ones, xp.cumprod(rows[..., :-1], axis=-1)], axis=-1)
        flipped = xp.flip(rows, -1)
        after = xp.flip(
            xp.concatenate([ones, xp.cumprod(flipped[..., :-1], axis=-1)], axis=-1), -1
        )
        gx = xp.moveaxis(before * after, -1, a) * g
        return gx.reshape(x.shape).astype(ctx.in_dtype)


def prod(x: Tensor, dim: int | None = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
    """Product along ``dim`` (one int) or of all elements (``None``)."""
    axis = None if dim is None else _axis("prod", dim, x.shape)
    return Prod.apply(x, axis=axis, keepdim=keepdim,
                      dtype=None if dtype is None else dtype_of(dtype))


# ---------------------------------------------------------------------------- any and all


def any(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """True where some element over ``dim`` is nonzero (bool, not differentiable)."""
    xp = x.backend.xp
    axes = _axes("any", dim, x.shape)
    return Tensor._make(xp.asarray(xp.any(x.data, axis=axes, keepdims=keepdim)))


def all(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """True where every element over ``dim`` is nonzero (bool, not differentiable)."""
    xp = x.backend.xp
    axes = _axes("all", dim, x.shape)
    return Tensor._make(xp.asarray(xp.all(x.data, axis=axes, keepdims=keepdim)))
