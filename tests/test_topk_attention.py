"""Top-k (hard) attention: MultiHeadAttention(top_k=k) / GPTConfig.attn_top_k.

Each query keeps its k largest allowed scores (after the causal / padding / window mask),
the others get -inf before the softmax; ties at the k-th value all kept; k >= the number
of allowed keys is ordinary attention. The fused causal kernels and the fast decoding
step must agree with (or stay out of) the masked path.
"""

import numpy as np
import pytest
from strategies import check_cached_decoding

import minilm as ml
from minilm import Tensor
from minilm import functional as F
from minilm.finite_diff import gradcheck_module
from minilm.nn import GPT, GPTConfig
from minilm.nn.attention import MultiHeadAttention


def _mha(top_k, d=8, h=2, **kw):
    ml.manual_seed(0)
    m = MultiHeadAttention(d, h, top_k=top_k, **kw).to(np.dtype("float64")).eval()
    return m


def _weights(m, x, monkeypatch, key_padding_mask=None):
    """The attention probabilities (B, H, T, S) the module uses: every call of
    scaled_dot_product_attention is run once more with the identity as the values."""
    captured = {}
    orig = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, **kw):
        S = k.shape[-2]
        eye = Tensor(np.broadcast_to(np.eye(S), k.shape[:-1] + (S,)).copy())
        captured["p"] = orig(q, k, eye, attn_mask=attn_mask, **kw).numpy()
        return orig(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa)
    with ml.no_grad():
        m(x, key_padding_mask=key_padding_mask)
    return captured["p"]


def test_top_k_at_least_the_length_is_ordinary_attention():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 6, 8)))
    with ml.no_grad():
        ref = _mha(None)(x).numpy()
        for k in (6, 7, 50):
            np.testing.assert_allclose(_mha(k)(x).numpy(), ref, rtol=1e-12, atol=1e-13)
        assert not np.allclose(_mha(2)(x).numpy(), ref)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_each_query_keeps_min_k_allowed_keys(k, monkeypatch):
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 7, 8)))
    pad = np.zeros((2, 7), dtype=bool)
    pad[1, :2] = True  # row 1: the first two keys are padding
    m = _mha(k)
    p = _weights(m, x, monkeypatch, key_padding_mask=pad)  # (B, H, T, S)
    nonzero = (p > 0).sum(-1)
    allowed = np.tril(np.ones((7, 7), dtype=bool))[None] & ~pad[:, None, :]  # (B, T, S)
    want = np.minimum(k, allowed.sum(-1))  # (B, T)
    for h in range(2):
        np.testing.assert_array_equal(nonzero[:, h], want)
    assert not (p[np.broadcast_to(~allowed[:, None], p.shape)] > 0).any()
    np.testing.assert_allclose(p.sum(-1)[want[:, None].repeat(2, 1) > 0], 1.0, rtol=1e-12)


def test_ties_at_the_kth_score_are_all_kept():
    m = _mha(1, d=2, h=1)
    q = Tensor(np.ones((1, 1, 1, 2)))
    k = Tensor(np.array([[[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]]]))  # scores 1, 1, 0
    keep = m._top_k_mask(q, k, None, False).data
    np.testing.assert_array_equal(keep[0, 0, 0], [True, True, False])


def test_fused_paths_are_not_taken(backend):
    T = 600  # >= the Numba backend's flash_min_len (1 or 512)
    x = Tensor(np.random.default_rng(3).standard_normal((1, T, 8)), backend=backend)
    plain, topk = _mha(None), _mha(T)  # k >= T: the same numbers, never the fused kernel
    qkv = topk.qkv(x)
    assert topk._fused_causal(qkv, None, None) is False
    if backend.flash_min_len is not None and T >= backend.flash_min_len:
        assert plain._fused_causal(qkv, None, None) is True
    with ml.no_grad():
        np.testing.assert_allclose(topk(x).numpy(), plain(x).numpy(), rtol=1e-9, atol=1e-11)


def test_bad_top_k_is_refused():
    with pytest.raises(ValueError, match="top_k"):
        MultiHeadAttention(8, 2, top_k=0)
    with pytest.raises(ValueError, match="attn_top_k"):
        GPTConfig(attn_top_k=0)
    with pytest.raises(TypeError, match="attn_top_k"):
        GPTConfig(attn_top_k=2.5)
    assert GPTConfig(attn_top_k=None).attn_top_k is None


def _gpt(**kw):
    ml.manual_seed(0)
    cfg = dict(vocab_size=13, context_length=10, n_layers=2, n_heads=2, d_model=8)
    cfg.update(kw)
    m = GPT(GPTConfig(**cfg)).to(np.dtype("float64")).eval()
    rng = np.random.default_rng(1)
    for p in m.parameters():
        p.data[...] += 0.3 * rng.standard_normal(p.shape)
    return m


def test_gradcheck_tiny_gpt_with_top_k():
    m = _gpt(attn_top_k=2, n_layers=1, d_model=4, vocab_size=5, context_length=4)
    ids = Tensor(np.array([[1, 3, 0, 2]]))
    tgt = Tensor(np.array([[3, 0, 2, 4]]))
    assert gradcheck_module(m, lambda: m(ids, tgt)[1], [], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kw", [dict(), dict(positional="rope"), dict(window=4)])
def test_cache_decoding_equals_the_full_forward(kw):
    m = _gpt(attn_top_k=3, **kw)
    check_cached_decoding(m, seed=2)
