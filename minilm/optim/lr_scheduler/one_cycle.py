"""Smith's one-cycle policy (``OneCycleLR``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..optimizer import Optimizer
from .base import LRScheduler, _positive_int

# ---------------------------------------------------------------------------- one cycle


class OneCycleLR(LRScheduler):
    """Smith's 1cycle policy, as PyTorch. With lr_0 = max_lr / div_factor and
    lr_min = lr_0 / final_div_factor, and the warmup ending at t_w = pct_start * T - 1
    (T = total_steps)::

        lr(t) = anneal(lr_0, max_lr, t / t_w)                          t <= t_w
              = anneal(max_lr, lr_min, (t - t_w) / (T - 1 - t_w))      after

    where anneal(a, b, p) = b + (a - b) * (1 + cos(pi p)) / 2 ("cos") or a + (b - a) p
    ("linear"). ``three_phase`` goes max_lr -> lr_0 over a second equal phase before the
    final anneal to lr_min. With ``cycle_momentum`` the momentum (SGD/RMSprop
    ``momentum``, or Adam's beta1) moves the opposite way, max_momentum -> base_momentum
    -> max_momentum. The optimizer's own lr is ignored. Stepping past T is an error."""

    def __init__(self, optimizer: Optimizer, max_lr: float | Sequence[float],
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.85,
                 max_momentum: float | Sequence[float] = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        if total_steps is not None:
            self.total_steps = _positive_int("OneCycleLR", "total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_positive_int("OneCycleLR", "epochs", epochs)
                                * _positive_int("OneCycleLR", "steps_per_epoch", steps_per_epoch))
        else:
            raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        T = self.total_steps
        if three_phase:
            self.phases = [[float(pct_start * T) - 1, "initial", "max", "max_m", "base_m"],
                           [float(2 * pct_start * T) - 2, "max", "initial", "base_m", "max_m"],
                           [T - 1, "initial", "min", "max_m", "max_m"]]
        else:
            self.phases = [[float(pct_start * T) - 1, "initial", "max", "max_m", "base_m"],
                           [T - 1, "max", "min", "base_m", "max_m"]]
        self.anneal_strategy = anneal_strategy
        groups = optimizer.param_groups
        self.max_lrs = _per_group("max_lr", max_lr, len(groups))
        self.initial_lrs = [m / div_factor for m in self.max_lrs]
        self.min_lrs = [lr / final_div_factor for lr in self.initial_lrs]
        self.cycle_momentum = bool(cycle_momentum)
        self.use_beta1 = "betas" in optimizer.defaults
        if self.cycle_momentum and "momentum" not in optimizer.defaults and not self.use_beta1:
            raise ValueError(f"OneCycleLR: cycle_momentum needs an optimizer with momentum or "
                             f"betas, {type(optimizer).__name__} has neither")
        self.max_momentums = _per_group("max_momentum", max_momentum, len(groups))
        self.base_momentums = _per_group("base_momentum", base_momentum, len(groups))
        if last_epoch == -1:
            for i, g in enumerate(groups):
                g["initial_lr"] = self.initial_lrs[i]
                g["max_lr"] = self.max_lrs[i]
                g["min_lr"] = self.min_lrs[i]
        super().__init__(optimizer, last_epoch)

    def _anneal(self, a: float, b: float, p: float) -> float:
        if self.anneal_strategy == "cos":
            return b + (a - b) / 2.0 * (math.cos(math.pi * p) + 1)
        return (b - a) * p + a

    def _at(self, i: int, t: int) -> tuple:
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {t} times; total_steps is "
                             f"{self.total_steps}")
        v = {"initial": self.initial_lrs[i], "max": self.max_lrs[i], "min": self.min_lrs[i],
             "max_m": self.max_momentums[i], "base_m": self.base_momentums[i]}
        start = 0.0
        for k, (end, lr_a, lr_b, m_a, m_b) in enumerate(self.phases):
            if t <= end or k == len(self.phases) - 1:
                p = (t - start) / (end - start)
                return self._anneal(v[lr_a], v[lr_b], p), self._anneal(v[m_a], v[m_b], p)
            start = end
        raise AssertionError("unreachable")

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        return self._at(i, t)[0]

    def _set_momentum(self) -> None:
        if self.cycle_momentum:
            for i, g in enumerate(self.optimizer.param_groups):
                m = self._at(i, self.last_epoch)[1]
                if self.use_beta1:
                    g["betas"] = (m, *g["betas"][1:])
                else:
                    g["momentum"] = m

    def step(self) -> None:
        super().step()
        self._set_momentum()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._set_momentum()


def _per_group(name: str, value: Any, n: int) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"OneCycleLR: expected {n} values of {name}, got {len(value)}")
        return [float(v) for v in value]
    return [float(value)] * n
