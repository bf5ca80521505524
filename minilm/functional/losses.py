"""Classification losses over a class dim: cross-entropy (class indices or
probabilities), NLL, KL divergence, multi-class margin; PyTorch names and semantics.
Knowledge distillation (soft-target KL + hard CE, hidden-state MSE) is composed of
these at the end of the file.
The losses computed entry by entry (regression, binary cross-entropy, hinge embedding)
are in elementwise_losses.py (and re-exported here); the helpers of both are in
_loss_util.py.

Each main loss is one Function with an explicit backward. ``reduction`` is ``'mean'``
(the default), ``'sum'`` or ``'none'`` (the per-element losses). For class-index losses
(cross_entropy, nll_loss) the class dim is dim 1 of an (N, C) or (N, C, d1, ...) input,
or dim 0 of a (C,) input; ``'mean'`` divides by the summed weights of the targets that
are not ``ignore_index``. Gradients reach the input and, where the target is a float
tensor, the target; class weights of cross_entropy / nll_loss / multi_margin_loss are
constants.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..autograd import Function
from ..backends.interface import kernel
from ..tensor import Tensor
from ._loss_util import (
    _REDUCTIONS,
    _as_tensor,
    _check_class_weight,
    _check_float,
    _check_reduction,
    _check_targets,
    _classes_back,
    _classes_last,
    _constant_weight,
    _expand_grad,
    _index_target_shape,
    _reduce,
    _same_shape,
)
from .elementwise_losses import (  # re-exported: every loss is in minilm.functional.losses
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    hinge_embedding_loss,
    huber_loss,
    l1_loss,
    mse_loss,
    smooth_l1_loss,
)
from .nn import log_softmax

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "distillation_loss",
    "hidden_state_mse",
    "hinge_embedding_loss",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "mse_loss",
    "multi_margin_loss",
    "nll_loss",
    "smooth_l1_loss",
]

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


@kernel("cross_entropy")
def cross_entropy_kernel(be, logits, target, ignore_index, label_smoothing, weight):
    """Per-row loss of 2-D ``logits`` (N, C) against class indices (N,).

    loss_i = w[y_i] * ((1-eps) * (-logp[i, y_i]) + eps * mean_c(-logp[i, c]))
    (with class weights, the smoothing term is sum_c w_c (-logp[i,c]) / C, as in
    PyTorch). Rows whose target is ``ignore_index`` get loss 0 and row weight 0.
    Returns (loss_per_row, row_weight, logp)."""
    xp = be.xp
    logp = be.log_softmax(logits, 1)
    valid = target != ignore_index
    safe_t = xp.where(valid, target, 0)
    nll = -logp[xp.arange(logits.shape[0]), safe_t]
    if weight is not None:
        row_w = weight[safe_t] * valid
        nll = nll * weight[safe_t]
    else:
        row_w = valid.astype(logits.dtype)
    loss = (1.0 - label_smoothing) * nll
    if label_smoothing > 0.0:
        C = logits.shape[1]
        if weight is not None:
            smooth = -(logp * weight).sum(axis=1) / C
        else:
            smooth = -logp.sum(axis=1) / C
        loss = loss + label_smoothing * smooth
    loss = loss * valid
    return loss, row_w.astype(logits.dtype), logp


@kernel("cross_entropy_backward")
def cross_entropy_backward_kernel(be, logp, target, g_row, ignore_index, label_smoothing,
                                  weight):
    """d loss_i / d logits_i scaled by the upstream per-row gradient ``g_row``:
    dz = a_i * softmax(z_i) - (1-eps) w[y_i] onehot(y_i) - eps/C * w   where
    a_i = (1-eps) w[y_i] + eps/C * sum_c w_c (w = 1 without class weights)."""
    xp = be.xp
    N, C = logp.shape
    valid = target != ignore_index
    safe_t = xp.where(valid, target, 0)
    wy = weight[safe_t] if weight is not None else xp.ones(N, dtype=logp.dtype)
    wsum = weight.sum() if weight is not None else float(C)
    a = (1.0 - label_smoothing) * wy + label_smoothing / C * wsum
    dz = xp.exp(logp) * a[:, None]
    dz[xp.arange(N), safe_t] -= (1.0 - label_smoothing) * wy
    if label_smoothing > 0.0:
        dz -= label_smoothing / C * (weight[None, :] if weight is not None else 1.0)
    return dz * (g_row * valid)[:, None]


class CrossEntropy(Function):
    """Class-index targets, z = logits, logp = log_softmax(z), eps = label smoothing:
    loss_i = (1-eps) w[y_i] (-logp[i, y_i]) + eps/C sum_c w_c (-logp[i, c]);
    dz_i = (a_i softmax(z_i) - (1-eps) w[y_i] onehot(y_i) - eps/C w) * g_i with
    a_i = (1-eps) w[y_i] + eps/C sum_c w_c.  Kernels: cross_entropy(_backward) above."""

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


# ---------------------------------------------------------------- KL divergence, multi-class margin


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


# ---------------------------------------------------------------- knowledge distillation


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Any = None,
                      T: float = 2.0, alpha: float = 0.5, ignore_index: int = -100) -> Tensor:
    """Knowledge distillation (Hinton et al. 2015), classes on the last dim::

        alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)

    The KL is summed over classes and averaged over positions whose target is not
    ``ignore_index`` (all positions when ``targets`` is None, which needs alpha = 1); CE
    is :func:`cross_entropy`. The gradient of the soft term wrt z_s is
    (softmax(z_s/T) - softmax(z_t/T)) / T per position, so T^2 keeps its size comparable
    to the hard term's as T changes. Composed of log_softmax, kl_div and cross_entropy:
    their backwards give the gradient; the teacher logits are constants (detached).
    alpha = 0 gives exactly the CE, alpha = 1 exactly T^2 * KL."""
    op = "distillation_loss"
    _check_float(op, student_logits, "student_logits")
    teacher = _as_tensor(teacher_logits, student_logits).detach()
    _check_float(op, teacher, "teacher_logits")
    _same_shape(op, student_logits, teacher)
    if not (isinstance(T, numbers.Real) and not isinstance(T, bool) and 0 < T < float("inf")):
        raise ValueError(f"{op}: T must be a finite number > 0, got {T!r}")
    if not (isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and 0 <= alpha <= 1):
        raise ValueError(f"{op}: alpha must be a number in [0, 1], got {alpha!r}")
    if student_logits.ndim == 0:
        raise ValueError(f"{op}: logits must have a class dim, got a 0-d tensor")
    if targets is None and alpha < 1:
        raise ValueError(f"{op}: targets are needed unless alpha = 1 (got alpha={alpha})")
    T, alpha = float(T), float(alpha)
    c = student_logits.shape[-1]
    zs = student_logits.reshape(-1, c)
    y = None
    if targets is not None:
        y = targets if isinstance(targets, Tensor) else Tensor(targets, backend=zs.backend)
        if int(np.prod(y.shape)) != zs.shape[0]:
            raise ValueError(f"{op}: targets {y.shape} must have the logits' shape "
                             f"{student_logits.shape} without its last (class) dim")
        y = y.reshape(-1)
    hard = cross_entropy(zs, y, ignore_index=ignore_index) if alpha < 1 else None
    if alpha == 0:
        return hard
    log_q = log_softmax(zs / T, dim=-1)
    log_p = log_softmax(teacher.reshape(-1, c) / T, dim=-1)
    kl_rows = kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=-1)
    if y is None:
        soft = kl_rows.mean()
    else:
        valid = (y.data != ignore_index).astype(zs.dtype)
        soft = (kl_rows * Tensor._make(valid)).sum() / max(float(valid.sum()), 1.0)
    soft = soft * (T * T)
    if alpha == 1:
        return soft
    return soft * alpha + hard * (1.0 - alpha)


def hidden_state_mse(student_h: Tensor, teacher_h: Any, proj: Any = None) -> Tensor:
    """mean((proj(h_s) - h_t)^2) over all entries: hidden-state distillation (FitNets,
    TinyBERT). ``proj`` (e.g. a Linear d_student -> d_teacher, trained with the student)
    maps student states to the teacher's width; the teacher states are constants."""
    op = "hidden_state_mse"
    h = proj(student_h) if proj is not None else student_h
    t = _as_tensor(teacher_h, h).detach()
    if h.shape != t.shape:
        raise ValueError(f"{op}: student states {h.shape} (after proj) and teacher states "
                         f"{t.shape} differ; pass proj to map the student's width")
    return mse_loss(h, t)
