"""Tensor's operators and op methods (``x + y``, ``x @ w``, ``x.sum(dim=1)``,
``x.to("float64")``), bound onto :class:`~minilm.tensor.Tensor` by the
``minilm.functional`` package when it is first imported.

tensor sits below functional and never imports it; functional, the layer above, fills
in the methods that call its ops. ``import minilm`` imports functional, so every
Tensor has them.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..backends import _FACTORIES
from ..tensor import _DTYPES, Tensor, dtype_of


def install_tensor_methods(F: ModuleType) -> None:
    """Bind onto Tensor the operators and method forms of the ops of ``F`` (the
    ``minilm.functional`` package, which calls this once when first imported)."""

    def to(self: Tensor, target: Any) -> Tensor:
        """``to("cupy")``/``to("numpy")``/``to("numba")`` moves between backends;
        ``to(dtype)`` casts. Both are differentiable."""
        if isinstance(target, str) and target not in _DTYPES:
            name = {"cpu": "numpy", "cuda": "cupy"}.get(target, target)
            if name not in _FACTORIES:
                raise ValueError(
                    f"to: {target!r} is neither a backend ({sorted(_FACTORIES)}) nor a "
                    f"dtype ({sorted(_DTYPES)})"
                )
            return F.to_backend(self, name)
        return F.cast(self, dtype_of(target))

    def binary(fn: Callable, reflected: bool = False) -> Callable:
        if reflected:
            return lambda self, other: fn(other, self)
        return lambda self, other: fn(self, other)

    T = Tensor
    T.__add__ = binary(F.add)
    T.__radd__ = binary(F.add, True)
    T.__sub__ = binary(F.sub)
    T.__rsub__ = binary(F.sub, True)
    T.__mul__ = binary(F.mul)
    T.__rmul__ = binary(F.mul, True)
    T.__truediv__ = binary(F.div)
    T.__rtruediv__ = binary(F.div, True)
    T.__pow__ = binary(F.pow)
    T.__rpow__ = binary(F.pow, True)
    T.__matmul__ = binary(F.matmul)
    T.__rmatmul__ = binary(F.matmul, True)
    T.__neg__ = F.neg
    T.__abs__ = F.abs
    T.__getitem__ = F.getitem
    for name, op in (("__lt__", "less"), ("__le__", "less_equal"), ("__gt__", "greater"),
                     ("__ge__", "greater_equal"), ("__eq__", "equal"), ("__ne__", "not_equal"),
                     ("__and__", "logical_and"), ("__or__", "logical_or"),
                     ("__xor__", "logical_xor")):
        setattr(T, name, binary(getattr(F, op)))
    T.__invert__ = F.logical_not
    for name in F.TENSOR_METHODS:
        setattr(T, name, getattr(F, name))
    T.to = to
    T.clone = F.clone
    T.T = property(lambda self: F.permute(self, tuple(range(self.ndim - 1, -1, -1))))
    T.mT = property(lambda self: F.transpose(self, -2, -1))
