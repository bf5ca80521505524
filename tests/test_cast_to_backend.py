"""``Cast`` (dtype conversion) and ``ToBackend`` (a move between backends) of
minilm/functional/math.py: forward values, float64 gradcheck over Hypothesis-drawn
shapes, and the dtype of the gradient each hands back."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, check_forward, check_grad, shapes, tensors

import minilm as ml
import minilm.functional as F
from minilm.functional.math import ToBackend

CPU_BACKENDS = ["numpy", "numba"]
GRID = 2.0 ** -10  # inputs on this grid, |x| <= 3, are exact in float32, and so is x +- GRID


def on_grid(shape):
    """float64 tensors whose values, and the values +- GRID, are exact in float32 (at
    most 12 significant bits), so a float32 round trip loses nothing."""
    return arrays(shape).map(lambda a: ml.Tensor(np.round(a / GRID) * GRID, requires_grad=True))


@given(on_grid(shapes()))
def test_cast_float64_to_float32_and_back_gradient(x):
    """d/dx cast(cast(x, float32), float64) = 1.

    Tolerances: the analytic gradient is float64(float32(v)) for the float64 cotangent v
    (the inner Cast's backward casts back to float64 the float32 gradient the outer one
    made), so it is off by at most 2^-24 |v| ~ 6e-8 |v|, inside the default rtol 1e-6.
    The finite differences are exact only if x +- eps survive the float32 round trip;
    with the default eps 1e-6 they would not (float32 spacing near 3 is 2.4e-7, an error
    of ~0.1 in the difference quotient), so the inputs lie on a 2^-10 grid and eps is
    that grid step: x +- eps are then exact in float32, the function is linear, and the
    central difference is exact up to float64 summation (~1e-15)."""
    def round_trip(t):
        return F.cast(F.cast(t, np.float32), np.float64)

    check_forward(round_trip, [x], lambda a: a, rtol=0, atol=0)
    check_grad(round_trip, [x], eps=GRID)
    y = F.cast(x, np.float32)
    assert y.dtype == np.float32 and y.requires_grad
    check_grad(lambda t: F.cast(t, np.float32), [x], eps=GRID)  # float32 output, same bound


@given(st.data())
def test_cast_float32_input_to_float64_gradient_is_float32(data):
    """A float32 leaf cast up: the forward is exact, and the gradient that reaches the
    leaf is the float64 cotangent rounded to float32, in float32. Cast's own backward
    must already return the input's dtype (the engine would cast a wrong one silently,
    so its output is checked directly too)."""
    a = data.draw(arrays(shapes())).astype(np.float32)
    v = data.draw(arrays(a.shape))
    x = ml.Tensor(a, requires_grad=True)
    y = F.cast(x, np.float64)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.numpy(), a.astype(np.float64))
    (raw, none) = y.grad_fn.run_backward([v])
    assert none is None and raw.dtype == np.float32, raw.dtype
    y.backward(ml.Tensor(v))
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), v.astype(np.float32))


def test_cast_to_the_same_dtype_is_the_identity_and_int_inputs_get_no_gradient():
    x = ml.Tensor(np.arange(3.0), requires_grad=True)
    assert F.cast(x, np.float64) is x
    i = F.cast(ml.tensor([1, 2, 3]), np.float64)
    assert i.dtype == np.float64 and not i.requires_grad


@pytest.mark.parametrize("src", CPU_BACKENDS)
@pytest.mark.parametrize("dst", CPU_BACKENDS)
@given(st.data())
def test_to_backend_between_cpu_backends(src, dst, data):
    """ToBackend from ``src`` to ``dst``: the values unchanged, the gradient moved back
    unchanged (checked on the Function itself: ``Tensor.to`` skips it when both backends
    hold NumPy arrays, as the last lines check)."""
    ml.use_backend(src)
    x = data.draw(tensors(shapes()))
    target = ml.get_backend(dst)

    def move(t):
        return ToBackend.apply(t, target)

    check_forward(move, [x], lambda a: a, rtol=0, atol=0)
    check_grad(move, [x])
    check_grad(lambda t: F.exp(move(t * 0.5)) * move(t), [x])  # through ops on both sides
    y = x.to(dst)
    assert y is x  # both hold NumPy arrays: nothing to move, same tensor
