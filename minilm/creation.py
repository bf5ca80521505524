"""Tensor factories (``tensor``, ``zeros``, ``randn`` …), PyTorch names and semantics.

Each takes ``dtype`` (default float32 for floating factories), ``requires_grad`` and
``backend`` (a name or backend object; default: the current backend). Random
factories draw from the backend's seeded generator (``minilm.manual_seed``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends import current_backend, get_backend, is_device_array
from .tensor import Tensor, dtype_of

__all__ = [
    "arange", "empty", "empty_like", "from_numpy", "full", "full_like", "linspace", "ones",
    "ones_like", "rand", "rand_like", "randint", "randn", "randn_like", "tensor", "zeros",
    "zeros_like", "eye",
]


def _backend(backend: Any) -> Any:
    if backend is None:
        return current_backend()
    return get_backend(backend) if isinstance(backend, str) else backend


def _shape(size: tuple) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for n in size:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"size must be non-negative integers, got {size}")
    return tuple(int(n) for n in size)


def _wrap(array: Any, requires_grad: bool) -> Tensor:
    t = Tensor._make(array)
    if requires_grad:
        t.requires_grad = True
    return t


def tensor(data: Any, dtype: Any = None, requires_grad: bool = False, backend: Any = None) -> Tensor:
    """A new tensor holding a copy of ``data`` (nested lists, scalars or arrays), on
    ``backend`` (default: the current one; a device array's own when it is one).
    Python floats give float32, ints int64, bools bool; arrays keep their dtype.

    Only numbers go in: a string, None or other object anywhere in ``data``, or an
    array of a dtype other than bool/int/float, is a TypeError naming the element
    (``data[1] is str 'a'``); a ragged list (``[[1, 2], [3]]``) is a ValueError naming
    both shapes. A list may hold 0-d Tensors, as in PyTorch: their values are copied
    (no autograd link); a Tensor with elements inside a list is a TypeError (use
    ``minilm.stack``, which keeps the graph)."""
    if isinstance(data, Tensor):
        data = data.data
    # a copy goes to the current backend (the GPU after use_backend("cupy"), as PyTorch's
    # default device); a device array with no backend given stays on its device
    b = _backend(backend) if backend is not None or not is_device_array(data) else None
    t = Tensor(data, dtype=dtype, backend=b)
    if t.data is data:
        t.data = t.data.copy()
    if requires_grad:
        t.requires_grad = True
    return t


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with the NumPy ``array``."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor._make(array)


def _factory(name: str, fill: Any) -> Any:
    def make(*size: Any, dtype: Any = None, requires_grad: bool = False, backend: Any = None) -> Tensor:
        b = _backend(backend)
        dt = dtype_of(dtype) if dtype is not None else np.dtype(np.float32)
        return _wrap(fill(b, _shape(size), dt), requires_grad)

    make.__name__ = name
    return make


zeros = _factory("zeros", lambda b, s, dt: b.xp.zeros(s, dtype=dt))
ones = _factory("ones", lambda b, s, dt: b.xp.ones(s, dtype=dt))
empty = _factory("empty", lambda b, s, dt: b.xp.empty(s, dtype=dt))
randn = _factory("randn", lambda b, s, dt: b.rng.standard_normal(s).astype(dt, copy=False))
rand = _factory("rand", lambda b, s, dt: b.rng.random(s).astype(dt, copy=False))
zeros.__doc__ = "A tensor of zeros of the given size."
ones.__doc__ = "A tensor of ones of the given size."
empty.__doc__ = "An uninitialised tensor of the given size."
randn.__doc__ = "Standard normal samples N(0, 1) of the given size."
rand.__doc__ = "Uniform samples in [0, 1) of the given size."


def full(size: Any, fill_value: Any, dtype: Any = None, requires_grad: bool = False,
         backend: Any = None) -> Tensor:
    b = _backend(backend)
    size = _shape((size,) if isinstance(size, int) else tuple(size))
    if dtype is None:
        dtype = np.bool_ if isinstance(fill_value, bool) else (
            np.int64 if isinstance(fill_value, int) else np.float32)
    return _wrap(b.xp.full(size, fill_value, dtype=dtype_of(dtype)), requires_grad)


def randint(low: int, high: int | None = None, size: Any = (), dtype: Any = None,
            backend: Any = None) -> Tensor:
    """Uniform integers in [low, high) (or [0, low) when high is omitted)."""
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    b = _backend(backend)
    size = _shape((size,) if isinstance(size, int) else tuple(size))
    dt = dtype_of(dtype) if dtype is not None else np.dtype(np.int64)
    return Tensor._make(b.rng.integers(low, high, size).astype(dt, copy=False))


def arange(start: Any, end: Any = None, step: Any = 1, dtype: Any = None,
           requires_grad: bool = False, backend: Any = None) -> Tensor:
    """Values start, start+step, … below end (ints give int64, floats float32)."""
    if end is None:
        start, end = 0, start
    b = _backend(backend)
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if is_int else np.float32
    return _wrap(b.xp.arange(start, end, step, dtype=dtype_of(dtype)), requires_grad)


def linspace(start: float, end: float, steps: int, dtype: Any = None,
             requires_grad: bool = False, backend: Any = None) -> Tensor:
    b = _backend(backend)
    dt = dtype_of(dtype) if dtype is not None else np.dtype(np.float32)
    return _wrap(b.xp.linspace(start, end, steps, dtype=dt), requires_grad)


def eye(n: int, m: int | None = None, dtype: Any = None, requires_grad: bool = False,
        backend: Any = None) -> Tensor:
    b = _backend(backend)
    dt = dtype_of(dtype) if dtype is not None else np.dtype(np.float32)
    return _wrap(b.xp.eye(n, m, dtype=dt), requires_grad)


def _like(name: str, factory: Any) -> Any:
    def make(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
        return factory(*t.shape, dtype=dtype if dtype is not None else t.dtype,
                       requires_grad=requires_grad, backend=t.backend)

    make.__name__ = name
    make.__doc__ = f"``{factory.__name__}`` with the shape, dtype and backend of ``t``."
    return make


zeros_like = _like("zeros_like", zeros)
ones_like = _like("ones_like", ones)
empty_like = _like("empty_like", empty)
randn_like = _like("randn_like", randn)
rand_like = _like("rand_like", rand)


def full_like(t: Tensor, fill_value: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype if dtype is not None else t.dtype,
                requires_grad=requires_grad, backend=t.backend)
