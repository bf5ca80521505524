"""Fused causal attention (backends/_numba_attention_kernels.py, the causal_attention
kernels of functional/attention.py) against the references, on Hypothesis shapes:

- the reference causal_attention equals the general attention kernel with a causal
  mask (out), and its backward equals attention_backward's dQ, dK, dV;
- the Numba flash kernels equal the reference forward (out, lse) and backward, float64
  to 1e-12 and float32 to 1e-5, for T from 1 to past several 64-row blocks (odd T,
  T = 1, T not a multiple of the block), one or two leading dims;
- scaled_dot_product_attention(is_causal=True) through the fused path equals the
  unfused path in value and gradient, gradchecks in float64, and is not taken with a
  mask, dropout or different q / k shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minilm as ml
from minilm import functional as F
from minilm.backends import _numba_attention as nba
from minilm.backends import get_backend
from minilm.backends import numba_backend as nbb
from minilm.finite_diff import gradcheck
from minilm.functional.attention import CausalAttentionFunction
from minilm.tensor import Tensor

pytestmark = pytest.mark.skipif(not nba.FLASH_AVAILABLE,
                                reason="no cblas_?gemm found in NumPy's BLAS library")

shapes = st.tuples(
    st.lists(st.integers(1, 3), min_size=1, max_size=2),  # leading (batch, heads) dims
    st.sampled_from([1, 2, 5, 17, 63, 64, 65, 130]),      # T: around the 64-row blocks
    st.integers(1, 9),                                     # E
)


def _arrays(lead, T, E, dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((*lead, T, E)).astype(dtype) for _ in range(4)]


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_reference_equals_the_masked_general_kernel(shape, seed):
    be = get_backend("numpy")
    lead, T, E = shape
    q, k, v, g = _arrays(lead, T, E, np.float64, seed)
    scale = 1.0 / np.sqrt(E)
    out, lse = be.causal_attention(q, k, v, scale)
    keep = np.tril(np.ones((T, T), dtype=bool))
    ref, p, _ = be.attention(q, k, v, keep, None, scale)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert lse.shape == q.shape[:-1] and lse.dtype == np.float64
    got = be.causal_attention_backward(g, q, k, v, out, lse, scale)
    want = be.attention_backward(g, q, k, v, p, None, scale)[:3]
    for a, b, name in zip(got, want, "qkv"):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"d{name}")


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_flash_kernels_equal_the_reference(shape, seed, dtype):
    ref, nb = get_backend("numpy"), get_backend("numba")
    lead, T, E = shape
    q, k, v, g = _arrays(lead, T, E, dtype, seed)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    scale = 1.0 / np.sqrt(E)
    out, lse = nb.causal_attention(q, k, v, scale)
    r_out, r_lse = ref.causal_attention(q, k, v, scale)
    assert out.dtype == dtype and out.shape == q.shape
    np.testing.assert_allclose(out, r_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(lse, r_lse, rtol=tol, atol=tol)
    got = nb.causal_attention_backward(g, q, k, v, out, lse, scale)
    want = ref.causal_attention_backward(g, q, k, v, r_out, r_lse, scale)
    for a, b, name in zip(got, want, "qkv"):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=10 * tol, atol=10 * tol, err_msg=f"d{name}")


def _sdpa(q, k, v, g, **kw):
    qt, kt, vt = (Tensor(a, requires_grad=True) for a in (q, k, v))
    y = F.scaled_dot_product_attention(qt, kt, vt, **kw)
    y.backward(Tensor(g))
    return y, [t.grad.numpy() for t in (qt, kt, vt)]


def test_sdpa_takes_the_fused_path_and_matches_the_unfused_one(monkeypatch):
    ml.use_backend("numba")
    q, k, v, g = _arrays((2, 3), 520, 4, np.float64, 0)  # long enough at any thread count
    calls = []
    real = CausalAttentionFunction.forward
    monkeypatch.setattr(CausalAttentionFunction, "forward",
                        staticmethod(lambda ctx, *a, **kw: calls.append(1) or real(ctx, *a, **kw)))
    fused, g_fused = _sdpa(q, k, v, g, is_causal=True)
    assert calls == [1]
    monkeypatch.setattr(nbb.NumbaBackend, "flash_min_len", None)
    plain, g_plain = _sdpa(q, k, v, g, is_causal=True)
    assert calls == [1]  # the unfused path this time
    np.testing.assert_allclose(fused.numpy(), plain.numpy(), rtol=1e-12, atol=1e-12)
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_sdpa_fused_path_gradchecks_and_is_only_taken_where_it_applies(monkeypatch):
    ml.use_backend("numba")
    monkeypatch.setattr(nbb.NumbaBackend, "flash_min_len", 1)  # short T, any thread count
    q, k, v, _ = _arrays((2,), 7, 3, np.float64, 1)
    ts = [Tensor(a, requires_grad=True) for a in (q, k, v)]
    assert gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
                     ts)
    calls = []
    real = CausalAttentionFunction.forward
    monkeypatch.setattr(CausalAttentionFunction, "forward",
                        staticmethod(lambda ctx, *a, **kw: calls.append(1) or real(ctx, *a, **kw)))
    a, b, c = (Tensor(x) for x in (q, k, v))
    F.scaled_dot_product_attention(a, b, c, is_causal=True, dropout_p=0.1)
    F.scaled_dot_product_attention(a, b, c, attn_mask=np.tril(np.ones((7, 7), bool)))
    F.scaled_dot_product_attention(a, Tensor(k[:, :5]), Tensor(v[:, :5]), is_causal=True)
    F.scaled_dot_product_attention(a, b, c)
    assert calls == []
    F.scaled_dot_product_attention(a, b, c, is_causal=True)
    assert calls == [1]


qkv_shapes = st.tuples(st.integers(1, 2), st.sampled_from([1, 3, 64, 65, 130]),
                       st.integers(1, 3), st.integers(1, 6))  # B, T, H, E


@settings(max_examples=20, deadline=None)
@given(shape=qkv_shapes, seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_qkv_kernels_equal_split_heads_then_attention(shape, seed, dtype):
    ref, nb = get_backend("numpy"), get_backend("numba")
    B, T, H, E = shape
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((B, T, 3 * H * E)).astype(dtype)
    g = rng.standard_normal((B, T, H * E)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    scale = 1.0 / np.sqrt(E)
    # the reference against splitting the heads by hand and the general kernel
    q, k, v = (qkv.reshape(B, T, 3, H, E)[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    keep = np.tril(np.ones((T, T), dtype=bool))
    want, p, _ = ref.attention(q, k, v, keep, None, scale)
    out, lse = ref.causal_attention_qkv(qkv, H, scale)
    np.testing.assert_allclose(out, want.transpose(0, 2, 1, 3).reshape(B, T, H * E),
                               rtol=tol, atol=tol)
    dq, dk, dv, _ = ref.attention_backward(g.reshape(B, T, H, E).transpose(0, 2, 1, 3), q, k,
                                           v, p, None, scale)
    d_ref = ref.causal_attention_qkv_backward(g, qkv, out, lse, H, scale)
    d_want = np.stack([a.transpose(0, 2, 1, 3) for a in (dq, dk, dv)], axis=2)
    np.testing.assert_allclose(d_ref, d_want.reshape(qkv.shape), rtol=10 * tol, atol=10 * tol)
    # the Numba kernels, reading the heads in place, against the reference
    n_out, n_lse = nb.causal_attention_qkv(qkv, H, scale)
    np.testing.assert_allclose(n_out, out, rtol=tol, atol=tol)
    np.testing.assert_allclose(n_lse, lse, rtol=tol, atol=tol)
    d = nb.causal_attention_qkv_backward(g, qkv, n_out, n_lse, H, scale)
    assert d.shape == qkv.shape and d.dtype == dtype
    np.testing.assert_allclose(d, d_ref, rtol=10 * tol, atol=10 * tol)


def test_attention_layer_fused_equals_unfused_and_gradchecks(monkeypatch):
    from minilm.nn.attention import MultiHeadAttention

    ml.use_backend("numba")
    ml.manual_seed(0)
    mha = MultiHeadAttention(12, 3).double()
    x = np.random.default_rng(4).standard_normal((2, 9, 12))
    g = np.random.default_rng(5).standard_normal((2, 9, 12))

    def run():
        for p in mha.parameters():
            p.grad = None
        xt = Tensor(x, requires_grad=True)
        y = mha(xt)
        y.backward(Tensor(g))
        return y.numpy(), [xt.grad.numpy()] + [p.grad.numpy() for p in mha.parameters()]

    monkeypatch.setattr(nbb.NumbaBackend, "flash_min_len", 1)
    calls = []
    real = F.causal_qkv_attention
    monkeypatch.setattr(F, "causal_qkv_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    y_fused, g_fused = run()
    assert calls == [1]
    monkeypatch.setattr(nbb.NumbaBackend, "flash_min_len", None)
    y_plain, g_plain = run()
    assert calls == [1]
    np.testing.assert_allclose(y_fused, y_plain, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(nbb.NumbaBackend, "flash_min_len", 1)
    qkv = Tensor(np.random.default_rng(6).standard_normal((2, 5, 12)), requires_grad=True)
    assert gradcheck(lambda t: real(t, 2), [qkv])
    with pytest.raises(ValueError, match="not 3 x n_heads"):
        real(qkv, 5)
