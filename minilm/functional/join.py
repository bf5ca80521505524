"""Joining and splitting: cat/concat, stack, split, chunk, unbind, narrow.

The backward of a join hands each input the slice of the gradient it became; the
backward of a split joins the pieces' gradients back together. Each Function has its
public functions right under it.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import Any

from ..autograd import Function
from ..tensor import Tensor
from ._util import along, int_tuple, norm_dim
from .indexing import getitem

__all__ = ["cat", "chunk", "concat", "narrow", "split", "stack", "unbind"]


def _shapes(arrays: Sequence[Any]) -> str:
    return ", ".join(str(tuple(a.shape)) for a in arrays)


def _tensor_list(op: str, tensors: Any) -> list:
    if isinstance(tensors, Tensor):
        raise TypeError(f"{op}: expected a sequence of tensors, got a single Tensor")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    like = next((t for t in tensors if isinstance(t, Tensor)), None)
    if like is None:
        raise TypeError(f"{op}: expected a sequence of tensors, got {type(tensors[0]).__name__}")
    return [t if isinstance(t, Tensor) else Tensor(t, backend=like.backend) for t in tensors]


# ---------------------------------------------------------------------------- join


def _check_cat(xs: Sequence[Any], dim: int) -> int:
    """The normalised ``dim`` of cat, checking that the shapes agree outside it."""
    ref = xs[0].shape
    if not ref:
        raise ValueError(f"cat: zero-dim tensors cannot be concatenated, got shapes "
                         f"{_shapes(xs)}")
    d = norm_dim("cat", dim, len(ref))
    for x in xs:
        s = x.shape
        if len(s) != len(ref) or any(a != b for i, (a, b) in enumerate(zip(s, ref)) if i != d):
            raise ValueError(
                f"cat: tensors must have the same shape except in dim {dim}, got "
                f"shapes {_shapes(xs)}"
            )
    return d


class Cat(Function):
    """y = the inputs joined along ``dim``;  dx_i = the slice of g that x_i became."""

    @staticmethod
    def forward(ctx, *xs, dim=0):
        d = _check_cat(xs, dim)
        ctx.dim, ctx.sizes = d, [x.shape[d] for x in xs]
        return ctx.xp.concatenate(xs, axis=d)

    @staticmethod
    def backward(ctx, g):
        grads, start = [], 0
        for n, need in zip(ctx.sizes, ctx.needs_input_grad):
            grads.append(g[along(ctx.dim, slice(start, start + n))] if need else None)
            start += n
        return tuple(grads)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dim; all other sizes must match."""
    return Cat.apply(*_tensor_list("cat", tensors), dim=dim)


concat = cat


def _check_stack(xs: Sequence[Any], dim: int) -> int:
    """The normalised new ``dim`` of stack, checking that all shapes are equal."""
    ref = xs[0].shape
    if any(x.shape != ref for x in xs):
        raise ValueError(
            f"stack: all tensors must have the same shape, got shapes {_shapes(xs)}"
        )
    nd = len(ref)
    if not -nd - 1 <= dim <= nd:
        raise ValueError(
            f"stack: dim {dim} is out of range [{-nd - 1}, {nd}] for tensors of shape {ref}"
        )
    return dim % (nd + 1)


class Stack(Function):
    """y = the inputs stacked along a new dim ``dim``;  dx_i = g[..., i, ...] at dim."""

    @staticmethod
    def forward(ctx, *xs, dim=0):
        ctx.dim = _check_stack(xs, dim)
        return ctx.xp.stack(xs, axis=ctx.dim)

    @staticmethod
    def backward(ctx, g):
        return tuple(g[along(ctx.dim, i)] if need else None
                     for i, need in enumerate(ctx.needs_input_grad))


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join same-shape tensors along a new dim ``dim``."""
    return Stack.apply(*_tensor_list("stack", tensors), dim=dim)


# ---------------------------------------------------------------------------- split


class Split(Function):
    """(y_0, y_1, ...) = consecutive slices of x along ``dim`` with sizes ``sections``;
    dx = the gradients concatenated back along dim."""

    is_view = True

    @staticmethod
    def forward(ctx, x, sections, dim):
        ctx.dim = dim
        bounds = [0]
        for n in sections:
            bounds.append(bounds[-1] + n)
        return tuple(x[along(dim, slice(a, b))] for a, b in itertools.pairwise(bounds))

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.concatenate(grads, axis=ctx.dim), None, None


def _split_sections(x: Tensor, split_size_or_sections: Any, d: int, dim: int) -> tuple:
    """The sizes of split's pieces along dim ``d``: the given sections (checked to sum
    to the dim's size), or pieces of ``split_size`` with a smaller last one."""
    n = x.shape[d]
    if isinstance(split_size_or_sections, (tuple, list)):
        sections = int_tuple("split", (split_size_or_sections,))
        if sum(sections) != n or any(s < 0 for s in sections):
            raise ValueError(
                f"split: sections {list(sections)} must be non-negative and sum to the size "
                f"{n} of dim {dim} of a tensor of shape {x.shape}"
            )
        return sections
    size = operator.index(split_size_or_sections)
    if size < 0 or (size == 0 and n > 0):
        raise ValueError(f"split: split_size must be positive, got {size} for a "
                         f"tensor of shape {x.shape}")
    return tuple(min(size, n - i) for i in range(0, n, size)) if n else (0,)


def split(x: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple:
    """``torch.split``: pieces of ``split_size`` along ``dim`` (the last may be smaller),
    or pieces of the given sizes (which must sum to the dim's size)."""
    if x.ndim == 0:
        raise ValueError("split: a 0-dim tensor cannot be split")
    d = norm_dim("split", dim, x.ndim)
    return Split.apply(x, _split_sections(x, split_size_or_sections, d, dim), d)


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple:
    """``torch.chunk``: pieces of size ceil(n / chunks) along ``dim`` (possibly fewer
    than ``chunks`` pieces)."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    if x.ndim == 0:
        raise ValueError("chunk: a 0-dim tensor cannot be chunked")
    d = norm_dim("chunk", dim, x.ndim)
    n = x.shape[d]
    if n == 0:
        return Split.apply(x, (0,) * chunks, d)
    return split(x, -(-n // chunks), d)


class Unbind(Function):
    """(y_0, .., y_{n-1}) = the slices x[..., i, ...] at ``dim``;  dx = the gradients
    stacked along dim."""

    is_view = True

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        return tuple(x[along(dim, i)] for i in range(x.shape[dim]))

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.stack(grads, axis=ctx.dim), None


def unbind(x: Tensor, dim: int = 0) -> tuple:
    """The slices of ``x`` along ``dim``, each without that dim."""
    if x.ndim == 0:
        raise ValueError("unbind: a 0-dim tensor cannot be unbound")
    return Unbind.apply(x, norm_dim("unbind", dim, x.ndim))


def narrow(x: Tensor, dim: int, start: int, length: int) -> Tensor:
    """``x[..., start:start + length, ...]`` along ``dim`` (``start`` may be negative)."""
    d = norm_dim("narrow", dim, x.ndim)
    n = x.shape[d]
    if start < 0:
        start += n
    if not (0 <= start <= n and 0 <= length <= n - start):
        raise ValueError(
            f"narrow: start {start} and length {length} do not fit in dim {dim} of a "
            f"tensor of shape {x.shape}"
        )
    return getitem(x, along(d, slice(start, start + length)))
