"""Causal-LM examples from a flat token array: split, random windows, sequential windows.

A window of ``T + 1`` consecutive tokens gives one example: ``x = w[:-1]`` is the
input and ``y = w[1:]`` the target (the next token at each position), as nanoGPT's
``get_batch`` does::

    train, val = split_tokens(tokens, 0.1)
    rng = np.random.default_rng(0)
    x, y = random_windows(train, batch_size=8, context_length=64, rng=rng)
    for x, y in iter_windows(val, 8, 64): ...          # evaluation, no overlap

Token arrays may be ``np.memmap`` s (the token cache): windows read only the rows
they need.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["WindowDataset", "iter_windows", "num_windows", "random_windows", "split_tokens"]

IGNORE_INDEX = -100  # a target the loss skips (cross_entropy's default ignore_index)


def _tokens_1d(tokens: Any, who: str) -> np.ndarray:
    arr = np.asarray(tokens)  # a memmap stays a view of the file
    if arr.ndim != 1:
        raise ValueError(f"{who}: tokens must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{who}: tokens must be integers, got dtype {arr.dtype}")
    return arr


def _check_sizes(who: str, batch_size: int, context_length: int) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(context_length, (int, np.integer)) or context_length < 1:
        raise ValueError(f"{who}: context_length must be a positive int, got {context_length!r}")


def split_tokens(tokens: Any, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)``: the first ``1 - val_fraction`` of the tokens and the rest
    (``round(n * val_fraction)`` tokens), cut at a token boundary. Deterministic, and
    views, not copies (a memmap stays on disk)."""
    arr = _tokens_1d(tokens, "split_tokens")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"split_tokens: val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(len(arr) * val_fraction))
    cut = len(arr) - n_val
    return arr[:cut], arr[cut:]


def random_windows(tokens: Any, batch_size: int, context_length: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` windows at uniformly random offsets: int64 ``(x, y)`` of shape
    ``(B, T)`` with ``y[:, t] == x[:, t + 1]`` for t < T - 1 (y is x shifted by one)."""
    arr = _tokens_1d(tokens, "random_windows")
    _check_sizes("random_windows", batch_size, context_length)
    T = int(context_length)
    if len(arr) < T + 1:
        raise ValueError(f"random_windows: {len(arr)} tokens are too few for context_length {T} "
                         f"(a window needs T + 1 = {T + 1})")
    starts = rng.integers(0, len(arr) - T, size=int(batch_size))
    return _gather(arr, starts, T)


def _gather(arr: np.ndarray, starts: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``arr[s : s + T + 1]`` for each start, split into (x, y) as int64."""
    w = arr[np.asarray(starts, dtype=np.int64)[:, None] + np.arange(T + 1)].astype(np.int64)
    return w[:, :-1].copy(), w[:, 1:].copy()  # (copies: never views of each other)


def num_windows(num_tokens: int, context_length: int, stride: int | None = None) -> int:
    """How many windows of ``T + 1`` tokens start at 0, stride, 2*stride, … (stride
    defaults to T: consecutive windows share one token, targets never overlap)."""
    stride = context_length if stride is None else stride
    if num_tokens < context_length + 1:
        return 0
    return (num_tokens - context_length - 1) // stride + 1


def iter_windows(tokens: Any, batch_size: int, context_length: int, drop_last: bool = False,
                 stride: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Sequential batches of windows for evaluation, every target predicted once.

    Default (``stride`` = T): non-overlapping windows starting at 0, T, 2T, …; the first
    target of each window sees no context. Sliding windows (``stride`` s < T): windows
    start at 0, s, 2s, …, and every window but the first scores only its last s
    targets; the others are set to ``IGNORE_INDEX`` (-100), which the loss skips. So
    each target after the first window is predicted with at least T - s tokens of
    context, at the cost of T / s times the compute::

        window i covers tokens [i s, i s + T];  scored targets: i s + T - s + 1 .. i s + T

    The last targets that do not fill a window are not predicted. The final batch may
    be smaller unless ``drop_last``."""
    arr = _tokens_1d(tokens, "iter_windows")
    _check_sizes("iter_windows", batch_size, context_length)
    T = int(context_length)
    S = T if stride is None else int(stride)
    if not 1 <= S <= T:
        raise ValueError(f"iter_windows: stride must be in [1, context_length = {T}], got "
                         f"{stride!r}")
    n = num_windows(len(arr), T, S)
    stop = n - n % batch_size if drop_last else n
    for b in range(0, stop, batch_size):
        starts = np.arange(b, min(b + batch_size, stop)) * S
        x, y = _gather(arr, starts, T)
        if S < T:  # targets already scored by the previous window: ignored
            y = y.copy()  # (for one window x and y can be views of one array)
            y[starts > 0, :T - S] = IGNORE_INDEX
        yield x, y


class WindowDataset:
    """Map-style dataset of the windows ``tokens[i*stride : i*stride + T + 1]``.

    ``ds[i]`` is ``(x, y)`` of shape ``(T,)``; ``ds.get_batch(indices)`` gathers many at
    once as ``(B, T)`` arrays. Use it with :class:`DistributedSampler` to shard windows
    across ranks (``DatasetBatches(ds, B, sampler)``). ``stride`` defaults to T.
    """

    def __init__(self, tokens: Any, context_length: int, stride: int | None = None) -> None:
        self.tokens = _tokens_1d(tokens, "WindowDataset")
        _check_sizes("WindowDataset", 1, context_length)
        self.context_length = int(context_length)
        self.stride = self.context_length if stride is None else int(stride)
        if self.stride < 1:
            raise ValueError(f"WindowDataset: stride must be >= 1, got {stride}")
        self._len = num_windows(len(self.tokens), self.context_length, self.stride)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        n = self._len
        if not -n <= i < n:
            raise IndexError(f"WindowDataset: index {i} out of range for {n} windows")
        x, y = self.get_batch([i % n])
        return x[0], y[0]

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= self._len)):
            raise IndexError(f"WindowDataset.get_batch: indices must be 1-D in [0, {self._len})")
        return _gather(self.tokens, idx * self.stride, self.context_length)

    def __repr__(self) -> str:
        return (f"WindowDataset(windows={self._len}, context_length={self.context_length}, "
                f"stride={self.stride})")
