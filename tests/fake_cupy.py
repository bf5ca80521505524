"""A CuPy-like module on host memory: the device path tested on a machine without a GPU.

``DeviceArray`` is a ``numpy.ndarray`` subclass standing for a ``cupy.ndarray``. It keeps
CuPy's rule at the host/device boundary: an operation that mixes a device array with a
*host* array (a plain ``numpy.ndarray`` with ``ndim > 0``) is a ``TypeError`` worded as
CuPy words it (``Unsupported type <class 'numpy.ndarray'>``); NumPy scalars, 0-d arrays
and Python numbers mix freely (as in CuPy). Every result of an operation on device
arrays is a ``DeviceArray`` (a reduction to one number is a 0-d ``DeviceArray``, as in
CuPy, never a NumPy scalar). ``.get()`` is the host copy.

The module mirrors NumPy: ``fake_cupy.<name>`` is ``numpy.<name>`` wrapped so that the
arrays it returns are ``DeviceArray``; the functions that take host data (``asarray``,
``array``, ...) upload it, every other function refuses a host array argument, as
``cupy.<name>`` does. Dtypes, constants and classes are NumPy's. ``ndarray`` is
``DeviceArray`` and ``asnumpy(x)`` copies to the host.

``numpy.asarray(device_array)`` would quietly return a host view (a subclass is an
ndarray to NumPy), where CuPy raises ("Implicit conversion to a NumPy array is not
allowed"). ``strict_host_conversion()`` (which the ``fake_gpu`` fixture holds for the
whole test) makes ``numpy.asarray`` / ``numpy.array`` / ``numpy.asanyarray`` /
``numpy.ascontiguousarray`` of a device array raise that TypeError too. What stays
invisible: conversions done inside NumPy's C code (a device array handed to a function
that does not dispatch through ``__array_function__``).
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator
from typing import Any

import numpy

_UPLOADERS = frozenset({
    "asarray", "array", "asanyarray", "frombuffer",
    "fromiter", "fromfunction",
})
# Not array functions: they take dtypes / shapes / Python objects and return such.
_PASSTHROUGH = frozenset({
    "dtype", "finfo", "iinfo", "result_type", "promote_types", "can_cast", "isscalar",
    "issubdtype", "ndim", "shape", "size", "errstate", "broadcast_shapes", "seterr",
    "geterr", "get_printoptions", "set_printoptions", "printoptions", "min_scalar_type",
})


def _is_host(x: Any) -> bool:
    """A plain NumPy array with at least one axis: what CuPy refuses to mix in."""
    return type(x) is numpy.ndarray and x.ndim > 0


def _refuse(x: Any) -> None:
    raise TypeError(f"Unsupported type {type(x)}")


def _check(obj: Any) -> None:
    """Raise CuPy's TypeError if ``obj`` (or an item of a list / tuple / dict) is a
    host array."""
    if _is_host(obj):
        _refuse(obj)
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _check(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            _check(item)


def _plain(obj: Any) -> Any:
    """``obj`` with every DeviceArray (also inside lists / tuples / dicts) seen as a
    plain ndarray, so that NumPy computes without dispatching back here."""
    if isinstance(obj, DeviceArray):
        return obj.view(numpy.ndarray)
    if isinstance(obj, list):
        return [_plain(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _device(obj: Any) -> Any:
    """NumPy results as device arrays: ndarrays and NumPy scalars (as 0-d arrays, the way
    CuPy returns reductions) become DeviceArray; tuples / lists are mapped."""
    if isinstance(obj, numpy.ndarray):
        return obj if isinstance(obj, DeviceArray) else obj.view(DeviceArray)
    if isinstance(obj, numpy.generic):
        return numpy.asarray(obj).view(DeviceArray)
    if isinstance(obj, tuple):
        return tuple(_device(o) for o in obj)
    if isinstance(obj, list):
        return [_device(o) for o in obj]
    return obj


class DeviceArray(numpy.ndarray):
    """A ``cupy.ndarray`` stand-in in host memory (see the module docstring)."""

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        _check(inputs)
        out = kwargs.get("out")
        if out is not None:
            _check(out)
            kwargs["out"] = _plain(out)
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _device(result)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        _check(args)
        _check(kwargs)
        out = kwargs.get("out")
        result = func(*_plain(args), **_plain(kwargs))
        if out is not None:
            return out
        return _device(result)

    def get(self, stream: Any = None) -> numpy.ndarray:
        """The host copy (``cupy.ndarray.get``)."""
        return numpy.array(self.view(numpy.ndarray), copy=True)


ndarray = DeviceArray


def asnumpy(x: Any, stream: Any = None) -> numpy.ndarray:
    """``x`` on the host: a copy of a device array, ``numpy.asarray`` of anything else."""
    if isinstance(x, DeviceArray):
        return x.get()
    return numpy.asarray(x)


def _uploader(fn: Any) -> Any:
    @functools.wraps(fn)
    def upload(*args: Any, **kwargs: Any) -> Any:
        return _device(fn(*_plain(args), **_plain(kwargs)))

    return upload


def _device_function(fn: Any) -> Any:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        _check(args)
        _check(kwargs)
        out = kwargs.get("out")
        result = fn(*_plain(args), **_plain(kwargs))
        return out if out is not None else _device(result)

    return call


def _wrap(name: str, value: Any) -> Any:
    if isinstance(value, type) or not callable(value) or name in _PASSTHROUGH:
        return value  # dtypes, classes, constants
    if isinstance(value, numpy.ufunc):
        return _Ufunc(value)
    if name in _UPLOADERS:
        return _uploader(value)
    return _device_function(value)


class _Ufunc:
    """``numpy.<ufunc>`` refusing host arrays, with ``reduce`` / ``accumulate`` /
    ``outer`` / ``at`` wrapped the same way."""

    def __init__(self, ufunc: numpy.ufunc) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _device_function(self._ufunc)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._ufunc, name)
        return _device_function(value) if callable(value) else value


class _Namespace(types.ModuleType):
    """A NumPy submodule (random, linalg, fft) whose functions are wrapped like the
    top level's."""

    def __init__(self, name: str, inner: Any) -> None:
        super().__init__(name)
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _wrap(name, getattr(self._inner, name))


random = _Namespace(f"{__name__}.random", numpy.random)
linalg = _Namespace(f"{__name__}.linalg", numpy.linalg)
fft = _Namespace(f"{__name__}.fft", numpy.fft)


def __getattr__(name: str) -> Any:
    """``fake_cupy.<name>``: NumPy's, with functions returning device arrays."""
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        value = getattr(numpy, name)
    except AttributeError:
        raise AttributeError(f"module 'fake_cupy' has no attribute {name!r}") from None
    wrapped = _wrap(name, value)
    globals()[name] = wrapped  # looked up once
    return wrapped


_CONVERTERS = ("asarray", "array", "asanyarray", "ascontiguousarray")


def _strict(convert: Any) -> Any:
    @functools.wraps(convert)
    def call(a: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(a, DeviceArray):
            raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                            "`.get()` to construct a NumPy array explicitly.")
        return convert(a, *args, **kwargs)

    return call


@contextlib.contextmanager
def strict_host_conversion() -> Iterator[None]:
    """``numpy.asarray`` and its kin refuse device arrays, as they do CuPy's, while
    this is in force (see the module docstring)."""
    saved = {name: getattr(numpy, name) for name in _CONVERTERS}
    for name, fn in saved.items():
        setattr(numpy, name, _strict(fn))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(numpy, name, fn)
