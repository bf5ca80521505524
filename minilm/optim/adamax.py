"""Adamax: Adam with the infinity norm in place of the root mean square."""

from __future__ import annotations

from typing import Any

from .optimizer import Optimizer, check_betas, check_nonnegative

__all__ = ["Adamax"]


class Adamax(Optimizer):
    """``Adamax(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    maximize=False)``, PyTorch's update (Kingma & Ba, section 7). At step t = 1, 2, ...
    with gradient g (negated if ``maximize``)::

        g = g + weight_decay * w
        m = beta1 * m + (1 - beta1) * g                  as Adam
        u = max(beta2 * u, |g| + eps)                    exponentially weighted max |g|
        w = w - lr / (1 - beta1^t) * m / u

    u is the limit p -> inf of Adam's (beta2 v + (1 - beta2) |g|^p)^(1/p); it needs no
    bias correction (a max is not pulled towards its zero start), only m does."""

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, maximize: bool = False) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        check_nonnegative("Adamax", group, "lr", "eps", "weight_decay")
        check_betas("Adamax", group)

    def _update(self, p: Any, grad: Any, state: dict, group: dict) -> None:
        xp = p.backend.xp
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_inf"] = xp.zeros_like(p.data)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        g = -grad if group["maximize"] else grad
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p.data
        m, u = state["exp_avg"], state["exp_inf"]
        m *= beta1
        m += (1.0 - beta1) * g
        u *= beta2
        a = xp.abs(g)
        a += group["eps"]
        xp.maximum(u, a, out=u)
        clr = group["lr"] / (1.0 - beta1 ** state["step"])
        xp.divide(m, u, out=a)
        a *= clr
        p.data -= a
