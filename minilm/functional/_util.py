"""Helpers shared by the op modules: gradient un-broadcasting, dim normalisation, the
reduced axes of a reduction (``reduce.py``, ``extrema.py``) and integer-tuple arguments."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np


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


def elementwise(op: str, fn: Any, a: Any, b: Any) -> Any:
    """``fn(a, b)`` on raw arrays; when their shapes do not broadcast, the ValueError
    names ``op`` and the shapes."""
    try:
        return fn(a, b)
    except ValueError:
        broadcast_shapes(op, shape_of(a), shape_of(b))  # raises the named error
        raise


def int_tuple(op: str, args: Sequence[Any]) -> tuple:
    """``(2, 3)``, ``((2, 3),)`` and ``([2, 3],)`` all give ``(2, 3)``: the forms of
    ``x.view(2, 3)`` and ``x.view((2, 3))``."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    try:
        return tuple(operator.index(a) for a in args)
    except TypeError:
        raise TypeError(f"{op}: expected integers, got {tuple(args)!r}") from None


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


# ---------------------------------------------------------------------------- reductions


def _with_shape(op: str, shape: tuple, fn: Any, *args: Any) -> Any:
    """Call a ``_util`` dim normaliser; add the tensor's shape to its error message."""
    try:
        return fn(op, *args)
    except ValueError as e:
        raise ValueError(f"{e}; the tensor has shape {shape}") from None


def reduced_axes(op: str, dim: Any, shape: tuple) -> tuple:
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


def one_axis(op: str, dim: Any, shape: tuple) -> int | None:
    """One normalised axis (``None`` for a 0-d tensor, which has no axis to index)."""
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{op}: dim must be a single int, got {dim!r}")
    try:
        dim = operator.index(dim)
    except TypeError:
        raise TypeError(f"{op}: dim must be an int, got {dim!r}") from None
    axis = _with_shape(op, shape, norm_dim, dim, len(shape))
    return None if len(shape) == 0 else axis


def keep_shape(shape: tuple, axes: tuple) -> tuple:
    """``shape`` with the reduced ``axes`` set to 1 (the ``keepdim=True`` result shape)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def reduced_count(shape: tuple, axes: tuple) -> int:
    """How many elements each output element is reduced from."""
    return math.prod(shape[i] for i in axes)


def reduced_shape(shape: tuple, axes: tuple, keepdim: bool) -> tuple:
    if keepdim:
        return keep_shape(shape, axes)
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def check_nonempty(op: str, shape: tuple, axes: tuple) -> None:
    """max/min/argmax have no identity: reducing a zero-size dim is an error."""
    empty = [i for i in axes if shape[i] == 0]
    if empty:
        raise ValueError(
            f"{op}: cannot reduce over dim {empty[0]} of size 0 (shape {shape}); "
            "the reduction has no identity"
        )


def require_float(op: str, dtype: Any) -> None:
    if np.dtype(dtype).kind not in "fc":
        raise TypeError(
            f"{op}: needs a floating-point tensor, got {np.dtype(dtype)}; convert it first "
            "with .float() or .double()"
        )
