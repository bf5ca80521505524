"""softmax family, layer/RMS norm, dropout, embedding, one_hot and scaled dot-product
attention: forward against NumPy formulas, float64 gradcheck, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import (
    DTYPES,
    arrays,
    check_grad,
    check_op,
    close,
    dims_of,
    directional_gradcheck,
    examples,
    kernel_arrays,
    magnitudes,
    on_backend,
    readonly_strided,
    row_shapes,
    shapes,
    shifted,
    tensors,
    unshifted,
    uses_kernels,
    views,
)

import minilm
import minilm.functional as F

# Every test here runs on each backend (numpy, numba, cupy where present): see the
# ``backend`` fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("backend")

# ---------------------------------------------------------------------------- references


def np_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def np_layer_norm(x, k, w=None, b=None, eps=1e-5):
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def np_rms_norm(x, k, w=None, eps=1e-6):
    axes = tuple(range(x.ndim - k, x.ndim))
    y = x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    return y * (1 if w is None else w)


def np_attention(q, k, v, mask=None, is_causal=False, scale=None):
    """softmax(q k^T scale + M) v written out; rows with nothing to attend to -> 0."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.einsum("...qe,...ke->...qk", q, k) * scale
    keep = np.ones(s.shape, dtype=bool)
    if is_causal:
        lq, lk = s.shape[-2:]
        keep = keep & (np.arange(lk)[None, :] <= np.arange(lq)[:, None])
    if mask is not None and mask.dtype == bool:
        s, keep = np.broadcast_arrays(s, keep & mask)
    elif mask is not None:
        s = s + mask
        keep = np.broadcast_to(keep, s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(s - m)
    d = e.sum(axis=-1, keepdims=True)
    p = e / np.where(d > 0, d, 1)
    return p @ v


# ---------------------------------------------------------------------------- softmax


SOFTMAX_FAMILY = {"softmax": (F.softmax, np_softmax), "log_softmax": (F.log_softmax, np_log_softmax)}


def np_softmax_family_vjp(name: str, x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
    """dx for the cotangent g: softmax y (g - sum(g y)); log-softmax g - softmax sum(g)."""
    p = np_softmax(x, axis)
    if name == "softmax":
        return p * (g - (g * p).sum(axis=axis, keepdims=True))
    return g - p * g.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("name", sorted(SOFTMAX_FAMILY))
@given(st.data())
def test_softmax_family(backend, name, data):
    """Any dim, any layout: forward, float64 gradcheck, float32 against float64. Along
    the last dim the Numba backend must use its kernels."""
    fn, ref = SOFTMAX_FAMILY[name]
    x = data.draw(tensors(shapes(1, 4)))
    dim = data.draw(dims_of(x.ndim))
    last = dim % x.ndim == x.ndim - 1
    with uses_kernels(backend, *(("softmax", "softmax_backward") if last else ())):
        check_op(lambda t: fn(t, dim), [x], lambda a: ref(a, dim))


@pytest.mark.parametrize("name", sorted(SOFTMAX_FAMILY))
@given(data=st.data(), dtype=st.sampled_from(DTYPES), offset=magnitudes(),
       spread=st.sampled_from([1.0, 300.0, 3000.0]))
def test_softmax_family_kernel_sizes_and_large_magnitudes(backend, name, data, dtype, offset,
                                                          spread):
    """Rows past the kernels' unrolled reductions (and up to 150 of them), at offsets up
    to ±1e4 and with values spread over ±900 or ±9000 in a row: exp overflows unless
    the row's true max is subtracted first. Forward and gradient against the formulas evaluated in float64
    on the same values shifted back to 0 (softmax does not change under the shift),
    to the accuracy of the dtype."""
    fn, _ = SOFTMAX_FAMILY[name]
    shape = data.draw(row_shapes(many_rows=True))
    x = data.draw(views(shifted(data.draw(kernel_arrays(shape)) * spread, offset, dtype)))
    small = unshifted(x, offset)
    g = data.draw(arrays(shape)).astype(dtype)
    t = on_backend(x, requires_grad=True)
    with uses_kernels(backend, "softmax", "softmax_backward"):
        y = fn(t, -1)
        y.backward(on_backend(readonly_strided(g)))
    assert y.dtype == dtype and t.grad.dtype == dtype
    close(y, SOFTMAX_FAMILY[name][1](small, -1))
    close(t.grad, np_softmax_family_vjp(name, small, g.astype(np.float64), -1))


@pytest.mark.parametrize("name", sorted(SOFTMAX_FAMILY))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [8, 9, 16, 23, 40])
def test_softmax_family_row_max_in_every_lane(backend, name, dtype, C):
    """Row j is -1000 everywhere but 0 at j (at an offset of 1e4): the max sits once in
    every lane of the kernels' 8-way blocked reductions and in the remainder. Softmax
    is the identity matrix; log-softmax 0 on the diagonal and -1000 off it; a reduction
    that misses the max overflows (exp(1000) is inf in both dtypes)."""
    fn, _ = SOFTMAX_FAMILY[name]
    small = np.where(np.eye(C, dtype=bool), 0.0, -1000.0)
    x = on_backend(shifted(small, 1e4, dtype), requires_grad=True)
    g = np.random.default_rng(C).standard_normal((C, C))
    with uses_kernels(backend, "softmax", "softmax_backward"):
        y = fn(x, -1)
        y.backward(on_backend(g.astype(dtype)))
    close(y, SOFTMAX_FAMILY[name][1](small, -1))
    close(x.grad, np_softmax_family_vjp(name, small, g.astype(dtype).astype(np.float64), -1))


@pytest.mark.parametrize("name", sorted(SOFTMAX_FAMILY))
@examples(0.25)  # a quarter of the profile's examples: up to 150 rows of 40 per example
@given(data=st.data())
def test_softmax_family_directional_gradcheck_on_kernel_sizes(backend, name, data):
    """float64 gradcheck along random directions on shapes too large to check one
    element at a time (up to 150 rows of 40)."""
    fn, _ = SOFTMAX_FAMILY[name]
    x = data.draw(tensors(row_shapes(many_rows=True)))
    with uses_kernels(backend, "softmax", "softmax_backward"):
        directional_gradcheck(lambda t: fn(t, -1), [x])


def test_softmax_methods_scalar_and_stability():
    x = on_backend(np.array([[1000.0, 1001.0, 1002.0], [-1e4, 0.0, 1e4]]), requires_grad=True)
    np.testing.assert_allclose(x.softmax(-1).numpy(), np_softmax(x.numpy(), -1))
    np.testing.assert_allclose(x.log_softmax(1).numpy(), np_log_softmax(x.numpy(), 1))
    assert np.isfinite(F.log_softmax(x, -1).numpy()).all()
    s = on_backend(np.array(0.3), requires_grad=True)
    assert F.softmax(s).item() == 1.0 and F.log_softmax(s).item() == 0.0
    check_grad(F.softmax, [s])
    y = F.softmax(on_backend(np.array([1, 2, 3])), dtype="float64")
    assert y.dtype == np.float64
    with pytest.raises(TypeError, match="softmax"):
        F.softmax(on_backend(np.array([1, 2, 3])))
    with pytest.raises(ValueError, match="log_softmax: dim 2"):
        F.log_softmax(x, 2)


# ---------------------------------------------------------------------------- normalisation


@st.composite
def norm_case(draw, bias: bool = True):
    """x of 1..4 dims normalised over its last k dims, plus a ramp of amplitude 4 over
    the normalised entries, which values in [-3, 3] cannot cancel: a near-constant row
    (layer norm) or a near-zero one (RMS norm) has rstd ~ 1/sqrt(eps), up to 1000, where
    float32 errs by eps32 |x| rstd and finite differences by eps^2 rstd^3: ill-conditioned
    rather than wrong. Broadcast layouts repeat values only along the leading (not
    normalised) dims, for the same reason."""
    shape = draw(shapes(1, 4, min_side=1, max_side=4))
    k = draw(st.integers(1, len(shape)))
    ns = shape[len(shape) - k:]
    a = draw(arrays(shape)) + np.linspace(-4.0, 4.0, math.prod(ns)).reshape(ns)
    x = on_backend(draw(views(a, keep_axes=range(len(shape) - k, len(shape)))), requires_grad=True)
    w = draw(st.none() | tensors(ns))
    b = draw(st.none() | tensors(ns)) if bias else None
    as_int = k == 1 and draw(st.booleans())
    return x, (ns[0] if as_int else ns), k, w, b


@given(norm_case())
def test_layer_norm(backend, case):
    x, ns, k, w, b = case
    inputs = [t for t in (x, w, b) if t is not None]

    def fn(*ts):
        it = iter(ts)
        xx = next(it)
        ww = next(it) if w is not None else None
        bb = next(it) if b is not None else None
        return F.layer_norm(xx, ns, ww, bb, eps=1e-5)

    with uses_kernels(backend, "norm", "norm_backward"):
        check_op(fn, inputs, lambda *a: np_layer_norm(
            a[0], k, None if w is None else a[1], None if b is None else a[-1]))


@given(norm_case(bias=False))
def test_rms_norm(backend, case):
    x, ns, k, w, _ = case
    inputs = [x] if w is None else [x, w]

    def fn(xx, ww=None):
        return F.rms_norm(xx, ns, ww)

    with uses_kernels(backend, "norm", "norm_backward"):
        check_op(fn, inputs, lambda *a: np_rms_norm(a[0], k, None if w is None else a[1]))


def np_norm_vjp(x, g, w, rms: bool, eps: float):
    """(dx, dw, db) of layer norm (rms=False) or RMS norm over the last dim, with
    xh = (x - mean) rstd (RMS: x rstd) and gw = g w:
    dx = rstd (gw - mean(gw) - xh mean(gw xh))  (RMS: without mean(gw)),
    dw = sum(g xh), db = sum(g) over the rows."""
    mu = 0.0 if rms else x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    xh = (x - mu) * rstd
    gw = g * (1.0 if w is None else w)
    dx = rstd * (gw - (0.0 if rms else gw.mean(-1, keepdims=True))
                 - xh * (gw * xh).mean(-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    return dx, (g * xh).sum(rows), g.sum(rows)


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
@given(data=st.data(), dtype=st.sampled_from(DTYPES), affine=st.booleans())
def test_norm_kernel_sizes_and_large_offsets(backend, kind, data, dtype, affine):
    """Rows past the unrolled reductions and more rows (65..150) than the 64 chunks of
    the backward kernel's weight gradient; layer norm also at offsets up to ±1e4 (it
    does not change under a shift). Forward and gradients against the formulas in
    float64 on the values shifted back, to the accuracy of the dtype plus the error
    that rounding the row mean at the offset brings: C eps |offset| rstd."""
    rms = kind == "rms_norm"
    shape = data.draw(row_shapes(many_rows=True))
    C = shape[-1]
    offset = 0.0 if rms else data.draw(magnitudes())
    # a ramp of amplitude 4 along each row, which values in [-3, 3] cannot cancel, and
    # no broadcast along the row: no row is near-constant, so rstd stays small and the
    # bound below stays tight
    a = data.draw(kernel_arrays(shape)) + np.linspace(-4.0, 4.0, C)
    x = data.draw(views(shifted(a, offset, dtype), keep_axes=[len(shape) - 1]))
    small = unshifted(x, offset)
    w = data.draw(arrays((C,), 0.5, 2.0)).astype(dtype) if affine else None
    b = data.draw(arrays((C,))).astype(dtype) if affine and not rms else None
    g = data.draw(arrays(shape)).astype(dtype)
    eps = 1e-5 if not rms else 1e-6
    tx = on_backend(x, requires_grad=True)
    tw = None if w is None else on_backend(w, requires_grad=True)
    tb = None if b is None else on_backend(b, requires_grad=True)
    with uses_kernels(backend, "norm", "norm_backward"):
        y = (F.rms_norm(tx, C, tw, eps=eps) if rms else F.layer_norm(tx, C, tw, tb, eps=eps))
        y.backward(on_backend(readonly_strided(g)))
    assert y.dtype == tx.grad.dtype == dtype
    w64 = None if w is None else w.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    want = (np_rms_norm(small, 1, w64, eps) if rms else np_layer_norm(small, 1, w64, b64, eps))
    dx, dw, db = np_norm_vjp(small, g.astype(np.float64), w64, rms, eps)
    rstd = (1 / np.sqrt(((small - (0 if rms else small.mean(-1, keepdims=True))) ** 2)
                        .mean(-1) + eps)).max()
    cond = 2 * C * np.finfo(dtype).eps * abs(offset) * rstd  # error of xh at the offset
    wmax = 1.0 if w is None else float(np.abs(w64).max())
    close(y, want, atol=cond * wmax)
    # dx = rstd (gw - mean(gw) - xh m), m = mean(gw xh); |gw| <= 3 wmax, |xh| <= sqrt(C):
    # d(xh m) <= |xh| dm + |m| dxh <= 2 * 3 wmax sqrt(C) cond
    close(tx.grad, dx, atol=cond * rstd * 6 * wmax * np.sqrt(C))
    if affine:
        # column sums over up to 150 rows: errors relative to the sum of |terms|
        rows = tuple(range(len(shape) - 1))
        gabs = np.abs(g.astype(np.float64)).sum(rows)
        close(tw.grad, dw, scale=float((gabs * 5).max()), atol=float(gabs.max()) * cond)
        if tb is not None:
            close(tb.grad, db, scale=float(gabs.max()))


def test_norm_errors():
    x = on_backend(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"layer_norm: normalized_shape \(3,\)"):
        F.layer_norm(x, 3)
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(3,\)"):
        F.layer_norm(x, 4, weight=on_backend(np.ones(3)))
    with pytest.raises(ValueError, match=r"layer_norm: bias has shape"):
        F.layer_norm(x, (3, 4), bias=on_backend(np.ones(4)))
    with pytest.raises(ValueError, match=r"rms_norm: normalized_shape \(5, 2, 3, 4\)"):
        F.rms_norm(x, (5, 2, 3, 4))
    with pytest.raises(ValueError, match=r"rms_norm: weight"):
        F.rms_norm(x, 4, weight=on_backend(np.ones((1, 4))))


def test_layer_norm_float32_and_statistics():
    x = minilm.randn(3, 8) * 5 + 2
    y = F.layer_norm(x, 8).numpy()
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-3)


# ---------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(backend, p):
    x = on_backend(np.ones((200, 100)), requires_grad=True)
    with uses_kernels(backend, "dropout"):
        y = F.dropout(x, p)
    kept = y.numpy() != 0
    assert abs(kept.mean() - (1 - p)) < 0.02
    np.testing.assert_allclose(y.numpy()[kept], 1 / (1 - p))
    g = np.random.default_rng(1).standard_normal(x.shape)
    y.backward(on_backend(g))
    np.testing.assert_allclose(x.grad.numpy(), kept * g / (1 - p))


@given(st.data())
def test_dropout_mask_is_gradient(data):
    x = data.draw(tensors(shapes(0, 3), lo=0.5, hi=2.0))
    p = data.draw(st.sampled_from([0.2, 0.5, 0.9]))
    minilm.manual_seed(7)
    y = F.dropout(x, p)
    minilm.manual_seed(7)
    mask = minilm.backends.to_host(x.backend.dropout_mask(x.shape, p, x.dtype))
    np.testing.assert_allclose(y.numpy(), x.numpy() * mask)
    g = np.ones(x.shape)
    y.backward(on_backend(g))
    np.testing.assert_allclose(x.grad.numpy(), mask * g)
    assert set(np.unique(mask)) <= {0.0, 1 / (1 - p)}


def test_dropout_seeded_identity_and_limits():
    x = on_backend(np.arange(1.0, 13.0).reshape(3, 4), requires_grad=True)
    minilm.manual_seed(3)
    a = F.dropout(x, 0.5).numpy()
    minilm.manual_seed(3)
    b = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    z = F.dropout(x, 1.0)
    np.testing.assert_array_equal(z.numpy(), 0)
    z.backward(on_backend(np.ones(x.shape)))
    np.testing.assert_array_equal(x.grad.numpy(), 0)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout: dropout probability"):
            F.dropout(x, bad)
        with pytest.raises(ValueError, match="dropout probability"):
            F.dropout(x, bad, training=False)


def test_dropout_under_checkpoint_replays_the_mask():
    x = on_backend(np.linspace(0.5, 2.0, 24).reshape(4, 6), requires_grad=True)
    minilm.manual_seed(5)
    y = minilm.checkpoint(lambda t: F.dropout(t, 0.5) * t, x)
    y.backward(on_backend(np.ones(x.shape)))
    minilm.manual_seed(5)
    mask = minilm.backends.to_host(x.backend.dropout_mask(x.shape, 0.5, x.dtype))
    np.testing.assert_allclose(y.numpy(), mask * x.numpy() ** 2)
    np.testing.assert_allclose(x.grad.numpy(), 2 * mask * x.numpy())


# ---------------------------------------------------------------------------- embedding, one_hot


@given(st.data())
def test_embedding(backend, data):
    """The Numba backward splits the embedding dim into blocks of 16 columns or more:
    dims up to 70 cross several blocks, with a remainder."""
    vocab = data.draw(st.integers(1, 5))
    dim = data.draw(st.integers(1, 3) | st.integers(17, 70))
    ids_shape = data.draw(shapes(0, 2, max_side=5))
    ids = np.asarray(data.draw(st.lists(st.integers(0, vocab - 1),
                                        min_size=int(np.prod(ids_shape)),
                                        max_size=int(np.prod(ids_shape))))).reshape(ids_shape)
    w = data.draw(tensors((vocab, dim)))
    idt = on_backend(ids.astype(np.int64))
    with uses_kernels(backend, "embedding_backward"):
        check_op(lambda ww: F.embedding(idt, ww), [w], lambda ww: ww[ids])


@given(st.data())
def test_embedding_padding_and_repeats(data):
    vocab, dim = 4, 3
    ids = np.asarray(data.draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=8)))
    pad = data.draw(st.none() | st.integers(-vocab, vocab - 1))
    w = on_backend(np.random.default_rng(0).standard_normal((vocab, dim)), requires_grad=True)
    g = np.random.default_rng(1).standard_normal((len(ids), dim))
    y = F.embedding(on_backend(ids), w, padding_idx=pad)
    np.testing.assert_array_equal(y.numpy(), w.numpy()[ids])
    y.backward(on_backend(g))
    expected = np.zeros((vocab, dim))
    for i, v in enumerate(ids):  # repeated ids add up
        expected[v] += g[i]
    if pad is not None:
        expected[pad % vocab] = 0
    np.testing.assert_allclose(w.grad.numpy(), expected)


def test_embedding_repeated_ids_int32_and_empty():
    w = on_backend(np.eye(3), requires_grad=True)
    y = F.embedding(on_backend(np.array([[2, 2], [2, 0]], dtype=np.int32)), w)
    y.backward(on_backend(np.ones((2, 2, 3))))
    np.testing.assert_array_equal(w.grad.numpy(), [[1, 1, 1], [0, 0, 0], [3, 3, 3]])
    e = F.embedding(on_backend(np.zeros((0,), dtype=np.int64)), w)
    assert e.shape == (0, 3)
    e.backward(on_backend(np.ones((0, 3))))


def test_embedding_errors():
    w = on_backend(np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"embedding: id 7 .*vocab size 5.*max id 7"):
        F.embedding(on_backend(np.array([0, 7, 3])), w)
    with pytest.raises(ValueError, match=r"embedding: id -1"):
        F.embedding(on_backend(np.array([-1, 2])), w)
    with pytest.raises(TypeError, match="embedding: ids must be an integer tensor"):
        F.embedding(on_backend(np.array([0.0, 1.0])), w)
    with pytest.raises(TypeError, match="embedding: ids must be an integer Tensor"):
        F.embedding([0, 1], w)
    with pytest.raises(ValueError, match="embedding: weight must be 2-D"):
        F.embedding(on_backend(np.array([0])), on_backend(np.ones(5)))
    with pytest.raises(ValueError, match="embedding: padding_idx 5"):
        F.embedding(on_backend(np.array([0])), w, padding_idx=5)


@given(st.data())
def test_one_hot(data):
    shape = data.draw(shapes(0, 2, max_side=4))
    n = int(np.prod(shape))
    ids = np.asarray(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)),
                     dtype=np.int64).reshape(shape)
    c = data.draw(st.sampled_from([-1, 5, 7]))
    y = F.one_hot(on_backend(ids), c)
    width = ids.max() + 1 if c == -1 else c
    assert y.dtype == np.int64 and not y.requires_grad
    np.testing.assert_array_equal(y.numpy(), np.eye(width, dtype=np.int64)[ids])


def test_one_hot_errors():
    with pytest.raises(ValueError, match="one_hot: id 3 is out of range for num_classes 3"):
        F.one_hot(on_backend(np.array([0, 3])), 3)
    with pytest.raises(ValueError, match="one_hot: cannot infer"):
        F.one_hot(on_backend(np.zeros(0, dtype=np.int64)))
    with pytest.raises(TypeError, match="one_hot"):
        F.one_hot(on_backend(np.array([0.0])))


# ---------------------------------------------------------------------------- attention


@st.composite
def attention_case(draw):
    lead = draw(shapes(0, 2, max_side=2))
    lq, lk = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    e, ev = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    # k and v may drop or squeeze leading dims: they broadcast against q
    kv_lead = lead[draw(st.integers(0, len(lead))):]
    if kv_lead and draw(st.booleans()):
        kv_lead = (1,) + kv_lead[1:]
    q = draw(tensors(lead + (lq, e)))
    k = draw(tensors(kv_lead + (lk, e)))
    v = draw(tensors(kv_lead + (lk, ev)))
    kind = draw(st.sampled_from(["none", "causal", "bool", "float"]))
    mask = None
    if kind in ("bool", "float"):
        mshape = draw(st.sampled_from([(lq, lk), (1, lk), (lk,), lead + (lq, lk),
                                       (1,) * len(lead) + (lq, 1)]))
        if kind == "bool":
            mask = on_backend(draw(hnp.arrays(np.bool_, mshape)))
        else:
            mask = draw(tensors(mshape, lo=-2.0, hi=2.0))
    scale = draw(st.none() | st.sampled_from([0.5, 1.3]))
    return q, k, v, kind, mask, scale


@given(attention_case())
def test_scaled_dot_product_attention(backend, case):
    q, k, v, kind, mask, scale = case
    causal = kind == "causal"

    def fn(qq, kk, vv, *m):
        return F.scaled_dot_product_attention(qq, kk, vv, attn_mask=m[0] if m else mask,
                                              is_causal=causal, scale=scale)

    inputs = [q, k, v] + ([mask] if kind == "float" else [])
    ref_mask = None if mask is None else mask.numpy()
    with uses_kernels(backend, "masked_softmax", "softmax_backward"):
        check_op(fn, inputs, lambda qq, kk, vv, *m: np_attention(
            qq, kk, vv, m[0] if m else ref_mask, causal, scale))


def np_attention_vjp(q, k, v, mask, scale, g):
    """(dq, dk, dv, dS) of softmax(q k^T scale + mask) v for the cotangent g, written
    out: P the probabilities, dv = P^T g, dP = g v^T, dS = P (dP - sum(dP P)),
    dq = dS k scale, dk = dS^T q scale (dS is also the mask's gradient)."""
    s = np.where(np.isneginf(mask), -np.inf, q @ np.swapaxes(k, -1, -2) * scale + mask)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0))
    d = e.sum(-1, keepdims=True)
    p = e / np.where(d > 0, d, 1)
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return ds @ k * scale, np.swapaxes(ds, -1, -2) @ q * scale, np.swapaxes(p, -1, -2) @ g, ds


@given(data=st.data(), dtype=st.sampled_from(DTYPES), offset=magnitudes())
def test_attention_kernel_sizes_and_large_scores(backend, data, dtype, offset):
    """Key lengths past the unrolled row reductions (8..40), several batch and head
    rows, an additive mask with -inf entries shifted by up to ±1e4 (the probabilities
    do not change; exp overflows unless the row max is subtracted). Output and every
    gradient against the formulas in float64 on the unshifted mask, to the accuracy of
    the dtype plus the rounding of the scores at the offset (eps |offset|)."""
    B, H = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    lq, lk = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 4) | st.integers(8, 40))
    E = data.draw(st.integers(1, 8))
    q, k, v = (data.draw(kernel_arrays((B, H, n, E))).astype(dtype) for n in (lq, lk, lk))
    mshape = data.draw(st.sampled_from([(lq, lk), (B, 1, 1, lk), (B, H, lq, lk)]))
    base = data.draw(kernel_arrays(mshape))
    base[np.asarray(data.draw(hnp.arrays(np.bool_, mshape)))] = -np.inf
    mask = np.where(np.isneginf(base), -np.inf, shifted(np.nan_to_num(base, neginf=0), offset,
                                                        dtype)).astype(dtype)
    small = np.where(np.isneginf(mask), -np.inf, np.nan_to_num(mask, neginf=offset) - offset)
    g = data.draw(arrays((B, H, lq, E))).astype(dtype)
    scale = 1 / np.sqrt(E)
    tq, tk, tv, tm = (on_backend(data.draw(views(a, ("contiguous", "strided", "transposed"))),
                             requires_grad=True) for a in (q, k, v, mask))
    with uses_kernels(backend, "masked_softmax", "softmax_backward"):
        out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm)
        out.backward(on_backend(readonly_strided(g)))
    assert out.dtype == tq.grad.dtype == tm.grad.dtype == dtype
    q64, k64, v64, g64 = (a.astype(np.float64) for a in (q, k, v, g))
    # Tolerances: d bounds the rounding of one score at the offset, which changes each
    # probability by a relative 2d; float32 products and row sums over up to lk terms,
    # with cancellation in dS, err relative to sqrt(lk) times the largest result.
    d = float(np.finfo(dtype).eps) * abs(offset)
    dpmax = float(np.abs(g64 @ np.swapaxes(v64, -1, -2)).max())
    close(out, np_attention(q64, k64, v64, small, scale=scale), atol=4 * d * np.abs(v64).max())
    dq, dk, dv, ds = np_attention_vjp(q64, k64, v64, small, scale, g64)
    dm = np_sum_to(ds, mshape)
    rows = ds.size // dm.size  # score rows summed into one mask entry
    for got, want, atol in (
            (tq.grad, dq, 8 * d * dpmax * np.abs(k64).max() * scale),
            (tk.grad, dk, 8 * d * dpmax * np.abs(q64).max() * scale * lq),
            (tv.grad, dv, 4 * d * np.abs(g64).max() * lq),
            (tm.grad, dm, 8 * d * dpmax * rows)):
        close(got, want, scale=max(1.0, float(np.abs(want).max())) * np.sqrt(lk), atol=atol)


def np_sum_to(a: np.ndarray, shape: tuple) -> np.ndarray:
    """``a`` summed down to ``shape`` (the gradient of broadcasting ``shape`` to a.shape)."""
    a = a.sum(axis=tuple(range(a.ndim - len(shape))))
    return a.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)


def test_attention_causal_alignment_and_lq_ne_lk():
    rng = np.random.default_rng(0)
    for lq, lk in ((2, 4), (4, 2), (3, 3)):
        q = on_backend(rng.standard_normal((lq, 2)), requires_grad=True)
        k = on_backend(rng.standard_normal((lk, 2)), requires_grad=True)
        v = on_backend(np.eye(lk), requires_grad=True)  # out rows are the probabilities
        p = F.scaled_dot_product_attention(q, k, v, is_causal=True).numpy()
        allowed = np.tril(np.ones((lq, lk), dtype=bool))  # top-left, as torch.ones(L, S).tril()
        np.testing.assert_array_equal(p[~allowed], 0)
        np.testing.assert_allclose(p.sum(-1), 1)
        check_grad(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
                   [q, k, v])


def test_attention_fully_masked_rows_give_zeros():
    rng = np.random.default_rng(0)
    q = on_backend(rng.standard_normal((2, 3, 4)), requires_grad=True)
    k = on_backend(rng.standard_normal((2, 5, 4)), requires_grad=True)
    v = on_backend(rng.standard_normal((2, 5, 3)), requires_grad=True)
    keep = np.ones((2, 3, 5), dtype=bool)
    keep[0, 1] = False
    keep[1, :, 2] = False
    bias = np.zeros((3, 5))
    bias[2] = -np.inf
    for mask in (on_backend(keep), on_backend(bias)):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert np.isfinite(out.numpy()).all()
        np.testing.assert_allclose(out.numpy(), np_attention(q.numpy(), k.numpy(), v.numpy(),
                                                             mask.numpy()))
        check_grad(lambda a, b, c, m=mask: F.scaled_dot_product_attention(a, b, c, attn_mask=m),
                   [q, k, v])
    q.grad = k.grad = v.grad = None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=on_backend(keep))
    np.testing.assert_array_equal(out.numpy()[0, 1], 0)
    out.backward(on_backend(np.ones(out.shape)))
    assert np.isfinite(q.grad.numpy()).all() and np.isfinite(k.grad.numpy()).all()
    np.testing.assert_array_equal(q.grad.numpy()[0, 1], 0)
    np.testing.assert_array_equal(k.grad.numpy()[1, 2], 0)  # no query attends to key 2


def test_attention_dropout():
    rng = np.random.default_rng(0)
    q = on_backend(rng.standard_normal((2, 3, 2)), requires_grad=True)
    k = on_backend(rng.standard_normal((2, 4, 2)), requires_grad=True)
    v = on_backend(rng.standard_normal((2, 4, 3)), requires_grad=True)
    m = on_backend(rng.standard_normal((3, 4)), requires_grad=True)
    p = 0.4

    def fn(a, b, c, mm):  # a fixed seed per call: the same mask in every evaluation
        minilm.manual_seed(11)
        return F.scaled_dot_product_attention(a, b, c, attn_mask=mm, dropout_p=p)

    check_grad(fn, [q, k, v, m])
    # the output is (P * mask) v with the mask drawn from the backend's generator
    minilm.manual_seed(11)
    drop = minilm.backends.to_host(q.backend.dropout_mask((2, 3, 4), p, np.float64))
    s = q.numpy() @ k.numpy().swapaxes(-1, -2) / math.sqrt(2) + m.numpy()
    np.testing.assert_allclose(fn(q, k, v, m).numpy(), (np_softmax(s, -1) * drop) @ v.numpy())
    # statistics: probabilities are kept with probability 1 - p and scaled by 1/(1 - p)
    big_q = on_backend(np.zeros((50, 40, 1)))
    big_k = on_backend(np.zeros((50, 40, 1)))
    eye = on_backend(np.broadcast_to(np.eye(40), (50, 40, 40)).copy())
    probs = F.scaled_dot_product_attention(big_q, big_k, eye, dropout_p=p).numpy()
    kept = probs != 0
    assert abs(kept.mean() - (1 - p)) < 0.02
    np.testing.assert_allclose(probs[kept], 1 / 40 / (1 - p))


def test_attention_errors():
    q = on_backend(np.ones((2, 3, 4)))
    k = on_backend(np.ones((2, 5, 4)))
    v = on_backend(np.ones((2, 5, 3)))
    sdpa = F.scaled_dot_product_attention
    with pytest.raises(ValueError, match="scaled_dot_product_attention: q .* k .*embedding"):
        sdpa(q, on_backend(np.ones((2, 5, 3))), v)
    with pytest.raises(ValueError, match="different lengths"):
        sdpa(q, k, on_backend(np.ones((2, 4, 3))))
    with pytest.raises(ValueError, match="at least 2 dims"):
        sdpa(on_backend(np.ones(4)), k, v)
    with pytest.raises(ValueError, match="either attn_mask or is_causal"):
        sdpa(q, k, v, attn_mask=on_backend(np.ones((3, 5), dtype=bool)), is_causal=True)
    with pytest.raises(TypeError, match="attn_mask must be bool"):
        sdpa(q, k, v, attn_mask=on_backend(np.ones((3, 5), dtype=np.int64)))
    with pytest.raises(ValueError, match=r"cannot be broadcast"):
        sdpa(q, k, v, attn_mask=on_backend(np.ones((3, 4), dtype=bool)))
    with pytest.raises(ValueError, match="dropout probability"):
        sdpa(q, k, v, dropout_p=1.2)


def test_embedding_backward_matches_add_at_with_many_repeats():
    from minilm.backends.numpy_backend import NumpyBackend

    rng = np.random.default_rng(1)
    ids = rng.integers(0, 5, size=(6, 40))  # heavy repetition
    gy = rng.standard_normal((6, 40, 3))
    ref = np.zeros((7, 3))
    np.add.at(ref, ids.reshape(-1), gy.reshape(-1, 3))
    np.testing.assert_allclose(NumpyBackend().embedding_backward(ids, gy, 7), ref, rtol=1e-12)
