"""nn/decode.py: one decoding step on raw arrays equals GPT.forward with a KVCache.

- logits and the cache's keys and values of every step, for learned / sinusoidal /
  RoPE positions, LayerNorm / RMSNorm, exact / tanh GELU, a local window, no biases,
  untied head, batch 1 and 3: float64 to 1e-11, float32 to 1e-5, on both CPU backends;
- generate() (which uses it) decodes the same ids as the uncached forward, greedy, and
  ``last_only`` logits equal the last row of the full logits;
- it is used only where it applies (plain GPT in eval mode) and refuses a full cache.
"""

from __future__ import annotations

import numpy as np
import pytest

import minilm as ml
from minilm.nn import GPT, GPTConfig
from minilm.nn.attention import KVCache
from minilm.nn.decode import decode_step, supports_fast_decode
from minilm.tensor import Tensor
from minilm.train.generation import generate

VARIANTS = [
    dict(),
    dict(positional="sinusoidal", norm="rmsnorm", activation="gelu_tanh"),
    dict(positional="rope", window=3),
    dict(bias=False, tie_weights=False, positional="rope", norm="rmsnorm"),
]


def _model(dtype, **kw):
    ml.manual_seed(0)
    cfg = dict(vocab_size=29, context_length=12, n_layers=2, n_heads=2, d_model=16)
    cfg.update(kw)
    m = GPT(GPTConfig(**cfg)).to(np.dtype(dtype)).eval()
    rng = np.random.default_rng(1)  # biases and norms away from their 0 / 1 init
    for p in m.parameters():
        p.data[...] += p.backend.asarray(0.1 * rng.standard_normal(p.shape), p.data.dtype)
    return m


@pytest.mark.parametrize("variant", VARIANTS, ids=["learned", "sinus-rms-tanh",
                                                   "rope-window", "nobias-untied-rope"])
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-11), ("float32", 1e-5)])
@pytest.mark.parametrize("batch", [1, 3])
def test_decode_step_equals_the_forward_with_a_cache(backend, variant, dtype, tol, batch):
    if backend.xp is not np:
        pytest.skip("decode_step is the fast path on NumPy arrays, CPU-only by design: "
                    "supports_fast_decode refuses a model on a device backend, whose "
                    "steps take the general KV-cache path (checked below by generate)")
    m = _model(dtype, **variant)
    rng = np.random.default_rng(2)
    prompt = rng.integers(0, 29, (batch, 4))
    ref, fast = KVCache(), KVCache()
    with ml.no_grad():
        m(Tensor(prompt), cache=ref)
        m(Tensor(prompt), cache=fast)
        for _ in range(8):  # up to the context length (12)
            nxt = rng.integers(0, 29, batch)
            want = m(Tensor(nxt[:, None]), cache=ref).numpy()[:, -1]
            got = decode_step(m, nxt, fast)
            assert got.shape == (batch, 29) and got.dtype == np.dtype(dtype)
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
            assert fast.length == ref.length
            for i in ref.layers:
                for a, b in zip(fast.layers[i], ref.layers[i]):
                    np.testing.assert_allclose(a[:, :, :ref.length], b[:, :, :ref.length],
                                               rtol=tol, atol=tol)
        with pytest.raises(ValueError, match="past the context length 12"):
            decode_step(m, nxt, fast)


def test_generate_with_the_fast_step_decodes_like_the_uncached_forward(backend):
    m = _model("float64", positional="rope")
    assert supports_fast_decode(m) == (backend.xp is np)  # device: the general cache path
    prompt = np.random.default_rng(3).integers(0, 29, (2, 3))
    cached = generate(m, prompt, 9, temperature=0.0)
    plain = generate(m, prompt, 9, temperature=0.0, use_cache=False)
    np.testing.assert_array_equal(cached, plain)
    with ml.no_grad():
        full = m(Tensor(prompt, backend=backend)).numpy()
        last = m(Tensor(prompt, backend=backend), last_only=True).numpy()
    assert last.shape == (2, 1, 29)
    np.testing.assert_allclose(last[:, 0], full[:, -1], rtol=1e-12)


def test_used_only_where_it_applies():
    m = _model("float32")
    assert supports_fast_decode(m)
    m.train()
    assert not supports_fast_decode(m)

    class Wrapped(GPT):
        pass

    w = Wrapped(m.config).eval()
    assert not supports_fast_decode(w)


def test_not_used_for_swapped_layers_or_hooked_models():
    m = _model("float32")
    handle = m.blocks[0].mlp.register_forward_hook(lambda *a: None)
    assert not supports_fast_decode(m)  # a hook must see every forward
    handle.remove()
    assert supports_fast_decode(m)

    class NotALinear(type(m.blocks[0].mlp.fc)):
        pass

    m.blocks[1].mlp.fc.__class__ = NotALinear  # e.g. a quantized or low-rank Linear
    assert not supports_fast_decode(m)


def test_beam_search_with_the_fast_step_equals_the_general_path(monkeypatch):
    import minilm.train.generation as gen

    m = _model("float64", positional="rope", window=4)
    prompt = np.random.default_rng(7).integers(0, 29, 3)
    fast = gen.beam_search(m, prompt, 10, beam_width=3)  # crosses the context (12): rebuild
    monkeypatch.setattr(gen, "supports_fast_decode", lambda model: False)
    slow = gen.beam_search(m, prompt, 10, beam_width=3)
    assert len(fast) == len(slow) == 3
    for (a, sa), (b, sb) in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
        assert sa == pytest.approx(sb, rel=1e-10)
