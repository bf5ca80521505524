"""Timelines of minilm's pipeline-parallel schedules (GPipe and 1F1B).

The boxes come from minilm's own planner: :func:`minilm.parallel.pipeline_schedule.
simulate_schedule` runs the per-stage action lists of ``make_schedule`` on an idealised
machine (one time slot per forward and per backward, like ``format_schedule``), and each
(start, end, action) it returns becomes a box: stage on the y axis, time slot on x,
F (forward, light) or B (backward, dark) in the micro-batch's colour. Empty cells are
the pipeline bubble; its share, ``bubble_fraction`` = (pp - 1) / (M + pp - 1), is in the
title together with the share measured on the drawn timeline.
"""

from __future__ import annotations

from pathlib import Path

from ..parallel.pipeline_schedule import (
    FORWARD,
    SCHEDULES,
    bubble_fraction,
    make_schedule,
    max_in_flight,
    simulate_schedule,
)

__all__ = ["pipeline_timeline", "plot_pipeline_schedule"]


def _check(stages: int, micro_batches: int, schedule: str) -> None:
    for name, v in (("stages", stages), ("micro_batches", micro_batches)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"plot_pipeline_schedule: {name} must be an integer >= 1, got {v!r}")
    if stages > 64 or micro_batches > 256:
        raise ValueError(f"plot_pipeline_schedule: at most 64 stages and 256 micro-batches fit a "
                         f"figure, got {stages} and {micro_batches}")
    if schedule not in SCHEDULES:
        raise ValueError(f"plot_pipeline_schedule: unknown schedule {schedule!r}; use one of "
                         f"{', '.join(SCHEDULES)}")


def pipeline_timeline(stages: int, micro_batches: int, schedule: str = "1f1b",
                      t_forward: float = 1.0, t_backward: float = 1.0) -> dict:
    """simulate_schedule's result (``timeline`` per stage of (start, end, Action),
    ``makespan``, ``bubble``) plus ``bubble_formula`` and ``peak_in_flight`` (the
    most micro-batches any stage holds activations for)."""
    _check(stages, micro_batches, schedule)
    sim = simulate_schedule(schedule, stages, micro_batches, t_forward, t_backward)
    sim["bubble_formula"] = bubble_fraction(stages, micro_batches)
    sim["peak_in_flight"] = max(max_in_flight(make_schedule(schedule, stages, s, micro_batches))
                                for s in range(stages))
    return sim


def plot_pipeline_schedule(path: str | Path, stages: int, micro_batches: int,
                           schedule: str = "1f1b", t_backward: float = 1.0) -> Path:
    """A timeline figure of one training step of ``schedule`` ('1f1b' | 'gpipe') with
    ``stages`` pipeline stages and ``micro_batches`` micro-batches; backward boxes are
    ``t_backward`` slots wide (1: the slot picture of format_schedule; 2: closer to the
    real cost)."""
    from .attention import _pyplot, save_figure

    sim = pipeline_timeline(stages, micro_batches, schedule, 1.0, t_backward)
    plt = _pyplot()
    import matplotlib.patches as mpatches

    cmap = plt.get_cmap("tab20" if micro_batches > 10 else "tab10")
    width = max(6.0, min(24.0, 0.45 * sim["makespan"] + 2))
    fig, ax = plt.subplots(figsize=(width, 0.6 * stages + 1.8))
    for s, events in enumerate(sim["timeline"]):
        for start, end, a in events:
            color = cmap(a.mb % cmap.N)
            fwd = a.op == FORWARD
            ax.add_patch(mpatches.Rectangle((start, s - 0.4), end - start, 0.8, facecolor=color,
                                            alpha=0.45 if fwd else 1.0, edgecolor="black",
                                            linewidth=0.6, hatch=None if fwd else "//"))
            if micro_batches <= 40:
                ax.text((start + end) / 2, s, str(a), ha="center", va="center", fontsize=7)
    ax.set_xlim(0, sim["makespan"])
    ax.set_ylim(stages - 0.5, -0.5)  # stage 0 on top
    ax.set_yticks(range(stages))
    ax.set_yticklabels([f"stage {s}" for s in range(stages)])
    ax.set_xlabel("time slot (forward = 1" + (f", backward = {t_backward:g}" if t_backward != 1 else
                                             ", backward = 1") + ")")
    ax.set_xticks(range(int(sim["makespan"]) + 1), minor=True)
    ax.grid(axis="x", which="minor", alpha=0.25)
    handles = [mpatches.Patch(facecolor="grey", alpha=0.45, edgecolor="black", label="F: forward"),
               mpatches.Patch(facecolor="grey", hatch="//", edgecolor="black", label="B: backward"),
               mpatches.Patch(facecolor="white", edgecolor="black", label="bubble (idle)")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(f"{schedule}: {stages} stages, {micro_batches} micro-batches, bubble "
                 f"{sim['bubble_formula']:.3f} = (pp-1)/(M+pp-1) (measured {sim['bubble']:.3f}), "
                 f"peak in flight {sim['peak_in_flight']}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
