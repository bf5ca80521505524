"""Loss functions, PyTorch names and semantics.

Each main loss is one Function with an explicit backward. ``reduction`` is ``'mean'``
(the default), ``'sum'`` or ``'none'`` (the per-element losses). For class-index losses
(cross_entropy, nll_loss) the class dim is dim 1 of an (N, C) or (N, C, d1, ...) input,
or dim 0 of a (C,) input; ``'mean'`` divides by the summed weights of the targets that
are not ``ignore_index``. Gradients reach the input and, where the target is a float
tensor, the target; class weights of cross_entropy / nll_loss / multi_margin_loss are
constants.
"""

from __future__ import annotations

import math
from typing import Any

from ..autograd import Function, is_grad_enabled
from ..tensor import Tensor
from ._util import broadcast_shapes, unbroadcast

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "hinge_embedding_loss",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "mse_loss",
    "multi_margin_loss",
    "nll_loss",
    "smooth_l1_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------- helpers


def _check_reduction(op: str, reduction: str, allowed: tuple = _REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ValueError(f"{op}: reduction must be one of {allowed}, got {reduction!r}")


def _as_tensor(x: Any, like: Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x, backend=like.backend, dtype=like.dtype)


def _reduce(loss: Any, reduction: str) -> Any:
    """Elementwise losses -> the reduced result."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def _expand_grad(xp: Any, g: Any, shape: tuple, reduction: str) -> Any:
    """The gradient of each elementwise loss, given the gradient ``g`` of the result."""
    if reduction == "none":
        return g
    if reduction == "mean":
        g = g / max(math.prod(shape), 1)
    return xp.broadcast_to(g, shape)


def _same_shape(op: str, a: Tensor, b: Tensor, what: str = "target") -> None:
    if a.shape != b.shape:
        raise ValueError(f"{op}: input shape {a.shape} and {what} shape {b.shape} differ; "
                         "reshape one of them (losses do not broadcast)")


def _check_float(op: str, t: Tensor, what: str) -> None:
    if t.dtype.kind != "f":
        raise TypeError(f"{op}: {what} must be a floating-point tensor, got {t.dtype}")


def _constant_weight(op: str, weight: Tensor | None) -> None:
    if weight is not None and weight.requires_grad and is_grad_enabled():
        raise ValueError(f"{op}: gradients with respect to the class weights are not "
                         "supported; pass weight.detach()")


# ---------------------------------------------------------------------------- class dim helpers


def _classes_last(x: Any) -> Any:
    """(C,) -> (1, C);  (N, C) -> (N, C);  (N, C, d1, ...) -> (N*d1*..., C)."""
    if x.ndim == 1:
        return x[None, :]
    if x.ndim == 2:
        return x
    n, c, rest = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    return x.reshape(n, c, rest).swapaxes(1, 2).reshape(n * rest, c)


def _classes_back(dz: Any, shape: tuple) -> Any:
    """Inverse of ``_classes_last`` (for gradients)."""
    if len(shape) <= 2:
        return dz.reshape(shape)
    n, c, rest = shape[0], shape[1], math.prod(shape[2:])
    return dz.reshape(n, rest, c).swapaxes(1, 2).reshape(shape)


def _index_target_shape(op: str, input: Tensor, target: Tensor) -> None:
    if input.ndim == 0:
        raise ValueError(f"{op}: input must be (C,), (N, C) or (N, C, d1, ...), got a 0-d "
                         "tensor")
    want = () if input.ndim == 1 else (input.shape[0],) + input.shape[2:]
    if target.shape != want:
        raise ValueError(f"{op}: input of shape {input.shape} needs class-index target of "
                         f"shape {want}, got {target.shape}")


def _check_targets(op: str, target_t: Tensor, num_classes: int,
                   ignore_index: int | None) -> None:
    """ValueError if a target id is outside [0, C) and is not ``ignore_index``."""
    target, xp = target_t.data, target_t.backend.xp
    if target.size == 0:
        return
    bad = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bool(bad.any()):
        first = int(target.reshape(-1)[int(xp.argmax(bad.reshape(-1)))])
        also = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
        raise ValueError(f"{op}: target id {first} is out of range for {num_classes} classes "
                         f"(ids must be in [0, {num_classes}){also})")


def _check_class_weight(op: str, weight: Tensor | None, num_classes: int) -> None:
    if weight is not None and weight.shape != (num_classes,):
        raise ValueError(f"{op}: weight must have shape ({num_classes},) (one per class), "
                         f"got {weight.shape}")


# ---------------------------------------------------------------------------- cross-entropy


def _reduce_rows(ctx: Any, loss: Any, row_w: Any, reduction: str, shape: tuple) -> Any:
    """Per-row losses reduced as PyTorch does for class-index losses: 'none' keeps them,
    'sum' adds them, 'mean' divides the sum by the total weight of the counted rows
    (ignored rows have weight 0)."""
    if reduction == "none":
        return loss.reshape(shape)
    if reduction == "sum":
        return loss.sum()
    ctx.total_w = row_w.sum()
    return loss.sum() / ctx.total_w


def _rows_grad(ctx: Any, g: Any, reduction: str, rows_shape: tuple) -> Any:
    """The upstream gradient of each row's loss, undoing :func:`_reduce_rows`."""
    if reduction == "none":
        return g.reshape(-1)
    if reduction == "mean":
        g = g / ctx.total_w
    return ctx.xp.broadcast_to(g, rows_shape)


class CrossEntropy(Function):
    """Class-index targets, z = logits, logp = log_softmax(z), eps = label smoothing:
    loss_i = (1-eps) w[y_i] (-logp[i, y_i]) + eps/C sum_c w_c (-logp[i, c]);
    dz_i = (a_i softmax(z_i) - (1-eps) w[y_i] onehot(y_i) - eps/C w) * g_i with
    a_i = (1-eps) w[y_i] + eps/C sum_c w_c.  Kernels: backend.cross_entropy(_backward)."""

    @staticmethod
    def forward(ctx, x, target, weight, *, ignore_index, label_smoothing, reduction):
        z = _classes_last(x)
        t = target.reshape(-1)
        loss, row_w, logp = ctx.backend.cross_entropy(z, t, ignore_index, label_smoothing,
                                                      weight)
        ctx.save_for_backward(logp, t, weight)
        ctx.opts = x.shape, ignore_index, label_smoothing, reduction
        return _reduce_rows(ctx, loss, row_w, reduction, target.shape)

    @staticmethod
    def backward(ctx, g):
        logp, t, weight = ctx.saved
        shape, ignore_index, label_smoothing, reduction = ctx.opts
        g_row = _rows_grad(ctx, g, reduction, t.shape)
        dz = ctx.backend.cross_entropy_backward(logp, t, g_row, ignore_index,
                                                label_smoothing, weight)
        return _classes_back(dz, shape), None, None


class SoftCrossEntropy(Function):
    """Class-probability targets t, t' = (1-eps) t + eps/C:
    loss_i = -sum_c w_c t'_c logp_c;  dz = g (softmax(z) sum_c w_c t'_c - w t'),
    dt = -g (1-eps) w logp.  'mean' divides by the number of rows (N d1 ...)."""

    @staticmethod
    def forward(ctx, x, target, weight, *, label_smoothing, reduction):
        cdim = 0 if x.ndim == 1 else 1
        c = x.shape[cdim]
        logp = ctx.backend.log_softmax(x, cdim)
        w = None
        if weight is not None:
            w = weight.reshape((c,) + (1,) * (x.ndim - cdim - 1))
        ts = target if label_smoothing == 0.0 else \
            (1.0 - label_smoothing) * target + label_smoothing / c
        wt = ts if w is None else ts * w
        loss = -(wt * logp).sum(axis=cdim)
        ctx.save_for_backward(logp, wt, w)
        ctx.opts = cdim, label_smoothing, reduction, loss.shape
        return _reduce(loss, reduction)

    @staticmethod
    def backward(ctx, g):
        logp, wt, w = ctx.saved
        cdim, label_smoothing, reduction, loss_shape = ctx.opts
        xp = ctx.xp
        gl = xp.expand_dims(_expand_grad(xp, g, loss_shape, reduction), cdim)
        dx = dt = None
        if ctx.needs_input_grad[0]:
            dx = gl * (xp.exp(logp) * wt.sum(axis=cdim, keepdims=True) - wt)
        if ctx.needs_input_grad[1]:
            dt = -(1.0 - label_smoothing) * gl * logp
            if w is not None:
                dt = dt * w
        return dx, dt, None


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """-log softmax(input)[target] over the class dim (dim 1; dim 0 of a (C,) input).

    ``target`` holds class indices (an integer tensor of the input's shape without the
    class dim) or class probabilities (a float tensor of the input's shape). ``weight``
    rescales each class; ``label_smoothing`` mixes the target with the uniform
    distribution; index targets equal to ``ignore_index`` add nothing. 'mean' divides
    by the summed weights of the counted targets (index targets) or by the number of
    rows (probability targets)."""
    op = "cross_entropy"
    _check_reduction(op, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    _check_float(op, input, "input")
    if input.ndim == 0:
        raise ValueError(f"{op}: input must be (C,), (N, C) or (N, C, d1, ...), got a 0-d "
                         "tensor")
    target = target if isinstance(target, Tensor) else Tensor(target, backend=input.backend)
    c = input.shape[0 if input.ndim == 1 else 1]
    _check_class_weight(op, weight, c)
    _constant_weight(op, weight)
    if target.dtype.kind == "f":
        if target.shape != input.shape:
            raise ValueError(f"{op}: probability target must have the input's shape "
                             f"{input.shape}, got {target.shape}")
        return SoftCrossEntropy.apply(input, target, weight, label_smoothing=float(label_smoothing),
                                      reduction=reduction)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold class indices (integer) or class "
                        f"probabilities (float), got {target.dtype}")
    _index_target_shape(op, input, target)
    _check_targets(op, target, c, ignore_index)
    return CrossEntropy.apply(input, target, weight, ignore_index=int(ignore_index),
                              label_smoothing=float(label_smoothing), reduction=reduction)


class NLLLoss(Function):
    """loss_i = -w[y_i] x[i, y_i] (0 where y_i == ignore_index);
    dx[i, y_i] = -w[y_i] g_i, zero elsewhere."""

    @staticmethod
    def forward(ctx, x, target, weight, *, ignore_index, reduction):
        xp = ctx.xp
        z = _classes_last(x)
        t = target.reshape(-1)
        valid = t != ignore_index
        safe_t = xp.where(valid, t, 0)
        rows = xp.arange(z.shape[0])
        wy = valid.astype(x.dtype)
        if weight is not None:
            wy = wy * weight[safe_t]
        loss = -z[rows, safe_t] * wy
        ctx.save_for_backward(safe_t, wy)
        ctx.opts = x.shape, z.shape, reduction
        return _reduce_rows(ctx, loss, wy, reduction, target.shape)

    @staticmethod
    def backward(ctx, g):
        safe_t, wy = ctx.saved
        shape, zshape, reduction = ctx.opts
        xp = ctx.xp
        g_row = _rows_grad(ctx, g, reduction, safe_t.shape)
        dz = xp.zeros(zshape, dtype=g.dtype)
        dz[xp.arange(zshape[0]), safe_t] = -wy * g_row
        return _classes_back(dz, shape), None, None


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,
             ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of log-probabilities ``input`` at class-index ``target``:
    -w[y] input[y] over the class dim (dim 1; dim 0 of a (C,) input)."""
    op = "nll_loss"
    _check_reduction(op, reduction)
    _check_float(op, input, "input")
    target = target if isinstance(target, Tensor) else Tensor(target, backend=input.backend)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold class indices (integer), got {target.dtype}")
    _index_target_shape(op, input, target)
    c = input.shape[0 if input.ndim == 1 else 1]
    _check_class_weight(op, weight, c)
    _constant_weight(op, weight)
    _check_targets(op, target, c, ignore_index)
    return NLLLoss.apply(input, target, weight, ignore_index=int(ignore_index),
                         reduction=reduction)


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


# ---------------------------------------------------------------------------- divergences, margins


class KLDiv(Function):
    """Input x = log q. l = t (log t - x) (0 where t == 0); with ``log_target``
    l = e^t (t - x).  dx = -g t (or -g e^t);  dt = g (log t + 1 - x)
    (or g e^t (t - x + 1))."""

    @staticmethod
    def forward(ctx, x, t, *, log_target, reduction):
        xp = ctx.xp
        if log_target:
            p = xp.exp(t)
            raw = p * (t - x)
            logt = t
        else:
            p = t
            pos = t > 0
            logt = xp.log(xp.where(pos, t, 1))
            raw = xp.where(pos, t * logt, 0) - t * x
        ctx.save_for_backward(x, p, logt)
        ctx.opts = log_target, reduction
        if reduction == "batchmean":
            return raw.sum() / (x.shape[0] if x.ndim else 1)
        return _reduce(raw, reduction)

    @staticmethod
    def backward(ctx, g):
        x, p, logt = ctx.saved
        log_target, reduction = ctx.opts
        xp = ctx.xp
        if reduction == "batchmean":
            gl = xp.broadcast_to(g / (x.shape[0] if x.ndim else 1), x.shape)
        else:
            gl = _expand_grad(xp, g, x.shape, reduction)
        dx = -gl * p if ctx.needs_input_grad[0] else None
        dt = None
        if ctx.needs_input_grad[1]:
            dt = gl * (logt + 1 - x)
            if log_target:
                dt = dt * p
        return dx, dt


def kl_div(input: Tensor, target: Any, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """KL(target || q) pointwise, with ``input`` = log q: target (log target - input).
    'batchmean' divides the sum by the batch size (the true KL per sample); 'mean'
    divides by the number of elements, as in PyTorch."""
    op = "kl_div"
    _check_reduction(op, reduction, _REDUCTIONS + ("batchmean",))
    _check_float(op, input, "input")
    target = _as_tensor(target, input)
    _check_float(op, target, "target")
    _same_shape(op, input, target)
    return KLDiv.apply(input, target, log_target=bool(log_target), reduction=reduction)


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


class MultiMargin(Function):
    """Multi-class hinge, h_c = max(0, margin - x_y + x_c) for c != y:
    loss = w[y] sum_{c != y} h_c^p / C;  dx_c = g w[y] p h_c^(p-1) / C [h_c > 0],
    dx_y = -sum_{c != y} dx_c."""

    @staticmethod
    def forward(ctx, x, target, weight, *, p, margin, reduction):
        xp = ctx.xp
        z = x[None, :] if x.ndim == 1 else x
        t = target.reshape(-1)
        n, c = z.shape
        rows = xp.arange(n)
        h = margin - z[rows, t][:, None] + z
        active = h > 0
        active[rows, t] = False
        hp = xp.where(active, h if p == 1 else h * h, 0)
        wy = xp.ones(n, dtype=x.dtype) if weight is None else weight[t].astype(x.dtype)
        loss = hp.sum(axis=1) * wy / c
        ctx.save_for_backward(h, active, wy, t)
        ctx.opts = x.shape, p, reduction
        if x.ndim == 1:
            loss = loss.reshape(())
        return _reduce(loss, reduction)

    @staticmethod
    def backward(ctx, g):
        h, active, wy, t = ctx.saved
        shape, p, reduction = ctx.opts
        xp = ctx.xp
        n, c = h.shape
        gl = _expand_grad(xp, g, (n,) if len(shape) == 2 else (), reduction).reshape(n)
        coef = (gl * wy / c)[:, None]
        dz = xp.where(active, coef if p == 1 else coef * 2 * h, 0)
        dz[xp.arange(n), t] = -dz.sum(axis=1)
        return dz.reshape(shape), None, None


def multi_margin_loss(input: Tensor, target: Tensor, p: int = 1,
                      margin: float = 1.0, weight: Tensor | None = None,
                      reduction: str = "mean") -> Tensor:
    """Multi-class hinge loss of scores ``input`` (N, C) or (C,) against class-index
    ``target``: sum over wrong classes of max(0, margin - x[y] + x[c])^p / C."""
    op = "multi_margin_loss"
    _check_reduction(op, reduction)
    _check_float(op, input, "input")
    if p not in (1, 2):
        raise ValueError(f"{op}: p must be 1 or 2, got {p}")
    if input.ndim not in (1, 2):
        raise ValueError(f"{op}: input must be (N, C) or (C,), got shape {input.shape}")
    target = target if isinstance(target, Tensor) else Tensor(target, backend=input.backend)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold class indices (integer), got {target.dtype}")
    _index_target_shape(op, input, target)
    c = input.shape[-1]
    _check_class_weight(op, weight, c)
    _constant_weight(op, weight)
    _check_targets(op, target, c, None)
    return MultiMargin.apply(input, target, weight, p=int(p), margin=float(margin),
                             reduction=reduction)
