"""DataLoader: batches from a batch source, prepared ahead in a background thread.

    source = RandomWindowBatches(train_tokens, batch_size=8, context_length=64, rng=0)
    loader = DataLoader(source, prefetch=2)          # yields (x, y) int64 Tensors
    it = iter(loader)
    x, y = next(it)
    ckpt["data"] = loader.state_dict()               # JSON-able
    ...
    loader.load_state_dict(ckpt["data"])             # resumes with the same next batch

With ``prefetch=k > 0`` a daemon thread calls ``source.next_batch()`` and puts up to k
batches in a bounded queue while the model trains (NumPy's gathers release the GIL).
The thread is the only caller of the source, so the batches come in exactly the order
of ``prefetch=0``. Each queued batch carries the source state *after* it was drawn;
the loader's ``state_dict()`` is the state after the last batch it *handed out*, so
batches waiting in the queue are never lost: a resumed run draws them again.

An exception in the thread travels through the queue (after the batches before it)
and is raised in the consumer. ``close()`` (or leaving a ``with`` block) stops the
thread and rewinds the source to the consumed position.

PyTorch's loader also accepts a map-style dataset; so does this one:
``DataLoader(dataset, batch_size=32, shuffle=True)`` or with ``sampler=``.
"""

from __future__ import annotations

import copy
import queue
import threading
from typing import Any

import numpy as np

from .batches import DatasetBatches
from .sampler import DistributedSampler

__all__ = ["DataLoader"]

_BATCH, _END, _ERROR = 0, 1, 2


def _produce(source: Any, q: queue.Queue, stop: threading.Event) -> None:
    """The prefetch thread: draw, tag with the state after the draw, enqueue."""
    while not stop.is_set():
        try:
            batch = source.next_batch()
            item = (_BATCH, batch, source.state_dict())
        except StopIteration:
            item = (_END, None, None)
        except BaseException as e:  # re-raised in the consumer
            item = (_ERROR, e, None)
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
        if item[0] != _BATCH:
            return


class DataLoader:
    """Iterate batches of ``source`` (a batch source, or a map-style dataset with
    ``batch_size`` / ``sampler`` / ``shuffle``), as minilm Tensors (``as_tensor=True``;
    ``backend="cupy"`` copies them to the GPU) or NumPy arrays.

    ``for batch in loader`` runs one pass (endless for random-window sources); after a
    pass ends, the next ``iter(loader)`` resets the source and starts another. After
    ``load_state_dict`` iteration continues mid-pass where the saved run stopped.
    """

    def __init__(self, source: Any, batch_size: int | None = None, *, sampler: Any = None,
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0, prefetch: int = 2,
                 as_tensor: bool = True, backend: Any = None) -> None:
        if not hasattr(source, "next_batch"):
            if not (hasattr(source, "__getitem__") and hasattr(source, "__len__")):
                raise TypeError(f"DataLoader: {type(source).__name__} is neither a batch source "
                                "(next_batch/state_dict/load_state_dict) nor a map-style dataset")
            if sampler is not None and shuffle:
                raise ValueError("DataLoader: give either sampler or shuffle=True, not both")
            if shuffle:
                sampler = DistributedSampler(len(source), 1, 0, shuffle=True, seed=seed)
            source = DatasetBatches(source, batch_size or 1, sampler, drop_last)
        elif batch_size is not None or sampler is not None or shuffle or drop_last:
            raise ValueError("DataLoader: batch_size/sampler/shuffle/drop_last apply to datasets; "
                             "a batch source already makes its batches")
        if not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"DataLoader: prefetch must be an int >= 0, got {prefetch!r}")
        self.source = source
        self.prefetch = prefetch
        self.as_tensor = as_tensor
        self.backend = backend
        self.batches_consumed = 0
        self._resume = copy.deepcopy(source.state_dict())  # source state after the last batch handed out
        self._done = False  # the current pass ended
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> DataLoader:
        if self._done:
            self._shutdown(rewind=False)
            if hasattr(self.source, "reset"):
                self.source.reset()
            self._resume = copy.deepcopy(self.source.state_dict())
            self._done = False
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        if self.prefetch == 0:
            try:
                batch = self.source.next_batch()
            except StopIteration:
                self._done = True
                raise
            self._resume = copy.deepcopy(self.source.state_dict())
        else:
            kind, batch, state = self._get()
            if kind == _END:
                self._shutdown(rewind=False)
                self._done = True
                raise StopIteration
            if kind == _ERROR:
                self._shutdown(rewind=True)
                raise batch
            self._resume = state
        self.batches_consumed += 1
        return self._convert(batch)

    def _get(self) -> tuple:
        if self._thread is None:
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=_produce, args=(self.source, self._queue, self._stop),
                                            name="minilm-DataLoader", daemon=True)
            self._thread.start()
        assert self._queue is not None
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("DataLoader: the prefetch thread stopped without a result") from None

    def _convert(self, batch: Any) -> Any:
        if not self.as_tensor:
            return batch
        from ..creation import from_numpy, tensor

        def conv(obj: Any) -> Any:
            if isinstance(obj, np.ndarray):
                return from_numpy(obj) if self.backend is None else tensor(obj, backend=self.backend)
            if isinstance(obj, tuple):
                return tuple(conv(o) for o in obj)
            if isinstance(obj, list):
                return [conv(o) for o in obj]
            if isinstance(obj, dict):
                return {k: conv(v) for k, v in obj.items()}
            return obj

        return conv(batch)

    # ------------------------------------------------------------------ control
    def _shutdown(self, rewind: bool) -> None:
        """Stop the prefetch thread, drop queued batches and (``rewind``) put the source
        back at the consumed position."""
        if self._thread is not None:
            assert self._stop is not None
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = self._stop = None
            if rewind:
                self.source.load_state_dict(copy.deepcopy(self._resume))

    def close(self) -> None:
        """Stop the prefetch thread; the source is left at the consumed position."""
        self._shutdown(rewind=True)

    def __enter__(self) -> DataLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # e.g. at interpreter shutdown
            pass

    def state_dict(self) -> dict:
        """Where the *consumer* is: the source state after the last batch handed out
        (JSON-able), the number of batches handed out, and whether the pass ended."""
        return {"source": copy.deepcopy(self._resume), "batches_consumed": self.batches_consumed,
                "done": self._done}

    def load_state_dict(self, state: dict) -> None:
        self._shutdown(rewind=False)
        self.source.load_state_dict(copy.deepcopy(state["source"]))
        self._resume = copy.deepcopy(state["source"])
        self.batches_consumed = int(state.get("batches_consumed", 0))
        self._done = bool(state.get("done", False))

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` of a sampler-driven source (same epoch on all ranks)."""
        self._shutdown(rewind=False)
        self.source.set_epoch(epoch)
        self._resume = copy.deepcopy(self.source.state_dict())
        self._done = False

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        return f"DataLoader({self.source!r}, prefetch={self.prefetch}, as_tensor={self.as_tensor})"
