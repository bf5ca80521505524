"""Elementwise ops: forward against NumPy, float64 gradcheck over Hypothesis shapes
(broadcasting included), and the errors they raise."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    DTYPES,
    arrays,
    broadcastable_pair,
    check_op,
    close,
    directional_gradcheck,
    kernel_arrays,
    on_backend,
    readonly_strided,
    row_shapes,
    shapes,
    tensors,
    uses_kernels,
    views,
)

import minilm as ml
import minilm.functional as F

# Every test here runs on each backend (numpy, numba, cupy where present): see the
# ``backend`` fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("backend")

BINARY = {
    "add": (F.add, np.add),
    "sub": (F.sub, np.subtract),
    "mul": (F.mul, np.multiply),
    "maximum": (F.maximum, np.maximum),
    "minimum": (F.minimum, np.minimum),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_broadcasting(name, data):
    fn, ref = BINARY[name]
    sa, sb = data.draw(broadcastable_pair())
    # a on a 0.1 grid, b offset by 0.05: never tied (max/min have a kink at ties)
    a = data.draw(views(np.round(data.draw(arrays(sa)), 1)))
    b = data.draw(views(np.round(data.draw(arrays(sb)), 1) + 0.05))
    check_op(fn, [on_backend(a, requires_grad=True), on_backend(b, requires_grad=True)], ref)


@given(data=st.data())
def test_div_broadcasting(data):
    sa, sb = data.draw(broadcastable_pair())
    a = data.draw(tensors(sa))
    b = data.draw(tensors(sb, lo=0.5, hi=3.0))
    check_op(F.div, [a, b], np.divide)


@given(data=st.data())
def test_pow_tensor_exponent(data):
    sa, sb = data.draw(broadcastable_pair())
    a = data.draw(tensors(sa, lo=0.5, hi=2.0))
    b = data.draw(tensors(sb, lo=-2.0, hi=2.0))
    check_op(F.pow, [a, b], np.power)


@given(x=tensors(shapes(), lo=0.5, hi=2.0), p=st.sampled_from([2, 3, 0.5, -1.5]))
def test_pow_scalar_exponent(x, p):
    check_op(lambda t: t ** p, [x], lambda a: a ** p)


@given(x=tensors(shapes()), c=st.floats(-2, 2))
def test_scalar_operands_and_reflected_ops(x, c):
    check_op(lambda t: (c - t) * 2 + t / 3 + c * t - 1, [x], lambda a: (c - a) * 2 + a / 3 + c * a - 1)


@given(x=tensors(shapes(), lo=0.5, hi=3.0))
def test_reflected_div_and_pow(x):
    check_op(lambda t: 1.5 / t + 2.0 ** t, [x], lambda a: 1.5 / a + 2.0 ** a)


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _gelu(a):
    return 0.5 * a * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))


def _gelu_tanh(a):
    return 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))


UNARY = {
    "neg": (F.neg, np.negative, None),
    "exp": (F.exp, np.exp, None),
    "log": (F.log, np.log, (0.2, 3.0)),
    "sqrt": (F.sqrt, np.sqrt, (0.2, 3.0)),
    "rsqrt": (F.rsqrt, lambda a: 1 / np.sqrt(a), (0.2, 3.0)),
    "abs": (F.abs, np.abs, None),
    "sign": (F.sign, np.sign, None),
    "sin": (F.sin, np.sin, None),
    "cos": (F.cos, np.cos, None),
    "tanh": (F.tanh, np.tanh, None),
    "sigmoid": (F.sigmoid, _sigmoid, None),
    "relu": (F.relu, lambda a: np.maximum(a, 0), None),
    "leaky_relu": (lambda t: F.leaky_relu(t, 0.1), lambda a: np.where(a > 0, a, 0.1 * a), None),
    "gelu": (F.gelu, _gelu, None),
    "gelu_tanh": (lambda t: F.gelu(t, approximate="tanh"), _gelu_tanh, None),
    "silu": (F.silu, lambda a: a * _sigmoid(a), None),
    "softplus": (F.softplus, lambda a: np.log1p(np.exp(a)), None),
    "softplus_beta": (lambda t: F.softplus(t, beta=2.0, threshold=3.0),
                      lambda a: np.where(2 * a > 3, a, np.log1p(np.exp(2 * a)) / 2), None),
    "clamp": (lambda t: F.clamp(t, -1.0, 0.5), lambda a: np.clip(a, -1.0, 0.5), None),
    "clamp_min": (lambda t: t.clamp(min=0.3), lambda a: np.maximum(a, 0.3), None),
    "clone": (F.clone, np.copy, None),
}


def _away_from_kinks(a, kinks=(0.0, -1.0, 0.5, 0.3, 1.5)):
    """Finite differences are meaningless within eps of a kink (relu at 0 …)."""
    for k in kinks:
        a = np.where(np.abs(a - k) < 1e-3, k + 1e-2, a)
    return a


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary(backend, name, data):
    fn, ref, bounds = UNARY[name]
    lo, hi = bounds or (-3.0, 3.0)
    a = data.draw(views(_away_from_kinks(data.draw(arrays(shapes(), lo, hi)))))
    kernels = ("gelu64", "gelu32") if name.startswith("gelu") else ()  # float64, float32
    with uses_kernels(backend, *kernels):
        check_op(fn, [on_backend(a, requires_grad=True)], ref)


def test_sigmoid_softplus_stable_at_extremes():
    x = ml.tensor([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype="float64", requires_grad=True)
    s = F.sigmoid(x)
    assert np.all(np.isfinite(s.numpy()))
    np.testing.assert_allclose(s.numpy()[[0, 2, 4]], [0.0, 0.5, 1.0])
    sp = F.softplus(x)
    np.testing.assert_allclose(sp.numpy()[[0, 4]], [0.0, 1000.0])
    (s.sum() + sp.sum()).backward()
    assert np.all(np.isfinite(x.grad.numpy()))


def test_gelu_float32_close_to_exact():
    a = np.linspace(-6, 6, 1001)
    y32 = F.gelu(ml.tensor(a.astype(np.float32))).numpy()
    np.testing.assert_allclose(y32, _gelu(a), atol=2e-6)


def _gelu_grad(a):
    """d/dx x Phi(x) = Phi(x) + x phi(x)."""
    cdf = 0.5 * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))
    return cdf + a * np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)


def _gelu_tanh_grad(a):
    """d/dx 0.5 x (1 + tanh(u)), u = k (x + 0.044715 x^3), k = sqrt(2/pi):
    0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 * 0.044715 x^2)."""
    k = math.sqrt(2 / math.pi)
    t = np.tanh(k * (a + 0.044715 * a ** 3))
    return 0.5 * (1 + t) + 0.5 * a * (1 - t * t) * k * (1 + 3 * 0.044715 * a * a)


GELU = {"none": (_gelu, _gelu_grad), "tanh": (_gelu_tanh, _gelu_tanh_grad)}


def _gelu_grad_error(h, g, dtype, approximate):
    """What rounding in ``dtype`` may cost gelu'(h) g, elementwise: the derivative is a
    difference of O(1) terms (cdf, or 0.5 (1 + t)) and, for tanh, (1 - t^2) times
    0.5 h k (1 + 0.134 h^2), which magnifies the rounding of t by ~0.05 |h|^3 in the
    tails; everything scaled by |g|."""
    eps = float(np.finfo(dtype).eps)
    growth = 1 + 0.1 * np.abs(h) ** 3 if approximate == "tanh" else 1.0
    return 8 * eps * np.abs(g) * growth


@given(data=st.data(), dtype=st.sampled_from(DTYPES), approximate=st.sampled_from(["none", "tanh"]))
def test_gelu_kernel_sizes_and_wide_range(backend, data, dtype, approximate):
    """GELU and its gradient on kernel-sized rows, inputs in [-10, 10] (tails where
    Phi(x) underflows or tanh saturates), any layout, against the formulas written
    out above, in float64, to the accuracy of the dtype."""
    shape = data.draw(row_shapes(many_rows=True))
    x = data.draw(views(data.draw(kernel_arrays(shape, -10, 10)).astype(dtype)))
    g = data.draw(arrays(shape)).astype(dtype)
    t = on_backend(x, requires_grad=True)
    with uses_kernels(backend, "gelu32" if dtype == np.float32 else "gelu64"):
        y = F.gelu(t, approximate=approximate)
        y.backward(on_backend(readonly_strided(g)))
    f, df = GELU[approximate]
    x64 = x.astype(np.float64)
    assert y.dtype == t.grad.dtype == dtype
    close(y, f(x64))
    close(t.grad, g.astype(np.float64) * df(x64),
          atol=_gelu_grad_error(x64, g.astype(np.float64), dtype, approximate))
    if dtype == np.float64:
        directional_gradcheck(lambda u: F.gelu(u, approximate=approximate),
                              [on_backend(x, requires_grad=True)])


@given(data=st.data())
def test_where(data):
    sa, sb = data.draw(broadcastable_pair())
    a = data.draw(tensors(sa))
    b = data.draw(tensors(sb))
    cond = data.draw(arrays(sa, -1, 1)) > 0
    check_op(lambda x, y: F.where(on_backend(cond), x, y), [a, b], lambda x, y: np.where(cond, x, y))


@given(data=st.data())
def test_masked_fill(data):
    sx, sm = data.draw(broadcastable_pair())
    x = data.draw(tensors(sx))
    mask = data.draw(arrays(sm, -1, 1)) > 0
    if np.broadcast_shapes(sx, sm) != x.shape:
        with pytest.raises(ValueError, match="masked_fill: mask of shape"):
            F.masked_fill(x, on_backend(mask), -7.0)
        return
    check_op(lambda t: t.masked_fill(on_backend(mask), -7.0), [x], lambda a: np.where(mask, -7.0, a))


def test_maximum_splits_gradient_on_ties():
    a = ml.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = ml.tensor([1.0, 5.0, 0.0], requires_grad=True)
    F.maximum(a, b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0.5, 0.0, 1.0])
    np.testing.assert_allclose(b.grad.numpy(), [0.5, 1.0, 0.0])


def test_comparisons_are_bool_and_not_differentiable():
    x = ml.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for r in (x < 2, x <= 2, x > 2, x >= 2, x == 2, x != 2):
        assert r.dtype == np.bool_ and not r.requires_grad
    np.testing.assert_array_equal((x > 1.5).numpy(), [False, True, True])
    np.testing.assert_array_equal(((x > 1.5) & (x < 2.5)).numpy(), [False, True, False])
    np.testing.assert_array_equal((~(x > 1.5)).numpy(), [True, False, False])


def test_cast_is_differentiable_and_casts_grad_back():
    x = ml.tensor([1.0, 2.0], requires_grad=True)
    y = x.double() * 3
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_float32_stays_float32_with_python_scalars():
    x = ml.randn(3)
    assert (x * 2.5 + 1).dtype == np.float32
    assert (2.5 / (x + 10)).dtype == np.float32


@pytest.mark.parametrize("op", [F.add, F.sub, F.mul, F.div, F.maximum])
def test_broadcast_error_names_op_and_shapes(op):
    a, b = ml.randn(4, 3), ml.randn(5, 2)
    with pytest.raises(ValueError, match=rf"{op.__name__}: shapes \(4, 3\) and \(5, 2\)"):
        op(a, b)


def test_where_requires_bool_condition():
    with pytest.raises(TypeError, match="where: condition must be bool"):
        F.where(ml.tensor([1, 0]), ml.randn(2), ml.randn(2))


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="gelu: approximate"):
        F.gelu(ml.randn(2), approximate="fast")
