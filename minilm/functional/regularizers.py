"""Regularizers as differentiable loss terms, DropConnect, and the L1 proximal step.

- ``l1_penalty(params, lam) = lam * sum_w |w|``; gradient lam * sign(w) (0 at w = 0).
- ``l2_penalty(params, lam) = lam * sum_w w^2``, with no factor 1/2; gradient
  2 lam w. Plain SGD on ``loss + l2_penalty(params, lam)`` at learning rate lr makes
  the step w <- w - lr (grad + 2 lam w), i.e. weight decay with coefficient 2 lam
  (``optim.SGD(weight_decay=2 * lam)`` adds 2 lam w to the gradient; AdamW's
  decoupled decay is a different thing once the update is rescaled by Adam).
- ``drop_connect(weight, p, training)``: dropout on a weight matrix (Wan et al., 2013):
  each weight is zeroed with probability p and the rest scaled by 1/(1 - p), so
  E[W_dropped] = W; one mask per call, shared by the whole batch; identity in eval.
- ``l1_proximal_(params, t)``: the proximal step of t * sum |w| (soft thresholding),
  w <- sign(w) max(|w| - t, 0), in place. A subgradient step on the L1 term only
  pushes weights towards 0 by lr lam per step and then oscillates around it: it
  shrinks weights but does not give exact zeros. Proximal gradient (ISTA: a gradient
  step on the data loss, then ``l1_proximal_(params, lr * lam)``) does.

Embedding-space noise is ``minilm.data.augment.EmbeddingNoise``; dropout is
``F.dropout``; weight decay is the optimizers' ``weight_decay``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

from ..autograd import Function, no_grad
from ..tensor import Tensor
from .nn import dropout

__all__ = ["drop_connect", "l1_penalty", "l1_proximal_", "l2_penalty"]


def _params(op: str, params: Any, lam: Any) -> list:
    """The list of tensors in ``params`` (a Tensor or an iterable of them)."""
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not lam >= 0:
        raise ValueError(f"{op}: lam must be a number >= 0, got {lam!r}")
    ps = [params] if isinstance(params, Tensor) else list(params)
    if not ps:
        raise ValueError(f"{op}: no parameters given")
    for i, p in enumerate(ps):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: params[{i}] is a {type(p).__name__}, not a Tensor")
        if p.dtype.kind != "f":
            raise TypeError(f"{op}: params[{i}] must be floating point, got {p.dtype}")
    return ps


class L1Penalty(Function):
    """y = lam * sum_i sum |w_i|;  dw_i = lam * sign(w_i) * g."""

    @staticmethod
    def forward(ctx, *ws, lam):
        ctx.save_for_backward(*ws)
        ctx.lam = lam
        xp = ctx.xp
        total = sum(xp.abs(w).sum(dtype=xp.float64) for w in ws)
        return xp.asarray(lam * total, dtype=ws[0].dtype)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        return tuple((ctx.lam * g * xp.sign(w)).astype(w.dtype) if need else None
                     for w, need in zip(ctx.saved, ctx.needs_input_grad))


def l1_penalty(params: Tensor | Iterable[Tensor], lam: float) -> Tensor:
    """lam * sum over every entry w of every tensor in ``params`` of |w|, a 0-d tensor
    in the first parameter's dtype (summed in float64). Add it to the loss."""
    ps = _params("l1_penalty", params, lam)
    return L1Penalty.apply(*ps, lam=float(lam))


class L2Penalty(Function):
    """y = lam * sum_i sum w_i^2 (no 1/2);  dw_i = 2 lam w_i g."""

    @staticmethod
    def forward(ctx, *ws, lam):
        ctx.save_for_backward(*ws)
        ctx.lam = lam
        xp = ctx.xp
        total = sum((w.astype(xp.float64) ** 2).sum() for w in ws)
        return xp.asarray(lam * total, dtype=ws[0].dtype)

    @staticmethod
    def backward(ctx, g):
        return tuple((2.0 * ctx.lam * g * w).astype(w.dtype) if need else None
                     for w, need in zip(ctx.saved, ctx.needs_input_grad))


def l2_penalty(params: Tensor | Iterable[Tensor], lam: float) -> Tensor:
    """lam * sum over every entry w of every tensor in ``params`` of w^2 (no 1/2: SGD
    on it is weight decay 2 lam), a 0-d tensor in the first parameter's dtype."""
    ps = _params("l2_penalty", params, lam)
    return L2Penalty.apply(*ps, lam=float(lam))


def drop_connect(weight: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """DropConnect: ``weight`` with each entry zeroed with probability ``p`` and the
    rest scaled by 1/(1 - p) (inverted, so E = weight); the identity when not
    ``training``. The gradient reaches only the kept weights, scaled by 1/(1 - p).
    This is ``F.dropout`` applied to the weight rather than to the activations."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"drop_connect: weight must be a Tensor, got {type(weight).__name__}")
    return dropout(weight, p, training)


def l1_proximal_(params: Tensor | Iterable[Tensor], threshold: float) -> None:
    """Soft thresholding in place, the proximal map of threshold * sum |w|:
    w <- sign(w) max(|w| - threshold, 0). After a gradient step of size lr on the
    data loss, ``l1_proximal_(params, lr * lam)`` is one ISTA step on
    loss + lam sum |w|; weights with |w| <= threshold become exactly 0."""
    ps = _params("l1_proximal_", params, threshold)
    with no_grad():
        for p in ps:
            xp = p.backend.xp
            d = p.data
            d[...] = xp.sign(d) * xp.maximum(xp.abs(d) - threshold, 0)
            p._bump()
