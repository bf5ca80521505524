"""The two Functions of minilm/nn/attention.py, checked directly (not only through a
whole GPT): ``_Rotate`` (rotary position embedding) and ``_SplitHeads`` (the fused qkv
projection split into heads). Forward against an independent NumPy formula, backward by
float64 gradcheck over Hypothesis-drawn shapes, with the default tolerances."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, check_forward, check_grad, shapes, tensors

import minilm as ml
from minilm.nn import RotaryEmbedding
from minilm.nn.attention import _Rotate, _SplitHeads


def rope_reference(x, theta):
    """Rotate each pair (x_i, x_{i+h}) at position t by the angle theta[t, i]:
    (a, b) -> (a cos - b sin, a sin + b cos). x: (..., T, 2h), theta: (T, h)."""
    h = x.shape[-1] // 2
    y = np.empty_like(x)
    for i in range(h):
        c, s = np.cos(theta[:, i]), np.sin(theta[:, i])
        a, b = x[..., i], x[..., i + h]
        y[..., i] = a * c - b * s
        y[..., i + h] = a * s + b * c
    return y


@st.composite
def rope_inputs(draw):
    """x of shape (*lead, T, 2h) and per-position angles theta of shape (T, h)."""
    lead = draw(shapes(0, 2, 1, 3))
    T, h = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    x = draw(tensors(lead + (T, 2 * h)))
    theta = draw(arrays((T, h), -np.pi, np.pi))
    return x, theta


@given(rope_inputs())
def test_rotate_is_the_rotary_formula_and_its_gradient(inputs):
    x, theta = inputs
    cos = np.concatenate([np.cos(theta)] * 2, axis=-1)  # the same angle for both halves
    sin = np.concatenate([np.sin(theta)] * 2, axis=-1)
    check_forward(lambda t: _Rotate.apply(t, cos, sin), [x], lambda a: rope_reference(a, theta))
    check_grad(lambda t: _Rotate.apply(t, cos, sin), [x])


@given(st.data())
def test_rotate_gradient_with_unrelated_cos_and_sin(data):
    """The documented formula y = x * cos + rot(x) * sin, rot(x) = (-x2, x1), for any
    cos and sin arrays (each half its own values), so that a backward that mixes up
    the halves of sin or cos cannot hide behind equal halves."""
    x = data.draw(tensors(shapes(1, 3, 1, 3).map(lambda s: s[:-1] + (2 * s[-1],))))
    h = x.shape[-1] // 2
    bshape = data.draw(st.sampled_from([x.shape, x.shape[-1:], x.shape[-2:]]))
    cos, sin = data.draw(arrays(bshape)), data.draw(arrays(bshape))

    def ref(a):
        rot = np.concatenate([-a[..., h:], a[..., :h]], axis=-1)
        return a * cos + rot * sin

    check_forward(lambda t: _Rotate.apply(t, cos, sin), [x], ref)
    check_grad(lambda t: _Rotate.apply(t, cos, sin), [x])


@pytest.mark.parametrize("offset", [0, 3])
def test_rotary_embedding_module_angles_and_gradient(offset):
    """RotaryEmbedding at positions offset.. uses theta[p, i] = p * base^(-2i/d). Its
    cos/sin tables are float32 buffers, hence the 1e-6 forward tolerance; the gradient
    (cos/sin are constants) is checked in float64 as usual."""
    d, T = 6, 4
    rope = RotaryEmbedding(d, max_positions=8, base=100.0)
    x = ml.Tensor(np.random.default_rng(offset).uniform(-2, 2, (2, 3, T, d)), requires_grad=True)
    pos = np.arange(offset, offset + T, dtype=np.float64)
    theta = pos[:, None] * 100.0 ** (-np.arange(0, d, 2) / d)[None, :]
    np.testing.assert_allclose(rope(x, offset).numpy(), rope_reference(x.numpy(), theta),
                               rtol=1e-6, atol=1e-6)
    check_grad(lambda t: rope(t, offset), [x])
    with pytest.raises(ValueError, match="max_positions"):
        rope(x, 5)


def split_heads_reference(qkv, n_heads):
    """split into q, k, v along the last dim, then each (B, T, h*d) -> (B, h, T, d)."""
    B, T, three_hd = qkv.shape
    hd = three_hd // 3
    return tuple(qkv[..., i * hd:(i + 1) * hd].reshape(B, T, n_heads, hd // n_heads)
                 .transpose(0, 2, 1, 3) for i in range(3))


def _check_split_heads(qkv, n_heads):
    fn = lambda t: _SplitHeads.apply(t, n_heads=n_heads)  # noqa: E731
    check_forward(fn, [qkv], lambda a: split_heads_reference(a, n_heads), rtol=0, atol=0)
    assert all(np.shares_memory(o.data, qkv.data) for o in fn(qkv))  # views, no copy
    check_grad(fn, [qkv])


@given(st.data())
def test_split_heads_is_split_reshape_transpose_and_its_gradient(data):
    B, T, H, d = data.draw(shapes(4, 4, 1, 3))
    _check_split_heads(data.draw(tensors((B, T, 3 * H * d))), H)


def test_split_heads_with_all_sizes_different():
    """B, T, h, d all different (and > 1), so that no two axes can be confused."""
    B, T, H, d = 2, 3, 4, 5
    qkv = ml.Tensor(np.random.default_rng(0).standard_normal((B, T, 3 * H * d)),
                    requires_grad=True)
    _check_split_heads(qkv, H)
