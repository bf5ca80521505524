"""Adam (L2 weight decay) and AdamW (decoupled weight decay)."""

from __future__ import annotations

import math
from typing import Any

from ..backends.interface import kernel
from .optimizer import Optimizer, check_betas, check_nonnegative

__all__ = ["Adam", "AdamW"]


@kernel("adam_step")
def adam_step(be, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
              weight_decay=0.0, decoupled=False, amsgrad_max=None, maximize=False):
    """One Adam / AdamW step (``step`` = t, counted from 1), in place on ``param``,
    ``exp_avg`` (m), ``exp_avg_sq`` (v) and ``amsgrad_max`` (v_max, if given); see
    :class:`Adam` for the formulas. ``grad`` is only read."""
    xp = be.xp
    g = -grad if maximize else grad
    if weight_decay != 0.0:
        if decoupled:  # AdamW: shrink the weights first
            param *= 1.0 - lr * weight_decay
        else:  # Adam: L2 penalty folded into the gradient
            g = g + weight_decay * param
    exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1.0 - beta2) * (g * g)
    v = exp_avg_sq
    if amsgrad_max is not None:
        amsgrad_max[...] = xp.maximum(amsgrad_max, exp_avg_sq)
        v = amsgrad_max
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    denom = xp.sqrt(v) / math.sqrt(bias_correction2) + eps  # sqrt(v_hat) + eps
    param -= (lr / bias_correction1) * (exp_avg / denom)  # lr * m_hat / denom


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    amsgrad=False, maximize=False)``, PyTorch's update. At step t = 1, 2, ... with
    gradient g (negated if ``maximize``)::

        g     = g + weight_decay * w                   L2 penalty (Adam only; see AdamW)
        m     = beta1 * m + (1 - beta1) * g            1st moment: mean of g
        v     = beta2 * v + (1 - beta2) * g^2          2nd moment: mean of g^2
        v_max = max(v_max, v), used instead of v        (amsgrad: denominators never shrink)
        m_hat = m / (1 - beta1^t)                       bias correction: m, v start at 0,
        v_hat = v / (1 - beta2^t)                       so early averages are too small
        w     = w - lr * m_hat / (sqrt(v_hat) + eps)

    Each coordinate moves by about lr * sign(mean g): the step size no longer depends on
    the gradient's scale. The arithmetic is the kernel ``adam_step`` above (in place;
    the Numba backend overrides it with one fused loop). With weight_decay the penalty goes through m and v
    and is rescaled like the gradient, so its effective strength varies per coordinate:
    prefer :class:`AdamW`."""

    _decoupled = False

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        name = type(self).__name__
        check_nonnegative(name, group, "lr", "eps", "weight_decay")
        check_betas(name, group)

    def _update(self, p: Any, grad: Any, state: dict, group: dict) -> None:
        xp = p.backend.xp
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        p.backend.adam_step(p.data, grad, state["exp_avg"], state["exp_avg_sq"], state["step"],
                            group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                            self._decoupled,
                            state["max_exp_avg_sq"] if group["amsgrad"] else None,
                            group["maximize"])


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
    amsgrad=False, maximize=False)``: Adam with *decoupled* weight decay (Loshchilov &
    Hutter). Before the Adam step of :class:`Adam` (run with no L2 term)::

        w = w - lr * weight_decay * w

    The decay shrinks every weight by the same factor (1 - lr * weight_decay) per step,
    whatever the gradient history, instead of being divided by sqrt(v_hat) as Adam's L2
    term is. It is scaled by lr, so a schedule that lowers lr also lowers the decay."""

    _decoupled = True

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
