"""Elementwise arithmetic with broadcasting (+ - * / **, neg), selection (maximum,
minimum, where, masked_fill) and the differentiable copies (clone, cast, to_backend).

Every class is one differentiable op, its public function right under it; the
docstring gives the forward formula and the gradient. Binary ops broadcast as NumPy
does; their backward sums the gradient over the broadcast dimensions
(``unbroadcast``). Unary math and activations are in ``unary.py``, comparisons
(not differentiable) in ``compare.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from ._util import broadcast_shapes, elementwise, shape_of, unbroadcast

__all__ = [
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "neg",
    "maximum",
    "minimum",
    "where",
    "masked_fill",
    "clone",
    "cast",
    "to_backend",
]


_SCALARS = (np.generic, int, float, bool, complex)


def _as_operand(x: Any, like: Tensor) -> Any:
    """Python scalars stay scalars (they follow the tensor's dtype); lists become arrays."""
    if isinstance(x, (Tensor,) + _SCALARS):
        return x
    return Tensor(x, backend=like.backend)


def _dispatch(fn: type, a: Any, b: Any) -> Tensor:
    if isinstance(a, Tensor):
        return fn.apply(a, _as_operand(b, a))
    return fn.apply(_as_operand(a, b), b)


# ---------------------------------------------------------------------------- arithmetic


class Add(Function):
    """y = a + b;  da = g, db = g (summed over broadcast dims)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = shape_of(a), shape_of(b)
        return elementwise("add", lambda x, y: x + y, a, b)

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return (unbroadcast(g, sa) if ctx.needs_input_grad[0] else None,
                unbroadcast(g, sb) if ctx.needs_input_grad[1] else None)


def add(a: Any, b: Any, alpha: float = 1.0) -> Tensor:
    """a + alpha * b with broadcasting."""
    if alpha != 1.0:
        b = mul(b, alpha) if isinstance(b, Tensor) else b * alpha
    return _dispatch(Add, a, b)


class Sub(Function):
    """y = a - b;  da = g, db = -g."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = shape_of(a), shape_of(b)
        return elementwise("sub", lambda x, y: x - y, a, b)

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return (unbroadcast(g, sa) if ctx.needs_input_grad[0] else None,
                unbroadcast(-g, sb) if ctx.needs_input_grad[1] else None)


def sub(a: Any, b: Any) -> Tensor:
    return _dispatch(Sub, a, b)


class Mul(Function):
    """y = a * b;  da = g * b, db = g * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return elementwise("mul", lambda x, y: x * y, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return (unbroadcast(g * b, shape_of(a)) if ctx.needs_input_grad[0] else None,
                unbroadcast(g * a, shape_of(b)) if ctx.needs_input_grad[1] else None)


def mul(a: Any, b: Any) -> Tensor:
    return _dispatch(Mul, a, b)


class Div(Function):
    """y = a / b;  da = g / b, db = -g * a / b^2."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return elementwise("div", lambda x, y: x / y, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ga = unbroadcast(g / b, shape_of(a)) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-g * a / (b * b), shape_of(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


def div(a: Any, b: Any) -> Tensor:
    return _dispatch(Div, a, b)


class Pow(Function):
    """y = a ** b;  da = g * b * a^(b-1), db = g * a^b * log(a)."""

    @staticmethod
    def forward(ctx, a, b):
        y = elementwise("pow", lambda x, e: x ** e, a, b)
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved
        xp = ctx.xp
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(g * b * a ** (b - 1), shape_of(a))
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(g * y * xp.log(a), shape_of(b))
        return ga, gb


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001
    return _dispatch(Pow, a, b)


class Neg(Function):
    """y = -x;  dx = -g."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


def neg(x: Tensor) -> Tensor:
    return Neg.apply(x)


# ---------------------------------------------------------------------------- selection


class Maximum(Function):
    """y = max(a, b);  the gradient goes to the larger input, split evenly on ties."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return elementwise("maximum", ctx.xp.maximum, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        wa = (a > b) + 0.5 * (a == b)
        return (unbroadcast(g * wa, shape_of(a)) if ctx.needs_input_grad[0] else None,
                unbroadcast(g * (1 - wa), shape_of(b)) if ctx.needs_input_grad[1] else None)


def maximum(a: Any, b: Any) -> Tensor:
    return _dispatch(Maximum, a, b)


class Minimum(Function):
    """y = min(a, b);  the gradient goes to the smaller input, split evenly on ties."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return elementwise("minimum", ctx.xp.minimum, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        wa = (a < b) + 0.5 * (a == b)
        return (unbroadcast(g * wa, shape_of(a)) if ctx.needs_input_grad[0] else None,
                unbroadcast(g * (1 - wa), shape_of(b)) if ctx.needs_input_grad[1] else None)


def minimum(a: Any, b: Any) -> Tensor:
    return _dispatch(Minimum, a, b)


def _check_where(cond: Any, a: Any, b: Any) -> tuple:
    """(the tensor among a and b whose backend the others follow, cond as a bool Tensor)."""
    like = a if isinstance(a, Tensor) else b
    if not isinstance(like, Tensor):
        raise TypeError("where: a or b must be a Tensor")
    cond = cond if isinstance(cond, Tensor) else Tensor(cond, backend=like.backend)
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be bool, got {cond.dtype}")
    return like, cond


class Where(Function):
    """y = a where cond else b;  da = g [cond], db = g [not cond]."""

    @staticmethod
    def forward(ctx, cond, a, b):
        broadcast_shapes("where", shape_of(cond), shape_of(a), shape_of(b))  # named error
        ctx.save_for_backward(cond)
        ctx.shapes = shape_of(a), shape_of(b)
        return ctx.xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved
        xp = ctx.xp
        sa, sb = ctx.shapes
        zero = xp.zeros((), dtype=g.dtype)
        ga = unbroadcast(xp.where(cond, g, zero), sa) if ctx.needs_input_grad[1] else None
        gb = unbroadcast(xp.where(cond, zero, g), sb) if ctx.needs_input_grad[2] else None
        return None, ga, gb


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """Elementwise ``a if cond else b`` (``cond`` a bool tensor)."""
    like, cond = _check_where(cond, a, b)
    a = _as_operand(a, like)
    b = _as_operand(b, like)
    return Where.apply(cond, a, b)


def _check_mask(x: Any, mask: Any) -> None:
    """masked_fill's mask: bool, and broadcastable to x's shape without growing it."""
    if broadcast_shapes("masked_fill", x.shape, shape_of(mask)) != x.shape:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to "
                         f"the input's shape {x.shape}")
    if mask.dtype != bool:
        raise TypeError(f"masked_fill: mask must be bool, got {mask.dtype}")


class MaskedFill(Function):
    """y = value where mask else x;  dx = g [not mask]."""

    @staticmethod
    def forward(ctx, x, mask, value):
        _check_mask(x, mask)
        ctx.save_for_backward(mask)
        return ctx.xp.where(mask, ctx.xp.asarray(value, dtype=x.dtype), x)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved
        return ctx.xp.where(mask, ctx.xp.zeros((), dtype=g.dtype), g), None, None


def masked_fill(x: Tensor, mask: Any, value: float) -> Tensor:
    """``x`` with ``value`` written where the bool ``mask`` (broadcast to x) is True."""
    mask = mask if isinstance(mask, Tensor) else Tensor(mask, backend=x.backend)
    return MaskedFill.apply(x, mask, value)


# ---------------------------------------------------------------------------- copies: clone, dtype, backend


class Clone(Function):
    """y = copy of x;  dx = g."""

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        return g


def clone(x: Tensor) -> Tensor:
    return Clone.apply(x)


class Cast(Function):
    """y = x converted to ``dtype``;  dx = g converted back to x's dtype."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.in_dtype = x.dtype
        return x.astype(dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        if ctx.in_dtype.kind not in "fc":
            return None, None
        return g.astype(ctx.in_dtype), None


def cast(x: Tensor, dtype: Any) -> Tensor:
    if x.dtype == dtype:
        return x
    return Cast.apply(x, dtype)


class ToBackend(Function):
    """y = x copied to another backend's memory;  dx = g copied back."""

    @staticmethod
    def forward(ctx, x, target):
        ctx.source = ctx.backend
        return target.xp.asarray(ctx.backend.to_numpy(x))

    @staticmethod
    def backward(ctx, g):
        from ..backends import backend_for_array

        src = backend_for_array(g)
        return ctx.source.xp.asarray(src.to_numpy(g)), None


def to_backend(x: Tensor, name: str) -> Tensor:
    from ..backends import get_backend

    target = get_backend(name)
    if target.xp is x.backend.xp:
        return x  # same memory (numpy and numba both hold NumPy arrays): nothing to move
    return ToBackend.apply(x, target)
