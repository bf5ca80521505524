"""Batch sources: resumable streams of ``(x, y)`` batches that a DataLoader drives.

A batch source has

- ``next_batch()``: the next batch (NumPy arrays); raises ``StopIteration`` at the end
  of a pass (infinite sources never do);
- ``state_dict()`` / ``load_state_dict(state)``: a JSON-able snapshot of *where the
  stream is*, so that a resumed run draws exactly the batches it would have drawn;
- ``reset()``: start a new pass; optionally ``set_epoch(epoch)``.

Two sources cover causal-LM training:

- :class:`RandomWindowBatches`: nanoGPT's ``get_batch``, random offsets drawn from a
  NumPy ``Generator`` whose ``bit_generator.state`` is the state;
- :class:`DatasetBatches`: a map-style dataset (e.g. :class:`WindowDataset`) read in
  the order of a sampler (sequential, or :class:`DistributedSampler`); the state is
  the sampler's epoch and the position in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .windows import WindowDataset, _check_sizes, _tokens_1d, random_windows

__all__ = [
    "DatasetBatches", "RandomWindowBatches", "make_rng", "rng_state", "sequential_batches",
    "set_rng_state",
]


def make_rng(seed: int | Iterable[int] | np.random.Generator | None = 0) -> np.random.Generator:
    """A Generator from a seed (or a sequence such as ``(seed, rank)``), or ``rng`` itself."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def rng_state(rng: np.random.Generator) -> dict:
    """A JSON-able copy of ``rng.bit_generator.state`` (PCG64: two 128-bit ints)."""
    return _jsonable(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    """Restore a state from :func:`rng_state` (the bit generator types must match)."""
    name = type(rng.bit_generator).__name__
    if state.get("bit_generator") != name:
        raise ValueError(f"set_rng_state: state is for {state.get('bit_generator')!r}, the generator "
                         f"is {name}")
    rng.bit_generator.state = state


class RandomWindowBatches:
    """Endless random-offset batches (``num_batches`` per pass if given):
    ``random_windows(tokens, batch_size, context_length, rng)`` again and again.

    ``rng`` is a Generator or a seed; give each data-parallel rank its own stream with
    ``rng=(seed, rank)``."""

    def __init__(self, tokens: Any, batch_size: int, context_length: int,
                 rng: int | Iterable[int] | np.random.Generator | None = 0,
                 num_batches: int | None = None) -> None:
        name = type(self).__name__
        self.tokens = _tokens_1d(tokens, name)
        _check_sizes(name, batch_size, context_length)
        if len(self.tokens) < context_length + 1:
            raise ValueError(f"{name}: {len(self.tokens)} tokens are too few for "
                             f"{self._length_name} {context_length}")
        self.batch_size = int(batch_size)
        self.context_length = int(context_length)
        self.rng = make_rng(rng)
        self.num_batches = num_batches
        self.count = 0  # batches drawn in this pass

    _length_name = "context_length"  # how the longest window is called (error messages)

    def _shape(self) -> tuple[int, int]:
        """Hook: (rows, window length) of the next batch."""
        return self.batch_size, self.context_length

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        if self.num_batches is not None and self.count >= self.num_batches:
            raise StopIteration
        rows, length = self._shape()
        batch = random_windows(self.tokens, rows, length, self.rng)
        self.count += 1
        return batch

    def reset(self) -> None:
        self.count = 0  # the RNG keeps going: a new pass draws new batches

    def state_dict(self) -> dict:
        return {"rng": rng_state(self.rng), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        set_rng_state(self.rng, state["rng"])
        self.count = int(state["count"])

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError(f"{type(self).__name__} without num_batches is endless")
        return self.num_batches


def _collate(items: list) -> Any:
    """Stack a list of examples (arrays, or tuples of arrays) into a batch."""
    first = items[0]
    if isinstance(first, (tuple, list)):
        return tuple(np.stack([it[k] for it in items]) for k in range(len(first)))
    return np.stack(items)


class DatasetBatches:
    """Batches of ``batch_size`` examples of a map-style ``dataset``, in the order of
    ``sampler`` (default: 0, 1, 2, …). One pass ends after the last index; the final
    batch may be smaller unless ``drop_last``. Datasets with ``get_batch(indices)``
    (like :class:`WindowDataset`) are gathered in one vectorised read."""

    def __init__(self, dataset: Any, batch_size: int, sampler: Any = None,
                 drop_last: bool = False) -> None:
        _check_sizes("DatasetBatches", batch_size, 1)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.sampler = sampler
        self.drop_last = drop_last
        self.position = 0  # indices consumed in this pass
        self._order: np.ndarray | None = None

    def _current_order(self) -> np.ndarray:
        if self._order is None:
            src = range(len(self.dataset)) if self.sampler is None else self.sampler
            self._order = np.fromiter(iter(src), dtype=np.int64)
        return self._order

    def next_batch(self) -> Any:
        order = self._current_order()
        end = self.position + self.batch_size
        if self.position >= len(order) or (self.drop_last and end > len(order)):
            raise StopIteration
        idx = order[self.position:end]
        self.position += len(idx)
        if hasattr(self.dataset, "get_batch"):
            return self.dataset.get_batch(idx)
        return _collate([self.dataset[int(i)] for i in idx])

    def reset(self) -> None:
        """Start a new pass (the sampler's order is read again)."""
        self.position = 0
        self._order = None

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is None or not hasattr(self.sampler, "set_epoch"):
            raise TypeError("DatasetBatches.set_epoch: the sampler has no set_epoch")
        self.sampler.set_epoch(epoch)
        self.reset()

    def state_dict(self) -> dict:
        state: dict = {"position": self.position}
        if self.sampler is not None and hasattr(self.sampler, "state_dict"):
            state["sampler"] = self.sampler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if "sampler" in state:
            self.sampler.load_state_dict(state["sampler"])
        self._order = None
        self.position = int(state["position"])

    def __len__(self) -> int:
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def sequential_batches(tokens: Any, batch_size: int, context_length: int, drop_last: bool = False
                       ) -> DatasetBatches:
    """The batches of :func:`iter_windows` as a resumable source (for evaluation)."""
    return DatasetBatches(WindowDataset(tokens, context_length), batch_size, drop_last=drop_last)
