"""Reductions: forward against a direct NumPy formula and float64 gradcheck over
Hypothesis-drawn shapes and dims (None, negative ints, tuples, keepdim both ways, 0-d
tensors and length-1 dims), tie handling of max/min/amax/amin, degenerate var/std,
errors, dtypes and the Tensor method forms."""

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import (
    DTYPES,
    NO_BROADCAST,
    arrays,
    check_forward,
    check_grad,
    check_op,
    close,
    dims_of,
    magnitudes,
    on_backend,
    readonly_strided,
    shapes,
    shifted,
    tensors,
    unshifted,
    views,
)

import minilm as ml
import minilm.functional as F
from minilm import Tensor

# Every test here runs on each backend (numpy, numba, cupy where present): see the
# ``backend`` fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("backend")

# ---------------------------------------------------------------------------- strategies


@st.composite
def reduction_cases(draw, max_dims=3):
    """(shape, dim, keepdim): dim is None, one int or a tuple of distinct dims (maybe
    empty, which means all dims), any of them negative."""
    shape = draw(shapes(0, max_dims))
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        dim = None
    elif kind == "int":
        dim = draw(dims_of(ndim))
    else:
        n = max(ndim, 1)
        dim = tuple(draw(st.lists(dims_of(ndim), unique_by=lambda d: d % n, max_size=n)))
    return shape, dim, draw(st.booleans())


@st.composite
def one_dim_cases(draw, max_dims=3):
    """(shape, dim, keepdim) with dim a single (maybe negative) int."""
    shape = draw(shapes(0, max_dims))
    return shape, draw(dims_of(len(shape))), draw(st.booleans())


@st.composite
def distinct_tensors(draw, shape):
    """float64 tensors whose entries are pairwise at least 0.3 apart: max/min have no
    ties (so they are differentiable) and var/std stay away from 0."""
    n = math.prod(shape)
    order = np.asarray(draw(st.permutations(range(n))), dtype=np.float64)
    jitter = draw(arrays((n,), -0.1, 0.1))
    a = (order - (n - 1) / 2) * 0.5 + jitter
    # any layout but broadcast, whose repeated values would be ties
    return on_backend(draw(views(a.reshape(shape), NO_BROADCAST)), requires_grad=True)


def np_axis(dim, ndim):
    """The NumPy ``axis`` for a minilm ``dim`` (a 0-d array has no axis 0)."""
    if ndim == 0 or dim is None or dim == ():
        return None
    return dim


def reduced_count(shape, dim):
    axis = np_axis(dim, len(shape))
    if axis is None:
        return math.prod(shape)
    axes = (axis,) if isinstance(axis, int) else axis
    return math.prod(shape[a] for a in axes)


def np_logsumexp(a, axis=None, keepdims=False):
    return np.log(np.sum(np.exp(a), axis=axis, keepdims=keepdims))


# ------------------------------------------------------------------ sum, mean, amax, amin, logsumexp

MULTI_DIM = {
    "sum": (F.sum, np.sum),
    "mean": (F.mean, np.mean),
    "amax": (F.amax, np.amax),
    "amin": (F.amin, np.amin),
    "logsumexp": (F.logsumexp, np_logsumexp),
}


@pytest.mark.parametrize("name", sorted(MULTI_DIM))
@given(data=st.data())
def test_reduction_over_dims(name, data):
    fn, ref = MULTI_DIM[name]
    shape, dim, keepdim = data.draw(reduction_cases())
    x = data.draw(distinct_tensors(shape) if name in ("amax", "amin") else tensors(shape))
    axis = np_axis(dim, len(shape))
    check_op(lambda t: fn(t, dim, keepdim), [x], lambda a: ref(a, axis=axis, keepdims=keepdim))


@pytest.mark.parametrize("name", sorted(MULTI_DIM))
@pytest.mark.parametrize("dim", [0, -1, 2, (0, 2), (-3, -1), None])
def test_reduction_over_length_one_dims(name, dim):
    fn, ref = MULTI_DIM[name]
    x = on_backend(np.array([[[0.5], [-1.5], [2.0]]]), requires_grad=True)  # shape (1, 3, 1)
    axis = np_axis(dim, 3)
    for keepdim in (False, True):
        check_op(lambda t, k=keepdim: fn(t, dim, k), [x],
                 lambda a, k=keepdim: ref(a, axis=axis, keepdims=k))


def test_sum_and_mean_dtypes():
    x = on_backend(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    assert F.sum(x).dtype == np.float32 and F.mean(x, 1).dtype == np.float32
    y = F.sum(x, 1, dtype="float64")
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((2, 3)))
    b = on_backend(np.array([[True, False, True], [True, True, True]]))
    assert F.sum(b).dtype == np.int64 and F.sum(b).item() == 5
    np.testing.assert_array_equal(F.sum(b, 0).numpy(), [2, 1, 2])
    assert F.sum(on_backend(np.arange(4, dtype=np.int32))).dtype == np.int64
    m = F.mean(on_backend(np.arange(4)), dtype=np.float64)
    assert m.dtype == np.float64 and m.item() == 1.5


def test_sum_gradient_is_writeable_memory():
    """sum's gradient is broadcast from g: it must be an array of its own, not a
    read-only broadcast view that a later in-place accumulation would trip on."""
    x = on_backend(np.ones((2, 3)), requires_grad=True)
    y = F.sum(x, 1)
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy().flags.writeable))
    (y * 2).sum().backward()
    assert seen == [True]
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0))


@given(data=st.data())
def test_logsumexp_matches_log_of_sum_of_exp_with_large_values(data):
    """Shifting by the max keeps logsumexp finite where exp would overflow."""
    shape, dim, keepdim = data.draw(reduction_cases())
    a = data.draw(arrays(shape, -3, 3))
    x = on_backend(data.draw(views(a + 800.0)), requires_grad=True)
    axis = np_axis(dim, len(shape))
    expected = np_logsumexp(x.numpy() - 800.0, axis=axis, keepdims=keepdim) + 800.0
    check_forward(lambda t: F.logsumexp(t, dim, keepdim), [x], lambda _: expected)
    # eps 1e-4, not 1e-6: near 800 one rounding of f is ~1e-13, which a step of 1e-6
    # would magnify to ~1e-7; logsumexp's third derivative is < 1, so the larger step's
    # truncation error (eps^2/6 |f'''|) stays below 2e-9
    check_grad(lambda t: F.logsumexp(t, dim, keepdim), [x], eps=1e-4)


@given(data=st.data(), dtype=st.sampled_from(DTYPES), offset=magnitudes())
def test_logsumexp_at_offsets_up_to_1e4_in_both_dtypes(data, dtype, offset):
    """logsumexp(x + c) = logsumexp(x) + c and its gradient (softmax over the dims)
    does not change: against the formulas in float64 on the unshifted values, to the
    accuracy of the dtype plus the rounding of a result of size |c|."""
    shape, dim, keepdim = data.draw(reduction_cases(max_dims=4))
    x = data.draw(views(shifted(data.draw(arrays(shape)), offset, dtype)))
    small = unshifted(x, offset)
    axis = np_axis(dim, len(shape))
    t = on_backend(x, requires_grad=True)
    y = F.logsumexp(t, dim, keepdim)
    g = data.draw(arrays(y.shape)).astype(dtype)
    y.backward(on_backend(readonly_strided(g)))
    assert y.dtype == t.grad.dtype == dtype
    lse = np_logsumexp(small, axis=axis, keepdims=True)
    d = 2 * float(np.finfo(dtype).eps) * abs(offset)  # the rounding of a result near |c|
    close(y, np.reshape(lse, y.shape) + offset, atol=d)
    # the backward is exp(x - y) with y the rounded result (as in PyTorch): a relative
    # error d in every entry of the gradient
    want = np.exp(small - lse) * np.reshape(g.astype(np.float64), lse.shape)
    close(t.grad, want, atol=d * float(np.abs(want).max(initial=0.0)))


def test_logsumexp_extremes():
    x = on_backend(np.array([[1000.0, 1000.0], [-1000.0, -1000.0]]), requires_grad=True)
    y = F.logsumexp(x, 1)
    np.testing.assert_allclose(y.numpy(), [1000 + math.log(2), -1000 + math.log(2)])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 2), 0.5))
    inf = on_backend(np.array([[np.inf, 0.0], [-np.inf, 0.0]]))
    np.testing.assert_array_equal(F.logsumexp(inf, -1).numpy(), [np.inf, 0.0])
    ints = F.logsumexp(on_backend(np.array([0, 0])), 0)  # integers become float32
    assert ints.dtype == np.float32
    assert abs(ints.item() - math.log(2)) < 1e-6


# ---------------------------------------------------------------------------- var and std


@pytest.mark.parametrize("name", ["var", "std"])
@given(data=st.data())
def test_var_std_over_dims(name, data):
    fn = getattr(F, name)
    ref = getattr(np, name)
    shape, dim, keepdim = data.draw(reduction_cases())
    x = data.draw(distinct_tensors(shape))
    n = reduced_count(shape, dim)
    mode = data.draw(st.sampled_from(["default", "biased", "correction"]))
    if mode == "default":
        kwargs, ddof = {}, 1
    elif mode == "biased":
        kwargs, ddof = {"unbiased": False}, 0
    else:
        ddof = data.draw(st.integers(0, 2))
        kwargs = {"correction": ddof}
    if n <= ddof:  # undefined: checked in test_var_std_without_degrees_of_freedom
        ddof, kwargs = 0, {"correction": 0}
    axis = np_axis(dim, len(shape))
    # eps 1e-4: distinct entries of up to 64 elements span ±16, so var reaches ~100 and
    # one rounding of f (~1e-16 |f|) over 2 eps = 2e-6 would be ~5e-8, past atol; var is
    # quadratic (no truncation error) and std's third derivative is small at std >= 0.3,
    # so the larger step costs nothing
    check_op(lambda t: fn(t, dim, keepdim, **kwargs), [x],
             lambda a: ref(a, axis=axis, ddof=ddof, keepdims=keepdim), eps=1e-4)


def test_var_std_without_degrees_of_freedom():
    """N - correction <= 0: nan for 0/0, inf otherwise, as dividing by zero gives in
    PyTorch; the gradient is nan."""
    one = on_backend(np.array([[1.0], [2.0]]), requires_grad=True)
    for fn in (F.var, F.std):
        y = fn(one, 1)  # one element per row, correction 1
        assert np.isnan(y.numpy()).all()
        y.sum().backward()
        assert np.isnan(one.grad.numpy()).all()
        one.grad = None
    two = on_backend(np.array([1.0, 2.0]))
    assert F.var(two, correction=2).item() == np.inf
    assert F.std(two, correction=3).item() == np.inf
    assert F.var(two, correction=1).item() == 0.5


def test_std_gradient_at_zero_is_zero():
    x = on_backend(np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]]), requires_grad=True)
    y = F.std(x, 1)
    np.testing.assert_allclose(y.numpy(), [0.0, 1.0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5]])


def test_var_rejects_unbiased_false_with_correction():
    x = on_backend(np.ones(3))
    with pytest.raises(ValueError, match="var: give either unbiased=False or correction="):
        F.var(x, unbiased=False, correction=1)


# ---------------------------------------------------------------------------- max and min


@pytest.mark.parametrize("name", ["max", "min"])
@given(data=st.data())
def test_max_min_of_all_elements(name, data):
    fn, ref = getattr(F, name), getattr(np, name)
    shape = data.draw(shapes())
    x = data.draw(distinct_tensors(shape))
    check_op(fn, [x], ref)
    assert fn(x).shape == ()
    check_op(lambda t: fn(t, keepdim=True), [x], lambda a: ref(a, keepdims=True))


@pytest.mark.parametrize("name", ["max", "min"])
@given(data=st.data())
def test_max_min_along_dim_returns_values_and_indices(name, data):
    fn, ref, ref_arg = getattr(F, name), getattr(np, name), getattr(np, "arg" + name)
    shape, dim, keepdim = data.draw(one_dim_cases())
    x = data.draw(distinct_tensors(shape))
    axis = np_axis(dim, len(shape))

    def expected(a):
        return ref(a, axis=axis, keepdims=keepdim), ref_arg(a, axis=axis, keepdims=keepdim)

    check_op(lambda t: fn(t, dim, keepdim), [x], expected)
    r = fn(x, dim, keepdim)
    assert r.indices.dtype == np.int64 and not r.indices.requires_grad
    assert r.values.requires_grad


def test_max_dim_result_is_a_namedtuple():
    x = on_backend(np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]]), requires_grad=True)
    r = F.max(x, 1)
    assert isinstance(r, tuple) and r._fields == ("values", "indices")
    values, indices = r
    assert values is r.values and indices is r.indices and r[0] is values
    np.testing.assert_array_equal(indices.numpy(), [1, 0])
    v, i = F.min(x, dim=0, keepdim=True)
    np.testing.assert_array_equal(v.numpy(), [[1.0, 0.0, 2.0]])
    np.testing.assert_array_equal(i.numpy(), [[0, 1, 0]])
    # values join a bigger graph; their gradient adds to the other uses of x
    (r.values.sum() + x.sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 2, 1], [2, 1, 1]])


TIED = np.array([[1.0, 3.0, 3.0], [2.0, 3.0, 0.0]])


@pytest.mark.parametrize("name", ["max", "amax", "min", "amin"])
def test_full_reduction_splits_gradient_evenly_among_ties(name):
    sign = 1.0 if name.endswith("max") else -1.0  # min of -x is max of x
    x = on_backend(sign * TIED, requires_grad=True)
    y = getattr(F, name)(x)
    assert y.item() == sign * 3.0
    (y * 6.0).backward()
    expected = np.array([[0, 2, 2], [0, 2, 0]], dtype=np.float64)
    np.testing.assert_array_equal(x.grad.numpy(), expected)


@pytest.mark.parametrize("name", ["amax", "amin"])
def test_amax_amin_along_dims_split_ties_evenly(name):
    sign = 1.0 if name == "amax" else -1.0
    fn = getattr(F, name)
    x = on_backend(sign * TIED, requires_grad=True)
    g = on_backend(np.array([2.0, 6.0]))
    (fn(x, 1) * g).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 1], [0, 6, 0]])
    x.grad = None
    (fn(x, -2, keepdim=True) * on_backend(np.array([[1.0, 4.0, 2.0]]))).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 2, 2], [1, 2, 0]])
    x.grad = None
    y = fn(x, (0, 1))
    assert y.item() == sign * 3.0
    (y * 3.0).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 1], [0, 1, 0]])


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_along_dim_route_gradient_to_returned_index(name):
    sign = 1.0 if name == "max" else -1.0
    x = on_backend(sign * np.array([[1.0, 3.0, 3.0], [3.0, 3.0, 3.0], [0.0, 1.0, 1.0]]),
               requires_grad=True)
    r = getattr(F, name)(x, 1)
    np.testing.assert_array_equal(r.indices.numpy(), [1, 0, 1])  # the first extremum
    (r.values * on_backend(np.array([2.0, 5.0, 7.0]))).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 2, 0], [5, 0, 0], [0, 7, 0]])
    x.grad = None
    r = getattr(F, name)(x, 0, keepdim=True)
    np.testing.assert_array_equal(r.indices.numpy(), [[1, 0, 0]])
    r.values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 1], [1, 0, 0], [0, 0, 0]])


def test_max_min_with_a_tensor_are_elementwise():
    a = on_backend(np.array([1.0, 5.0]))
    b = on_backend(np.array([3.0, 2.0]))
    np.testing.assert_array_equal(F.max(a, b).numpy(), [3.0, 5.0])
    np.testing.assert_array_equal(a.min(b).numpy(), [1.0, 2.0])


# ---------------------------------------------------------------------------- argmax, argmin


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@given(data=st.data())
def test_argmax_argmin(name, data):
    fn, ref = getattr(F, name), getattr(np, name)
    shape = data.draw(shapes())
    # a coarse grid: ties are common, and the first index must win as in NumPy
    a = np.round(data.draw(arrays(shape, -2, 2)))
    dim = data.draw(st.none() | dims_of(len(shape)))
    keepdim = data.draw(st.booleans())
    out = fn(on_backend(a, requires_grad=True), dim, keepdim)
    expected = ref(a, axis=np_axis(dim, len(shape)), keepdims=keepdim)
    assert out.dtype == np.int64 and not out.requires_grad and out.grad_fn is None
    assert out.shape == np.shape(expected)
    np.testing.assert_array_equal(out.numpy(), expected)


# ---------------------------------------------------------------------------- cumsum, prod


@given(data=st.data())
def test_cumsum(data):
    shape, dim, _ = data.draw(one_dim_cases())
    x = data.draw(tensors(shape))
    axis = np_axis(dim, len(shape))
    check_op(lambda t: F.cumsum(t, dim), [x],
             lambda a: a.copy() if axis is None else np.cumsum(a, axis=axis))


def test_cumsum_gradient_is_reversed_cumsum_and_dtypes():
    x = on_backend(np.zeros(4), requires_grad=True)
    g = np.array([1.0, 2.0, 3.0, 4.0])
    F.cumsum(x, 0).backward(on_backend(g))
    np.testing.assert_array_equal(x.grad.numpy(), [10.0, 9.0, 7.0, 4.0])
    assert F.cumsum(on_backend(np.array([True, True])), 0).dtype == np.int64
    assert F.cumsum(on_backend(np.arange(3, dtype=np.int32)), -1).dtype == np.int64
    assert F.cumsum(on_backend(np.ones(3, dtype=np.float32)), 0, dtype="float64").dtype == np.float64


@given(data=st.data())
def test_prod(data):
    shape = data.draw(shapes())
    dim = data.draw(st.none() | dims_of(len(shape)))
    keepdim = data.draw(st.booleans())
    x = data.draw(tensors(shape, -2, 2))
    axis = np_axis(dim, len(shape))
    check_op(lambda t: F.prod(t, dim, keepdim), [x],
             lambda a: np.prod(a, axis=axis, keepdims=keepdim))


def test_prod_gradient_with_zeros_is_exact():
    x = on_backend(np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0]]), requires_grad=True)
    F.prod(x, 1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0]])
    x.grad = None
    y = F.prod(on_backend(np.array([[2.0, 0.5], [4.0, 3.0]]), requires_grad=True))
    assert y.item() == 12.0


# ---------------------------------------------------------------------------- any, all


@pytest.mark.parametrize("name", ["any", "all"])
@given(data=st.data())
def test_any_all(name, data):
    fn, ref = getattr(F, name), getattr(np, name)
    shape, dim, keepdim = data.draw(reduction_cases())
    a = data.draw(hnp.arrays(np.bool_, shape))
    out = fn(on_backend(a), dim, keepdim)
    expected = ref(a, axis=np_axis(dim, len(shape)), keepdims=keepdim)
    assert out.dtype == np.bool_ and not out.requires_grad
    assert out.shape == np.shape(expected)
    np.testing.assert_array_equal(out.numpy(), expected)
    assert fn(on_backend(a.astype(np.float64)), dim, keepdim).dtype == np.bool_


# ---------------------------------------------------------------------------- 0-d tensors


def test_zero_dim_tensors():
    x = on_backend(np.array(2.5), requires_grad=True)
    for dim in (None, 0, -1):
        for fn in (F.sum, F.mean, F.amax, F.amin, F.logsumexp, F.cumsum, F.prod):
            args = (x, 0 if dim is None and fn is F.cumsum else dim)
            y = fn(*args)
            expected = math.log(math.exp(2.5)) if fn is F.logsumexp else 2.5
            assert y.shape == () and abs(y.item() - expected) < 1e-12, fn.__name__
            check_grad(lambda t, f=fn, a=args[1:]: f(t, *a), [x])
        assert F.var(x, dim, correction=0).item() == 0.0
        assert F.std(x, dim, unbiased=False).item() == 0.0
        assert F.argmax(x, dim).item() == 0 and F.argmin(x, dim).shape == ()
    v, i = F.max(x, 0)
    assert v.item() == 2.5 and i.item() == 0 and v.shape == i.shape == ()
    x.grad = None  # gradcheck left its last gradient there
    v.backward()
    assert x.grad.item() == 1.0
    assert F.sum(x, 0, keepdim=True).shape == ()


# ---------------------------------------------------------------------------- errors

ALL_OPS = {
    "sum": F.sum, "mean": F.mean, "var": F.var, "std": F.std, "amax": F.amax,
    "amin": F.amin, "logsumexp": F.logsumexp, "any": F.any, "all": F.all,
    "max": F.max, "min": F.min, "argmax": F.argmax, "argmin": F.argmin,
    "cumsum": F.cumsum, "prod": F.prod,
}
TUPLE_OPS = ["sum", "mean", "var", "std", "amax", "amin", "logsumexp", "any", "all"]


@pytest.mark.parametrize("name", sorted(ALL_OPS))
@pytest.mark.parametrize("dim", [2, -3])
def test_out_of_range_dim_names_op_dim_and_shape(name, dim):
    x = on_backend(np.ones((2, 3)))
    msg = f"{name}: dim {dim} is out of range for a tensor with 2 dims; the tensor has shape (2, 3)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        ALL_OPS[name](x, dim)


@pytest.mark.parametrize("name", TUPLE_OPS)
def test_out_of_range_dim_in_tuple(name):
    with pytest.raises(ValueError, match=re.escape(f"{name}: dim 3 is out of range")):
        ALL_OPS[name](on_backend(np.ones((2, 3, 1))), (0, 3))


@pytest.mark.parametrize("name", TUPLE_OPS)
def test_duplicate_dims_name_op_dims_and_shape(name):
    x = on_backend(np.ones((2, 3)))
    msg = f"{name}: dim (0, -2) repeats a dimension; the tensor has shape (2, 3)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        ALL_OPS[name](x, (0, -2))


@pytest.mark.parametrize("name", ["max", "min", "argmax", "argmin", "cumsum", "prod"])
def test_single_dim_ops_reject_tuples_and_non_ints(name):
    x = on_backend(np.ones((2, 3)))
    with pytest.raises(TypeError, match=f"{name}: dim must be"):
        ALL_OPS[name](x, (0, 1))
    with pytest.raises(TypeError, match=f"{name}: dim must be"):
        ALL_OPS[name](x, 1.5)


def test_bad_dim_types():
    x = on_backend(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"sum: dim must be an int or a tuple of ints, got 1\.5"):
        F.sum(x, 1.5)
    with pytest.raises(TypeError, match="amax for several dims"):
        F.max(x, (0, 1))
    assert F.sum(x, np.int64(1)).shape == (2,)  # NumPy integers are fine


@pytest.mark.parametrize("name", ["mean", "var", "std"])
def test_float_only_reductions_reject_integers(name):
    with pytest.raises(TypeError, match=f"{name}: needs a floating-point tensor, got int64"):
        ALL_OPS[name](on_backend(np.arange(3)))


@pytest.mark.parametrize("name", ["amax", "amin", "max", "min", "argmax", "argmin", "logsumexp"])
def test_reductions_without_identity_reject_empty_dims(name):
    x = on_backend(np.ones((0, 3)))
    with pytest.raises(ValueError, match=re.escape(f"{name}: cannot reduce over dim 0 of size 0")):
        ALL_OPS[name](x, 0)
    assert F.sum(x, 0).shape == (3,)


# ---------------------------------------------------------------------------- method forms


def test_tensor_methods_match_functions():
    a = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -2.5]])
    x = on_backend(a, requires_grad=True)
    np.testing.assert_array_equal(x.sum(1).numpy(), a.sum(1))
    assert x.sum(dim=(0, 1), keepdim=True).shape == (1, 1)
    assert x.sum().item() == a.sum()
    np.testing.assert_allclose(x.mean(-1).numpy(), a.mean(-1))
    np.testing.assert_allclose(x.var(0, unbiased=False).numpy(), a.var(0))
    np.testing.assert_allclose(x.var(dim=1, correction=2).numpy(), a.var(1, ddof=2))
    np.testing.assert_allclose(x.std().numpy(), a.std(ddof=1))
    assert x.max().item() == 3.0 and x.min().item() == -2.5
    np.testing.assert_array_equal(x.max(1).indices.numpy(), [2, 0])
    assert x.max(dim=0, keepdim=True).values.shape == (1, 3)
    np.testing.assert_array_equal(x.min(1).values.numpy(), [-1.0, -2.5])
    np.testing.assert_array_equal(x.argmax(1).numpy(), [2, 0])
    assert x.argmin().item() == 5
    np.testing.assert_allclose(x.logsumexp(1).numpy(), np_logsumexp(a, 1))
    np.testing.assert_array_equal(x.cumsum(0).numpy(), a.cumsum(0))
    assert x.any().item() and not x.all().item()
    np.testing.assert_array_equal(x.all(1).numpy(), [True, False])
    np.testing.assert_array_equal(x.amax((0, 1)).numpy(), 3.0)
    np.testing.assert_array_equal(x.amin(0).numpy(), a.min(0))


def test_every_reduction_is_exported():
    import minilm.functional.extrema as E
    import minilm.functional.reduce as R

    for name in ("sum", "mean", "var", "std", "logsumexp", "cumsum", "any", "all", "prod"):
        assert name in R.__all__ and getattr(F, name) is getattr(R, name)
    for name in ("max", "min", "amax", "amin", "argmax", "argmin"):
        assert name in E.__all__ and getattr(F, name) is getattr(E, name)
    for name in ("sum", "mean", "var", "std", "max", "min", "argmax", "argmin",
                 "logsumexp", "cumsum", "any", "all", "amax", "amin"):
        assert hasattr(Tensor, name), name


# ---------------------------------------------------------------------------- CuPy


@pytest.mark.gpu
def test_reductions_on_cupy_match_numpy():
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() == 0:
            pytest.skip("no CUDA device")
        ml.get_backend("cupy")
    except (ImportError, cp.cuda.runtime.CUDARuntimeError):
        pytest.skip("CuPy backend unavailable")
    a = np.random.default_rng(0).standard_normal((3, 4))
    a[0, :2] = 5.0  # a tie for the max
    calls = [
        lambda t: F.sum(t, 1), lambda t: F.mean(t, (0, 1)), lambda t: F.var(t, 0),
        lambda t: F.std(t, 1, keepdim=True), lambda t: F.max(t), lambda t: F.max(t, 1).values,
        lambda t: F.amin(t, 0), lambda t: F.logsumexp(t, -1), lambda t: F.cumsum(t, 1),
        lambda t: F.prod(t, 0),
    ]
    for call in calls:
        outs = []
        for xp_array in (a, cp.asarray(a)):
            t = on_backend(xp_array, requires_grad=True)
            y = call(t)
            y.sum().backward()
            outs.append((np.asarray(y.numpy()), np.asarray(t.grad.numpy())))
        np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-12)
        np.testing.assert_allclose(outs[1][1], outs[0][1], rtol=1e-12)
    assert F.argmax(on_backend(cp.asarray(a)), 1).tolist() == np.argmax(a, 1).tolist()
