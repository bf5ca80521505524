"""Batches moved to the model's device, the next one uploading while this one computes.

    for x, y in device_batches(loader, model_backend):   # arrays / Tensors on the device
        loss = model(x, y)[1]

``device_batches(batches, backend)`` yields each batch of ``batches`` with every array
(and every Tensor's array) converted to ``backend``'s arrays; tuples, lists and dicts
keep their structure, other items (ints, strings) pass as they are.

- A CPU backend (``xp`` is NumPy): a passthrough, nothing is copied.
- A CuPy backend on a real GPU: one batch ahead. Before batch i is handed out, batch
  i+1 is copied into page-locked host memory (``cupy.cuda.alloc_pinned_memory``, two
  buffers used in turn) and from there to the device on a non-blocking
  ``cupy.cuda.Stream``; an Event recorded after the copy is what the compute stream
  waits on before batch i+1 is used. The host-to-device copy of batch i+1 so overlaps
  the kernels of batch i (a copy from pageable memory would be synchronous).
- Any other device backend (the tests' CuPy stand-in): ``backend.asarray``, in order.

Reading one batch ahead moves the source one batch past the consumer: ``state_dict()``
is the source's state after the last batch *handed out* (what a checkpoint must hold),
and ``close()`` puts the source back there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["DeviceBatches", "device_batches"]


def _map_arrays(batch: Any, fn: Callable[[Any], Any]) -> Any:
    """``batch`` with ``fn`` applied to every array (a Tensor keeps being a Tensor, with
    ``fn`` of its array), through tuples, lists and dicts."""
    from ..tensor import Tensor

    if isinstance(batch, Tensor):
        return Tensor(fn(batch.data))
    if isinstance(batch, tuple):
        return tuple(_map_arrays(b, fn) for b in batch)
    if isinstance(batch, list):
        return [_map_arrays(b, fn) for b in batch]
    if isinstance(batch, dict):
        return {k: _map_arrays(v, fn) for k, v in batch.items()}
    if isinstance(batch, np.ndarray) or hasattr(batch, "__cuda_array_interface__"):
        return fn(batch)
    return batch


def _is_real_cupy(xp: Any) -> bool:
    return getattr(xp, "__name__", "") == "cupy" and hasattr(xp, "cuda")


class _PinnedUploader:
    """Host -> device copies through page-locked buffers on a side stream (CuPy)."""

    def __init__(self, cupy: Any) -> None:
        self.cp = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        # pinned (buffer, capacity) by position in the batch; two sets used in turn
        self.slots: list[dict] = [{}, {}]
        self.slot_done: list[Any] = [None, None]  # the Event of each slot's last copy
        self.turn = 0

    def upload(self, batch: Any) -> tuple:
        """(``batch`` on the device, the Event the consumer waits on). Device memory is
        allocated on the compute stream, which the side stream waits for first, so the
        copy never lands in memory that kernels queued earlier still read."""
        cp = self.cp
        slot, turn = self.slots[self.turn], self.turn
        if self.slot_done[turn] is not None:
            self.slot_done[turn].synchronize()  # its previous copy has left the buffers
        self.turn ^= 1
        compute = cp.cuda.get_current_stream()
        self.stream.wait_event(compute.record())
        count = [0]

        def one(a: Any) -> Any:
            if not isinstance(a, np.ndarray):
                return a  # already on a device
            a = np.ascontiguousarray(a).reshape(a.shape)  # (ascontiguousarray makes 0-d 1-d)
            key = count[0]
            count[0] += 1
            # one buffer per position, grown when a batch needs more (a short last batch
            # or dynamic padding reuses it): the slot's last copy has finished (above)
            if key not in slot or slot[key][1] < a.nbytes:
                slot[key] = (cp.cuda.alloc_pinned_memory(max(a.nbytes, 1)), a.nbytes)
            host = np.frombuffer(slot[key][0], a.dtype, a.size).reshape(a.shape)
            host[...] = a
            dev = cp.empty(a.shape, a.dtype)
            dev.set(host, stream=self.stream)
            return dev

        out = _map_arrays(batch, one)
        done = self.stream.record()
        self.slot_done[turn] = done
        return out, done


class DeviceBatches:
    """The iterator ``device_batches`` returns (see the module docstring)."""

    def __init__(self, batches: Any, backend: Any) -> None:
        self.source = batches
        self.backend = backend
        self._it: Iterator = iter(batches)
        self._stateful = hasattr(batches, "state_dict")
        xp = backend.xp
        self._uploader = _PinnedUploader(xp) if _is_real_cupy(xp) else None
        # reading ahead: the source's state after the last batch handed out
        self._state = self._source_state() if self._uploader is not None else None
        self._pending: tuple | None = None  # (batch, event, source state after it)

    def _source_state(self) -> Any:
        return copy.deepcopy(self.source.state_dict()) if self._stateful else None

    def _pull(self) -> tuple | None:
        """The next batch, uploading (batch, event, state), or None at the end."""
        try:
            batch = next(self._it)
        except StopIteration:
            return None
        if self._uploader is None:  # nothing read ahead: the source is at the consumer
            if self.backend.xp is not np:
                batch = _map_arrays(batch, self.backend.asarray)
            return batch, None, None
        return (*self._uploader.upload(batch), self._source_state())

    def __iter__(self) -> DeviceBatches:
        return self

    def __next__(self) -> Any:
        current = self._pending if self._pending is not None else self._pull()
        if current is None:
            raise StopIteration
        # one ahead only where an upload can overlap (a real device)
        self._pending = self._pull() if self._uploader is not None else None
        batch, event, self._state = current
        if event is not None:
            self._uploader.cp.cuda.get_current_stream().wait_event(event)
        return batch

    def state_dict(self) -> Any:
        """The source's state after the last batch handed out (None for a source
        without ``state_dict``): the source's own when nothing is read ahead, else the
        snapshot taken when that batch was pulled."""
        if self._uploader is None:
            return self.source.state_dict() if self._stateful else None
        return copy.deepcopy(self._state)

    def close(self) -> None:
        """Drop the batch read ahead and put the source back at the consumer's position."""
        if self._pending is not None and self._stateful:
            self.source.load_state_dict(copy.deepcopy(self._state))
        self._drop_pending()

    def _drop_pending(self) -> None:
        """Forget the batch read ahead. Its device memory came from the compute stream's
        pool while its copy may still be running on the side stream: the compute stream
        waits for that copy first, so the memory cannot be handed to a new array and
        then overwritten by the late copy."""
        if self._pending is not None and self._pending[1] is not None:
            self._uploader.cp.cuda.get_current_stream().wait_event(self._pending[1])
        self._pending = None

    def __del__(self) -> None:
        try:
            self._drop_pending()
        except Exception:  # noqa: BLE001 - interpreter shutdown: CuPy may be gone
            pass


def device_batches(batches: Any, backend: Any) -> DeviceBatches:
    """``batches`` (an iterable of arrays, Tensors, or tuples / lists / dicts of them)
    with their arrays on ``backend`` (see the module docstring): a passthrough on a CPU
    backend, one batch ahead through pinned memory and a side stream on a GPU."""
    return DeviceBatches(batches, backend)
