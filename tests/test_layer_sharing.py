"""ALBERT-style cross-layer parameter sharing: GPTConfig.share_layers.

One TransformerBlock (state_dict keys ``blocks.0.*``) applied n_layers times; its
gradient is the sum over its uses; application l is KV-cache layer l.
"""

import numpy as np
import pytest
from strategies import check_cached_decoding

import minilm as ml
from minilm import Tensor
from minilm.finite_diff import gradcheck_module
from minilm.nn import GPT, GPTConfig

CFG = dict(vocab_size=13, context_length=10, n_heads=2, d_model=8)


def _gpt(dtype="float64", perturb=True, **kw):
    ml.manual_seed(0)
    cfg = dict(CFG, n_layers=3)
    cfg.update(kw)
    m = GPT(GPTConfig(**cfg)).to(np.dtype(dtype)).eval()
    if perturb:
        rng = np.random.default_rng(1)
        for p in m.parameters():
            p.data[...] += 0.3 * rng.standard_normal(p.shape)
    return m


def test_parameter_count_does_not_grow_with_depth():
    counts = [GPT(GPTConfig(**CFG, n_layers=n, share_layers=True)).num_parameters()
              for n in (1, 2, 6)]
    assert counts[0] == counts[1] == counts[2]
    one = GPT(GPTConfig(**CFG, n_layers=1))
    assert counts[0] == one.num_parameters()
    assert GPT(GPTConfig(**CFG, n_layers=6)).num_parameters() > counts[0]
    m = GPT(GPTConfig(**CFG, n_layers=6, share_layers=True))
    assert len(m.blocks) == 1 and len(m.layer_blocks()) == 6
    assert {k.split(".")[1] for k in m.state_dict() if k.startswith("blocks.")} == {"0"}


def test_shared_gradient_is_the_sum_over_uses():
    shared = _gpt(share_layers=True)
    plain = _gpt(perturb=False)
    sd = shared.state_dict()
    full = {k: v for k, v in sd.items() if not k.startswith("blocks.")}
    for i in range(3):
        for k, v in sd.items():
            if k.startswith("blocks.0."):
                full[f"blocks.{i}." + k[len("blocks.0."):]] = v.numpy().copy()
    plain.load_state_dict(full)
    rng = np.random.default_rng(2)
    ids, tgt = rng.integers(0, 13, (2, 7)), rng.integers(0, 13, (2, 7))
    _, ls = shared(Tensor(ids), Tensor(tgt))
    _, lp = plain(Tensor(ids), Tensor(tgt))
    np.testing.assert_allclose(ls.item(), lp.item(), rtol=1e-12)
    ls.backward()
    lp.backward()
    gp = {n: p.grad.numpy() for n, p in plain.named_parameters()}
    for n, p in shared.named_parameters():
        if n.startswith("blocks.0."):
            rest = n[len("blocks.0."):]
            want = sum(gp[f"blocks.{i}.{rest}"] for i in range(3))
        else:
            want = gp[n]
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(), dict(positional="rope", window=4), dict(attn_top_k=3)])
def test_cache_decoding_equals_the_full_forward(kw):
    m = _gpt(share_layers=True, **kw)
    slow = check_cached_decoding(m, seed=3)
    assert sorted(slow.layers) == [0, 1, 2]  # one cache per layer application


def test_checkpoint_round_trip_and_layout_errors(tmp_path):
    m = _gpt(share_layers=True)
    path = tmp_path / "shared.npz"
    np.savez(path, **{k: v.numpy() for k, v in m.state_dict().items()})
    back = _gpt(share_layers=True, perturb=False)
    back.load_state_dict(dict(np.load(path)))
    ids = Tensor(np.arange(8).reshape(1, 8) % 13)
    with ml.no_grad():
        np.testing.assert_array_equal(back(ids).numpy(), m(ids).numpy())
    unshared = _gpt()
    with pytest.raises(ValueError, match="share_layers=False"):
        back.load_state_dict(unshared.state_dict())
    with pytest.raises(ValueError, match="share_layers=True"):
        unshared.load_state_dict(m.state_dict())
    assert GPTConfig.from_dict(m.config.to_dict()).share_layers is True


def test_bad_share_layers_is_refused():
    with pytest.raises(TypeError, match="share_layers"):
        GPTConfig(share_layers=1)


def test_activation_checkpointing_matches():
    m = _gpt(share_layers=True)
    m.train()
    ids, tgt = Tensor(np.arange(14).reshape(2, 7) % 13), Tensor(np.arange(1, 15).reshape(2, 7) % 13)
    _, loss = m(ids, tgt)
    loss.backward()
    want = {n: p.grad.numpy().copy() for n, p in m.named_parameters()}
    m.zero_grad()
    m.config.checkpoint_activations = True
    _, loss2 = m(ids, tgt)
    loss2.backward()
    np.testing.assert_allclose(loss2.item(), loss.item(), rtol=1e-12)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), want[n], rtol=1e-10, atol=1e-12)


def test_gradcheck_tiny_shared_gpt():
    m = _gpt(share_layers=True, n_layers=2, d_model=4, vocab_size=5, context_length=4)
    ids = Tensor(np.array([[1, 3, 0, 2]]))
    tgt = Tensor(np.array([[3, 0, 2, 4]]))
    assert gradcheck_module(m, lambda: m(ids, tgt)[1], [], atol=1e-6, rtol=1e-5)
