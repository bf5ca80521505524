"""Tensor: a backend array, its gradient, and the edge to the op that made it.

A Tensor is a thin handle. ``data`` is a NumPy or CuPy array; ``grad_fn`` is the
:class:`~minilm.autograd.Node` recorded by the op that produced it (``None`` for
leaves); ``grad`` is filled in by ``backward()``. All arithmetic goes through
``minilm.functional`` so that the tape sees it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from .autograd import AccumulateGrad, RemovableHandle, VersionCounter, _bind_tensor, is_grad_enabled
from .autograd import backward as _run_backward
from .backends import (
    backend_for_array,
    current_backend,
    get_backend,
    is_device_array,
    register_array_wrapper,
)

__all__ = ["Tensor", "as_array", "dtype_of"]

_DTYPES = {
    "float16": np.float16, "half": np.float16,
    "float32": np.float32, "float": np.float32,
    "float64": np.float64, "double": np.float64,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
    "int32": np.int32, "int": np.int32,
    "int64": np.int64, "long": np.int64,
    "bool": np.bool_,
}


def dtype_of(dtype: Any) -> np.dtype:
    """Normalise ``dtype`` (a NumPy dtype, a minilm dtype or a name) to a NumPy dtype."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise TypeError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        return np.dtype(_DTYPES[dtype])
    return np.dtype(dtype)


def _default_float() -> np.dtype:
    return np.dtype(np.float32)


#: dtype kinds a tensor may hold: bool, signed and unsigned int, float.
_NUMERIC_KINDS = "biuf"
_LEAF_SCALARS = (bool, int, float, np.bool_, np.integer, np.floating)


def _describe(x: Any) -> str:
    text = repr(x)
    return f"{type(x).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _nested(x: Any, where: str) -> tuple[Any, tuple]:
    """Check the nested-sequence ``x`` element by element: ``(x with 0-d Tensors
    replaced by their NumPy value, its shape)``, or a TypeError / ValueError saying
    which element is wrong. Only called once NumPy could not make a numeric array."""
    if isinstance(x, Tensor):
        if x.ndim != 0:
            raise TypeError(f"tensor: {where} is a Tensor of shape {x.shape}; only 0-d "
                            "tensors can be elements of a list (use minilm.stack to join tensors)")
        x = x.numpy()
    if isinstance(x, np.ndarray) or isinstance(x, np.generic):
        if x.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"tensor: {where} has dtype {x.dtype}; tensor data must be "
                            "bool, int or float")
        return x, tuple(x.shape)
    if isinstance(x, _LEAF_SCALARS):
        return x, ()
    if isinstance(x, (list, tuple)):
        items = [_nested(e, f"{where}[{i}]") for i, e in enumerate(x)]
        for i, (_, shape) in enumerate(items[1:], 1):
            if shape != items[0][1]:
                raise ValueError(f"tensor: ragged nested sequence: {where}[0] has shape "
                                 f"{items[0][1]} but {where}[{i}] has shape {shape}")
        return [v for v, _ in items], (len(items),) + (items[0][1] if items else ())
    raise TypeError(f"tensor: {where} is {_describe(x)}; tensor data must be numbers or "
                    "bools (nested lists/tuples of them, or a numeric array)")


def _refuse_dtype(arr: Any, data: Any) -> None:
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"tensor: cannot hold dtype {arr.dtype} (from {_describe(data)}); "
                        "tensor data must be bool, int or float")


def as_array(data: Any, backend: Any, dtype: Any = None) -> Any:
    """``data`` (array, nested list, scalar, Tensor) as an array of ``backend``.
    Python floats become float32 (the default dtype), ints int64, bools bool;
    arrays keep their dtype unless ``dtype`` is given.

    Only numbers go in: strings, None, other objects, and arrays of dtype other than
    bool/int/float (object, str, complex, datetime …) are a TypeError naming the
    offending element; a ragged nested list (``[[1, 2], [3]]``) is a ValueError naming
    the two shapes. A list may hold 0-d Tensors (as in PyTorch): their values are
    copied, with no autograd link; a Tensor with elements in a list is a TypeError
    (use ``minilm.stack``)."""
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.xp
    if dtype is not None:
        dtype = dtype_of(dtype)
    if isinstance(data, (np.ndarray, np.generic, xp.ndarray)):
        _refuse_dtype(data, data)
        arr = xp.asarray(data, dtype=dtype)
    else:
        try:
            arr = np.asarray(data)
        except ValueError:  # ragged: say where
            _nested(data, "data")
            raise
        if arr.dtype.kind not in _NUMERIC_KINDS:
            arr = np.asarray(_nested(data, "data")[0])
            _refuse_dtype(arr, data)
        if dtype is None and arr.dtype == np.float64:
            arr = arr.astype(_default_float())
        arr = xp.asarray(arr, dtype=dtype)
    _refuse_dtype(arr, data)
    return arr


class Tensor:
    """An n-dimensional array that records the ops applied to it for backprop."""

    __slots__ = ("data", "grad", "grad_fn", "_requires_grad", "_output_nr", "_version",
                 "_hooks", "_post_accumulate_hooks", "_accumulator", "__weakref__")

    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected op

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None,
                 backend: Any = None) -> None:
        if backend is None:
            if isinstance(data, Tensor):
                backend = data.backend
            elif isinstance(data, np.ndarray) or is_device_array(data):
                backend = backend_for_array(data)
            else:
                backend = current_backend()
        elif isinstance(backend, str):
            backend = get_backend(backend)
        self.data = as_array(data, backend, dtype)
        self.grad: Tensor | None = None
        self.grad_fn = None
        self._output_nr = 0
        self._version = VersionCounter()
        self._hooks: list = []
        self._post_accumulate_hooks: list = []
        self._accumulator = None
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True

    @classmethod
    def _make(cls, array: Any, grad_fn: Any = None, output_nr: int = 0) -> Tensor:
        """Fast constructor used by ops: wraps ``array`` without copying or checks."""
        t = cls.__new__(cls)
        t.data = array
        t.grad = None
        t.grad_fn = grad_fn
        t._output_nr = output_nr
        t._version = VersionCounter()
        t._hooks = []
        t._post_accumulate_hooks = []
        t._accumulator = None
        t._requires_grad = grad_fn is not None
        return t

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def backend(self) -> Any:
        return backend_for_array(self.data)

    @property
    def device(self) -> str:
        return "cuda" if is_device_array(self.data) else "cpu"

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        if self.grad_fn is not None and not flag:
            raise RuntimeError(
                "requires_grad: cannot turn off requires_grad of a non-leaf tensor; use "
                ".detach() to get a tensor outside the graph"
            )
        if flag and self.data.dtype.kind not in "fc":
            raise TypeError(
                f"requires_grad: only floating-point tensors can require gradients, this "
                f"one is {self.data.dtype}; convert it first with .float() or .double()"
            )
        self._requires_grad = bool(flag)

    def requires_grad_(self, flag: bool = True) -> Tensor:
        self.requires_grad = flag
        return self

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.data.ndim

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # ------------------------------------------------------------------ conversion
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (a copy from the GPU; shared memory on CPU)."""
        return self.backend.to_numpy(self.data)

    def item(self) -> Any:
        if self.data.size != 1:
            raise ValueError(
                f"item: only one-element tensors can be converted to a Python scalar, "
                f"got shape {self.shape}"
            )
        return self.data.reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.data.size} elements is ambiguous; "
                "use .any() or .all()"
            )
        return bool(self.item())

    def __index__(self) -> int:
        if self.data.dtype.kind not in "iub" or self.data.size != 1:
            raise TypeError("only one-element integer tensors can be used as an index")
        return int(self.item())

    def detach(self) -> Tensor:
        """A tensor sharing this one's storage (and version counter) but outside the graph."""
        t = Tensor._make(self.data)
        t._version = self._version
        return t

    # ``to(target)`` (a backend name or a dtype; differentiable) and ``clone()``, like
    # the operators and op methods (``x + y``, ``x.sum()``), are bound onto Tensor by
    # ``minilm.functional`` when it is imported (``import minilm`` does): tensor sits
    # below functional and never imports it.

    def float(self) -> Tensor:
        return self.to(np.float32)

    def double(self) -> Tensor:
        return self.to(np.float64)

    def half(self) -> Tensor:
        return self.to(np.float16)

    def long(self) -> Tensor:
        return self.to(np.int64)

    def int(self) -> Tensor:
        return self.to(np.int32)

    def bool(self) -> Tensor:
        return self.to(np.bool_)

    def type(self, dtype: Any) -> Tensor:
        return self.to(dtype)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def cpu(self) -> Tensor:
        return self if self.device == "cpu" else self.to("numpy")

    def contiguous(self) -> Tensor:
        return self

    # ------------------------------------------------------------------ autograd
    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) (times ``gradient``) into each leaf's ``.grad``."""
        _run_backward(self, gradient, retain_graph=retain_graph)

    def _get_accumulator(self) -> AccumulateGrad:
        acc = self._accumulator() if self._accumulator is not None else None
        if acc is None:
            acc = AccumulateGrad(self)
            self._accumulator = weakref.ref(acc)
        return acc

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> RemovableHandle:
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned
        tensor replaces the gradient."""
        if not self.requires_grad:
            raise RuntimeError("register_hook: tensor does not require grad")
        if self.grad_fn is None:
            hooks = self._hooks
        else:
            node = self.grad_fn
            if node._output_hooks is None:
                node._output_hooks = {}
            hooks = node._output_hooks.setdefault(self._output_nr, [])
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> RemovableHandle:
        """Call ``hook(tensor)`` on a leaf after its ``.grad`` has been updated by a
        backward pass (data parallelism starts gradient communication from here)."""
        if self.grad_fn is not None:
            raise RuntimeError(
                "register_post_accumulate_grad_hook: only leaf tensors accumulate .grad"
            )
        self._post_accumulate_hooks.append(hook)
        return RemovableHandle(self._post_accumulate_hooks, hook)

    def retain_grad(self) -> None:
        """Keep ``.grad`` for a non-leaf tensor too."""
        if self.grad_fn is None:
            return
        ref = weakref.ref(self)

        def keep(g: Tensor) -> None:
            t = ref()
            if t is not None:
                t.grad = g.clone().detach() if t.grad is None else t.grad + g.detach()

        self.register_hook(keep)

    # ------------------------------------------------------------------ in-place (no tape)
    def _check_inplace(self, op: str) -> None:
        if is_grad_enabled() and self._requires_grad:
            raise RuntimeError(
                f"{op}: in-place change of a tensor that requires grad; do it under "
                "minilm.no_grad() (as optimizers do) or use the out-of-place op"
            )

    def _bump(self) -> Tensor:
        self._version.value += 1
        return self

    def _inplace(self, op: str, fn: Callable, other: Any = None) -> Tensor:
        self._check_inplace(op)
        o = other.data if isinstance(other, Tensor) else other
        fn(self.data, o)
        return self._bump()

    def zero_(self) -> Tensor:
        return self._inplace("zero_", lambda a, _: a.fill(0))

    def fill_(self, value: Any) -> Tensor:
        return self._inplace("fill_", lambda a, v: a.fill(v), value)

    def copy_(self, src: Any) -> Tensor:
        def copy(a: Any, s: Any) -> None:
            a[...] = s

        return self._inplace("copy_", copy, src)

    def add_(self, other: Any, alpha: float = 1.0) -> Tensor:
        def add(a: Any, o: Any) -> None:
            a += o if alpha == 1.0 else alpha * o

        return self._inplace("add_", add, other)

    def sub_(self, other: Any, alpha: float = 1.0) -> Tensor:
        def sub(a: Any, o: Any) -> None:
            a -= o if alpha == 1.0 else alpha * o

        return self._inplace("sub_", sub, other)

    def mul_(self, other: Any) -> Tensor:
        def mul(a: Any, o: Any) -> None:
            a *= o

        return self._inplace("mul_", mul, other)

    def div_(self, other: Any) -> Tensor:
        def div(a: Any, o: Any) -> None:
            a /= o

        return self._inplace("div_", div, other)

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        def clamp(a: Any, _: Any) -> None:
            self.backend.xp.clip(a, min, max, out=a)

        return self._inplace("clamp_", clamp)

    def masked_fill_(self, mask: Any, value: Any) -> Tensor:
        def fill(a: Any, m: Any) -> None:
            a[self.backend.xp.broadcast_to(m, a.shape)] = value

        return self._inplace("masked_fill_", fill, mask)

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> Tensor:
        def draw(a: Any, _: Any) -> None:
            a[...] = self.backend.rng.normal(mean, std, a.shape)

        return self._inplace("normal_", draw)

    def uniform_(self, low: float = 0.0, high: float = 1.0) -> Tensor:
        def draw(a: Any, _: Any) -> None:
            a[...] = self.backend.rng.uniform(low, high, a.shape)

        return self._inplace("uniform_", draw)

    def __setitem__(self, index: Any, value: Any) -> None:
        index = _raw_index(index)

        def put(a: Any, v: Any) -> None:
            a[index] = v

        self._inplace("__setitem__", put, value)

    __iadd__ = add_
    __isub__ = sub_
    __imul__ = mul_
    __itruediv__ = div_

    # ------------------------------------------------------------------ repr
    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self.data.dtype not in (np.float32, np.int64, np.bool_):
            extras.append(f"dtype={self.data.dtype}")
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name}Backward>")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    __hash__ = object.__hash__


_bind_tensor(Tensor)


register_array_wrapper(Tensor)  # backends.to_host(tensor) is the host copy of its array


def _raw_index(index: Any) -> Any:
    """Replace Tensors inside an index expression by their arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return [i.data if isinstance(i, Tensor) else i for i in index]
    return index

