"""Early stopping over epochs, for the classifiers' ``fit`` loops (the Trainer, which
evaluates every N steps and keeps ``best.safetensors``, has its own).

After each epoch the loop hands its row (with ``val_loss``) to ``EarlyStopping.update``:

    best_loss = min over epochs of val_loss     (an improvement: below best - min_delta)
    bad       = epochs since the last improvement
    stop      when bad >= patience

and the model's state is snapshot at every improvement, so the caller can restore the
weights of the best epoch at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends import to_host

__all__ = ["EarlyStopping", "host_state"]


def host_state(module: Any, keep: Callable[[str], bool] | None = None) -> dict:
    """A host copy of ``module.state_dict()`` (the entries whose name ``keep`` accepts):
    what a snapshot of the best epoch holds, whatever device the model is on."""
    return {k: np.array(to_host(v.data), copy=True) for k, v in module.state_dict().items()
            if keep is None or keep(k)}


class EarlyStopping:
    """``update(row)`` records an epoch (history, ``log(row)``), snapshots the model when
    its ``val_loss`` improves by more than ``min_delta`` (``snapshot()``), and returns
    whether to stop: ``patience`` epochs in a row without improvement."""

    def __init__(self, patience: int, snapshot: Callable[[], Any], log: Any = None,
                 min_delta: float = 1e-6) -> None:
        if int(patience) < 1:
            raise ValueError(f"early stopping: patience must be >= 1, got {patience}")
        self.patience, self.snapshot, self.log = int(patience), snapshot, log
        self.min_delta = float(min_delta)
        self.best = math.inf
        self.bad = 0
        self.best_state: Any = None  # snapshot() of the best epoch, None before the first
        self.history: list[dict] = []

    def update(self, row: dict) -> bool:
        self.history.append(row)
        if self.log is not None:
            self.log(row)
        if row["val_loss"] < self.best - self.min_delta:
            self.best, self.bad = row["val_loss"], 0
            self.best_state = self.snapshot()
            return False
        self.bad += 1
        return self.bad >= self.patience
