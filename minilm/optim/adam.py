"""Adam (L2 weight decay) and AdamW (decoupled weight decay)."""

from __future__ import annotations

from typing import Any

from .optimizer import Optimizer, check_betas, check_nonnegative

__all__ = ["Adam", "AdamW"]


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
    the gradient's scale. The arithmetic runs in the backend kernel ``adam_step`` (in
    place; Numba/CuPy may fuse it). With weight_decay the penalty goes through m and v
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
