"""Comparisons and logical ops: less … not_equal (and eq/ne/lt/le/gt/ge),
logical_and/or/xor/not, isnan, isfinite, allclose.

None is differentiable: each returns a bool tensor outside the graph (or, for
allclose, a Python bool), computed with the backend's ``xp`` on the raw arrays.
"""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor
from ._util import elementwise

__all__ = [
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "equal",
    "not_equal",
    "logical_and",
    "logical_or",
    "logical_xor",
    "logical_not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "isnan",
    "isfinite",
    "allclose",
]


def _compare(name: str, fn_name: str) -> Any:
    def compare(a: Any, b: Any) -> Tensor:
        like = a if isinstance(a, Tensor) else b
        xp = like.backend.xp
        ra = a.data if isinstance(a, Tensor) else a
        rb = b.data if isinstance(b, Tensor) else b
        return Tensor._make(xp.asarray(elementwise(name, getattr(xp, fn_name), ra, rb)))

    compare.__name__ = name
    compare.__doc__ = f"Elementwise ``{fn_name}`` as a bool tensor (not differentiable)."
    return compare


less = _compare("less", "less")
less_equal = _compare("less_equal", "less_equal")
greater = _compare("greater", "greater")
greater_equal = _compare("greater_equal", "greater_equal")
equal = _compare("equal", "equal")
not_equal = _compare("not_equal", "not_equal")
logical_and = _compare("logical_and", "logical_and")
logical_or = _compare("logical_or", "logical_or")
logical_xor = _compare("logical_xor", "logical_xor")
eq, ne, lt, le, gt, ge = equal, not_equal, less, less_equal, greater, greater_equal


def logical_not(x: Tensor) -> Tensor:
    return Tensor._make(x.backend.xp.logical_not(x.data))


def isnan(x: Tensor) -> Tensor:
    return Tensor._make(x.backend.xp.isnan(x.data))


def isfinite(x: Tensor) -> Tensor:
    return Tensor._make(x.backend.xp.isfinite(x.data))


def allclose(a: Tensor, b: Any, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    rb = b.data if isinstance(b, Tensor) else b
    return bool(a.backend.xp.allclose(a.data, rb, rtol=rtol, atol=atol))
