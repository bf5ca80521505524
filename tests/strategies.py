"""Hypothesis strategies and checks shared by the op tests (as minitorch has).

Typical use::

    @given(st.data())
    def test_exp(data):
        x = data.draw(tensors(shapes()))
        check_op(F.exp, [x], np.exp)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minilm
from minilm import Tensor

__all__ = [
    "arrays", "broadcastable_pair", "check_forward", "check_grad", "check_op", "dims_of",
    "shapes", "small_floats", "tensors",
]


def small_floats(lo: float = -3.0, hi: float = 3.0) -> st.SearchStrategy:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4
           ) -> st.SearchStrategy:
    """Small array shapes (gradcheck costs two forwards per element)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def arrays(shape: Any, lo: float = -3.0, hi: float = 3.0, dtype: Any = np.float64
           ) -> st.SearchStrategy:
    """float64 arrays of ``shape`` (a tuple or a strategy) with values in [lo, hi]."""
    return hnp.arrays(dtype, shape, elements=small_floats(lo, hi))


def tensors(shape: Any, lo: float = -3.0, hi: float = 3.0, requires_grad: bool = True
            ) -> st.SearchStrategy:
    """float64 Tensors (requiring grad by default) of ``shape`` with values in [lo, hi]."""
    return arrays(shape, lo, hi).map(lambda a: Tensor(a, requires_grad=requires_grad))


@st.composite
def broadcastable_pair(draw: Any, max_dims: int = 3) -> tuple:
    """Two shapes that broadcast together (either may be the larger)."""
    a = draw(shapes(0, max_dims))
    b = draw(hnp.broadcastable_shapes(a, min_dims=0, max_dims=max_dims, max_side=4))
    return (a, b) if draw(st.booleans()) else (b, a)


def dims_of(ndim: int) -> st.SearchStrategy:
    """A valid dim for a tensor of ``ndim`` dims, possibly negative."""
    n = max(ndim, 1)
    return st.integers(-n, n - 1)


def check_forward(fn: Callable, inputs: Sequence[Any], ref: Callable,
                  rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """``fn(*inputs)`` equals the NumPy formula ``ref(*arrays)``."""
    out = fn(*inputs)
    arrs = [x.numpy() if isinstance(x, Tensor) else x for x in inputs]
    expected = ref(*arrs)
    outs = out if isinstance(out, (tuple, list)) else [out]
    exps = expected if isinstance(expected, (tuple, list)) else [expected]
    assert len(outs) == len(exps)
    for o, e in zip(outs, exps):
        np.testing.assert_allclose(o.numpy(), np.asarray(e), rtol=rtol, atol=atol)
        assert o.shape == np.shape(e), (o.shape, np.shape(e))


def check_grad(fn: Callable, inputs: Sequence[Any], **kw: Any) -> None:
    """float64 central-difference gradcheck of ``fn`` at ``inputs``."""
    assert minilm.gradcheck(fn, inputs, **kw)


def check_op(fn: Callable, inputs: Sequence[Any], ref: Callable | None = None, **kw: Any) -> None:
    """Forward against ``ref`` (when given), then gradcheck."""
    if ref is not None:
        check_forward(fn, inputs, ref)
    check_grad(fn, inputs, **kw)
