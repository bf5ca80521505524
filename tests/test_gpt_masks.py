"""GPT with a key padding mask and activation checkpointing together: checkpointing a
block must not change what it computes, so the mask has to reach the checkpointed
blocks too (it once was dropped: ``checkpoint(block, x)`` without the mask)."""

import numpy as np
import pytest

import minilm as ml
from minilm.nn import GPT, GPTConfig, MultiHeadAttention
from minilm.parallel import Communicator
from minilm.parallel.tensor_parallel import (
    TensorParallelAttention,
    tensor_parallel_block,
    tensor_parallel_gpt,
)


@pytest.fixture(autouse=True)
def _numpy_backend():
    ml.use_backend("numpy")


def tiny(checkpoint_activations, positional="learned", dropout=0.0):
    ml.manual_seed(0)
    return GPT(GPTConfig(vocab_size=13, context_length=12, n_layers=2, n_heads=2, d_model=8,
                         positional=positional, dropout=dropout,
                         checkpoint_activations=checkpoint_activations)).double()


def batch():
    """Token ids (3, 7), the padding mask (True at padding; position 0 never padded, so
    that every causal query keeps a key) and targets with the padded positions ignored.
    Padding inside a row changes what the later, unpadded positions see: the mask
    matters for the loss, not only for the logits at padded positions."""
    ids = np.random.default_rng(1).integers(0, 13, (3, 7))
    pad = np.zeros((3, 7), dtype=bool)
    pad[0, 1:3] = True
    pad[1, 3] = True
    pad[2, 5:] = True
    targets = np.where(pad, -100, np.roll(ids, -1, axis=1))
    return ml.tensor(ids), pad, ml.tensor(targets)


def run(model, ids, pad, targets, seed=5):
    ml.manual_seed(seed)
    logits, loss = model(ids, targets, key_padding_mask=pad)
    model.zero_grad()
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    return logits.numpy(), loss.item(), grads


@pytest.mark.parametrize("positional", ["learned", "rope"])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("mask_as_tensor", [False, True])
def test_checkpointing_keeps_the_key_padding_mask(positional, dropout, mask_as_tensor):
    """checkpoint_activations on and off, same weights, same mask: outputs, loss and
    every parameter gradient equal to 1e-12 (float64)."""
    ids, pad, targets = batch()
    mask = ml.tensor(pad) if mask_as_tensor else pad
    plain, ckpt = tiny(False, positional, dropout), tiny(True, positional, dropout)
    assert ckpt.training and ckpt.config.checkpoint_activations
    a, b = run(plain, ids, mask, targets), run(ckpt, ids, mask, targets)
    np.testing.assert_allclose(b[0], a[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b[1], a[1], rtol=1e-12, atol=1e-12)
    assert a[2].keys() == b[2].keys() and len(a[2]) > 10
    for name in a[2]:
        np.testing.assert_allclose(b[2][name], a[2][name], rtol=1e-12, atol=1e-12,
                                   err_msg=name)
    # the mask matters here, for the loss too (else the comparison would prove nothing)
    ml.manual_seed(5)
    _, unmasked = plain(ids, targets)
    assert abs(unmasked.item() - a[1]) > 1e-6  # far above the 1e-12 compared


def test_checkpointed_gpt_with_padding_mask_gradcheck_float64():
    """Central differences on sampled entries of every parameter of a tiny GPT run with
    checkpoint_activations and a key padding mask; its loss is the unchecked model's."""
    ids, pad, targets = batch()
    m = tiny(True)
    _, loss = m(ids, targets, key_padding_mask=pad)
    _, ref = tiny(False)(ids, targets, key_padding_mask=pad)
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-13)
    loss.backward()
    rng = np.random.default_rng(0)
    eps, checked = 1e-6, 0

    def f():
        return m(ids, targets, key_padding_mask=pad)[1].item()

    for name, p in m.named_parameters():
        flat = p.data.reshape(-1)
        for k in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            old = flat[k]
            with ml.no_grad():
                flat[k] = old + eps
                lp = f()
                flat[k] = old - eps
                lm = f()
                flat[k] = old
            numeric = (lp - lm) / (2 * eps)
            analytic = p.grad.data.reshape(-1)[k]
            assert abs(analytic - numeric) <= 1e-8 + 1e-6 * abs(numeric), (name, k)
            checked += 1
    assert checked > 40


def test_one_rank_tensor_parallel_gpt_with_mask_and_checkpointing_equals_the_gpt():
    """The tensor-parallel GPT runs GPT.forward and MultiHeadAttention.forward (through
    the n_local_heads hook): with one rank it is the GPT, mask and checkpointing
    included."""
    ids, pad, targets = batch()
    a = run(tiny(False), ids, pad, targets)
    tp = tensor_parallel_gpt(tiny(True), Communicator(None))
    assert all(isinstance(b.attn, TensorParallelAttention) for b in tp.blocks)
    b = run(tp, ids, pad, targets)
    np.testing.assert_allclose(b[0], a[0], rtol=1e-12, atol=1e-12)
    for name in a[2]:
        np.testing.assert_allclose(b[2][name], a[2][name], rtol=1e-12, atol=1e-12,
                                   err_msg=name)


def test_a_refused_conversion_leaves_plain_attention():
    """TensorParallelAttention is a MultiHeadAttention subclass, so 'untouched' means
    the exact type."""
    three = Communicator(None)
    three.size = 3  # only the size is read before the check fails
    m = tiny(False)
    with pytest.raises(ValueError, match="tp=3"):
        tensor_parallel_gpt(m, three)
    with pytest.raises(ValueError, match=r"n_heads \(2\) is not divisible .* tp \(3\)"):
        tensor_parallel_block(m.blocks[0], three)
    assert all(type(b.attn) is MultiHeadAttention for b in m.blocks)
