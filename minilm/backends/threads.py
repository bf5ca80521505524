"""One owner of the cores: independent pieces of work spread over threads, each thread
running its kernels single-threaded.

minilm's CPU backends have two thread pools: OpenBLAS's (every matmul) and Numba's
(every fused kernel). Splitting *each op* over both cores makes the pools take turns:
after a GEMM, OpenBLAS's workers spin for a while waiting for the next one, on the very
cores that Numba's workers now want, and a fused kernel between two GEMMs runs no
faster than on one core (docs/performance.md, "Who owns the cores"). Splitting the
*work* instead — whole batches to whole threads — has no such hand-over: inside
:func:`thread_map` BLAS is limited to one thread (``threadpoolctl``) and each worker
sets Numba's (thread-local) count to one, so each core runs one stream of GEMMs and
kernels back to back. The GIL is no obstacle: NumPy releases it in BLAS and in large
element-wise loops, and the Numba kernels are compiled ``nogil=True``; only the
per-op Python bookkeeping (microseconds against milliseconds of arithmetic) is serial.

Scheduling is dynamic: each worker takes the next item when it is free, so items in
decreasing order of cost (longest batch first) balance well — the classic
longest-processing-time rule. A static split (every other batch) left one thread with
40% more work in the sentence-embedding benchmark.

    outputs = thread_map(fn, items, threads=None)   # == [fn(x) for x in items]

Results come back in the order of ``items``; the first exception raised by any ``fn``
stops the others from taking new items and is re-raised in the caller. A call made
from inside a worker, with one thread, with fewer than two items, or on a GPU backend
runs the plain loop in the calling thread; so does a Numba on its ``workqueue``
threading layer (the fallback where neither OpenMP nor TBB is installed), which must
not be entered from two threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from .numpy_backend import thread_rng

__all__ = ["in_worker", "one_thread", "thread_map", "thread_rng"]

_local = threading.local()
_controller = None  # threadpoolctl.ThreadpoolController, found once (the scan costs ~ms)


def in_worker() -> bool:
    """Whether the calling thread is a :func:`thread_map` worker (its kernels run
    single-threaded)."""
    return getattr(_local, "worker", False)


class _BlasLimitOne:
    """A context that limits BLAS to one thread (a no-op without threadpoolctl).

    The limit is process-wide and only the main thread changes it: OpenBLAS ignores a
    change of its thread count made from another thread (measured with NumPy's
    scipy-openblas 0.3.31: a worker's ``set_num_threads(2)`` leaves it at 1), so a
    section entered elsewhere does nothing (BLAS keeps whatever the main thread set;
    inside ``thread_map`` workers that is already one). Nested sections of the main
    thread are counted: the outermost sets the limit and restores the original."""

    _depth = 0  # main-thread sections open
    _limiter: Any = None

    def __enter__(self) -> None:
        global _controller
        self.active = threading.current_thread() is threading.main_thread()
        if not self.active:
            return
        cls = type(self)
        if cls._depth == 0:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                cls._limiter = None
            else:
                if _controller is None:
                    _controller = ThreadpoolController()
                cls._limiter = _controller.limit(limits=1, user_api="blas")
        cls._depth += 1

    def __exit__(self, *exc: object) -> None:
        if not self.active:
            return
        cls = type(self)
        cls._depth -= 1
        if cls._depth == 0 and cls._limiter is not None:
            cls._limiter.restore_original_limits()
            cls._limiter = None


def _use_threads(threads: int | None, n_items: int) -> int:
    """How many workers ``thread_map`` starts (1: run in the caller)."""
    import numpy

    from . import _numba_pool_started, current_backend, get_num_threads

    if in_worker() or n_items < 2:
        return 1
    if current_backend().xp is not numpy:  # a GPU backend: one stream, no CPU threads
        return 1
    if _numba_pool_started():
        import numba

        if numba.threading_layer() == "workqueue":  # not safe to enter from two threads
            return 1
    n = get_num_threads() if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"thread_map: threads must be at least 1, got {threads}")
    return min(n, n_items)


def _single_threaded_kernels() -> None:
    """Numba's thread count for this thread (thread-local) := 1, if its pool runs."""
    from . import _numba_pool_started

    if _numba_pool_started():
        import numba

        numba.set_num_threads(1)


class one_thread:
    """``with one_thread():`` BLAS runs one thread and so do this thread's Numba
    kernels, then both go back to what they were. For work whose every op is tiny
    (decoding one token at batch 1: GEMVs of a few hundred rows), where waking a second
    thread for each op costs more than the op."""

    def __enter__(self) -> None:
        from . import _numba_pool_started

        self._numba = None
        if _numba_pool_started():
            import numba

            self._numba = numba.get_num_threads()
            numba.set_num_threads(1)
        self._blas = _BlasLimitOne()
        self._blas.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._blas.__exit__(*exc)
        if self._numba is not None:
            import numba

            numba.set_num_threads(self._numba)


def thread_map(fn: Callable[[Any], Any], items: Iterable[Any],
               threads: int | None = None) -> list:
    """``[fn(x) for x in items]`` computed by ``threads`` worker threads (default
    :func:`minilm.get_num_threads`), BLAS and Numba at one thread each meanwhile.

    ``fn`` must be safe to run concurrently on different items (a model's no-grad
    forward is; two backward passes into the same parameters are not)."""
    items = list(items)
    n = _use_threads(threads, len(items))
    if n == 1:
        return [fn(x) for x in items]
    results: list = [None] * len(items)
    errors: list = []
    lock = threading.Lock()
    next_index = [0]

    def worker() -> None:
        _local.worker = True
        _single_threaded_kernels()
        while True:
            with lock:
                i = next_index[0]
                if i >= len(items) or errors:
                    return
                next_index[0] = i + 1
            try:
                results[i] = fn(items[i])
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                with lock:
                    errors.append(e)
                return

    with _BlasLimitOne():
        pool = [threading.Thread(target=worker, name=f"minilm-worker-{k}", daemon=True)
                for k in range(n)]
        for t in pool:
            t.start()
        try:
            for t in pool:
                t.join()
        finally:  # interrupted (Ctrl-C in join): the workers take no new item
            next_index[0] = len(items)
            for t in pool:
                t.join()
    if errors:
        raise errors[0]
    return results
