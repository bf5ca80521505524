"""PyTorch's closed-form schedules (lambda, constant, linear, step, multi-step, exponential,
cosine annealing) and the Keras-style exponential and inverse-time decays."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

from ..optimizer import Optimizer
from .base import LRScheduler, _positive_int

# ---------------------------------------------------------------------------- PyTorch's


class LambdaLR(LRScheduler):
    """lr(t) = base_lr * f(t) for a function ``lr_lambda`` (or one per group). The
    functions are not part of ``state_dict()``: pass the same ones when resuming."""

    _not_state = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable | Sequence[Callable],
                 last_epoch: int = -1) -> None:
        n = len(optimizer.param_groups)
        if callable(lr_lambda):
            self.lr_lambdas = [lr_lambda] * n
        else:
            self.lr_lambdas = list(lr_lambda)
            if len(self.lr_lambdas) != n:
                raise ValueError(f"LambdaLR: expected {n} lr_lambdas, got {len(self.lr_lambdas)}")
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        return base_lr * self.lr_lambdas[i](t)


class ConstantLR(LRScheduler):
    """lr(t) = base_lr * factor while t < total_iters, then base_lr (PyTorch). With
    ``total_iters=None`` the factor applies forever (a constant multiplier); with
    ``factor=1`` the lr is simply constant."""

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int | None = 5,
                 last_epoch: int = -1) -> None:
        if not 0.0 <= factor <= 1.0:
            raise ValueError(f"ConstantLR: factor must be in [0, 1], got {factor}")
        if total_iters is not None:
            _positive_int("ConstantLR", "total_iters", total_iters, 0)
        self.factor = float(factor)
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        if self.total_iters is None or t < self.total_iters:
            return base_lr * self.factor
        return base_lr


class LinearLR(LRScheduler):
    """lr(t) = base_lr * (s + (e - s) * min(t, T) / T) with s = start_factor,
    e = end_factor, T = total_iters (PyTorch): a linear ramp, then flat."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
        if not 0.0 < start_factor <= 1.0 or not 0.0 <= end_factor <= 1.0:
            raise ValueError(f"LinearLR: need 0 < start_factor <= 1 and 0 <= end_factor <= 1, got "
                             f"{start_factor}, {end_factor}")
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.total_iters = _positive_int("LinearLR", "total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        frac = min(t, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class StepLR(LRScheduler):
    """lr(t) = base_lr * gamma ^ floor(t / step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.step_size = _positive_int("StepLR", "step_size", step_size)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        return base_lr * self.gamma ** (t // self.step_size)


class MultiStepLR(LRScheduler):
    """lr(t) = base_lr * gamma ^ (number of milestones <= t): divide at chosen steps."""

    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)


class ExponentialLR(LRScheduler):
    """lr(t) = base_lr * gamma ^ t."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        if not gamma > 0:
            raise ValueError(f"ExponentialLR: gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        return base_lr * self.gamma ** t


class CosineAnnealingLR(LRScheduler):
    """lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2: half a
    cosine from base_lr down to eta_min at t = T_max (and back up after, as PyTorch)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,  # noqa: N803
                 last_epoch: int = -1) -> None:
        self.T_max = _positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


# ---------------------------------------------------------------------------- decays


class ExponentialDecay(LRScheduler):
    """lr(t) = base_lr * decay_rate ^ (t / decay_steps), or with ``staircase``
    base_lr * decay_rate ^ floor(t / decay_steps) (Keras' ExponentialDecay)."""

    def __init__(self, optimizer: Optimizer, decay_rate: float, decay_steps: int,
                 staircase: bool = False, last_epoch: int = -1) -> None:
        if not decay_rate > 0:
            raise ValueError(f"ExponentialDecay: decay_rate must be > 0, got {decay_rate}")
        self.decay_rate = float(decay_rate)
        self.decay_steps = _positive_int("ExponentialDecay", "decay_steps", decay_steps)
        self.staircase = bool(staircase)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        p = t // self.decay_steps if self.staircase else t / self.decay_steps
        return base_lr * self.decay_rate ** p


class InverseTimeDecay(LRScheduler):
    """lr(t) = base_lr / (1 + decay_rate * t / decay_steps), or with ``staircase``
    floor(t / decay_steps) in place of t / decay_steps (Keras' InverseTimeDecay)."""

    def __init__(self, optimizer: Optimizer, decay_rate: float, decay_steps: int = 1,
                 staircase: bool = False, last_epoch: int = -1) -> None:
        if not decay_rate >= 0:
            raise ValueError(f"InverseTimeDecay: decay_rate must be >= 0, got {decay_rate}")
        self.decay_rate = float(decay_rate)
        self.decay_steps = _positive_int("InverseTimeDecay", "decay_steps", decay_steps)
        self.staircase = bool(staircase)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        p = t // self.decay_steps if self.staircase else t / self.decay_steps
        return base_lr / (1.0 + self.decay_rate * p)
