"""Optimizers, learning-rate schedules, gradient clipping and weight EMA.

    import minilm.optim as optim
    groups = optim.param_groups_for_weight_decay(model, weight_decay=0.1)
    opt = optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95))
    sched = optim.lr_scheduler.CosineWithWarmup(opt, warmup_steps=100, total_steps=5000)
    for batch in data:
        loss = ...; loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(); sched.step()

The update formulas are in each class's docstring and in docs/optim.md.
"""

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .clip import clip_grad_norm_, clip_grad_value_, get_total_norm
from .ema import EMA
from .lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    CosineWithWarmup,
    ExponentialDecay,
    ExponentialLR,
    InverseSqrt,
    InverseTimeDecay,
    LambdaLR,
    LinearLR,
    LinearWarmupDecay,
    LRScheduler,
    MultiStepLR,
    Noam,
    OneCycleLR,
    PiecewiseLinear,
    ReduceLROnPlateau,
    StepLR,
)
from .optimizer import Optimizer, param_groups_for_weight_decay
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = [
    "EMA", "SGD", "Adagrad", "Adam", "AdamW", "Adamax", "ConstantLR", "CosineAnnealingLR",
    "CosineWithWarmup", "ExponentialDecay", "ExponentialLR", "InverseSqrt", "InverseTimeDecay",
    "LRScheduler", "LambdaLR", "LinearLR", "LinearWarmupDecay", "MultiStepLR", "Noam",
    "OneCycleLR", "Optimizer", "PiecewiseLinear", "RMSprop", "ReduceLROnPlateau", "StepLR",
    "clip_grad_norm_", "clip_grad_value_", "get_total_norm", "lr_scheduler",
    "param_groups_for_weight_decay",
]
