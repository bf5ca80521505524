"""Pipeline-parallel planning, without communication: how a GPT's blocks are split
into stages (``partition_balanced``, ``gpt_layer_costs``) and in which order each stage
runs its forward and backward actions (``make_schedule`` for GPipe and 1F1B), with the
tools that check and show a schedule (``simulate_schedule``, ``format_schedule``,
``bubble_fraction``, ``max_in_flight``). :mod:`minilm.parallel.pipeline` runs these
plans over MPI; its docstring explains the schedules and why they cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..nn.module import Module

__all__ = [
    "BACKWARD", "FORWARD", "SCHEDULES", "Action", "bubble_fraction", "format_schedule",
    "gpt_layer_costs", "make_schedule", "max_in_flight", "partition_balanced",
    "simulate_schedule",
]

FORWARD, BACKWARD = "forward", "backward"
SCHEDULES = ("gpipe", "1f1b")


# ---------------------------------------------------------------------------- partition


def partition_balanced(costs: Sequence[float], n_stages: int, first_extra: float = 0.0,
                       last_extra: float = 0.0) -> list[tuple[int, int]]:
    """Split layers with ``costs`` into ``n_stages`` contiguous non-empty runs that
    minimise the largest stage cost, where the first stage also pays ``first_extra``
    (the embeddings) and the last ``last_extra`` (ln_f and the head). Exact dynamic
    programme, O(n_stages * n^2). Returns ``[(start, stop), ...]`` per stage; among
    optimal splits, boundaries are as early as possible (lighter early stages)."""
    n = len(costs)
    if not isinstance(n_stages, int) or n_stages < 1:
        raise ValueError(f"partition_balanced: n_stages must be a positive integer, got "
                         f"{n_stages!r}")
    if n < n_stages:
        raise ValueError(f"partition_balanced: {n} layers cannot be split into {n_stages} "
                         f"pipeline stages (each stage needs at least one layer); use at "
                         f"most {n} stages or a model with at least {n_stages} layers")
    pre = np.concatenate([[0.0], np.cumsum(np.asarray(costs, dtype=np.float64))])

    def seg(i: int, j: int, k: int) -> float:
        c = pre[j] - pre[i]
        if k == 0:
            c += first_extra
        if k == n_stages - 1:
            c += last_extra
        return float(c)

    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(n_stages)]  # best[k][j]: layers [0, j) on 0..k
    arg = [[0] * (n + 1) for _ in range(n_stages)]
    for j in range(1, n + 1):
        best[0][j] = seg(0, j, 0)
    for k in range(1, n_stages):
        for j in range(k + 1, n + 1):
            for i in range(k, j):  # stage k holds [i, j); stages 0..k-1 hold [0, i)
                v = max(best[k - 1][i], seg(i, j, k))
                if v < best[k][j]:
                    best[k][j], arg[k][j] = v, i
    bounds, j = [], n
    for k in range(n_stages - 1, -1, -1):
        i = arg[k][j] if k > 0 else 0
        bounds.append((i, j))
        j = i
    return bounds[::-1]


def gpt_layer_costs(model: Module) -> tuple[list[int], int, int]:
    """Parameter counts of a GPT's blocks, of its embeddings (first stage) and of
    ln_f + head (last stage; a tied head weight counts: the last stage holds a copy)."""
    def count(m: Any) -> int:
        return sum(p.numel() for p in m.parameters()) if m is not None else 0

    costs = [count(b) for b in model.blocks]
    first = count(model.tok_emb) + count(getattr(model, "pos_emb", None))
    last = count(model.ln_f) + sum(p.numel() for p in model.head._parameters.values()
                                   if p is not None)
    return costs, first, last


# ---------------------------------------------------------------------------- schedules


class Action(NamedTuple):
    """One step of a stage's schedule: run ``op`` (forward|backward) on micro-batch ``mb``."""

    op: str
    mb: int

    def __str__(self) -> str:
        return f"{self.op[0].upper()}{self.mb}"


def _check_schedule_args(kind: str, n_stages: int, stage: int, micro_batches: int) -> None:
    if kind not in SCHEDULES:
        raise ValueError(f"pipeline: unknown schedule {kind!r}; use one of {SCHEDULES}")
    if n_stages < 1 or micro_batches < 1:
        raise ValueError(f"pipeline: need n_stages >= 1 and micro_batches >= 1, got "
                         f"{n_stages} and {micro_batches}")
    if not 0 <= stage < n_stages:
        raise ValueError(f"pipeline: stage {stage} is outside 0..{n_stages - 1}")


def make_schedule(kind: str, n_stages: int, stage: int, micro_batches: int) -> list[Action]:
    """The ordered actions of ``stage``: 'gpipe' = all M forwards then all M backwards;
    '1f1b' = min(pp - stage - 1, M) warm-up forwards, then one-forward-one-backward,
    then the remaining backwards."""
    _check_schedule_args(kind, n_stages, stage, micro_batches)
    M = micro_batches
    if kind == "gpipe":
        return [Action(FORWARD, i) for i in range(M)] + [Action(BACKWARD, i) for i in range(M)]
    warmup = min(n_stages - stage - 1, M)
    acts = [Action(FORWARD, i) for i in range(warmup)]
    for i in range(M - warmup):
        acts += [Action(FORWARD, warmup + i), Action(BACKWARD, i)]
    acts += [Action(BACKWARD, i) for i in range(M - warmup, M)]
    return acts


def max_in_flight(actions: Sequence[Action]) -> int:
    """Most micro-batches whose forward ran and backward did not yet (activations alive)."""
    live = peak = 0
    for a in actions:
        live += 1 if a.op == FORWARD else -1
        peak = max(peak, live)
    return peak


def bubble_fraction(pp: int, micro_batches: int) -> float:
    """Idle share of a GPipe or 1F1B step with equal stages: (pp - 1) / (M + pp - 1)."""
    if pp < 1 or micro_batches < 1:
        raise ValueError(f"bubble_fraction: need pp >= 1 and micro_batches >= 1, got {pp} "
                         f"and {micro_batches}")
    return (pp - 1) / (micro_batches + pp - 1)


def simulate_schedule(kind: str, n_stages: int, micro_batches: int, t_forward: float = 1.0,
                      t_backward: float = 2.0) -> dict:
    """Run the schedule on an idealised machine (fixed action times, free and
    non-blocking sends): each stage starts its next action once it is free and the
    action's input arrived. Raises RuntimeError if the stages ever wait on each other
    in a cycle (a deadlock). Returns ``timeline`` (per stage: (start, end, Action)),
    ``makespan`` and ``bubble`` = idle / (n_stages * makespan)."""
    lists = [make_schedule(kind, n_stages, s, micro_batches) for s in range(n_stages)]
    pos = [0] * n_stages
    free = [0.0] * n_stages
    done: dict = {}
    timeline: list = [[] for _ in range(n_stages)]
    remaining = sum(len(a) for a in lists)
    while remaining:
        progressed = False
        for s in range(n_stages):
            while pos[s] < len(lists[s]):
                a = lists[s][pos[s]]
                if a.op == FORWARD:
                    dep = (s - 1, a) if s > 0 else None
                else:
                    dep = (s + 1, a) if s < n_stages - 1 else (s, Action(FORWARD, a.mb))
                if dep is not None and dep not in done:
                    break
                start = max(free[s], done[dep] if dep is not None else 0.0)
                end = start + (t_forward if a.op == FORWARD else t_backward)
                done[(s, a)] = free[s] = end
                timeline[s].append((start, end, a))
                pos[s] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            stuck = {s: str(lists[s][pos[s]]) for s in range(n_stages) if pos[s] < len(lists[s])}
            raise RuntimeError(f"simulate_schedule: {kind} deadlocks; stages wait at {stuck}")
    makespan = max(free)
    busy = micro_batches * (t_forward + t_backward) * n_stages
    return {"timeline": timeline, "makespan": makespan,
            "bubble": 1.0 - busy / (n_stages * makespan)}


def format_schedule(kind: str, n_stages: int, micro_batches: int, timeline: bool = True) -> str:
    """The schedule as text, one line per stage. With ``timeline``, actions sit in the
    time slot they run in on the idealised machine (forward = backward = 1 slot) and
    ``..`` marks the bubble."""
    lines = [f"{kind} schedule: {n_stages} stages, {micro_batches} micro-batches, bubble "
             f"{bubble_fraction(n_stages, micro_batches):.3f}"]
    if not timeline:
        for s in range(n_stages):
            acts = make_schedule(kind, n_stages, s, micro_batches)
            lines.append(f"stage {s}: " + " ".join(str(a) for a in acts))
        return "\n".join(lines)
    sim = simulate_schedule(kind, n_stages, micro_batches, 1.0, 1.0)
    width = max(2, len(str(micro_batches - 1)) + 1)
    for s, events in enumerate(sim["timeline"]):
        cells = ["." * width] * int(sim["makespan"])
        for start, _, a in events:
            cells[int(start)] = str(a).ljust(width)
        lines.append(f"stage {s}: " + " ".join(cells))
    return "\n".join(lines)
