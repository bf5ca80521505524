"""Unary elementwise ops: the math functions (exp, log, sqrt, rsqrt, abs, sign, sin,
cos, tanh, clamp) and the activations (sigmoid, relu, leaky_relu, gelu, silu, softplus).

Every class is one differentiable op, its public function right under it; the
docstring gives the forward formula and the gradient (the local derivative times the
incoming gradient ``g``). GELU calls the backend's ``gelu``/``gelu_backward`` kernels,
whose reference arithmetic is in ``gelu_kernel.py``; the others are written here
against ``ctx.xp``. softmax and log_softmax are in ``nn.py``.
"""

from __future__ import annotations

from typing import Any

from ..autograd import Function
from ..tensor import Tensor

__all__ = [
    "exp", "log", "sqrt", "rsqrt", "abs", "sign", "sin", "cos", "tanh", "clamp",
    "sigmoid", "relu", "leaky_relu", "gelu", "silu", "softplus",
]


# ---------------------------------------------------------------------------- math functions


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


def exp(x: Tensor) -> Tensor:
    return Exp.apply(x)


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


def log(x: Tensor) -> Tensor:
    return Log.apply(x)


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


def sqrt(x: Tensor) -> Tensor:
    return Sqrt.apply(x)


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


def rsqrt(x: Tensor) -> Tensor:
    return Rsqrt.apply(x)


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


def abs(x: Tensor) -> Tensor:  # noqa: A001
    return Abs.apply(x)


class Sign(Function):
    """y = sign(x);  dx = 0."""

    @staticmethod
    def forward(ctx, x):
        return ctx.xp.sign(x)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.zeros_like(g)


def sign(x: Tensor) -> Tensor:
    return Sign.apply(x)


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


def sin(x: Tensor) -> Tensor:
    return Sin.apply(x)


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


def cos(x: Tensor) -> Tensor:
    return Cos.apply(x)


class TanhFunction(Function):
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


def tanh(x: Tensor) -> Tensor:
    return TanhFunction.apply(x)


def _check_clamp(lo: float | None, hi: float | None) -> None:
    if lo is None and hi is None:
        raise ValueError("clamp: give at least one of min and max")


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


def clamp(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    _check_clamp(min, max)
    return Clamp.apply(x, min, max)


# ---------------------------------------------------------------------------- activations


def _sigmoid(xp: Any, x: Any) -> Any:
    """1 / (1 + e^-x) computed from e^-|x| so that it never overflows."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


class SigmoidFunction(Function):
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


def sigmoid(x: Tensor) -> Tensor:
    return SigmoidFunction.apply(x)


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


def relu(x: Tensor) -> Tensor:
    return Relu.apply(x)


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


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    return LeakyRelu.apply(x, negative_slope)


def _check_gelu(approximate: str) -> None:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


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


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    _check_gelu(approximate)
    return Gelu.apply(x, approximate)


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


def silu(x: Tensor) -> Tensor:
    return Silu.apply(x)


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


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    return Softplus.apply(x, beta, threshold)
