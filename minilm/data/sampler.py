"""DistributedSampler: each data-parallel rank reads its own share of the examples.

PyTorch semantics. For epoch e every rank draws the *same* permutation (seeded by
``(seed, e)``), pads it (``drop_last=False``: repeat its head) or trims it
(``drop_last=True``) to a multiple of ``num_replicas``, and keeps every
``num_replicas``-th index from position ``rank``::

    permutation  [7 2 9 0 4 1 8 3 6 5]  + pad [7 2]          (10 examples, 4 ranks)
    rank 0       7 . . . 4 . . . 6 . . .   -> [7, 4, 6]
    rank 1       . 2 . . . 1 . . . 5 . .   -> [2, 1, 5]
    rank 2       . . 9 . . . 8 . . . 7 .   -> [9, 8, 7]
    rank 3       . . . 0 . . . 3 . . . 2   -> [0, 3, 2]

So the shards are disjoint (up to the padding), cover the data, and have equal
length, which keeps collective ops in step. Call ``set_epoch(e)`` before each epoch or
every epoch sees the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """Indices ``0..N-1`` split across ``num_replicas`` ranks; ``N`` is an int or
    ``len(dataset)`` (e.g. a :class:`WindowDataset`, for LM windows)."""

    def __init__(self, dataset: Any, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False) -> None:
        n = int(dataset) if isinstance(dataset, (int, np.integer)) else len(dataset)
        if n < 0:
            raise ValueError(f"DistributedSampler: dataset length must be >= 0, got {n}")
        if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be >= 1, got {num_replicas!r}")
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank {rank!r} is outside [0, {num_replicas})")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"DistributedSampler: seed must be a non-negative int, got {seed!r}")
        self.dataset_len = n
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        if drop_last and n % self.num_replicas:
            self.num_samples = n // self.num_replicas  # trim the tail the ranks cannot share
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation: all ranks must use the same epoch."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"DistributedSampler.set_epoch: epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def global_order(self) -> np.ndarray:
        """The padded (or trimmed) order of all ``total_size`` indices for this epoch,
        before sharding; identical on every rank."""
        n = self.dataset_len
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(n)
        else:
            order = np.arange(n)
        if self.total_size > n and n > 0:  # pad by repeating the head (as often as needed)
            order = np.resize(order, self.total_size)
        return order[:self.total_size].astype(np.int64)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch."""
        return self.global_order()[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.set_epoch(state["epoch"])

    def __repr__(self) -> str:
        return (f"DistributedSampler(n={self.dataset_len}, num_replicas={self.num_replicas}, "
                f"rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, "
                f"drop_last={self.drop_last}, epoch={self.epoch})")
