"""``minilm.cuda``: the GPU's devices and memory, as ``torch.cuda`` names them, over CuPy.

    minilm.cuda.is_available()            # CuPy imports and sees a device
    minilm.cuda.reset_peak_memory_stats()
    ...                                   # train on the GPU
    minilm.cuda.max_memory_allocated()    # bytes: the peak since the reset
    minilm.cuda.empty_cache()             # hand the pool's free blocks back to the driver

Memory is CuPy's default memory pool (``cupy.get_default_memory_pool()``): arrays take
blocks from it and give them back when freed; the pool keeps freed blocks for reuse.

- ``memory_allocated()``  = ``pool.used_bytes()``: bytes in blocks held by live arrays;
- ``memory_reserved()``   = ``pool.total_bytes()``: used + cached free blocks, what the
  process holds on the device;
- ``max_memory_allocated()``: the largest ``memory_allocated()`` since tracking started
  (the first call of one of these functions) or since ``reset_peak_memory_stats()``.
  It is kept by a ``cupy.cuda.MemoryHook`` whose ``malloc_postprocess`` adds each
  block's size to the bytes in use and raises the peak, and whose ``free_postprocess``
  subtracts it (counting, not reading the pool, whose ``used_bytes`` walks every live
  block); every reading re-syncs with ``pool.used_bytes()``. CuPy runs hooks per thread:
  allocations and frees of other threads enter the count only at the next reading (the
  peak between two readings is then approximate; minilm's GPU path runs on one thread).
- ``empty_cache()`` = ``pool.free_all_blocks()``: the cached blocks go back to the driver
  (``memory_reserved`` falls to ``memory_allocated``).

Without CuPy or a device, ``is_available()`` is False, ``device_count()`` 0, and the
other functions raise RuntimeError saying what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backends.cupy_backend import find_cupy

__all__ = [
    "current_device", "describe", "device_count", "empty_cache", "is_available", "max_memory_allocated",
    "memory_allocated", "memory_reserved", "reset_peak_memory_stats", "set_device",
    "synchronize",
]

_INSTALL = "pip install 'minilm[cuda]'"


def _load() -> Any:
    """CuPy, or ImportError saying why there is no usable device."""
    return find_cupy()


def _cupy(op: str) -> Any:
    try:
        return _load()
    except ImportError as exc:
        raise RuntimeError(f"minilm.cuda.{op}: no CUDA device ({exc}); {_INSTALL}") from None


def is_available() -> bool:
    """Whether CuPy imports and sees at least one CUDA device."""
    try:
        _load()
    except ImportError:
        return False
    return True


def describe() -> str:
    """One line for ``minilm info``: the devices and CuPy's version, or why there are
    none."""
    try:
        cupy = _load()
    except ImportError as exc:
        return f"no CUDA device ({exc}); {_INSTALL}"
    n = int(cupy.cuda.runtime.getDeviceCount())
    return f"{n} CUDA device{'s' if n != 1 else ''} (CuPy {getattr(cupy, '__version__', '?')})"


def device_count() -> int:
    """The number of CUDA devices (0 without CuPy or a driver)."""
    try:
        cupy = _load()
    except ImportError:
        return 0
    return int(cupy.cuda.runtime.getDeviceCount())


def current_device() -> int:
    """The index of the device new arrays go to."""
    return int(_cupy("current_device").cuda.runtime.getDevice())


def set_device(device: int) -> None:
    """Make ``device`` (0 .. device_count() - 1) the current device of this thread."""
    cupy = _cupy("set_device")
    n = int(cupy.cuda.runtime.getDeviceCount())
    if not isinstance(device, int) or isinstance(device, bool) or not 0 <= device < n:
        raise ValueError(f"minilm.cuda.set_device: device must be an int in [0, {n}), got "
                         f"{device!r}")
    cupy.cuda.runtime.setDevice(device)


def synchronize() -> None:
    """Wait until every kernel queued on the current device has finished."""
    _cupy("synchronize").cuda.runtime.deviceSynchronize()


# ---------------------------------------------------------------------- peak tracking
class PeakTracker:
    """Bytes in use and their peak, per device, from the pool's malloc / free events.

    ``malloc(d, n)``: used[d] += n, peak[d] = max(peak[d], used[d]);  ``free(d, n)``:
    used[d] -= n;  ``sync(d)``: used[d] = the pool's count, peak[d] = max(peak[d], used[d])
    (allocations the hooks did not see: another thread's, or made before tracking);
    ``reset(d)``: peak[d] = used[d] = the pool's count. ``used_now(d)`` reads the pool."""

    def __init__(self, used_now: Callable[[int], int]) -> None:
        self.used_now = used_now
        self.used: dict[int, int] = {}
        self.peak: dict[int, int] = {}

    def _start(self, device: int) -> bool:
        """Start counting ``device`` from the pool's count; whether it was new (then
        the count already includes the event being reported)."""
        if device in self.used:
            return False
        self.used[device] = self.peak[device] = int(self.used_now(device))
        return True

    def malloc(self, device: int, nbytes: int) -> None:
        if self._start(device):
            return
        used = self.used[device] = self.used[device] + int(nbytes)
        if used > self.peak[device]:
            self.peak[device] = used

    def free(self, device: int, nbytes: int) -> None:
        if not self._start(device):
            self.used[device] -= int(nbytes)

    def sync(self, device: int) -> int:
        """The peak of ``device`` after re-reading the pool."""
        self._start(device)
        used = self.used[device] = int(self.used_now(device))
        self.peak[device] = max(self.peak[device], used)
        return self.peak[device]

    def reset(self, device: int) -> None:
        self.used[device] = self.peak[device] = int(self.used_now(device))


def make_peak_hook(cupy: Any, tracker: PeakTracker) -> Any:
    """A ``cupy.cuda.MemoryHook`` feeding ``tracker`` (``mem_size``: the block's bytes)."""

    class PeakMemoryHook(cupy.cuda.MemoryHook):
        name = "minilm_peak_memory"

        def malloc_postprocess(self, **kw: Any) -> None:
            if kw.get("mem_ptr", 1):  # CuPy reports a failed allocation too, with ptr 0
                tracker.malloc(kw["device_id"], kw["mem_size"])

        def free_postprocess(self, **kw: Any) -> None:
            tracker.free(kw["device_id"], kw["mem_size"])

    return PeakMemoryHook()


_tracking: dict = {}  # "tracker", "hook": set up by the first memory function called


def _pool(op: str, track: bool = False) -> tuple:
    """(cupy, the default memory pool, the peak tracker or None). ``track``: install the
    hook (once) and return the tracker; only the peak functions need it, so a process
    that never asks for a peak pays no Python call per allocation."""
    cupy = _cupy(op)
    pool = cupy.get_default_memory_pool()
    if track and "tracker" not in _tracking:

        def used_now(device: int) -> int:
            with cupy.cuda.Device(device):
                return int(pool.used_bytes())

        tracker = PeakTracker(used_now)
        hook = make_peak_hook(cupy, tracker)
        hook.__enter__()  # registered in this thread for the rest of the process
        _tracking.update(tracker=tracker, hook=hook)
    return cupy, pool, _tracking.get("tracker")


def _device(cupy: Any, device: int | None) -> int:
    return int(cupy.cuda.runtime.getDevice()) if device is None else int(device)


def memory_allocated(device: int | None = None) -> int:
    """Bytes of the memory pool held by live arrays on ``device`` (default: current)."""
    cupy, pool, tracker = _pool("memory_allocated")
    d = _device(cupy, device)
    if tracker is not None:
        tracker.sync(d)  # the pool's count may be a new peak
        return tracker.used[d]
    with cupy.cuda.Device(d):
        return int(pool.used_bytes())


def max_memory_allocated(device: int | None = None) -> int:
    """The peak of ``memory_allocated(device)`` since tracking started (the first call
    of this or of ``reset_peak_memory_stats``: call that before the work to measure) or
    the last ``reset_peak_memory_stats``."""
    cupy, _, tracker = _pool("max_memory_allocated", track=True)
    return tracker.sync(_device(cupy, device))


def reset_peak_memory_stats(device: int | None = None) -> None:
    """Start the peak of ``max_memory_allocated`` afresh from the bytes in use now."""
    cupy, _, tracker = _pool("reset_peak_memory_stats", track=True)
    tracker.reset(_device(cupy, device))


def memory_reserved(device: int | None = None) -> int:
    """Bytes the pool holds on ``device``: in use plus cached free blocks."""
    cupy, pool, _ = _pool("memory_reserved")
    with cupy.cuda.Device(_device(cupy, device)):
        return int(pool.total_bytes())


def empty_cache() -> None:
    """Give the pool's cached free blocks back to the driver (arrays keep theirs)."""
    _, pool, _ = _pool("empty_cache")
    pool.free_all_blocks()
