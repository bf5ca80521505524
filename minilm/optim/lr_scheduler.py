"""Learning-rate schedules (PyTorch's ``torch.optim.lr_scheduler`` shape).

A scheduler wraps an optimizer and, at every ``scheduler.step()`` (call it after
``optimizer.step()``), writes a new ``group["lr"]`` into each parameter group. ``t`` below
is ``last_epoch``: the number of ``step()`` calls so far. Constructing a scheduler
already performs step 0, so the first optimizer step runs with ``lr(0)``. ``base_lr`` is
the group's lr when the scheduler was built (kept in ``group["initial_lr"]``).

Every schedule here is *closed form*: ``lr(t)`` is a function of ``t`` and ``base_lr``
only (PyTorch computes some recursively from the previous lr). So a schedule resumes
exactly from ``state_dict()`` (a small JSON-serialisable dict), and it overwrites any lr
set by hand. The exception is :class:`ReduceLROnPlateau`, which reacts to a metric.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

from .optimizer import Optimizer

__all__ = [
    "ConstantLR", "CosineAnnealingLR", "CosineWithWarmup", "ExponentialDecay", "ExponentialLR",
    "InverseSqrt", "InverseTimeDecay", "LRScheduler", "LambdaLR", "LinearLR",
    "LinearWarmupDecay", "MultiStepLR", "Noam", "OneCycleLR", "PiecewiseLinear",
    "ReduceLROnPlateau", "StepLR",
]


def _plain(v: Any) -> Any:
    """``v`` with tuples as lists and NumPy scalars as Python numbers (JSON-friendly)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return v.item()
    return v


def _positive_int(sched: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{sched}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _warmup_min(sched: str, min_lr: float | None, min_lr_ratio: float) -> None:
    if min_lr is not None and min_lr_ratio != 0.0:
        raise ValueError(f"{sched}: give min_lr or min_lr_ratio, not both")
    if min_lr is not None and min_lr < 0 or min_lr_ratio < 0:
        raise ValueError(f"{sched}: min_lr / min_lr_ratio must be >= 0, got {min_lr} / {min_lr_ratio}")


class LRScheduler:
    """Base class. Subclasses define ``_lr(i, base_lr, t)``: the lr of group ``i`` after
    ``t`` steps. ``last_epoch=-1`` starts a new schedule; another value resumes one (the
    groups must then hold ``initial_lr``), though ``load_state_dict`` is the usual way."""

    _not_state: tuple = ("optimizer",)

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: {type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        for i, g in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                g.setdefault("initial_lr", g["lr"])
            elif "initial_lr" not in g:
                raise ValueError(f"{type(self).__name__}: resuming at last_epoch={last_epoch} but "
                                 f"param_groups[{i}] has no 'initial_lr'")
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr: list = []
        self.step()

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not define _lr")

    def _lrs_at(self, t: int) -> list:
        return [float(self._lr(i, base, t)) for i, base in enumerate(self.base_lrs)]

    def get_lr(self) -> list:
        """The lr of every group at the current step ``last_epoch``."""
        return self._lrs_at(self.last_epoch)

    def get_last_lr(self) -> list:
        """The lrs the last ``step()`` set."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one step and set each group's lr to ``lr(t)``."""
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise ValueError(f"{type(self).__name__}: the optimizer has {len(groups)} parameter "
                             f"groups, the scheduler was built for {len(self.base_lrs)}")
        lrs = self._lrs_at(self.last_epoch + 1)  # computed first: an error changes nothing
        self.last_epoch += 1
        for g, lr in zip(groups, lrs):
            g["lr"] = lr
        self._last_lr = lrs

    def state_dict(self) -> dict:
        """The schedule's position and settings as a JSON-serialisable dict."""
        return {k: _plain(v) for k, v in self.__dict__.items()
                if k not in self._not_state and not callable(v)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume from ``state_dict()``: the next ``step()`` continues the same curve.
        Also writes the saved lr (and initial_lr) into the optimizer's groups."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise ValueError(f"{name}: expected a dict, got {type(state_dict).__name__}")
        own = self.state_dict()
        unknown = sorted(set(state_dict) - set(own))
        if unknown:
            raise ValueError(f"{name}: unexpected keys {unknown} (a state dict of another scheduler?)")
        n = len(self.optimizer.param_groups)
        for key in ("base_lrs", "_last_lr"):
            if key in state_dict and len(state_dict[key]) != n:
                raise ValueError(f"{name}: {key} has {len(state_dict[key])} entries, the optimizer "
                                 f"has {n} parameter groups")
        for k, v in state_dict.items():
            cur = self.__dict__.get(k)
            setattr(self, k, tuple(v) if isinstance(cur, tuple) and isinstance(v, list) else v)
        for g, base, lr in zip(self.optimizer.param_groups, self.base_lrs, self._last_lr):
            g["initial_lr"] = base
            g["lr"] = lr


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


# ---------------------------------------------------------------------------- warmup


class _Warmup(LRScheduler):
    """Shared by the two warmup-then-decay schedules: w = warmup_steps, T = total_steps,
    lo = min_lr, or base_lr * min_lr_ratio."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int,
                 min_lr: float | None = None, min_lr_ratio: float = 0.0,
                 last_epoch: int = -1) -> None:
        name = type(self).__name__
        self.warmup_steps = _positive_int(name, "warmup_steps", warmup_steps, 0)
        self.total_steps = _positive_int(name, "total_steps", total_steps)
        if total_steps < warmup_steps:
            raise ValueError(f"{name}: total_steps ({total_steps}) < warmup_steps ({warmup_steps})")
        _warmup_min(name, min_lr, min_lr_ratio)
        self.min_lr = None if min_lr is None else float(min_lr)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        lo = self.min_lr if self.min_lr is not None else base_lr * self.min_lr_ratio
        w, total = self.warmup_steps, self.total_steps
        if t < w:
            return base_lr * t / w
        if t >= total:
            return lo
        return self._decay(base_lr, lo, (t - w) / (total - w))

    def _decay(self, hi: float, lo: float, p: float) -> float:
        raise NotImplementedError


class CosineWithWarmup(_Warmup):
    """Linear warmup from 0, then half a cosine down to the minimum::

        lr(t) = base_lr * t / w                                   t < w
              = lo + (base_lr - lo) * (1 + cos(pi * p)) / 2       w <= t < T,  p = (t-w)/(T-w)
              = lo                                                t >= T

    with lo = ``min_lr`` (absolute) or base_lr * ``min_lr_ratio``. The peak, base_lr, is
    reached at t = w."""

    def _decay(self, hi: float, lo: float, p: float) -> float:
        return lo + (hi - lo) * 0.5 * (1.0 + math.cos(math.pi * p))


class LinearWarmupDecay(_Warmup):
    """Linear warmup from 0, then a straight line down to the minimum::

        lr(t) = base_lr * t / w                     t < w
              = base_lr + (lo - base_lr) * p        w <= t < T,  p = (t-w)/(T-w)
              = lo                                  t >= T

    with lo = ``min_lr`` or base_lr * ``min_lr_ratio`` (default 0)."""

    def _decay(self, hi: float, lo: float, p: float) -> float:
        return hi + (lo - hi) * p


class InverseSqrt(LRScheduler):
    """Linear warmup to base_lr, then decay as 1/sqrt(t) (fairseq's inverse_sqrt)::

        lr(t) = base_lr * min(t / w, sqrt(w / t))       (lr(0) = 0)
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, last_epoch: int = -1) -> None:
        self.warmup_steps = _positive_int("InverseSqrt", "warmup_steps", warmup_steps)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        if t == 0:
            return 0.0
        w = self.warmup_steps
        return base_lr * min(t / w, math.sqrt(w / t))


class Noam(LRScheduler):
    """The schedule of "Attention is all you need" (an absolute lr: the optimizer's own
    lr is ignored; ``scale`` plays its role)::

        lr(t) = scale * d_model^-0.5 * min(t^-0.5, t * w^-1.5)      (lr(0) = 0)

    It rises linearly for w steps to its peak scale / sqrt(d_model * w) at t = w, then
    falls as 1/sqrt(t). It is :class:`InverseSqrt` with that peak as base_lr."""

    def __init__(self, optimizer: Optimizer, d_model: int, warmup_steps: int, scale: float = 1.0,
                 last_epoch: int = -1) -> None:
        self.d_model = _positive_int("Noam", "d_model", d_model)
        self.warmup_steps = _positive_int("Noam", "warmup_steps", warmup_steps)
        if not scale > 0:
            raise ValueError(f"Noam: scale must be > 0, got {scale}")
        self.scale = float(scale)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        if t == 0:
            return 0.0
        return self.scale * self.d_model ** -0.5 * min(t ** -0.5, t * self.warmup_steps ** -1.5)


class PiecewiseLinear(LRScheduler):
    """Straight lines through the points ``milestones = [(t0, lr0), (t1, lr1), ...]``
    (t increasing): lr(t) = lr_i + (lr_{i+1} - lr_i) * (t - t_i) / (t_{i+1} - t_i) for
    t_i <= t < t_{i+1}; lr0 before t0 and the last lr after the last point. With
    ``relative=True`` the values are factors of base_lr instead of learning rates."""

    def __init__(self, optimizer: Optimizer, milestones: Sequence[Sequence[float]],
                 relative: bool = False, last_epoch: int = -1) -> None:
        pts = [[int(s), float(v)] for s, v in milestones]
        if not pts:
            raise ValueError("PiecewiseLinear: milestones is empty")
        if any(b[0] <= a[0] for a, b in zip(pts, pts[1:])):
            raise ValueError(f"PiecewiseLinear: milestone steps must increase strictly, got "
                             f"{[p[0] for p in pts]}")
        self.milestones = pts
        self.relative = bool(relative)
        super().__init__(optimizer, last_epoch)

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        pts = self.milestones
        steps = [p[0] for p in pts]
        k = bisect.bisect_right(steps, t)  # pts[k-1][0] <= t < pts[k][0]
        if k == 0:
            v = pts[0][1]
        elif k == len(pts):
            v = pts[-1][1]
        else:
            (s0, v0), (s1, v1) = pts[k - 1], pts[k]
            v = v0 + (v1 - v0) * (t - s0) / (s1 - s0)
        return base_lr * v if self.relative else v


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


# ---------------------------------------------------------------------------- plateau


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` when a metric stopped improving (PyTorch).

    Call ``step(metric)`` once per evaluation. A metric is an improvement if it beats
    the best so far by the threshold: ``metric < best * (1 - threshold)`` (mode "min",
    threshold_mode "rel"), ``metric < best - threshold`` ("abs"), and mirrored for
    "max". After more than ``patience`` evaluations in a row without improvement,
    lr <- max(lr * factor, min_lr) (changes smaller than ``eps`` are skipped); then
    ``cooldown`` evaluations are ignored before counting again."""

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | Sequence[float] = 0.0,
                 eps: float = 1e-8) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau: {type(optimizer).__name__} is not an Optimizer")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got "
                             f"{threshold_mode!r}")
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in [0, 1), got {factor}")
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"ReduceLROnPlateau: expected {n} min_lrs, got {len(min_lr)}")
            self.min_lrs = [float(m) for m in min_lr]
        else:
            self.min_lrs = [float(min_lr)] * n
        self.optimizer = optimizer
        self.mode = mode
        self.factor = float(factor)
        self.patience = _positive_int("ReduceLROnPlateau", "patience", patience, 0)
        self.threshold = float(threshold)
        self.threshold_mode = threshold_mode
        self.cooldown = _positive_int("ReduceLROnPlateau", "cooldown", cooldown, 0)
        self.eps = float(eps)
        self.last_epoch = 0
        self.best: float | None = None  # None: no metric seen yet (keeps the dict JSON-safe)
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self._last_lr = list(self.base_lrs)

    def _is_better(self, a: float) -> bool:
        if self.best is None:  # the first metric beats the "worst" value +-inf
            return a < math.inf if self.mode == "min" else a > -math.inf
        best, th = self.best, self.threshold
        if self.mode == "min":
            return a < (best * (1.0 - th) if self.threshold_mode == "rel" else best - th)
        return a > (best * (1.0 + th) if self.threshold_mode == "rel" else best + th)

    def step(self, metrics: Any = None) -> None:  # type: ignore[override]
        if metrics is None:
            raise TypeError("ReduceLROnPlateau.step needs the metric: scheduler.step(val_loss)")
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown do not count
        if self.num_bad_epochs > self.patience:
            for g, lo in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(g["lr"])
                new = max(old * self.factor, lo)
                if old - new > self.eps:
                    g["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    def get_lr(self) -> list:
        return [float(g["lr"]) for g in self.optimizer.param_groups]
