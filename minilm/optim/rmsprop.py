"""RMSprop: divide the gradient by a moving root-mean-square of recent gradients."""

from __future__ import annotations

from typing import Any

from .optimizer import Optimizer, check_nonnegative

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
    centered=False, maximize=False)``, PyTorch's update (Hinton's lecture 6e). With
    gradient g (negated if ``maximize``)::

        g   = g + weight_decay * w
        v   = alpha * v + (1 - alpha) * g^2             moving mean of g^2
        gm  = alpha * gm + (1 - alpha) * g              (centered: moving mean of g)
        den = sqrt(v - gm^2) + eps  (centered)   or   sqrt(v) + eps
        b   = momentum * b + g / den,  w = w - lr * b   (momentum > 0)
        w   = w - lr * g / den                          (otherwise)

    Unlike Adagrad's growing sum, the moving average forgets old gradients, so the step
    size does not decay to zero. ``centered`` divides by an estimate of the gradient's
    standard deviation instead of its RMS. There is no bias correction (v starts at 0,
    so the first steps are large: about lr / sqrt(1 - alpha) = 10 lr for alpha=0.99)."""

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        check_nonnegative("RMSprop", group, "lr", "alpha", "eps", "weight_decay", "momentum")

    def _update(self, p: Any, grad: Any, state: dict, group: dict) -> None:
        xp = p.backend.xp
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = xp.zeros_like(p.data)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        alpha = group["alpha"]
        g = -grad if group["maximize"] else grad
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p.data
        v = state["square_avg"]
        v *= alpha
        v += (1.0 - alpha) * (g * g)
        if group["centered"]:
            gm = state["grad_avg"]
            gm *= alpha
            gm += (1.0 - alpha) * g
            den = v - gm * gm
            xp.sqrt(den, out=den)
        else:
            den = xp.sqrt(v)
        den += group["eps"]
        if group["momentum"] > 0:
            b = state["momentum_buffer"]
            b *= group["momentum"]
            b += g / den
            p.data -= group["lr"] * b
        else:
            xp.divide(g, den, out=den)
            den *= group["lr"]
            p.data -= den
