"""Elementwise ops: arithmetic with broadcasting, unary math, activations, selection.

Every class is one differentiable op; its docstring gives the forward formula and the
gradient. Binary ops broadcast as NumPy does; their backward sums the gradient over
the broadcast dimensions (``unbroadcast``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from ._util import broadcast_shapes, shape_of, unbroadcast

__all__ = [
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "neg",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "abs",
    "sign",
    "sin",
    "cos",
    "tanh",
    "sigmoid",
    "relu",
    "leaky_relu",
    "gelu",
    "silu",
    "softplus",
    "clamp",
    "maximum",
    "minimum",
    "where",
    "masked_fill",
    "clone",
    "cast",
    "to_backend",
    "logical_not",
    "isnan",
    "isfinite",
    "allclose",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "equal",
    "not_equal",
    "logical_and",
    "logical_or",
    "logical_xor",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
]

_SCALARS = (np.generic, int, float, bool, complex)


def _binary(op: str, fn: Any, a: Any, b: Any) -> Any:
    try:
        return fn(a, b)
    except ValueError:
        broadcast_shapes(op, shape_of(a), shape_of(b))  # raises the named error
        raise


def _as_operand(x: Any, like: Tensor) -> Any:
    """Python scalars stay scalars (they follow the tensor's dtype); lists become arrays."""
    if isinstance(x, (Tensor,) + _SCALARS):
        return x
    return Tensor(x, backend=like.backend)


# ---------------------------------------------------------------------------- arithmetic


class Add(Function):
    """y = a + b;  da = g, db = g (summed over broadcast dims)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = shape_of(a), shape_of(b)
        return _binary("add", lambda x, y: x + y, a, b)

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return (unbroadcast(g, sa) if ctx.needs_input_grad[0] else None,
                unbroadcast(g, sb) if ctx.needs_input_grad[1] else None)


class Sub(Function):
    """y = a - b;  da = g, db = -g."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = shape_of(a), shape_of(b)
        return _binary("sub", lambda x, y: x - y, a, b)

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return (unbroadcast(g, sa) if ctx.needs_input_grad[0] else None,
                unbroadcast(-g, sb) if ctx.needs_input_grad[1] else None)


class Mul(Function):
    """y = a * b;  da = g * b, db = g * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _binary("mul", lambda x, y: x * y, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return (unbroadcast(g * b, shape_of(a)) if ctx.needs_input_grad[0] else None,
                unbroadcast(g * a, shape_of(b)) if ctx.needs_input_grad[1] else None)


class Div(Function):
    """y = a / b;  da = g / b, db = -g * a / b^2."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _binary("div", lambda x, y: x / y, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ga = unbroadcast(g / b, shape_of(a)) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-g * a / (b * b), shape_of(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Pow(Function):
    """y = a ** b;  da = g * b * a^(b-1), db = g * a^b * log(a)."""

    @staticmethod
    def forward(ctx, a, b):
        y = _binary("pow", lambda x, e: x ** e, a, b)
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


class Neg(Function):
    """y = -x;  dx = -g."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


def add(a: Any, b: Any, alpha: float = 1.0) -> Tensor:
    """a + alpha * b with broadcasting."""
    if alpha != 1.0:
        b = mul(b, alpha) if isinstance(b, Tensor) else b * alpha
    return _dispatch(Add, a, b)


def sub(a: Any, b: Any) -> Tensor:
    return _dispatch(Sub, a, b)


def mul(a: Any, b: Any) -> Tensor:
    return _dispatch(Mul, a, b)


def div(a: Any, b: Any) -> Tensor:
    return _dispatch(Div, a, b)


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001
    return _dispatch(Pow, a, b)


def neg(x: Tensor) -> Tensor:
    return Neg.apply(x)


def _dispatch(fn: type, a: Any, b: Any) -> Tensor:
    if isinstance(a, Tensor):
        return fn.apply(a, _as_operand(b, a))
    return fn.apply(_as_operand(a, b), b)


# ---------------------------------------------------------------------------- unary math


class Exp(Function):
    """y = e^x;  dx = g * y."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * y


class Log(Function):
    """y = ln x;  dx = g / x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g / x


class Sqrt(Function):
    """y = sqrt(x);  dx = g / (2 y)."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g / (2 * y)


class Rsqrt(Function):
    """y = 1 / sqrt(x);  dx = -g * y^3 / 2."""

    @staticmethod
    def forward(ctx, x):
        y = 1 / ctx.xp.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return -0.5 * g * y * y * y


class Abs(Function):
    """y = |x|;  dx = g * sign(x) (0 at x = 0)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.abs(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * ctx.xp.sign(x)


class Sign(Function):
    """y = sign(x);  dx = 0."""

    @staticmethod
    def forward(ctx, x):
        return ctx.xp.sign(x)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.zeros_like(g)


class Sin(Function):
    """y = sin x;  dx = g cos x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * ctx.xp.cos(x)


class Cos(Function):
    """y = cos x;  dx = -g sin x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.cos(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return -g * ctx.xp.sin(x)


class Tanh(Function):
    """y = tanh x;  dx = g (1 - y^2)."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * (1 - y * y)


def _sigmoid(xp: Any, x: Any) -> Any:
    """1 / (1 + e^-x) computed from e^-|x| so that it never overflows."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


class Sigmoid(Function):
    """y = 1 / (1 + e^-x);  dx = g y (1 - y)."""

    @staticmethod
    def forward(ctx, x):
        y = _sigmoid(ctx.xp, x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * y * (1 - y)


class Relu(Function):
    """y = max(x, 0);  dx = g [x > 0]."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * (y > 0)


class LeakyRelu(Function):
    """y = x if x > 0 else a x;  dx = g (1 if x > 0 else a)."""

    @staticmethod
    def forward(ctx, x, negative_slope):
        ctx.slope = negative_slope
        ctx.save_for_backward(x)
        return ctx.xp.where(x > 0, x, negative_slope * x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return ctx.xp.where(x > 0, g, ctx.slope * g), None


class Gelu(Function):
    """Exact: y = x Phi(x), dx = g (Phi(x) + x phi(x)). ``approximate="tanh"``:
    y = x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) and its derivative."""

    @staticmethod
    def forward(ctx, x, approximate):
        ctx.approximate = approximate
        ctx.save_for_backward(x)
        return ctx.backend.gelu(x, approximate)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return ctx.backend.gelu_backward(x, g, ctx.approximate), None


class Silu(Function):
    """y = x sigmoid(x);  dx = g s (1 + x (1 - s))."""

    @staticmethod
    def forward(ctx, x):
        s = _sigmoid(ctx.xp, x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved
        return g * s * (1 + x * (1 - s))


class Softplus(Function):
    """y = log(1 + e^(b x)) / b (y = x where b x > threshold);  dx = g sigmoid(b x)."""

    @staticmethod
    def forward(ctx, x, beta, threshold):
        xp = ctx.xp
        bx = beta * x
        ctx.save_for_backward(x)
        ctx.beta, ctx.threshold = beta, threshold
        soft = (xp.maximum(bx, 0) + xp.log1p(xp.exp(-xp.abs(bx)))) / beta
        return xp.where(bx > threshold, x, soft)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        bx = ctx.beta * x
        return ctx.xp.where(bx > ctx.threshold, g, g * _sigmoid(ctx.xp, bx)), None, None


class Clamp(Function):
    """y = min(max(x, lo), hi);  dx = g [lo <= x <= hi]."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return ctx.xp.clip(x, lo, hi)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        keep = ctx.xp.ones(x.shape, dtype=bool)
        if ctx.lo is not None:
            keep &= x >= ctx.lo
        if ctx.hi is not None:
            keep &= x <= ctx.hi
        return g * keep, None, None


class Maximum(Function):
    """y = max(a, b);  the gradient goes to the larger input, split evenly on ties."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _binary("maximum", ctx.xp.maximum, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        wa = (a > b) + 0.5 * (a == b)
        return (unbroadcast(g * wa, shape_of(a)) if ctx.needs_input_grad[0] else None,
                unbroadcast(g * (1 - wa), shape_of(b)) if ctx.needs_input_grad[1] else None)


class Minimum(Function):
    """y = min(a, b);  the gradient goes to the smaller input, split evenly on ties."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _binary("minimum", ctx.xp.minimum, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        wa = (a < b) + 0.5 * (a == b)
        return (unbroadcast(g * wa, shape_of(a)) if ctx.needs_input_grad[0] else None,
                unbroadcast(g * (1 - wa), shape_of(b)) if ctx.needs_input_grad[1] else None)


class Where(Function):
    """y = a where cond else b;  da = g [cond], db = g [not cond]."""

    @staticmethod
    def forward(ctx, cond, a, b):
        shape = broadcast_shapes("where", shape_of(cond), shape_of(a), shape_of(b))
        ctx.save_for_backward(cond)
        ctx.shapes = shape_of(a), shape_of(b)
        ctx.out_shape = shape
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


class MaskedFill(Function):
    """y = value where mask else x;  dx = g [not mask]."""

    @staticmethod
    def forward(ctx, x, mask, value):
        if broadcast_shapes("masked_fill", x.shape, shape_of(mask)) != x.shape:
            raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to "
                             f"the input's shape {x.shape}")
        if mask.dtype != bool:
            raise TypeError(f"masked_fill: mask must be bool, got {mask.dtype}")
        ctx.save_for_backward(mask)
        return ctx.xp.where(mask, ctx.xp.asarray(value, dtype=x.dtype), x)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved
        return ctx.xp.where(mask, ctx.xp.zeros((), dtype=g.dtype), g), None, None


class Clone(Function):
    """y = copy of x;  dx = g."""

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        return g


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


# ---------------------------------------------------------------------------- public functions


def exp(x: Tensor) -> Tensor:
    return Exp.apply(x)


def log(x: Tensor) -> Tensor:
    return Log.apply(x)


def sqrt(x: Tensor) -> Tensor:
    return Sqrt.apply(x)


def rsqrt(x: Tensor) -> Tensor:
    return Rsqrt.apply(x)


def abs(x: Tensor) -> Tensor:  # noqa: A001
    return Abs.apply(x)


def sign(x: Tensor) -> Tensor:
    return Sign.apply(x)


def sin(x: Tensor) -> Tensor:
    return Sin.apply(x)


def cos(x: Tensor) -> Tensor:
    return Cos.apply(x)


def tanh(x: Tensor) -> Tensor:
    return Tanh.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid.apply(x)


def relu(x: Tensor) -> Tensor:
    return Relu.apply(x)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    return LeakyRelu.apply(x, negative_slope)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(x, approximate)


def silu(x: Tensor) -> Tensor:
    return Silu.apply(x)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    return Softplus.apply(x, beta, threshold)


def clamp(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    if min is None and max is None:
        raise ValueError("clamp: give at least one of min and max")
    return Clamp.apply(x, min, max)


def maximum(a: Any, b: Any) -> Tensor:
    return _dispatch(Maximum, a, b)


def minimum(a: Any, b: Any) -> Tensor:
    return _dispatch(Minimum, a, b)


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """Elementwise ``a if cond else b`` (``cond`` a bool tensor)."""
    like = a if isinstance(a, Tensor) else b
    if not isinstance(like, Tensor):
        raise TypeError("where: a or b must be a Tensor")
    cond = cond if isinstance(cond, Tensor) else Tensor(cond, backend=like.backend)
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be bool, got {cond.dtype}")
    a = _as_operand(a, like)
    b = _as_operand(b, like)
    return Where.apply(cond, a, b)


def masked_fill(x: Tensor, mask: Any, value: float) -> Tensor:
    """``x`` with ``value`` written where the bool ``mask`` (broadcast to x) is True."""
    mask = mask if isinstance(mask, Tensor) else Tensor(mask, backend=x.backend)
    return MaskedFill.apply(x, mask, value)


def clone(x: Tensor) -> Tensor:
    return Clone.apply(x)


def cast(x: Tensor, dtype: Any) -> Tensor:
    if x.dtype == dtype:
        return x
    return Cast.apply(x, dtype)


def to_backend(x: Tensor, name: str) -> Tensor:
    from ..backends import get_backend

    target = get_backend(name)
    if target.xp is x.backend.xp:
        return x  # same memory (numpy and numba both hold NumPy arrays): nothing to move
    return ToBackend.apply(x, target)


# ---------------------------------------------------------------------------- comparisons (no grad)


def _compare(name: str, fn_name: str) -> Any:
    def compare(a: Any, b: Any) -> Tensor:
        like = a if isinstance(a, Tensor) else b
        xp = like.backend.xp
        ra = a.data if isinstance(a, Tensor) else a
        rb = b.data if isinstance(b, Tensor) else b
        return Tensor._make(xp.asarray(_binary(name, getattr(xp, fn_name), ra, rb)))

    compare.__name__ = name
    compare.__doc__ = f"Elementwise ``{fn_name}`` as a bool tensor (not differentiable)."
    return compare


less = _compare("less", "less")
less_equal = _compare("less_equal", "less_equal")
greater = _compare("greater", "greater")
greater_equal = _compare("greater_equal", "greater_equal")
equal = _compare("equal", "equal")
not_equal = _compare("not_equal", "not_equal")
logical_and = _compare("logical_and", "logical_and")
logical_or = _compare("logical_or", "logical_or")
logical_xor = _compare("logical_xor", "logical_xor")
eq, ne, lt, le, gt, ge = equal, not_equal, less, less_equal, greater, greater_equal


def logical_not(x: Tensor) -> Tensor:
    return Tensor._make(x.backend.xp.logical_not(x.data))


def isnan(x: Tensor) -> Tensor:
    return Tensor._make(x.backend.xp.isnan(x.data))


def isfinite(x: Tensor) -> Tensor:
    return Tensor._make(x.backend.xp.isfinite(x.data))


def allclose(a: Tensor, b: Any, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    rb = b.data if isinstance(b, Tensor) else b
    return bool(a.backend.xp.allclose(a.data, rb, rtol=rtol, atol=atol))

