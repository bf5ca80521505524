"""``ReduceLROnPlateau``: the one schedule that reacts to a metric rather than to ``t``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..optimizer import Optimizer
from .base import LRScheduler, _positive_int

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
