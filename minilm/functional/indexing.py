"""Indexing: ``x[index]`` (basic and advanced), gather, scatter_add, index_select.

The backward of every gather-like op is a scatter-add into zeros: an element read
twice (a repeated index) receives the sum of both gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from ._util import norm_dim, take_backward

__all__ = ["IndexingError", "gather", "getitem", "index_select", "scatter_add"]


class IndexingError(IndexError, ValueError):
    """A bad index (a value outside its dim, a mask of the wrong shape...): both an
    IndexError, so that ``for row in tensor`` stops as Python expects, and a ValueError,
    as every other bad argument of these ops."""


def _index_array(op: str, index: Any, x: Tensor) -> Any:
    """An integer index (Tensor, array or list) as a raw array of ``x``'s backend."""
    xp = x.backend.xp
    if isinstance(index, Tensor):
        index = index.data
    arr = xp.asarray(index)
    if arr.size == 0 and arr.dtype.kind == "f":  # [] parses as float64
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{op}: index must hold integers, got dtype {arr.dtype}")
    return arr


def _check_range(op: str, index: Any, n: int, dim: int, shape: tuple) -> None:
    """Every value of ``index`` lies in [0, n) (as in PyTorch: no negative indices)."""
    if index.size == 0:
        return
    lo, hi = int(index.min()), int(index.max())
    if lo < 0 or hi >= n:
        raise IndexingError(
            f"{op}: index values must lie in [0, {n}) for dim {dim} of a tensor of shape "
            f"{shape}, got values in [{lo}, {hi}]"
        )


def _dim_grid(xp: Any, index: Any, dim: int) -> tuple:
    """Index arrays addressing ``x[i_0, .., index[i], .., i_k]`` for every position
    ``i`` of ``index``: ``index`` on dim ``dim``, ``arange`` (broadcast) elsewhere."""
    grid = []
    for d, n in enumerate(index.shape):
        if d == dim:
            grid.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = n
            grid.append(xp.arange(n).reshape(shape))
    return tuple(grid)


def _dim_for_index(op: str, x: Tensor, dim: int) -> int:
    if x.ndim == 0:
        raise ValueError(f"{op}: needs a tensor with at least 1 dim, got shape ()")
    return norm_dim(op, dim, x.ndim)


# ---------------------------------------------------------------------------- indexing


def _raw_index_part(i: Any, xp: Any) -> Any:
    """One component of an index: Tensors and lists become arrays of ``xp`` (a host
    index of a device tensor is uploaded, as PyTorch takes a CPU index for a CUDA tensor)."""
    if isinstance(i, Tensor):
        i = i.data
    if isinstance(i, list):
        arr = xp.asarray([_raw_index_part(e, xp) for e in i])
        return arr.astype(np.int64) if arr.size == 0 and arr.dtype.kind == "f" else arr
    if isinstance(i, np.ndarray) and xp is not np:
        return xp.asarray(i)
    return i


def _has_int_array(index: tuple) -> bool:
    """Whether an integer array takes part (then positions may repeat)."""
    return any(getattr(i, "ndim", 0) > 0 and i.dtype.kind in "iu" for i in index)


def _masks_as_ints(index: tuple) -> tuple:
    """Bool masks replaced by their ``nonzero()`` integer arrays (same selection)."""
    out: list = []
    for i in index:
        if getattr(i, "ndim", 0) > 0 and i.dtype.kind == "b":
            out.extend(i.nonzero())
        else:
            out.append(i)
    return tuple(out)


class GetItem(Function):
    """y = x[index] (basic and advanced indexing);  dx = zeros with g written at the
    indexed positions, added with ``xp.add.at`` when an integer array may repeat them."""

    @staticmethod
    def forward(ctx, x, index):
        xp = ctx.xp
        parts = index if isinstance(index, tuple) else (index,)
        parts = tuple(_raw_index_part(i, xp) for i in parts)
        try:
            y = x[parts]
        except IndexError as e:
            raise IndexingError(f"getitem: {e} (tensor of shape {x.shape})") from None
        ctx.in_shape, ctx.index = x.shape, parts
        ctx.accumulate = _has_int_array(parts)
        return y

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        gx = xp.zeros(ctx.in_shape, dtype=g.dtype)
        if ctx.accumulate:
            xp.add.at(gx, _masks_as_ints(ctx.index), g)
        else:
            gx[ctx.index] = g
        return gx, None


def getitem(x: Tensor, index: Any) -> Tensor:
    """``x[index]`` as NumPy indexes: ints, slices, None, Ellipsis, bool masks and
    integer arrays / lists / Tensors, alone or in a tuple."""
    return GetItem.apply(x, index)


# ---------------------------------------------------------------------------- gather and scatter


def _check_gather(x: Any, dim: int, index: Any) -> None:
    """index has x's dims, is no larger than x outside ``dim``, and in range along it."""
    if index.ndim != x.ndim or any(
        m > n for d, (m, n) in enumerate(zip(index.shape, x.shape)) if d != dim
    ):
        raise ValueError(
            f"gather: index of shape {index.shape} must have the dims of input of shape "
            f"{x.shape} and be no larger outside dim {dim}"
        )
    _check_range("gather", index, x.shape[dim], dim, x.shape)


class Gather(Function):
    """y[i] = x[i with dim replaced by index[i]] (``torch.gather``);  dx = zeros with g
    added at those positions (repeated indices accumulate)."""

    @staticmethod
    def forward(ctx, x, dim, index):
        _check_gather(x, dim, index)
        ctx.in_shape, ctx.grid = x.shape, _dim_grid(ctx.xp, index, dim)
        return x[ctx.grid]

    @staticmethod
    def backward(ctx, g):
        gx = ctx.xp.zeros(ctx.in_shape, dtype=g.dtype)
        ctx.xp.add.at(gx, ctx.grid, g)
        return gx, None, None


def gather(x: Tensor, dim: int, index: Any) -> Tensor:
    """``out[i][j][k] = x[i][index[i][j][k]][k]`` for dim=1; out has index's shape."""
    d = _dim_for_index("gather", x, dim)
    return Gather.apply(x, d, _index_array("gather", index, x))


def _check_scatter_add(x: Any, dim: int, index: Any, src: Any) -> None:
    """src has x's dtype; index has the dims of both, fits in src (and in x outside
    ``dim``), and is in range along dim."""
    if x.dtype != src.dtype:
        raise TypeError(f"scatter_add: src dtype {src.dtype} differs from input dtype "
                        f"{x.dtype}")
    if not (index.ndim == x.ndim == src.ndim) or any(
        m > s or (d != dim and m > n)
        for d, (m, n, s) in enumerate(zip(index.shape, x.shape, src.shape))
    ):
        raise ValueError(
            f"scatter_add: index of shape {index.shape} must have the dims of input "
            f"{x.shape} and src {src.shape}, be no larger than src, and no larger than "
            f"input outside dim {dim}"
        )
    _check_range("scatter_add", index, x.shape[dim], dim, x.shape)


class ScatterAdd(Function):
    """y = x, then y[i with dim replaced by index[i]] += src[i] for every position i of
    index (``torch.Tensor.scatter_add``);  dx = g, dsrc[i] = g[same position] (0 beyond
    index's shape)."""

    @staticmethod
    def forward(ctx, x, dim, index, src):
        _check_scatter_add(x, dim, index, src)
        ctx.grid = _dim_grid(ctx.xp, index, dim)
        ctx.sub = tuple(slice(0, m) for m in index.shape)  # the part of src that is used
        ctx.src_shape = src.shape
        y = x.copy()
        ctx.xp.add.at(y, ctx.grid, src[ctx.sub])
        return y

    @staticmethod
    def backward(ctx, g):
        gsrc = None
        if ctx.needs_input_grad[3]:
            gsrc = ctx.xp.zeros(ctx.src_shape, dtype=g.dtype)
            gsrc[ctx.sub] = g[ctx.grid]
        return (g if ctx.needs_input_grad[0] else None), None, None, gsrc


def scatter_add(x: Tensor, dim: int, index: Any, src: Tensor) -> Tensor:
    """Out-of-place ``x.scatter_add(dim, index, src)``: for dim=1,
    ``out[i][index[i][j][k]][k] += src[i][j][k]``."""
    d = _dim_for_index("scatter_add", x, dim)
    if not isinstance(src, Tensor):
        src = Tensor(src, dtype=x.dtype, backend=x.backend)
    return ScatterAdd.apply(x, d, _index_array("scatter_add", index, x), src)


class IndexSelect(Function):
    """y = x[..., index, ...] (1-D ``index`` on dim ``dim``);  dx = zeros with g added
    at index along dim (repeated indices accumulate)."""

    @staticmethod
    def forward(ctx, x, dim, index):
        if index.ndim > 1:
            raise ValueError(f"index_select: index must be 1-D, got shape {index.shape}")
        index = index.reshape(-1)
        _check_range("index_select", index, x.shape[dim], dim, x.shape)
        ctx.n, ctx.dim, ctx.index = x.shape[dim], dim, index
        return ctx.xp.take(x, index, axis=dim)

    @staticmethod
    def backward(ctx, g):
        return take_backward(ctx.xp, g, ctx.index, ctx.n, ctx.dim), None, None


def index_select(x: Tensor, dim: int, index: Any) -> Tensor:
    """The entries of ``x`` at positions ``index`` (1-D) along ``dim``."""
    d = _dim_for_index("index_select", x, dim)
    return IndexSelect.apply(x, d, _index_array("index_select", index, x))
