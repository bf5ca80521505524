"""conv1d, max/avg pooling, global (masked) pooling over time, and the nn.Conv1d /
MaxPool1d / AvgPool1d modules: forward against direct NumPy loops, float64 gradcheck
over Hypothesis-drawn geometries, bad shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import NO_BROADCAST, arrays, check_op, examples, on_backend, views

import minilm
import minilm.functional as F
import minilm.nn as nn
from minilm import Tensor

pytestmark = pytest.mark.usefixtures("backend")


# ---------------------------------------------------------------------------- references


def np_conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """y[b, o, t] = bias[o] + sum_{c,k} w[o, c, k] x_pad[b, g C_g + c, t s + k d], looped."""
    B, C_in, L = x.shape
    C_out, C_g, K = w.shape
    if padding == "same":
        total = dilation * (K - 1)
        left, right = total // 2, total - total // 2
    else:
        left = right = padding
    xp = np.zeros((B, C_in, L + left + right))
    xp[:, :, left:left + L] = x
    L_out = (L + left + right - dilation * (K - 1) - 1) // stride + 1
    y = np.zeros((B, C_out, L_out))
    per_group = C_out // groups
    for bb in range(B):
        for o in range(C_out):
            g = o // per_group
            for t in range(L_out):
                acc = 0.0 if b is None else b[o]
                for c in range(C_g):
                    for k in range(K):
                        acc += w[o, c, k] * xp[bb, g * C_g + c, t * stride + k * dilation]
                y[bb, o, t] = acc
    return y


def np_pool1d(x, k, s, p, kind, count_include_pad=True):
    L = x.shape[-1]
    fill = -np.inf if kind == "max" else 0.0
    xp = np.full(x.shape[:-1] + (L + 2 * p,), fill)
    xp[..., p:p + L] = x
    L_out = (L + 2 * p - k) // s + 1
    out = np.zeros(x.shape[:-1] + (L_out,))
    for t in range(L_out):
        win = xp[..., t * s:t * s + k]
        if kind == "max":
            out[..., t] = win.max(axis=-1)
        else:
            n = k if count_include_pad else min(t * s + k, p + L) - max(t * s, p)
            out[..., t] = win.sum(axis=-1) / n
    return out


@st.composite
def conv_cases(draw):
    """(x, w, b, stride, padding, dilation, groups) with a valid geometry, small enough
    for an element-by-element gradcheck."""
    groups = draw(st.integers(1, 2))
    C_g = draw(st.integers(1, 2))
    O_g = draw(st.integers(1, 2))
    K = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, 2) | st.just("same")) if stride == 1 else draw(st.integers(0, 2))
    span = dilation * (K - 1) + 1
    L = draw(st.integers(max(1, span - (0 if padding == "same" else 2 * padding)), 6))
    B = draw(st.integers(1, 2))
    x = draw(views(draw(arrays((B, C_g * groups, L))), NO_BROADCAST))
    w = draw(arrays((O_g * groups, C_g, K)))
    b = draw(st.none() | arrays((O_g * groups,)))
    return x, w, b, stride, padding, dilation, groups


# ---------------------------------------------------------------------------- conv1d


def test_output_length_formula():
    for L, K, s, p, d in [(10, 3, 1, 0, 1), (10, 3, 2, 1, 2), (7, 1, 3, 0, 1), (5, 5, 1, 2, 1)]:
        y = F.conv1d(on_backend(np.zeros((1, 1, L))), on_backend(np.zeros((1, 1, K))), stride=s,
                     padding=p, dilation=d)
        assert y.shape[-1] == F.conv1d_output_length(L, K, s, p, d) \
            == math.floor((L + 2 * p - d * (K - 1) - 1) / s) + 1


@given(st.data())
@examples(0.5)
def test_conv1d_matches_loop_and_gradcheck(data):
    x, w, b, stride, padding, dilation, groups = data.draw(conv_cases())
    be = minilm.current_backend()
    tx = Tensor(x, requires_grad=True, backend=be)
    tw = Tensor(w, requires_grad=True, backend=be)
    inputs = [tx, tw] + ([] if b is None else [Tensor(b, requires_grad=True, backend=be)])

    def fn(*a):
        return F.conv1d(a[0], a[1], a[2] if len(a) > 2 else None, stride, padding, dilation,
                        groups)

    def ref(*a):
        return np_conv1d(a[0], a[1], a[2] if len(a) > 2 else None, stride, padding, dilation,
                         groups)

    check_op(fn, inputs, ref)


def test_conv1d_same_keeps_length_even_kernel():
    x = np.random.default_rng(0).standard_normal((2, 3, 7))
    w = np.random.default_rng(1).standard_normal((4, 3, 4))
    y = F.conv1d(on_backend(x), on_backend(w), padding="same", dilation=2)
    assert y.shape == (2, 4, 7)
    np.testing.assert_allclose(y.numpy(), np_conv1d(x, w, padding="same", dilation=2),
                               rtol=1e-12, atol=1e-12)


def test_conv1d_unbatched():
    x = np.random.default_rng(0).standard_normal((3, 6))
    w = np.random.default_rng(1).standard_normal((2, 3, 2))
    y = F.conv1d(on_backend(x), on_backend(w), stride=2)
    np.testing.assert_allclose(y.numpy(), np_conv1d(x[None], w, stride=2)[0], rtol=1e-12)


@pytest.mark.parametrize("xs, ws, kw, words", [
    ((1, 3, 5, 1), (4, 3, 2), {}, ["(1, 3, 5, 1)"]),                      # input 4-D
    ((1, 3, 5), (4, 3), {}, ["(4, 3)"]),                                  # weight not 3-D
    ((1, 3, 5), (4, 2, 2), {}, ["(1, 3, 5)", "(4, 2, 2)"]),               # channel mismatch
    ((1, 4, 5), (3, 2, 2), {"groups": 2}, ["divisible", "groups 2"]),     # C_out % groups
    ((1, 3, 2), (4, 3, 3), {}, ["(1, 3, 2)", "(4, 3, 3)"]),               # too short
    ((1, 3, 5), (4, 3, 2), {"stride": 0}, ["stride"]),
    ((1, 3, 5), (4, 3, 2), {"padding": -1}, ["padding"]),
    ((1, 3, 5), (4, 3, 2), {"padding": "same", "stride": 2}, ["same", "stride 2"]),
])
def test_conv1d_bad_shapes(xs, ws, kw, words):
    with pytest.raises(ValueError) as e:
        F.conv1d(on_backend(np.zeros(xs)), on_backend(np.zeros(ws)), **kw)
    assert "conv1d" in str(e.value)
    for word in words:
        assert word in str(e.value)


def test_conv1d_bad_bias_and_dtype():
    x, w = on_backend(np.zeros((1, 3, 5))), on_backend(np.zeros((4, 3, 2)))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        F.conv1d(x, w, on_backend(np.zeros(3)))
    with pytest.raises(TypeError, match="float32"):
        F.conv1d(x, on_backend(np.zeros((4, 3, 2), np.float32)))


# ---------------------------------------------------------------------------- pooling


@st.composite
def pool_cases(draw):
    k = draw(st.integers(1, 3))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, k // 2))
    L = draw(st.integers(max(1, k - 2 * p), 7))
    shape = draw(st.sampled_from([(1, 2), (2, 1), (2, 2)])) + (L,)
    # distinct values, so that the max has no ties (a kink) within gradcheck's eps
    flat = draw(st.permutations(list(range(math.prod(shape)))))
    x = (np.array(flat, dtype=np.float64).reshape(shape) - len(flat) / 2) * 0.37
    return draw(views(x, NO_BROADCAST)), k, s, p


@given(st.data())
@examples(0.5)
def test_max_pool1d(data):
    x, k, s, p = data.draw(pool_cases())
    tx = Tensor(x, requires_grad=True, backend=minilm.current_backend())
    check_op(lambda a: F.max_pool1d(a, k, s, p), [tx], lambda a: np_pool1d(a, k, s, p, "max"))


@given(st.data(), st.booleans())
@examples(0.5)
def test_avg_pool1d(data, include):
    x, k, s, p = data.draw(pool_cases())
    tx = Tensor(x, requires_grad=True, backend=minilm.current_backend())
    check_op(lambda a: F.avg_pool1d(a, k, s, p, include), [tx],
             lambda a: np_pool1d(a, k, s, p, "avg", include))


def test_pool_default_stride_and_unbatched():
    x = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(F.max_pool1d(on_backend(x), 2).numpy(), x[:, 1::2])
    np.testing.assert_array_equal(F.avg_pool1d(on_backend(x), 3).numpy(),
                                  x.reshape(2, 2, 3).mean(-1))


def test_max_pool_gradient_goes_to_first_max():
    x = on_backend(np.array([[[1.0, 3.0, 3.0, 0.0]]]), requires_grad=True)
    F.max_pool1d(x, 3, 1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[[0.0, 2.0, 0.0, 0.0]]])


def test_pool_bad_arguments():
    x = on_backend(np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="max_pool1d: padding 2 must be at most half"):
        F.max_pool1d(x, 3, padding=2)
    with pytest.raises(ValueError, match=r"avg_pool1d: input shape \(1, 2, 4\)"):
        F.avg_pool1d(x, 5)
    with pytest.raises(ValueError, match="kernel_size"):
        F.max_pool1d(x, 0)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        F.max_pool1d(on_backend(np.zeros(4)), 2)


# ---------------------------------------------------------------------------- global pooling


def _masked_case(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 2, 5))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 1, 1, 0, 1]], dtype=bool)
    return x, mask


def test_global_max_pool_masked():
    x, mask = _masked_case()
    x[1, :, 3] = 100.0  # padding holds the largest value: it must not win
    tx = Tensor(x, requires_grad=True, backend=minilm.current_backend())
    want = np.stack([x[b][:, mask[b]].max(axis=-1) for b in range(3)])
    check_op(lambda a: F.global_max_pool1d(a, mask), [tx], lambda a: want, f32=False)
    F.global_max_pool1d(tx, mask).sum().backward()
    assert (tx.grad.numpy()[~np.broadcast_to(mask[:, None], x.shape)] == 0).all()
    np.testing.assert_allclose(F.global_max_pool1d(on_backend(x)).numpy(), x.max(-1))


def test_global_avg_pool_masked():
    x, mask = _masked_case(1)
    x[1, :, 3] = 1e6
    tx = Tensor(x, requires_grad=True, backend=minilm.current_backend())
    want = np.stack([x[b][:, mask[b]].mean(axis=-1) for b in range(3)])
    check_op(lambda a: F.global_avg_pool1d(a, mask), [tx], lambda a: want, f32=False)
    np.testing.assert_allclose(F.global_avg_pool1d(on_backend(x)).numpy(), x.mean(-1))


def test_global_pool_bad_mask():
    x = on_backend(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"mask must be bool of shape \(B, L\) = \(2, 4\)"):
        F.global_max_pool1d(x, np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"no real position in rows \[1\]"):
        F.global_avg_pool1d(x, np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool))


# ---------------------------------------------------------------------------- modules


def test_conv1d_module_shapes_and_init():
    m = nn.Conv1d(6, 8, 5, stride=2, padding=1, groups=2)
    assert m.weight.shape == (8, 3, 5) and m.bias.shape == (8,)
    bound = 1 / math.sqrt(3 * 5)  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), ..)
    assert np.abs(m.weight.numpy()).max() <= bound and np.abs(m.bias.numpy()).max() <= bound
    assert np.abs(m.weight.numpy()).max() > 0.8 * bound
    assert sorted(dict(m.named_parameters())) == ["bias", "weight"]
    y = m(on_backend(np.random.default_rng(0).standard_normal((4, 6, 11)).astype(np.float32)))
    assert y.shape == (4, 8, F.conv1d_output_length(11, 5, 2, 1)) and y.dtype == np.float32
    assert nn.Conv1d(2, 2, 3, bias=False).bias is None
    with pytest.raises(ValueError, match="groups"):
        nn.Conv1d(3, 4, 2, groups=2)


def test_pool_modules():
    x = on_backend(np.random.default_rng(0).standard_normal((2, 3, 8)))
    np.testing.assert_array_equal(nn.MaxPool1d(2)(x).numpy(), F.max_pool1d(x, 2).numpy())
    np.testing.assert_array_equal(nn.AvgPool1d(3, 1, 1)(x).numpy(),
                                  F.avg_pool1d(x, 3, 1, 1).numpy())
