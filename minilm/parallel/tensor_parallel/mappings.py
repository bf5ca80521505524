"""The tensor-parallel region's entry and exit: the collectives of Megatron's ``f``/``g``
written as autograd Functions, each with its public wrapper right under it.

The four collectives, on raw arrays::

    copy_to_tp_region       forward: y = x                backward: dx = allreduce(g)
    reduce_from_tp_region   forward: y = allreduce(x)     backward: dx = g
    gather_from_tp_region   forward: y = concat_r x_r     backward: dx = g[my slice]
    scatter_to_tp_region    forward: y = x[my slice]      backward: dx = concat_r g_r
                            (gather/scatter along the last dim)

A column-parallel layer enters the region with ``copy_to_tp_region`` (every rank needs
the whole input; each rank's branch contributes a partial gradient of it), a row-parallel
layer leaves it with ``reduce_from_tp_region`` (every rank holds a partial sum of the
output). With a 1-rank communicator all four are the identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...autograd import Function
from ...backends import is_device_array, to_host
from ...tensor import Tensor
from ..comm import Communicator

__all__ = [
    "CopyToTPRegion", "GatherFromTPRegion", "ReduceFromTPRegion", "ScatterToTPRegion",
    "copy_to_tp_region", "gather_from_tp_region", "reduce_from_tp_region",
    "scatter_to_tp_region",
]


# ---------------------------------------------------------------------------- host collectives
# The communicator works on C-contiguous NumPy arrays; these helpers copy (never modify a
# gradient array that autograd may have handed to several inputs) and go through host
# memory for CuPy arrays.


def _host_copy(a: Any) -> np.ndarray:
    if is_device_array(a):
        return np.ascontiguousarray(to_host(a))  # device -> host (a fresh array)
    return np.array(a, order="C", copy=True)


def _like(h: np.ndarray, xp: Any) -> Any:
    return h if xp is np else xp.asarray(h)


def _allreduce(xp: Any, a: Any, comm: Communicator, op: str = "sum") -> Any:
    """A new array: op over the ranks of ``a``."""
    return _like(comm.allreduce(_host_copy(a), op), xp)


def _allgather(xp: Any, a: Any, comm: Communicator) -> Any:
    """A new array of shape (size, *a.shape): every rank's ``a`` in rank order."""
    send = _host_copy(a)
    recv = np.empty((comm.size,) + send.shape, dtype=send.dtype)
    comm.allgather(send, recv)
    return _like(recv, xp)


def _split_last(xp: Any, a: Any, comm: Communicator) -> Any:
    n = a.shape[-1]
    if n % comm.size:
        raise ValueError(f"scatter_to_tp_region: last dim {n} is not divisible by the "
                         f"tensor-parallel size {comm.size}")
    k = n // comm.size
    return xp.ascontiguousarray(a[..., comm.rank * k:(comm.rank + 1) * k])


def _gather_last(xp: Any, a: Any, comm: Communicator) -> Any:
    parts = _allgather(xp, a, comm)  # (size, ..., k)
    return xp.concatenate(list(parts), axis=-1)


# ---------------------------------------------------------------------------- collectives


class CopyToTPRegion(Function):
    """Entering the tensor-parallel region: y = x;  dx = allreduce_sum(g) (each rank's
    branch contributed a partial gradient of the replicated x)."""

    is_view = True

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return x

    @staticmethod
    def backward(ctx, g):
        if ctx.comm.is_single:
            return g, None
        return _allreduce(ctx.xp, g, ctx.comm), None


def copy_to_tp_region(x: Tensor, comm: Communicator) -> Tensor:
    """Identity forward, allreduce-sum backward."""
    return CopyToTPRegion.apply(x, comm)


class ReduceFromTPRegion(Function):
    """Leaving the region with partial sums: y = allreduce_sum(x);  dx = g."""

    is_view = True

    @staticmethod
    def forward(ctx, x, comm):
        if comm.is_single:
            return x
        return _allreduce(ctx.xp, x, comm)

    @staticmethod
    def backward(ctx, g):
        return g, None


def reduce_from_tp_region(x: Tensor, comm: Communicator) -> Tensor:
    """Allreduce-sum forward, identity backward."""
    return ReduceFromTPRegion.apply(x, comm)


class GatherFromTPRegion(Function):
    """y = concat over ranks of x along the last dim;  dx = my slice of g."""

    is_view = True

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        if comm.is_single:
            return x
        return _gather_last(ctx.xp, x, comm)

    @staticmethod
    def backward(ctx, g):
        if ctx.comm.is_single:
            return g, None
        return _split_last(ctx.xp, g, ctx.comm), None


def gather_from_tp_region(x: Tensor, comm: Communicator) -> Tensor:
    """Concatenate the ranks' x along the last dim; backward keeps this rank's slice."""
    return GatherFromTPRegion.apply(x, comm)


class ScatterToTPRegion(Function):
    """y = my slice of x along the last dim;  dx = concat over ranks of g."""

    is_view = True

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        if comm.is_single:
            return x
        return _split_last(ctx.xp, x, comm)

    @staticmethod
    def backward(ctx, g):
        if ctx.comm.is_single:
            return g, None
        return _gather_last(ctx.xp, g, ctx.comm), None


def scatter_to_tp_region(x: Tensor, comm: Communicator) -> Tensor:
    """This rank's slice of the last dim; backward concatenates the ranks' gradients."""
    return ScatterToTPRegion.apply(x, comm)
