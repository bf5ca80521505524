"""Losses computed entry by entry, PyTorch names and semantics: regression (MSE, L1,
smooth L1, Huber), binary cross-entropy (on probabilities or logits), hinge embedding.

``reduction`` is ``'mean'`` (the default), ``'sum'`` or ``'none'`` (the per-element
losses). Gradients reach the input and, where the target is a float tensor, the
target. The class-dim losses (cross-entropy, NLL, KL, multi-margin) are in losses.py.
"""

from __future__ import annotations

from typing import Any

from ..autograd import Function
from ..tensor import Tensor
from ._loss_util import (
    _as_tensor,
    _check_float,
    _check_reduction,
    _expand_grad,
    _reduce,
    _same_shape,
)
from ._util import broadcast_shapes, unbroadcast

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "hinge_embedding_loss",
    "huber_loss",
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
]


# ---------------------------------------------------------------------------- regression losses


class _PointwiseLoss(Function):
    """Base of losses l(d) of the difference d = x - t:  dx = g l'(d), dt = -g l'(d).
    Subclasses define ``loss(xp, d, opt)`` and ``dloss(xp, d, opt)``."""

    @staticmethod
    def loss(xp: Any, d: Any, opt: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def dloss(xp: Any, d: Any, opt: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def forward(cls, ctx, x, t, *, reduction, opt=None):
        d = x - t
        ctx.save_for_backward(d)
        ctx.reduction, ctx.opt = reduction, opt
        return _reduce(cls.loss(ctx.xp, d, opt), reduction)

    @classmethod
    def backward(cls, ctx, g):
        (d,) = ctx.saved
        xp = ctx.xp
        gd = _expand_grad(xp, g, d.shape, ctx.reduction) * cls.dloss(xp, d, ctx.opt)
        return (gd if ctx.needs_input_grad[0] else None,
                -gd if ctx.needs_input_grad[1] else None)


class MSELoss(_PointwiseLoss):
    """l = (x - t)^2;  dx = 2 (x - t) g,  dt = -dx."""

    @staticmethod
    def loss(xp, d, opt):
        return d * d

    @staticmethod
    def dloss(xp, d, opt):
        return 2 * d


class L1Loss(_PointwiseLoss):
    """l = |x - t|;  dx = sign(x - t) g,  dt = -dx."""

    @staticmethod
    def loss(xp, d, opt):
        return xp.abs(d)

    @staticmethod
    def dloss(xp, d, opt):
        return xp.sign(d)


class SmoothL1Loss(_PointwiseLoss):
    """l = d^2 / (2 beta) if |d| < beta else |d| - beta/2;
    dx = (d / beta if |d| < beta else sign(d)) g.  beta = 0 is l1_loss."""

    @staticmethod
    def loss(xp, d, beta):
        a = xp.abs(d)
        if beta == 0:
            return a
        return xp.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)

    @staticmethod
    def dloss(xp, d, beta):
        if beta == 0:
            return xp.sign(d)
        return xp.where(xp.abs(d) < beta, d / beta, xp.sign(d))


class HuberLoss(_PointwiseLoss):
    """l = d^2 / 2 if |d| <= delta else delta (|d| - delta/2);
    dx = (d if |d| <= delta else delta sign(d)) g."""

    @staticmethod
    def loss(xp, d, delta):
        a = xp.abs(d)
        return xp.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))

    @staticmethod
    def dloss(xp, d, delta):
        return xp.where(xp.abs(d) <= delta, d, delta * xp.sign(d))


def _pointwise(op: str, fn: type, input: Tensor, target: Any, reduction: str,
               opt: Any = None) -> Tensor:
    _check_reduction(op, reduction)
    _check_float(op, input, "input")
    target = _as_tensor(target, input)
    _check_float(op, target, "target")
    _same_shape(op, input, target)
    return fn.apply(input, target, reduction=reduction, opt=opt)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Squared error (input - target)^2, reduced."""
    return _pointwise("mse_loss", MSELoss, input, target, reduction)


def l1_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Absolute error |input - target|, reduced."""
    return _pointwise("l1_loss", L1Loss, input, target, reduction)


def smooth_l1_loss(input: Tensor, target: Any, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """Quadratic below ``beta``, linear above (Fast R-CNN's loss), reduced."""
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    return _pointwise("smooth_l1_loss", SmoothL1Loss, input, target, reduction, float(beta))


def huber_loss(input: Tensor, target: Any, reduction: str = "mean",
               delta: float = 1.0) -> Tensor:
    """Quadratic below ``delta``, linear (slope delta) above; reduced."""
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be > 0, got {delta}")
    return _pointwise("huber_loss", HuberLoss, input, target, reduction, float(delta))


# ---------------------------------------------------------------------------- binary cross-entropy


def _sigmoid(xp: Any, z: Any) -> Any:
    """1 / (1 + e^-z) from e^-|z|: no overflow, full precision in both tails."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


class BinaryCrossEntropy(Function):
    """l = -w (t log x + (1 - t) log(1 - x)), each log clamped to >= -100 (PyTorch);
    dx = g w (x - t) / max(x (1 - x), 1e-12),  dt = -g w (log x - log(1 - x)),
    dw = g l / w."""

    @staticmethod
    def forward(ctx, x, t, w, *, reduction):
        xp = ctx.xp
        lx = xp.where(x > 0, xp.maximum(xp.log(xp.where(x > 0, x, 1)), -100.0), -100.0)
        l1x = xp.where(x < 1, xp.maximum(xp.log1p(-xp.where(x < 1, x, 0)), -100.0), -100.0)
        raw = -(t * lx + (1 - t) * l1x)
        ctx.save_for_backward(x, t, w, lx, l1x, raw)
        ctx.reduction = reduction
        return _reduce(raw if w is None else raw * w, reduction)

    @staticmethod
    def backward(ctx, g):
        x, t, w, lx, l1x, raw = ctx.saved
        xp = ctx.xp
        gl = _expand_grad(xp, g, x.shape, ctx.reduction)
        gw = gl if w is None else gl * w
        need = ctx.needs_input_grad
        dx = gw * (x - t) / xp.maximum(x * (1 - x), 1e-12) if need[0] else None
        dt = -gw * (lx - l1x) if need[1] else None
        dw = unbroadcast(gl * raw, w.shape) if w is not None and need[2] else None
        return dx, dt, dw


class BCEWithLogits(Function):
    """l = w (pw t softplus(-x) + (1 - t) softplus(x)) = -w (pw t log s + (1-t) log(1-s)),
    s = sigmoid(x);  dx = g w ((1 - t) s - pw t (1 - s)),
    dt = g w (pw softplus(-x) - softplus(x)),  dpw = g w t softplus(-x),  dw = g l / w."""

    @staticmethod
    def forward(ctx, x, t, w, pw, *, reduction):
        xp = ctx.xp
        tail = xp.log1p(xp.exp(-xp.abs(x)))
        sp = xp.maximum(x, 0) + tail  # softplus(x) = -log(1 - s)
        spn = xp.maximum(-x, 0) + tail  # softplus(-x) = -log s
        pos = t * spn if pw is None else pw * t * spn
        raw = pos + (1 - t) * sp
        ctx.save_for_backward(x, t, w, pw, sp, spn, raw)
        ctx.reduction = reduction
        return _reduce(raw if w is None else raw * w, reduction)

    @staticmethod
    def backward(ctx, g):
        x, t, w, pw, sp, spn, raw = ctx.saved
        xp = ctx.xp
        gl = _expand_grad(xp, g, x.shape, ctx.reduction)
        gw = gl if w is None else gl * w
        pwt = t if pw is None else pw * t
        need = ctx.needs_input_grad
        dx = dt = dw = dpw = None
        if need[0]:
            dx = gw * ((1 - t) * _sigmoid(xp, x) - pwt * _sigmoid(xp, -x))
        if need[1]:
            dt = gw * ((spn if pw is None else pw * spn) - sp)
        if w is not None and need[2]:
            dw = unbroadcast(gl * raw, w.shape)
        if pw is not None and need[3]:
            dpw = unbroadcast(gw * t * spn, pw.shape)
        return dx, dt, dw, dpw


def _broadcast_param(op: str, p: Tensor | None, input: Tensor, what: str
                     ) -> Tensor | None:
    if p is None:
        return None
    p = _as_tensor(p, input)
    try:
        ok = broadcast_shapes(op, input.shape, p.shape) == input.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{op}: {what} of shape {p.shape} does not broadcast to the input "
                         f"shape {input.shape}")
    return p


def binary_cross_entropy(input: Tensor, target: Any, weight: Tensor | None = None,
                         reduction: str = "mean") -> Tensor:
    """-w (t log x + (1 - t) log(1 - x)) for probabilities x in [0, 1] (logs clamped to
    >= -100, as PyTorch does); ``weight`` broadcasts to the input."""
    op = "binary_cross_entropy"
    _check_reduction(op, reduction)
    _check_float(op, input, "input")
    target = _as_tensor(target, input)
    _check_float(op, target, "target")
    _same_shape(op, input, target)
    weight = _broadcast_param(op, weight, input, "weight")
    if input.data.size and bool(((input.data < 0) | (input.data > 1)).any()):
        raise ValueError(f"{op}: input (shape {input.shape}) must hold probabilities in "
                         "[0, 1]; use binary_cross_entropy_with_logits for raw scores")
    return BinaryCrossEntropy.apply(input, target, weight, reduction=reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Any,
                                     weight: Tensor | None = None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """binary_cross_entropy(sigmoid(input), target) computed stably from the logits:
    w (pw t softplus(-x) + (1 - t) softplus(x)). ``pos_weight`` weighs the positive
    term (broadcast along the last dim, one per class); ``weight`` broadcasts."""
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    _check_float(op, input, "input")
    target = _as_tensor(target, input)
    _check_float(op, target, "target")
    _same_shape(op, input, target)
    weight = _broadcast_param(op, weight, input, "weight")
    pos_weight = _broadcast_param(op, pos_weight, input, "pos_weight")
    return BCEWithLogits.apply(input, target, weight, pos_weight, reduction=reduction)


# ---------------------------------------------------------------------------- hinge embedding


class HingeEmbedding(Function):
    """l = [t != -1] x + [t != 1] max(0, margin - x) (t = +-1: x or the hinge);
    dx = g ([t != -1] - [t != 1][margin - x > 0])."""

    @staticmethod
    def forward(ctx, x, t, *, margin, reduction):
        xp = ctx.xp
        not_neg = (t != -1).astype(x.dtype)
        hinge = (t != 1) & (margin - x > 0)
        raw = not_neg * x + xp.where(hinge, margin - x, 0)
        ctx.save_for_backward(not_neg, hinge)
        ctx.reduction = reduction
        return _reduce(raw, reduction)

    @staticmethod
    def backward(ctx, g):
        not_neg, hinge = ctx.saved
        gl = _expand_grad(ctx.xp, g, not_neg.shape, ctx.reduction)
        return gl * (not_neg - hinge), None


def hinge_embedding_loss(input: Tensor, target: Any, margin: float = 1.0,
                         reduction: str = "mean") -> Tensor:
    """x where target == 1, max(0, margin - x) where target == -1 (``input`` is usually
    a distance between a pair; target says similar (1) or dissimilar (-1))."""
    op = "hinge_embedding_loss"
    _check_reduction(op, reduction)
    _check_float(op, input, "input")
    target = target if isinstance(target, Tensor) else Tensor(target, backend=input.backend)
    _same_shape(op, input, target)
    return HingeEmbedding.apply(input, target, margin=float(margin), reduction=reduction)
