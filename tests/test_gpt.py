"""The GPT model: shapes, weight tying, a full float64 gradient check, the KV cache,
masks, activation checkpointing and generation."""

import numpy as np
import pytest

import minilm as ml
from minilm.nn import GPT, GPTConfig, KVCache, MultiHeadAttention
from minilm.train.generation import beam_search, filter_logits, generate


def tiny(positional="learned", dtype="float64", **kw):
    ml.manual_seed(0)
    cfg = dict(vocab_size=13, context_length=12, n_layers=2, n_heads=2, d_model=8,
               positional=positional)
    cfg.update(kw)
    m = GPT(GPTConfig(**cfg))
    return m.double() if dtype == "float64" else m


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope"])
def test_forward_shapes_and_loss_at_init_is_near_log_vocab(positional):
    m = tiny(positional, dtype="float32")
    ids = ml.randint(0, 13, (3, 10))
    logits, loss = m(ids, ids)
    assert logits.shape == (3, 10, 13) and logits.dtype == np.float32
    assert abs(loss.item() - np.log(13)) < 0.3


def test_tied_embedding_is_one_parameter_with_summed_gradient():
    m = tiny()
    assert m.head.weight is m.tok_emb.weight
    assert sum(p is m.tok_emb.weight for p in m.parameters()) == 1
    ids = ml.randint(0, 13, (2, 6))
    _, loss = m(ids, ids)
    loss.backward()
    tied_grad = m.tok_emb.weight.grad.numpy().copy()
    # same weights, untied: the tied gradient is the sum of the two untied ones
    u = tiny(tie_weights=False)
    u.load_state_dict({**m.state_dict(), "head.weight": m.tok_emb.weight.detach()})
    _, loss_u = u(ids, ids)
    np.testing.assert_allclose(loss_u.item(), loss.item(), rtol=1e-12)
    loss_u.backward()
    np.testing.assert_allclose(
        tied_grad, u.tok_emb.weight.grad.numpy() + u.head.weight.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_whole_gpt_gradcheck_float64(positional):
    """Central differences on sampled entries of every parameter of a small GPT."""
    m = tiny(positional, dropout=0.0)
    ids = ml.randint(0, 13, (2, 5))
    _, loss = m(ids, ids)
    loss.backward()
    rng = np.random.default_rng(0)
    eps = 1e-6
    checked = 0
    for name, p in m.named_parameters():
        flat = p.data.reshape(-1)
        for k in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            old = flat[k]
            with ml.no_grad():
                flat[k] = old + eps
                lp = m(ids, ids)[1].item()
                flat[k] = old - eps
                lm = m(ids, ids)[1].item()
                flat[k] = old
            numeric = (lp - lm) / (2 * eps)
            analytic = p.grad.data.reshape(-1)[k]
            assert abs(analytic - numeric) <= 1e-7 + 1e-5 * abs(numeric), (name, k)
            checked += 1
    assert checked > 40


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope"])
def test_kv_cache_decoding_equals_full_forward(positional):
    m = tiny(positional).eval()
    ids = ml.randint(0, 13, (2, 9))
    full = m(ids).numpy()
    cache = KVCache()
    parts = [m(ids[:, :4], cache=cache).numpy()]
    for t in range(4, 9):
        parts.append(m(ids[:, t:t + 1], cache=cache).numpy())
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-10, atol=1e-12)


def test_local_window_attention_ignores_tokens_outside_the_window():
    m = tiny(window=3, n_layers=1).eval()
    a = ml.randint(0, 13, (1, 10))
    b = a.numpy().copy()
    b[0, 0] = (b[0, 0] + 1) % 13  # changes position 0 only
    la, lb = m(a).numpy(), m(ml.tensor(b)).numpy()
    np.testing.assert_allclose(la[0, 3:], lb[0, 3:], rtol=1e-12)  # positions >= 3 cannot see 0
    assert not np.allclose(la[0, :3], lb[0, :3])
    # and the cache path agrees with the full one under the window too
    cache = KVCache()
    parts = [m(a[:, :2], cache=cache).numpy()] + [m(a[:, t:t + 1], cache=cache).numpy()
                                                  for t in range(2, 10)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), la, rtol=1e-10, atol=1e-12)


def test_padding_mask_hides_padded_keys():
    ml.manual_seed(0)
    attn = MultiHeadAttention(8, 2, causal=False).double()
    x = ml.randn(2, 5, 8, dtype="float64")
    pad = np.zeros((2, 5), dtype=bool)
    pad[0, 3:] = True  # row 0 has 3 real tokens
    y = attn(x, key_padding_mask=pad).numpy()
    x2 = x.numpy().copy()
    x2[0, 3:] = 100.0  # whatever sits in the padding must not matter
    y2 = attn(ml.tensor(x2), key_padding_mask=pad).numpy()
    np.testing.assert_allclose(y[0, :3], y2[0, :3], rtol=1e-12)
    np.testing.assert_allclose(y[1], y2[1], rtol=1e-12)


def test_activation_checkpointing_gives_identical_gradients_with_dropout():
    grads = []
    for ckpt in (False, True):
        m = tiny(dropout=0.2, checkpoint_activations=ckpt)
        ids = ml.randint(0, 13, (2, 7))
        ml.manual_seed(5)
        _, loss = m(ids, ids)
        loss.backward()
        grads.append({n: p.grad.numpy().copy() for n, p in m.named_parameters()})
    for n in grads[0]:
        np.testing.assert_allclose(grads[1][n], grads[0][n], rtol=1e-10, atol=1e-14, err_msg=n)


def test_context_length_and_config_errors():
    m = tiny()
    with pytest.raises(ValueError, match="exceeds the context length 12"):
        m(ml.randint(0, 13, (1, 13)))
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        GPTConfig(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="positional must be"):
        GPTConfig(positional="alibi")


def test_greedy_generation_same_with_and_without_cache_and_top_k_1():
    m = tiny(dtype="float32")
    prompt = [1, 2, 3]
    a = generate(m, prompt, 15, temperature=0)  # runs past the context (12): crop path
    b = generate(m, prompt, 15, temperature=0, use_cache=False)
    c = generate(m, prompt, 15, temperature=1.0, top_k=1, seed=3)
    assert a.shape == (1, 18)
    np.testing.assert_array_equal(a[:, :12], b[:, :12])  # identical until the window slides
    np.testing.assert_array_equal(a, c)


def test_sampling_is_seeded_and_respects_top_p():
    m = tiny(dtype="float32")
    a = generate(m, [[1, 2], [3, 4]], 6, temperature=1.0, seed=7)
    b = generate(m, [[1, 2], [3, 4]], 6, temperature=1.0, seed=7)
    np.testing.assert_array_equal(a, b)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(filter_logits(logits, top_p=0.75))
    np.testing.assert_array_equal(kept, [[True, True, False, False]])
    kept = np.isfinite(filter_logits(logits, top_k=3))
    np.testing.assert_array_equal(kept, [[True, True, True, False]])


def test_beam_search_width_one_is_greedy_and_wider_beams_score_at_least_as_well():
    m = tiny(dtype="float64")
    prompt = np.array([1, 2, 3])
    greedy = generate(m, prompt, 5, temperature=0)[0]
    (seq1, _), = beam_search(m, prompt, 5, beam_width=1)
    np.testing.assert_array_equal(seq1, greedy)

    def logprob(seq):
        logits = m(ml.tensor(seq[None, :-1])).numpy()[0]
        z = logits - logits.max(-1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return sum(lp[t - 1, seq[t]] for t in range(3, len(seq)))

    best, _ = beam_search(m, prompt, 5, beam_width=4, length_penalty=0.0)[0]
    assert logprob(best) >= logprob(greedy) - 1e-12


def test_generation_input_errors():
    m = tiny(dtype="float32")
    with pytest.raises(ValueError, match="longer than the model's context length 12"):
        generate(m, list(range(13)), 2)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 13\)"):
        generate(m, [1, 99], 2)
