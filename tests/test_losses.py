"""Losses: forward against NumPy formulas for every option and reduction, float64
gradcheck, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import (
    DTYPES,
    arrays,
    check_forward,
    check_grad,
    check_op,
    close,
    kernel_arrays,
    magnitudes,
    on_backend,
    readonly_strided,
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

REDUCTIONS = st.sampled_from(["mean", "sum", "none"])


def reduce_np(loss: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def np_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def jittered(a: np.ndarray) -> np.ndarray:
    """Move drawn values off the simple numbers Hypothesis likes (kinks sit there)."""
    return a + 1e-3 * np.sqrt(np.arange(2.0, a.size + 2.0)).reshape(a.shape)


# ---------------------------------------------------------------------------- cross-entropy


def np_cross_entropy(x, t, w, ignore_index, reduction, label_smoothing):
    """PyTorch's definition written out over the class dim (1, or 0 for a (C,) input)."""
    cdim = 0 if x.ndim == 1 else 1
    logp = np.moveaxis(np_log_softmax(x, cdim), cdim, -1)  # (..., C)
    c = logp.shape[-1]
    w = np.ones(c) if w is None else w
    valid = t != ignore_index
    safe = np.where(valid, t, 0)
    nll = -np.take_along_axis(logp, safe[..., None], -1)[..., 0] * w[safe]
    smooth = -(logp * w).sum(-1) / c
    loss = ((1 - label_smoothing) * nll + label_smoothing * smooth) * valid
    if reduction == "mean":
        return loss.sum() / (w[safe] * valid).sum()
    return loss.sum() if reduction == "sum" else loss


def np_soft_cross_entropy(x, p, w, reduction, label_smoothing):
    cdim = 0 if x.ndim == 1 else 1
    logp = np.moveaxis(np_log_softmax(x, cdim), cdim, -1)
    p = np.moveaxis(p, cdim, -1)
    c = logp.shape[-1]
    w = np.ones(c) if w is None else w
    p = (1 - label_smoothing) * p + label_smoothing / c
    return reduce_np(-(w * p * logp).sum(-1), reduction)


@st.composite
def class_case(draw, max_spatial: int = 2):
    """(input array, class-index targets, class weights or None, ignore_index)."""
    c = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["vector", "batch", "spatial"]))
    if kind == "vector":
        shape, tshape = (c,), ()
    else:
        n = draw(st.integers(1, 3))
        spatial = draw(shapes(1, max_spatial, max_side=3)) if kind == "spatial" else ()
        shape, tshape = (n, c) + spatial, (n,) + spatial
    x = draw(arrays(shape))
    ignore_index = draw(st.sampled_from([-100, -1, 0, 2]))
    size = int(np.prod(tshape))
    t = np.asarray(draw(st.lists(st.one_of(st.integers(0, c - 1), st.just(ignore_index)),
                                 min_size=size, max_size=size)), dtype=np.int64)
    t = t.reshape(tshape)
    w = draw(st.none() | arrays((c,), 0.2, 2.0))
    return x, t, w, ignore_index


@given(class_case(), REDUCTIONS, st.sampled_from([0.0, 0.1, 0.35]), st.data())
def test_cross_entropy_class_indices(backend, case, reduction, label_smoothing, data):
    x, t, w, ignore_index = case
    valid = t != ignore_index
    assume(reduction != "mean" or (valid * (1 if w is None else w[np.where(valid, t, 0)])).sum()
           > 0.1)
    tt = on_backend(t)

    def fn(inp, *ww):
        return F.cross_entropy(inp, tt, weight=ww[0] if ww else None, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=label_smoothing)

    xt = on_backend(data.draw(views(x)), requires_grad=True)
    inputs = [xt] + ([] if w is None else [on_backend(w)])  # the weight follows x's dtype
    with uses_kernels(backend, "cross_entropy", "cross_entropy_backward"):
        check_op(fn, inputs, lambda a, *ww: np_cross_entropy(
            a, t, ww[0] if ww else None, ignore_index, reduction, label_smoothing))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [8, 9, 16, 23, 40])
def test_cross_entropy_logit_max_in_every_lane(backend, dtype, C):
    """Row j of the logits is -1000 everywhere but 0 at j (at an offset of 1e4): the
    max sits once in every lane of the kernels' 8-way blocked reductions and in the
    remainder. The loss is 0 for target j and 1000 for any other target; a reduction
    that misses the max overflows."""
    small = np.where(np.eye(C, dtype=bool), 0.0, -1000.0)
    x = on_backend(shifted(small, 1e4, dtype), requires_grad=True)
    t = np.arange(C)
    t[1::2] = (t[1::2] + 1) % C  # odd rows: a wrong class
    with uses_kernels(backend, "cross_entropy", "cross_entropy_backward"):
        loss = F.cross_entropy(x, on_backend(t), reduction="none")
        loss.backward(on_backend(np.ones(C, dtype=dtype)))
    close(loss, np_cross_entropy(small, t, None, -100, "none", 0.0))
    close(x.grad, np_cross_entropy_rows_grad(small, t, None, -100, 0.0, np.ones(C)))


def np_cross_entropy_rows_grad(x, t, w, ignore_index, label_smoothing, g_row):
    """d loss_i / d x_i for (N, C) logits, written out: with p = softmax(x_i),
    loss_i = (1-e) w_y (-log p_y) + e/C sum_c w_c (-log p_c) and d(-log p_c)/dx = p - onehot(c):
    dx_i = g_i [(1-e) w_y (p - onehot(y)) + e/C (sum(w) p - w)], 0 for ignored rows."""
    n, c = x.shape
    w = np.ones(c) if w is None else w
    valid = t != ignore_index
    y = np.where(valid, t, 0)
    p = np.exp(np_log_softmax(x, 1))
    onehot = np.eye(c)[y]
    d = (1 - label_smoothing) * w[y][:, None] * (p - onehot) \
        + label_smoothing / c * (w.sum() * p - w)
    return d * (g_row * valid)[:, None]


@given(data=st.data(), dtype=st.sampled_from(DTYPES), offset=magnitudes(),
       spread=st.sampled_from([1.0, 300.0, 3000.0]), reduction=REDUCTIONS,
       label_smoothing=st.sampled_from([0.0, 0.1]), weighted=st.booleans())
def test_cross_entropy_kernel_sizes_and_large_logits(backend, data, dtype, offset, spread,
                                                     reduction, label_smoothing, weighted):
    """Up to 150 rows of up to 40 classes (past the unrolled row reductions), logits
    shifted by up to ±1e4 and spread over ±900 or ±9000 in a row (the loss does not change
    under the shift; exp overflows unless the row's true max is subtracted), ignored
    rows, class weights: loss and gradient against the formulas in float64 on the
    unshifted logits, to the accuracy of the dtype."""
    n = data.draw(st.integers(1, 9) | st.integers(65, 150))
    c = data.draw(st.integers(1, 4) | st.integers(8, 40))
    x = data.draw(views(shifted(data.draw(kernel_arrays((n, c))) * spread, offset, dtype)))
    small = unshifted(x, offset)
    t = np.asarray(data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1))))
    t[np.asarray(data.draw(hnp.arrays(np.bool_, (n,))))] = -100
    w = data.draw(arrays((c,), 0.2, 2.0)) if weighted else None
    valid = t != -100
    counted = float((valid * (1 if w is None else w[np.where(valid, t, 0)])).sum())
    assume(reduction != "mean" or counted > 0.1)
    xt = on_backend(x, requires_grad=True)
    wt = None if w is None else on_backend(w.astype(dtype))
    with uses_kernels(backend, "cross_entropy", "cross_entropy_backward"):
        loss = F.cross_entropy(xt, on_backend(t), weight=wt, reduction=reduction,
                               label_smoothing=label_smoothing)
        g = np.ones(loss.shape) if reduction != "none" else data.draw(arrays((n,)))
        loss.backward(on_backend(readonly_strided(g.astype(dtype))))
    assert loss.dtype == xt.grad.dtype == dtype
    w64 = None if w is None else w.astype(dtype).astype(np.float64)
    want = np_cross_entropy(small, t, w64, -100, reduction, label_smoothing)
    g_row = g if reduction == "none" else np.full(n, 1.0 / counted if reduction == "mean" else 1.0)
    want_dx = np_cross_entropy_rows_grad(small, t, w64, -100, label_smoothing, g_row)
    # the per-row losses (~|logits| + log C) add up over up to 150 rows
    row_scale = float(np.abs(np_cross_entropy(small, t, w64, -100, "none", label_smoothing)).sum())
    close(loss, want, scale=max(1.0, row_scale if reduction == "sum" else 0.0))
    close(xt.grad, want_dx)


@given(class_case(), REDUCTIONS, st.sampled_from([0.0, 0.2]), st.data())
def test_cross_entropy_probabilities(case, reduction, label_smoothing, data):
    x, _, w, _ = case
    p = data.draw(tensors(x.shape, lo=0.0, hi=1.0))
    wt = None if w is None else on_backend(w)

    def fn(inp, target):
        return F.cross_entropy(inp, target, weight=wt, reduction=reduction,
                               label_smoothing=label_smoothing)

    xt = on_backend(x, requires_grad=True)
    check_forward(fn, [xt, p], lambda a, b: np_soft_cross_entropy(a, b, w, reduction,
                                                                   label_smoothing))
    check_grad(fn, [xt, p])


def test_cross_entropy_known_values_and_float32():
    x = on_backend(np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], dtype=np.float32),
               requires_grad=True)
    t = on_backend(np.array([0, 2]))
    loss = F.cross_entropy(x, t)
    lse0 = np.log(np.exp(2.0) + 1 + np.exp(-1.0))
    expected = ((lse0 - 2.0) + np.log(3.0)) / 2
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-6)
    loss.backward()
    p = np.exp(x.numpy() - x.numpy().max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(x.grad.numpy(), (p - np.eye(3)[[0, 2]]) / 2, rtol=1e-5)
    # ignored targets give no gradient; all ignored with 'mean' is 0/0 = nan, as in torch
    x.grad = None
    F.cross_entropy(x, on_backend(np.array([1, -100])), reduction="sum").backward()
    np.testing.assert_array_equal(x.grad.numpy()[1], 0)
    with np.errstate(invalid="ignore"):
        assert np.isnan(F.cross_entropy(x, on_backend(np.array([-100, -100]))).item())


def test_cross_entropy_errors():
    x = on_backend(np.zeros((4, 3)), requires_grad=True)
    ce = F.cross_entropy
    with pytest.raises(ValueError, match=r"cross_entropy: target id 3 is out of range for 3"):
        ce(x, on_backend(np.array([0, 1, 3, 2])))
    with pytest.raises(ValueError, match=r"target id -5"):
        ce(x, on_backend(np.array([0, -5, 1, 1])))
    ce(x, on_backend(np.array([0, -5, 1, 1])), ignore_index=-5)  # ignored: fine
    with pytest.raises(ValueError, match=r"cross_entropy: input of shape \(4, 3\) needs "
                                         r"class-index target of shape \(4,\), got \(3,\)"):
        ce(x, on_backend(np.array([0, 1, 2])))
    with pytest.raises(ValueError, match=r"needs class-index target of shape \(2, 5\)"):
        ce(on_backend(np.zeros((2, 3, 5))), on_backend(np.zeros((2, 3), dtype=np.int64)))
    with pytest.raises(ValueError, match=r"probability target must have the input's shape"):
        ce(x, on_backend(np.zeros((4, 2))))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        ce(x, on_backend(np.array([0, 1, 2, 1])), weight=on_backend(np.ones(4)))
    with pytest.raises(ValueError, match="reduction must be one of"):
        ce(x, on_backend(np.array([0, 1, 2, 1])), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        ce(x, on_backend(np.array([0, 1, 2, 1])), label_smoothing=1.5)
    with pytest.raises(TypeError, match="target must hold class indices"):
        ce(x, on_backend(np.ones(4, dtype=bool)))
    with pytest.raises(ValueError, match="0-d"):
        ce(on_backend(np.array(1.0)), on_backend(np.array(0)))
    with pytest.raises(ValueError, match="class weights are not supported"):
        ce(x, on_backend(np.array([0, 1, 2, 1])), weight=on_backend(np.ones(3), requires_grad=True))


@given(class_case(), REDUCTIONS)
def test_nll_loss(case, reduction):
    x, t, w, ignore_index = case
    valid = t != ignore_index
    assume(reduction != "mean" or (valid * (1 if w is None else w[np.where(valid, t, 0)])).sum()
           > 0.1)
    tt = on_backend(t)
    wt = None if w is None else on_backend(w)

    def fn(inp):
        return F.nll_loss(inp, tt, weight=wt, ignore_index=ignore_index, reduction=reduction)

    def ref(a):
        cdim = 0 if a.ndim == 1 else 1
        lp = np.moveaxis(a, cdim, -1)
        ww = np.ones(lp.shape[-1]) if w is None else w
        safe = np.where(valid, t, 0)
        loss = -np.take_along_axis(lp, safe[..., None], -1)[..., 0] * ww[safe] * valid
        if reduction == "mean":
            return loss.sum() / (ww[safe] * valid).sum()
        return reduce_np(loss, reduction)

    xt = on_backend(x, requires_grad=True)
    check_forward(fn, [xt], ref)
    check_grad(fn, [xt])


def test_nll_loss_matches_cross_entropy_and_errors():
    rng = np.random.default_rng(0)
    x = on_backend(rng.standard_normal((3, 4, 2)))
    t = on_backend(rng.integers(0, 4, (3, 2)))
    np.testing.assert_allclose(F.nll_loss(F.log_softmax(x, 1), t).item(),
                               F.cross_entropy(x, t).item())
    with pytest.raises(ValueError, match="nll_loss: target id 4"):
        F.nll_loss(x, on_backend(np.full((3, 2), 4)))
    with pytest.raises(TypeError, match="nll_loss: target must hold class indices"):
        F.nll_loss(x, on_backend(np.zeros((3, 2))))
    with pytest.raises(ValueError, match=r"nll_loss: input of shape \(3, 4, 2\)"):
        F.nll_loss(x, on_backend(np.zeros(3, dtype=np.int64)))


# ---------------------------------------------------------------------------- regression losses


def np_smooth_l1(d, beta):
    a = np.abs(d)
    return a if beta == 0 else np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)


def np_huber(d, delta):
    a = np.abs(d)
    return np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))


POINTWISE = {
    "mse": (lambda x, t, r: F.mse_loss(x, t, reduction=r), lambda d: d * d, None),
    "l1": (lambda x, t, r: F.l1_loss(x, t, reduction=r), np.abs, 0.0),
    "smooth_l1": (lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.7),
                  lambda d: np_smooth_l1(d, 0.7), 0.7),
    "smooth_l1_beta0": (lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.0),
                        lambda d: np_smooth_l1(d, 0.0), 0.0),
    "huber": (lambda x, t, r: F.huber_loss(x, t, reduction=r, delta=0.8),
              lambda d: np_huber(d, 0.8), 0.8),
}


@pytest.mark.parametrize("name", sorted(POINTWISE))
@given(data=st.data(), reduction=REDUCTIONS)
def test_pointwise_losses(name, data, reduction):
    fn, ref, kink = POINTWISE[name]
    shape = data.draw(shapes(0, 3))
    x = on_backend(jittered(data.draw(arrays(shape))), requires_grad=True)
    t = on_backend(data.draw(arrays(shape)), requires_grad=True)
    d = x.numpy() - t.numpy()
    if kink is not None:  # finite differences across a kink are meaningless
        assume(np.all(np.abs(np.abs(d) - kink) > 1e-4))
    check_forward(lambda a, b: fn(a, b, reduction), [x, t],
                  lambda a, b: reduce_np(ref(a - b), reduction))
    check_grad(lambda a, b: fn(a, b, reduction), [x, t])


def test_pointwise_errors_and_float32():
    x = on_backend(np.zeros((3, 1)))
    for fn in (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss):
        with pytest.raises(ValueError, match=r"_loss: input shape \(3, 1\) and target shape "
                                             r"\(3,\) differ"):
            fn(x, on_backend(np.zeros(3)))
        with pytest.raises(ValueError, match="reduction"):
            fn(x, x, reduction="batchmean")
    with pytest.raises(ValueError, match="huber_loss: delta"):
        F.huber_loss(x, x, delta=0.0)
    with pytest.raises(ValueError, match="smooth_l1_loss: beta"):
        F.smooth_l1_loss(x, x, beta=-1.0)
    a = minilm.randn(4, requires_grad=True)
    loss = F.mse_loss(a, [0.0, 1.0, 2.0, 3.0])
    assert loss.dtype == np.float32 and loss.shape == ()
    loss.backward()
    np.testing.assert_allclose(a.grad.numpy(), (a.numpy() - [0, 1, 2, 3]) / 2, rtol=1e-6)


# ---------------------------------------------------------------------------- binary cross-entropy


@st.composite
def binary_case(draw, lo=-3.0, hi=3.0):
    shape = draw(shapes(1, 3))
    x = draw(tensors(shape, lo, hi))
    t = draw(tensors(shape, 0.0, 1.0))
    wshape = draw(st.sampled_from([shape, shape[-1:], (1,) * len(shape)]))
    w = draw(st.none() | tensors(wshape, 0.2, 2.0))
    pw = draw(st.none() | tensors(shape[-1:], 0.2, 3.0))
    return x, t, w, pw


@given(binary_case(0.02, 0.98), REDUCTIONS)
def test_binary_cross_entropy(case, reduction):
    x, t, w, _ = case
    inputs = [x, t] + ([w] if w is not None else [])

    def fn(a, b, *ww):
        return F.binary_cross_entropy(a, b, weight=ww[0] if ww else None, reduction=reduction)

    def ref(a, b, *ww):
        loss = -(b * np.log(a) + (1 - b) * np.log(1 - a)) * (ww[0] if ww else 1)
        return reduce_np(loss, reduction)

    check_forward(fn, inputs, ref)
    check_grad(fn, inputs)


def test_binary_cross_entropy_clamps_logs():
    x = on_backend(np.array([0.0, 1.0, 0.0, 1.0]), requires_grad=True)
    t = on_backend(np.array([1.0, 0.0, 0.0, 1.0]))
    loss = F.binary_cross_entropy(x, t, reduction="none")
    np.testing.assert_array_equal(loss.numpy(), [100.0, 100.0, 0.0, 0.0])
    loss.backward(on_backend(np.ones(4)))
    assert np.isfinite(x.grad.numpy()).all()
    with pytest.raises(ValueError, match=r"binary_cross_entropy: input \(shape \(2,\)\) must "
                                         "hold probabilities"):
        F.binary_cross_entropy(on_backend(np.array([0.5, 1.5])), on_backend(np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match="binary_cross_entropy: input shape"):
        F.binary_cross_entropy(on_backend(np.array([0.5, 0.5])), on_backend(np.array([1.0])))
    with pytest.raises(ValueError, match="weight of shape"):
        F.binary_cross_entropy(on_backend(np.array([0.5, 0.5])), on_backend(np.array([1.0, 0.0])),
                               weight=on_backend(np.ones(3)))


@given(binary_case(), REDUCTIONS)
def test_binary_cross_entropy_with_logits(case, reduction):
    x, t, w, pw = case
    extra = [a for a in (w, pw) if a is not None]

    def fn(a, b, *rest):
        it = iter(rest)
        ww = next(it) if w is not None else None
        pp = next(it) if pw is not None else None
        return F.binary_cross_entropy_with_logits(a, b, weight=ww, reduction=reduction,
                                                  pos_weight=pp)

    def ref(a, b, *rest):
        s = 1 / (1 + np.exp(-a))
        pp = 1 if pw is None else pw.numpy()
        loss = -(pp * b * np.log(s) + (1 - b) * np.log(1 - s))
        return reduce_np(loss * (1 if w is None else w.numpy()), reduction)

    check_forward(fn, [x, t] + extra, ref)
    check_grad(fn, [x, t] + extra)


def test_bce_with_logits_is_stable_and_matches_bce():
    x = on_backend(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0]), requires_grad=True)
    t = on_backend(np.array([1.0, 0.0, 0.5, 1.0, 0.0]))
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [1000.0, 9.357622968839299e-14, np.log(2),
                                              9.357622968839299e-14, 1000.0], rtol=1e-12)
    loss.backward(on_backend(np.ones(5)))
    np.testing.assert_allclose(x.grad.numpy(), [-1.0, 9.357622968839299e-14, 0.0,
                                                -9.357622968839299e-14, 1.0], atol=1e-15)
    y = on_backend(np.array([-2.0, 0.3, 1.5]))
    tt = on_backend(np.array([0.2, 1.0, 0.0]))
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(y, tt).item(),
                               F.binary_cross_entropy(F.sigmoid(y), tt).item())


# ---------------------------------------------------------------------------- divergences, margins


@given(st.data(), st.sampled_from(["mean", "sum", "none", "batchmean"]), st.booleans())
def test_kl_div(data, reduction, log_target):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    t = data.draw(tensors(shape, -2.0, 1.0) if log_target else tensors(shape, 0.05, 2.0))

    def fn(a, b):
        return F.kl_div(a, b, reduction=reduction, log_target=log_target)

    def ref(a, b):
        loss = np.exp(b) * (b - a) if log_target else b * (np.log(b) - a)
        if reduction == "batchmean":
            return loss.sum() / a.shape[0]
        return reduce_np(loss, reduction)

    check_forward(fn, [x, t], ref)
    check_grad(fn, [x, t])


def test_kl_div_zero_target_and_errors():
    x = on_backend(np.log(np.array([[0.5, 0.5], [0.9, 0.1]])), requires_grad=True)
    t = on_backend(np.array([[1.0, 0.0], [0.5, 0.5]]))
    out = F.kl_div(x, t, reduction="none").numpy()
    np.testing.assert_allclose(out[0], [np.log(2), 0.0])
    expected = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
    np.testing.assert_allclose(F.kl_div(x, t, reduction="sum").item(), np.log(2) + expected)
    with pytest.raises(ValueError, match="kl_div: reduction must be one of"):
        F.kl_div(x, t, reduction="avg")
    with pytest.raises(ValueError, match="kl_div: input shape"):
        F.kl_div(x, on_backend(np.ones(2)))


@given(st.data(), REDUCTIONS, st.sampled_from([1.0, 0.5, 2.0]), st.booleans())
def test_hinge_embedding_loss(data, reduction, margin, int_target):
    shape = data.draw(shapes(0, 3))
    x = on_backend(jittered(data.draw(arrays(shape))), requires_grad=True)
    assume(np.all(np.abs(margin - x.numpy()) > 1e-4))
    n = int(np.prod(shape))
    y = np.asarray(data.draw(st.lists(st.sampled_from([-1, 1]), min_size=n, max_size=n)))
    y = y.reshape(shape).astype(np.int64 if int_target else np.float64)
    yt = on_backend(y)

    def fn(a):
        return F.hinge_embedding_loss(a, yt, margin=margin, reduction=reduction)

    check_forward(fn, [x], lambda a: reduce_np(np.where(y == 1, a, np.maximum(0, margin - a)),
                                               reduction))
    check_grad(fn, [x])
    with pytest.raises(ValueError, match="hinge_embedding_loss: input shape"):
        F.hinge_embedding_loss(x, on_backend(np.ones(shape + (2,))))


@given(st.data(), REDUCTIONS, st.sampled_from([1, 2]), st.sampled_from([1.0, 0.4]))
def test_multi_margin_loss(data, reduction, p, margin):
    c = data.draw(st.integers(1, 4))
    batched = data.draw(st.booleans())
    n = data.draw(st.integers(1, 3))
    shape = (n, c) if batched else (c,)
    x = on_backend(jittered(data.draw(arrays(shape))), requires_grad=True)
    t = np.asarray(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    t = t if batched else t[0]
    w = data.draw(st.none() | arrays((c,), 0.2, 2.0))
    x2, t2 = x.numpy().reshape(-1, c), np.reshape(t, -1)
    h = margin - x2[np.arange(len(t2)), t2][:, None] + x2
    others = np.arange(c)[None, :] != t2[:, None]
    assume(np.all(np.abs(h[others]) > 1e-4))
    tt = on_backend(t)
    wt = None if w is None else on_backend(w)

    def fn(a):
        return F.multi_margin_loss(a, tt, p=p, margin=margin, weight=wt, reduction=reduction)

    def ref(a):
        loss = (np.maximum(h, 0) ** p * others).sum(1) / c
        loss = loss * (1 if w is None else w[t2])
        return reduce_np(loss if batched else loss[0], reduction)

    check_forward(fn, [x], ref)
    check_grad(fn, [x])


def test_multi_margin_loss_errors():
    x = on_backend(np.zeros((2, 3)))
    mm = F.multi_margin_loss
    with pytest.raises(ValueError, match="multi_margin_loss: target id 3"):
        mm(x, on_backend(np.array([0, 3])))
    with pytest.raises(ValueError, match="multi_margin_loss: p must be 1 or 2"):
        mm(x, on_backend(np.array([0, 1])), p=3)
    with pytest.raises(ValueError, match=r"multi_margin_loss: input must be \(N, C\)"):
        mm(on_backend(np.zeros((2, 3, 1))), on_backend(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        mm(x, on_backend(np.array([0, 1])), weight=on_backend(np.ones(2)))
