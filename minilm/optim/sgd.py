"""Stochastic gradient descent, with momentum, Nesterov momentum and L2 weight decay."""

from __future__ import annotations

from typing import Any

from ..backends.interface import kernel
from .optimizer import Optimizer, check_nonnegative

__all__ = ["SGD"]


@kernel("sgd_step")
def sgd_step(be, param, grad, momentum_buf, lr, momentum=0.0, dampening=0.0,
             weight_decay=0.0, nesterov=False, maximize=False, init_buf=False):
    """One SGD step, in place on ``param`` and ``momentum_buf`` (None when momentum is
    0; ``init_buf`` on its first step); see :class:`SGD` for the formulas. ``grad`` is
    only read."""
    g = -grad if maximize else grad
    if weight_decay != 0.0:
        g = g + weight_decay * param
    d = g
    if momentum != 0.0:
        if init_buf:
            momentum_buf[...] = g
        else:
            momentum_buf[...] = momentum * momentum_buf + (1.0 - dampening) * g
        d = g + momentum * momentum_buf if nesterov else momentum_buf
    param -= lr * d


class SGD(Optimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
    maximize=False)``, PyTorch's update. With g the gradient (negated if ``maximize``)
    and t the step number::

        g   = g + weight_decay * w                    L2 penalty folded into the gradient
        b_1 = g                                       momentum buffer, first step
        b_t = momentum * b_{t-1} + (1 - dampening) * g     later steps
        d   = g + momentum * b_t    (nesterov)   or   b_t   (momentum)   or   g   (plain)
        w   = w - lr * d

    The buffer is a running, exponentially weighted sum of past gradients: directions
    that keep their sign add up (speed ~ 1/(1-momentum) times lr), oscillating ones
    cancel. Nesterov evaluates the momentum step "one step ahead". The arithmetic is the
    kernel ``sgd_step`` above (in place; the Numba backend overrides it with one fused
    loop)."""

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        check_nonnegative("SGD", group, "lr", "momentum", "weight_decay")
        if group.get("nesterov") and (group.get("momentum", 0) <= 0 or group.get("dampening", 0) != 0):
            raise ValueError(f"SGD: nesterov momentum requires momentum > 0 and dampening = 0, "
                             f"got momentum={group.get('momentum')} dampening={group.get('dampening')}")

    def _update(self, p: Any, grad: Any, state: dict, group: dict) -> None:
        momentum = group["momentum"]
        buf = None
        first = False
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = p.backend.xp.empty_like(p.data)
                first = True
        p.backend.sgd_step(p.data, grad, buf, group["lr"], momentum, group["dampening"],
                           group["weight_decay"], group["nesterov"], group["maximize"], first)
