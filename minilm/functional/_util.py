"""Helpers shared by the op modules: gradient un-broadcasting and dim normalisation."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any


def unbroadcast(g: Any, shape: tuple) -> Any:
    """Sum ``g`` down to ``shape``: the gradient of broadcasting is a sum over the
    broadcast dimensions (leading dims added, and dims that were 1)."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def shape_of(x: Any) -> tuple:
    """Shape of an array or of a Python scalar (``()``)."""
    return getattr(x, "shape", ())


def broadcast_shapes(op: str, *shapes: tuple) -> tuple:
    """The broadcast shape of ``shapes``, or a ValueError naming ``op`` and the shapes."""
    out: list[int] = []
    for shape in shapes:
        shape = tuple(shape)
        if len(shape) > len(out):
            out = [1] * (len(shape) - len(out)) + out
        padded = (1,) * (len(out) - len(shape)) + shape
        for i, (a, b) in enumerate(zip(out, padded)):
            if a == 1:
                out[i] = b
            elif b != 1 and a != b:
                raise ValueError(
                    f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} cannot be "
                    "broadcast together"
                )
    return tuple(out)


def norm_dim(op: str, dim: int, ndim: int) -> int:
    """``dim`` in ``[0, ndim)``, accepting negative dims; a clear error otherwise."""
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise ValueError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dims")
    return dim % n


def norm_dims(op: str, dim: int | Sequence[int] | None, ndim: int) -> tuple | None:
    """A tuple of normalised dims (``None`` means all)."""
    if dim is None:
        return None
    if not isinstance(dim, (tuple, list)):
        dim = (operator.index(dim),)  # also accepts NumPy integers
    dims = tuple(norm_dim(op, d, ndim) for d in dim)
    if len(set(dims)) != len(dims):
        raise ValueError(f"{op}: dim {tuple(dim)} repeats a dimension")
    return dims


def along(dim: int, index: Any) -> tuple:
    """The index expression that applies ``index`` to dim ``dim`` (``x[:, :, index]``)."""
    return (slice(None),) * dim + (index,)


def take_backward(xp: Any, g: Any, index: Any, n: int, dim: int) -> Any:
    """Gradient of ``xp.take(x, index, axis=dim)`` for x with ``n`` entries along dim:
    zeros, then ``g`` added at ``index`` (repeated indices accumulate)."""
    shape = g.shape[:dim] + (n,) + g.shape[dim + 1:]
    gx = xp.zeros(shape, dtype=g.dtype)
    xp.add.at(gx, along(dim, index), g)
    return gx
