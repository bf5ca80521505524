"""Adagrad: per-coordinate step sizes from the sum of all past squared gradients."""

from __future__ import annotations

from typing import Any

from .optimizer import Optimizer, check_nonnegative

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """``Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
    eps=1e-10, maximize=False)``, PyTorch's update. At step t = 1, 2, ... with gradient g
    (negated if ``maximize``)::

        g   = g + weight_decay * w
        lr_t = lr / (1 + (t - 1) * lr_decay)
        s   = s + g^2                 s starts at initial_accumulator_value
        w   = w - lr_t * g / (sqrt(s) + eps)

    Coordinates with large past gradients get small steps, rare ones large steps (good
    for sparse features). s only grows, so the effective lr decays like 1/sqrt(t):
    Adagrad eventually stops learning; RMSprop and Adam replace the sum by a moving
    average."""

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, maximize: bool = False) -> None:
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps,
                        maximize=maximize)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        # as PyTorch, the state exists from construction on (state_dict() has it before
        # the first step)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            self._init_state(p, self.state[p], group)

    def _check_group(self, group: dict) -> None:
        check_nonnegative("Adagrad", group, "lr", "lr_decay", "weight_decay",
                          "initial_accumulator_value", "eps")

    @staticmethod
    def _init_state(p: Any, state: dict, group: dict) -> None:
        if not state:
            state["step"] = 0
            state["sum"] = p.backend.xp.full_like(p.data, group["initial_accumulator_value"])

    def _update(self, p: Any, grad: Any, state: dict, group: dict) -> None:
        xp = p.backend.xp
        self._init_state(p, state, group)
        state["step"] += 1
        g = -grad if group["maximize"] else grad
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p.data
        clr = group["lr"] / (1.0 + (state["step"] - 1) * group["lr_decay"])
        s = state["sum"]
        s += g * g
        std = xp.sqrt(s)
        std += group["eps"]
        xp.divide(g, std, out=std)
        std *= clr
        p.data -= std
