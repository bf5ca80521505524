"""The curves of minilm's learning-rate schedules, measured by stepping each scheduler.

Each schedule gets its own dummy optimizer (SGD on one scalar Parameter, lr = 1) and is
stepped ``total_steps`` times; the curve is the lr the optimizer holds before each
optimizer step (``group["lr"]`` after construction, then after each ``step()``), so the
figure shows what training would actually use, not a re-derived formula.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..nn.module import Parameter
from ..optim import SGD
from ..optim import lr_scheduler as sch

__all__ = ["lr_schedule_curves", "plot_lr_schedules"]


def _schedules(total: int, warmup: int) -> dict[str, Callable[[Any], Any]]:
    """Label -> factory(optimizer) of each schedule drawn, sized to ``total`` steps."""
    third = max(1, total // 3)
    return {
        f"CosineWithWarmup (w={warmup})":
            lambda o: sch.CosineWithWarmup(o, warmup, total, min_lr_ratio=0.1),
        f"LinearWarmupDecay (w={warmup})": lambda o: sch.LinearWarmupDecay(o, warmup, total),
        f"CosineAnnealingLR (T={total})": lambda o: sch.CosineAnnealingLR(o, T_max=total),
        f"StepLR (every {third}, x0.5)": lambda o: sch.StepLR(o, step_size=third, gamma=0.5),
        "MultiStepLR (x0.3 at 50%, 75%)":
            lambda o: sch.MultiStepLR(o, [total // 2, 3 * total // 4], gamma=0.3),
        "ExponentialLR": lambda o: sch.ExponentialLR(o, gamma=0.01 ** (1.0 / total)),
        "LinearLR (1 -> 0.1)": lambda o: sch.LinearLR(o, 1.0, 0.1, total_iters=total),
        "OneCycleLR": lambda o: sch.OneCycleLR(o, max_lr=1.0, total_steps=total + 1,
                                                 cycle_momentum=False),
        f"InverseSqrt (w={warmup})": lambda o: sch.InverseSqrt(o, max(1, warmup)),
        "PiecewiseLinear": lambda o: sch.PiecewiseLinear(
            o, [[0, 0.0], [max(1, warmup), 1.0], [total // 2, 0.5], [total, 0.05]]),
    }


def lr_schedule_curves(total_steps: int = 1000, warmup: int = 100) -> dict[str, np.ndarray]:
    """Label -> lr (relative to base_lr = 1) at optimizer steps 0 .. total_steps - 1."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 2:
        raise ValueError(f"plot_lr_schedules: total_steps must be an integer >= 2, got {total_steps!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup <= total_steps:
        raise ValueError(f"plot_lr_schedules: warmup must be an integer in 0..total_steps, "
                         f"got {warmup!r}")
    curves = {}
    for label, make in _schedules(total_steps, warmup).items():
        opt = SGD([Parameter(np.zeros(1, np.float32))], lr=1.0)
        sched = make(opt)
        lrs = np.empty(total_steps)
        for t in range(total_steps):
            lrs[t] = opt.param_groups[0]["lr"]
            opt.step()  # no gradients: a no-op, but the order of a real loop
            sched.step()
        curves[label] = lrs
    return curves


def plot_lr_schedules(path: str | Path, total_steps: int = 1000, warmup: int = 100) -> Path:
    """One figure with the lr curve of each schedule (base_lr = 1), warmup marked."""
    from .attention import _pyplot, save_figure

    curves = lr_schedule_curves(total_steps, warmup)
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    warm = {k: v for k, v in curves.items() if "w=" in k or k in ("OneCycleLR", "PiecewiseLinear")}
    decay = {k: v for k, v in curves.items() if k not in warm}
    steps = np.arange(total_steps)
    for ax, group, title in ((ax1, warm, "with warmup / cycle"), (ax2, decay, "decays")):
        for label, lrs in group.items():
            ax.plot(steps, lrs, label=label, linewidth=1.6)
        if warmup and group is warm:
            ax.axvline(warmup, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("lr / base_lr")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"minilm LR schedules ({total_steps} steps, warmup {warmup}), measured by stepping "
                 "each scheduler")
    fig.tight_layout()
    return save_figure(fig, path)
