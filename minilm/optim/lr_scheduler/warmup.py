"""Warmup schedules: cosine or linear decay after a linear warmup, inverse square root,
Noam (the Transformer paper's), and piecewise-linear."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from ..optimizer import Optimizer
from .base import LRScheduler, _positive_int, _warmup_min

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
