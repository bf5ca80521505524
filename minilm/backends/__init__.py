"""Backend registry.

A backend owns the array module ``xp`` (numpy or cupy), a seeded random generator
and the hot kernels named in the backend interface (interface.py). Op code is written
once against ``backend.xp``; the reference arithmetic of each hot kernel is registered
next to its op (``@kernel("softmax")`` in functional/nn.py) and is what the NumPy
backend runs; a faster backend (numba) subclasses it and overrides kernels by name.

A tensor's backend follows its array: a NumPy array belongs to the *selected CPU
backend* (``use_backend``), a device array (CuPy's) to the backend that registered its
type (``register_device_array``); ``to_host`` copies any of them to a NumPy array.
"""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Callable

import numpy

from .numpy_backend import NumpyBackend

__all__ = [
    "NumpyBackend",
    "available_backends",
    "is_device_array",
    "register_array_wrapper",
    "register_device_array",
    "to_host",
    "backend_for_array",
    "backend_reason",
    "current_backend",
    "get_backend",
    "get_num_threads",
    "manual_seed",
    "register_backend",
    "set_num_threads",
    "use_backend",
]

_FACTORIES: dict[str, Callable[[], NumpyBackend]] = {}
_INSTANCES: dict[str, NumpyBackend] = {}
_current: NumpyBackend | None = None  # where new tensors are created
_cpu: NumpyBackend | None = None  # which CPU backend owns NumPy arrays


def register_backend(name: str, factory: Callable[[], NumpyBackend]) -> None:
    """Make ``factory()`` available as ``use_backend(name)``. The factory may raise
    ``ImportError`` when the backend's library is missing."""
    _FACTORIES[name] = factory


def _lazy(module: str, cls: str) -> Callable[[], NumpyBackend]:
    """A factory importing ``minilm.backends.<module>`` only when first used (importing
    Numba or CuPy is not free); a missing library or module is an ImportError that
    says which backend cannot be had."""

    def make() -> NumpyBackend:
        import importlib

        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ImportError as exc:
            raise ImportError(f"backend {module.split('_')[0]!r} is not available here: {exc}") \
                from exc
        return getattr(mod, cls)()

    return make


register_backend("numpy", NumpyBackend)
register_backend("numba", _lazy("numba_backend", "NumbaBackend"))
register_backend("cupy", _lazy("cupy_backend", "CupyBackend"))

#: Array types that live on a device, by the name of the backend that owns them (the
#: CuPy backend registers ``cupy.ndarray`` when it is created).
_DEVICE_TYPES: dict = {}


def register_device_array(array_type: type, backend_name: str) -> None:
    """Arrays of ``array_type`` belong to the backend ``backend_name`` (a device backend:
    its arrays are not NumPy arrays and reach the host only through ``to_host``)."""
    _DEVICE_TYPES[array_type] = backend_name


def _device_backend_name(array) -> str | None:
    name = _DEVICE_TYPES.get(type(array))
    if name is None and type(array).__module__.startswith("cupy"):
        name = "cupy"  # a CuPy array made before the CuPy backend was
    return name


def is_device_array(array) -> bool:
    """Whether ``array`` lives in device memory (a CuPy array), not in host memory."""
    return type(array) is not numpy.ndarray and _device_backend_name(array) is not None


#: Types that wrap an array in ``.data`` (minilm's Tensor registers itself), which
#: ``to_host`` unwraps.
_WRAPPERS: tuple = ()


def register_array_wrapper(cls: type) -> None:
    """Let ``to_host`` accept instances of ``cls`` (their ``.data`` array)."""
    global _WRAPPERS
    _WRAPPERS = (*_WRAPPERS, cls)


def to_host(array):
    """``array`` (or a Tensor's array) as a NumPy array: a copy for a device array,
    else ``numpy.asarray`` (no copy for a NumPy one)."""
    if isinstance(array, _WRAPPERS):
        array = array.data
    name = None if type(array) is numpy.ndarray else _device_backend_name(array)
    if name is None:
        return numpy.asarray(array)
    return get_backend(name).to_numpy(array)


def available_backends() -> list[str]:
    """Names of registered backends whose library imports on this machine."""
    names = []
    for name in _FACTORIES:
        try:
            get_backend(name)
        except ImportError:
            continue
        names.append(name)
    return names


def get_backend(name: str) -> NumpyBackend:
    """The (cached) backend object called ``name``."""
    if name not in _FACTORIES:
        raise ValueError(
            f"unknown backend {name!r}; registered backends: {sorted(_FACTORIES)}"
        )
    if name not in _INSTANCES:
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]


_why = ""  # why the current backend is the one in use (backend_reason)


def use_backend(name: str) -> NumpyBackend:
    """Select the backend that owns NumPy arrays and on which new tensors are created
    (``numpy``, ``numba`` or ``cupy``). Returns the backend; a backend whose library or
    device is missing raises ImportError saying which."""
    global _current, _cpu, _why
    backend = get_backend(name)
    _current = backend
    _why = f"chosen with use_backend({name!r}) / --backend {name}"
    if backend.xp.__name__ == "numpy":
        _cpu = backend
    return backend


def _default_backend_name() -> tuple:
    """(name, why): ``MINILM_BACKEND`` if set, else ``numba`` when Numba imports (it is a
    dependency), else ``numpy``, the reference, with the import error as the reason."""
    env = os.environ.get("MINILM_BACKEND")
    if env:
        return env, f"MINILM_BACKEND={env}"
    try:
        import numba  # noqa: F401
    except ImportError as exc:
        return "numpy", (f"the default, numba, does not import here ({exc}); the NumPy "
                         "reference runs instead (pip install numba)")
    return "numba", "the default: Numba imports"


def current_backend() -> NumpyBackend:
    """The backend new tensors are created on (``MINILM_BACKEND`` picks the first)."""
    global _why
    if _current is None:
        name, why = _default_backend_name()
        try:
            use_backend(name)
        except ImportError as exc:
            raise ImportError(
                f"MINILM_BACKEND={name!r} cannot be used on this machine: {exc}"
            ) from exc
        _why = why
    return _current


def backend_reason() -> str:
    """Why the current backend is the one in use (``minilm info`` prints it)."""
    current_backend()
    return _why


def backend_for_array(array) -> NumpyBackend:
    """The backend that owns ``array``: device arrays -> their backend (cupy), anything
    else -> the selected CPU backend."""
    if _cpu is not None and type(array) is numpy.ndarray:  # the common case, first
        return _cpu
    name = _device_backend_name(array)
    if name is not None:
        return get_backend(name)
    if _cpu is not None:
        return _cpu
    backend = current_backend()
    if backend.xp.__name__ != "numpy":  # the GPU was picked first; NumPy arrays -> reference
        return get_backend("numpy")
    return backend


def manual_seed(seed: int) -> None:
    """Seed the random generator of every backend created so far and of those created
    later, so that runs are repeatable."""
    NumpyBackend.default_seed = int(seed)
    for backend in _INSTANCES.values():
        backend.seed(int(seed))


# ---------------------------------------------------------------------- threads
_num_threads: int | None = None  # set by set_num_threads; None = the libraries' defaults
_blas_limits = None  # the threadpoolctl limiter in force (kept alive on purpose)


def _numba_pool_started() -> bool:
    """Whether the Numba backend exists, i.e. has started Numba's thread pool its way
    (numba.get/set_num_threads would otherwise start it theirs)."""
    return "numba" in _INSTANCES


def _apply_numba_threads(started: bool = False) -> None:
    """Give Numba the thread count of ``set_num_threads`` (if one was set) once its pool
    is started; the Numba backend calls this with ``started=True`` when it has."""
    if _num_threads is None or not (started or _numba_pool_started()):
        return
    import numba

    numba.set_num_threads(min(_num_threads, numba.config.NUMBA_NUM_THREADS))


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for the Numba kernels and for BLAS (matmul).

    Numba cannot go above the pool it started with (``NUMBA_NUM_THREADS``, by default
    the number of cores), so ``n`` is capped there; Numba's setting holds for the
    calling thread. BLAS threads are set through ``threadpoolctl`` (a dependency);
    without it only Numba's count changes."""
    global _num_threads, _blas_limits
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"set_num_threads: n must be at least 1, got {n}")
    _num_threads = n
    _apply_numba_threads()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _blas_limits = threadpool_limits(limits=n, user_api="blas")


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS")


def get_num_threads() -> int:
    """Numba's thread count once the Numba backend is in use, else the count given to
    ``set_num_threads``, else the number of cores this process may run on; unless
    ``set_num_threads`` was called, capped by any of OMP / OPENBLAS / MKL /
    NUMBA_NUM_THREADS set in the environment."""
    if _numba_pool_started():
        import numba

        n = numba.get_num_threads()
    elif _num_threads is not None:
        return _num_threads
    else:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            n = os.cpu_count() or 1
    if _num_threads is not None:  # set_num_threads said so: it wins over the variables
        return n
    for var in _THREAD_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) >= 1:
            n = min(n, int(value))
    return n


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 2 << 30,
                   arena_max: int | None = 1) -> bool:
    """Keep freed multi-MiB arrays in the process instead of returning them to the OS.

    glibc's malloc serves large blocks with mmap and unmaps them on free, so every
    training step maps and zeroes its activations afresh. Raising M_MMAP_THRESHOLD (and
    M_TRIM_THRESHOLD with it: raising only the trim threshold makes things slower) lets
    the heap reuse them. With several threads (``batch_threads``) glibc gives each its own
    arena, and each arena keeps the blocks its thread freed: M_ARENA_MAX = 1 lets the
    threads reuse each other's (bench/gpt_train.py --large, 2 batch threads: peak RSS 865
    -> 698 MiB, and 4% faster). Process-wide, so it is opt-in; ``minilm train`` calls it.
    Returns False where it does not apply (not glibc)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # from <malloc.h>
        ok = libc.mallopt(m_mmap_threshold, int(mmap_threshold))
        ok &= libc.mallopt(m_trim_threshold, int(trim_threshold))
        if arena_max:
            ok &= libc.mallopt(m_arena_max, int(arena_max))
    except (OSError, AttributeError):
        return False
    return bool(ok)
