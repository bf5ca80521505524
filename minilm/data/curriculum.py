"""Sequence-length curriculum: random-window batches whose window length grows with the
training step, from short (cheap, easy) sequences to the model's full context.

    source = LengthCurriculumBatches(tokens, batch_size=16, max_length=128, min_length=16,
                                     warmup_steps=500, schedule="linear", multiple=8, rng=0)
    loader = DataLoader(source)              # batches (B, L_t); a GPT accepts any L_t <= context
    ckpt["data"] = loader.state_dict()       # step + RNG: a resumed run continues the curriculum

Schedule, with t the number of batches drawn so far (over all passes), N =
``warmup_steps``, L_min / L_max the lengths, m = ``multiple``, p = min(t, N) / N::

    linear:     L(t) = L_min + m * floor(p * (L_max - L_min) / m)
    stepwise:   L(t) = L_min + m * floor(floor(p * S) / S * (L_max - L_min) / m)   (S = stages)
    geometric:  L(t) = m * floor(L_min * (L_max / L_min) ** p / m)

each clamped to [L_min, L_max]; L(t) = L_max for t >= N. (Rounding to a multiple of m
keeps the number of distinct shapes small.) ``stepwise`` holds S equal plateaus
L_min, ..., reaching L_max at t = N. With ``constant_tokens=True`` the batch size
becomes ``floor(B * L_max / L(t))`` so every batch carries about the same number of
tokens (the "batch-size warmup" reading of the curriculum); by default it stays B, so
early steps are cheaper.

The windows are those of :func:`minilm.data.random_windows`: ``x = tokens[s:s+L]``,
``y = tokens[s+1:s+L+1]`` with ``s`` uniform in [0, len(tokens) - L - 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .batches import RandomWindowBatches

__all__ = ["LengthCurriculumBatches", "curriculum_length"]

SCHEDULES = ("linear", "stepwise", "geometric")


def curriculum_length(step: int, min_length: int, max_length: int, warmup_steps: int,
                      schedule: str = "linear", stages: int = 4, multiple: int = 1) -> int:
    """The window length at ``step`` (the formulas of the module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"curriculum_length: schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 1 <= min_length <= max_length:
        raise ValueError(f"curriculum_length: need 1 <= min_length ({min_length}) <= max_length "
                         f"({max_length})")
    if multiple < 1 or stages < 1:
        raise ValueError(f"curriculum_length: multiple ({multiple}) and stages ({stages}) "
                         "must be >= 1")
    if warmup_steps <= 0 or step >= warmup_steps:
        return int(max_length)
    p = max(step, 0) / warmup_steps
    span = max_length - min_length
    if schedule == "linear":
        length = min_length + multiple * math.floor(p * span / multiple)
    elif schedule == "stepwise":
        q = math.floor(p * stages) / stages
        length = min_length + multiple * math.floor(q * span / multiple)
    else:
        # + 1e-9: 16 * 8 ** (2/3) is 63.999... in floating point, meant as 64
        length = multiple * math.floor(min_length * (max_length / min_length) ** p / multiple + 1e-9)
    return int(min(max(length, min_length), max_length))


class LengthCurriculumBatches(RandomWindowBatches):
    """A batch source (``next_batch`` / ``state_dict`` / ``load_state_dict`` / ``reset``:
    a :class:`minilm.data.RandomWindowBatches`) of random windows of length
    :func:`curriculum_length` (``step``). ``num_batches`` ends a pass after that many
    batches; the step counter (and so the curriculum) goes on across passes."""

    _length_name = "max_length"

    def __init__(self, tokens: Any, batch_size: int, max_length: int, min_length: int = 8,
                 warmup_steps: int = 1000, schedule: str = "linear", stages: int = 4,
                 multiple: int = 1, constant_tokens: bool = False,
                 rng: int | Iterable[int] | np.random.Generator | None = 0,
                 num_batches: int | None = None) -> None:
        super().__init__(tokens, batch_size, max_length, rng, num_batches)
        curriculum_length(0, min_length, max_length, warmup_steps, schedule, stages, multiple)
        self.max_length, self.min_length = int(max_length), int(min_length)
        self.warmup_steps, self.schedule = int(warmup_steps), schedule
        self.stages, self.multiple = int(stages), int(multiple)
        self.constant_tokens = constant_tokens
        self.step = 0   # batches drawn in total: the curriculum's clock

    def length_at(self, step: int) -> int:
        return curriculum_length(step, self.min_length, self.max_length, self.warmup_steps,
                                 self.schedule, self.stages, self.multiple)

    def batch_size_at(self, step: int) -> int:
        if not self.constant_tokens:
            return self.batch_size
        return max(1, self.batch_size * self.max_length // self.length_at(step))

    @property
    def current_length(self) -> int:
        """The length of the next batch."""
        return self.length_at(self.step)

    def _shape(self) -> tuple[int, int]:
        return self.batch_size_at(self.step), self.length_at(self.step)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        batch = super().next_batch()
        self.step += 1
        return batch

    def state_dict(self) -> dict:
        return {**super().state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.step = int(state["step"])
