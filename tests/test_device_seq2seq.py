"""Encoder-decoder models on the CuPy stand-in (``fake_gpu``): teacher-forced loss and
gradients, greedy and beam decoding equal to the CPU run (host ids and masks go to
the model's device by themselves)."""

import numpy as np
import pytest
from fake_cupy import DeviceArray

import minilm as ml
import minilm.functional as F
from minilm import nn

pytestmark = pytest.mark.usefixtures("fake_gpu")

SRC_V, TGT_V = 9, 7


def make(kind, positional="sinusoidal"):
    ml.manual_seed(0)
    if kind == "transformer":
        return nn.TransformerSeq2Seq(SRC_V, TGT_V, d_model=8, n_heads=2, n_encoder_layers=1,
                                     n_decoder_layers=1, d_ff=12, max_src_len=10,
                                     max_tgt_len=8, positional=positional, dropout=0.0)
    return nn.LSTMSeq2Seq(SRC_V, TGT_V, emb_dim=4, hidden_size=5, attn_dim=3,
                          bidirectional=True, dropout=0.0)


def batch():
    rng = np.random.default_rng(0)
    src = rng.integers(3, SRC_V, (3, 6))
    src[1, 4:] = 0
    tgt = rng.integers(3, TGT_V, (3, 5))
    tgt[:, 0] = 1
    return src, src != 0, tgt


@pytest.mark.parametrize("kind, positional", [("transformer", "sinusoidal"),
                                              ("transformer", "rope"), ("lstm", None)])
def test_seq2seq_on_the_device_equals_the_cpu_run(kind, positional):
    src, mask, tgt = batch()
    runs = []
    for to in ("cpu", "cuda"):
        m = make(kind, positional).double().to(to)
        logits = m(src, mask, tgt)
        y = ml.tensor(np.roll(tgt, -1, axis=1)).to(to)
        loss = F.cross_entropy(logits.reshape(-1, TGT_V), y.reshape(-1))
        loss.backward()
        greedy = m.greedy_decode(src, max_len=6, src_mask=mask)
        beams = m.beam_decode(src, beam_size=2, max_len=6, src_mask=mask)
        runs.append((m, loss, greedy, beams))
    (cpu, c, cg, cb), (dev, d, dg, db) = runs
    assert type(d.data) is DeviceArray
    np.testing.assert_allclose(d.item(), c.item(), rtol=1e-10)
    for (name, p), q in zip(dev.named_parameters(), cpu.parameters(), strict=True):
        assert type(p.data) is DeviceArray, name
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    np.testing.assert_array_equal(dg, cg)
    np.testing.assert_array_equal(np.asarray(db[0] if isinstance(db, tuple) else db),
                                  np.asarray(cb[0] if isinstance(cb, tuple) else cb))
