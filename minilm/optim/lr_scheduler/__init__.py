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

Files: ``base.py`` (LRScheduler, shared checks), ``decays.py`` (PyTorch's closed-form
schedules and the classic decays), ``warmup.py`` (warmup + decay, inverse sqrt, Noam,
piecewise-linear), ``one_cycle.py`` (OneCycleLR), ``plateau.py`` (ReduceLROnPlateau).
"""

from .base import LRScheduler
from .decays import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialDecay,
    ExponentialLR,
    InverseTimeDecay,
    LambdaLR,
    LinearLR,
    MultiStepLR,
    StepLR,
)
from .one_cycle import OneCycleLR
from .plateau import ReduceLROnPlateau
from .warmup import CosineWithWarmup, InverseSqrt, LinearWarmupDecay, Noam, PiecewiseLinear

__all__ = [
    "ConstantLR", "CosineAnnealingLR", "CosineWithWarmup", "ExponentialDecay", "ExponentialLR",
    "InverseSqrt", "InverseTimeDecay", "LRScheduler", "LambdaLR", "LinearLR",
    "LinearWarmupDecay", "MultiStepLR", "Noam", "OneCycleLR", "PiecewiseLinear",
    "ReduceLROnPlateau", "StepLR",
]
