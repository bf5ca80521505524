"""Reductions: sum, mean, var, std, logsumexp, cumsum, prod, any, all
(max/min and their indices are in ``extrema.py``).

Each differentiable reduction is one Function class, its public function right under
it, whose docstring gives the forward formula and the gradient. The gradient of a
reduction is the incoming gradient ``g`` reshaped so that the reduced dims have size 1
(``keepdim`` shape) and broadcast back over them, times the local derivative.

Dims follow PyTorch: ``dim`` is an int, a tuple of ints or ``None`` (all dims; an empty
tuple also means all dims), negative dims count from the end, and a 0-d tensor accepts
``dim=0`` or ``dim=-1`` (``reduced_axes``/``one_axis`` in ``_util.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function
from ..tensor import Tensor, dtype_of
from ._util import (
    check_nonempty,
    keep_shape,
    one_axis,
    reduced_axes,
    reduced_count,
    reduced_shape,
    require_float,
)
from .math import cast

__all__ = [
    "all",
    "any",
    "cumsum",
    "logsumexp",
    "mean",
    "prod",
    "std",
    "sum",
    "var",
]


# ---------------------------------------------------------------------------- sum and mean


class Sum(Function):
    """y = sum of x over ``axes``;  dx = g broadcast back over the reduced axes."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, dtype):
        ctx.shape, ctx.axes, ctx.in_dtype = x.shape, axes, x.dtype
        return ctx.xp.sum(x, axis=axes, keepdims=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        g = g.reshape(keep_shape(ctx.shape, ctx.axes))
        return ctx.xp.broadcast_to(g, ctx.shape).astype(ctx.in_dtype)  # astype copies


def sum(x: Tensor, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
    """Sum over ``dim`` (int, tuple or None = all). ``dtype`` casts before summing;
    bool and integer tensors sum to int64 as in PyTorch."""
    axes = reduced_axes("sum", dim, x.shape)
    return Sum.apply(x, axes=axes, keepdim=keepdim,
                     dtype=None if dtype is None else dtype_of(dtype))


class Mean(Function):
    """y = sum of x over ``axes`` / N (N elements per output);  dx = g / N broadcast back."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, dtype):
        ctx.shape, ctx.axes, ctx.in_dtype = x.shape, axes, x.dtype
        return ctx.xp.mean(x, axis=axes, keepdims=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        n = reduced_count(ctx.shape, ctx.axes)
        g = g.reshape(keep_shape(ctx.shape, ctx.axes)) / n
        return ctx.xp.broadcast_to(g, ctx.shape).astype(ctx.in_dtype)


def mean(x: Tensor, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
    """Mean over ``dim`` (int, tuple or None = all); needs a floating-point tensor
    (or a floating ``dtype``), as in PyTorch."""
    dtype = None if dtype is None else dtype_of(dtype)
    require_float("mean", x.dtype if dtype is None else dtype)
    axes = reduced_axes("mean", dim, x.shape)
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
        ctx.dof = reduced_count(x.shape, axes) - correction
        ctx.axes = axes
        ctx.save_for_backward(d)
        return ss / ctx.dof if ctx.dof > 0 else _undefined_var(xp, xp.asarray(ss))

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved
        if ctx.dof <= 0:
            return ctx.xp.full(d.shape, ctx.xp.nan, dtype=d.dtype)
        g = g.reshape(keep_shape(d.shape, ctx.axes))
        return g * (2 / ctx.dof) * d


def var(x: Tensor, dim: Any = None, keepdim: bool = False, unbiased: bool = True,
        correction: float | None = None) -> Tensor:
    """Variance over ``dim`` with ``correction`` (default 1, Bessel's;
    ``unbiased=False`` means 0): sum((x - mean)^2) / max(N - correction, 0)."""
    require_float("var", x.dtype)
    c = _correction("var", unbiased, correction)
    return Var.apply(x, axes=reduced_axes("var", dim, x.shape), keepdim=keepdim, correction=c)


class Std(Function):
    """y = sqrt(sum((x - mean)^2) / (N - c));  dx = g (x - mean) / ((N - c) y), taken
    as 0 where y = 0 (as PyTorch does)."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, correction):
        xp = ctx.xp
        d = x - xp.mean(x, axis=axes, keepdims=True)
        ss = xp.sum(d * d, axis=axes, keepdims=True)
        ctx.dof = reduced_count(x.shape, axes) - correction
        y = xp.sqrt(ss / ctx.dof) if ctx.dof > 0 else _undefined_var(xp, ss)
        ctx.save_for_backward(d, y)
        return y if keepdim else y.reshape(reduced_shape(x.shape, axes, False))

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


def std(x: Tensor, dim: Any = None, keepdim: bool = False, unbiased: bool = True,
        correction: float | None = None) -> Tensor:
    """Standard deviation: sqrt(var(x, dim, keepdim, unbiased, correction))."""
    require_float("std", x.dtype)
    c = _correction("std", unbiased, correction)
    return Std.apply(x, axes=reduced_axes("std", dim, x.shape), keepdim=keepdim, correction=c)


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
        return y if keepdim else y.reshape(reduced_shape(x.shape, axes, False))

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        return g.reshape(y.shape) * ctx.xp.exp(x - y)


def logsumexp(x: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    """log(sum(exp(x))) over ``dim`` (int or tuple), computed stably. Integer tensors
    are first converted to float32, as in PyTorch."""
    if x.dtype.kind not in "fc":
        x = cast(x, np.dtype(np.float32))
    axes = reduced_axes("logsumexp", dim, x.shape)
    check_nonempty("logsumexp", x.shape, axes)
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
    axis = one_axis("cumsum", dim, x.shape)
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
            g = g.reshape(keep_shape(x.shape, (a,)))
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
    axis = None if dim is None else one_axis("prod", dim, x.shape)
    return Prod.apply(x, axis=axis, keepdim=keepdim,
                      dtype=None if dtype is None else dtype_of(dtype))


# ---------------------------------------------------------------------------- any and all


def any(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """True where some element over ``dim`` is nonzero (bool, not differentiable)."""
    xp = x.backend.xp
    axes = reduced_axes("any", dim, x.shape)
    return Tensor._make(xp.asarray(xp.any(x.data, axis=axes, keepdims=keepdim)))


def all(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """True where every element over ``dim`` is nonzero (bool, not differentiable)."""
    xp = x.backend.xp
    axes = reduced_axes("all", dim, x.shape)
    return Tensor._make(xp.asarray(xp.all(x.data, axis=axes, keepdims=keepdim)))
