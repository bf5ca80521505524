"""TextCNN, TransformerEncoderClassifier and RNNClassifier (LSTM, GRU): shapes, padding
invariance (a sequence alone equals the same sequence inside a padded batch), float64
gradcheck of every parameter on tiny configurations, a tiny synthetic task learned to
high accuracy, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import minilm
import minilm.functional as F
import minilm.nn as nn
from minilm import Tensor, optim
from minilm.data.text import pad_sequences


def _models(vocab=10, classes=3, pooling="cls", **kw):
    if pooling in ("lstm", "gru"):
        return nn.RNNClassifier(vocab, classes, embed_dim=kw.get("d", 6),
                                hidden_size=kw.get("d", 6), num_layers=kw.get("layers", 1),
                                cell=pooling, dropout=kw.get("p", 0.0))
    if pooling == "textcnn":
        return nn.TextCNN(vocab, classes, embed_dim=kw.get("d", 6), num_filters=4,
                          kernel_sizes=kw.get("widths", (2, 3, 4)), dropout=kw.get("p", 0.0))
    return nn.TransformerEncoderClassifier(vocab, classes, max_len=kw.get("max_len", 16),
                                           d_model=kw.get("d", 8), n_heads=2,
                                           n_layers=kw.get("layers", 2),
                                           dropout=kw.get("p", 0.0), pooling=pooling)


KINDS = ["textcnn", "cls", "mean", "lstm", "gru"]


def _seqs(seed, n=5, lo=1, hi=7, vocab=10):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, rng.integers(lo, hi + 1)).tolist() for _ in range(n)]


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_dtype(kind):
    m = _models(pooling=kind)
    ids, mask, _ = pad_sequences(_seqs(0))
    y = m(Tensor(ids), mask)
    assert y.shape == (5, 3) and y.dtype == np.float32
    assert m(ids[:1]).shape == (1, 3)  # no mask: every token real
    assert m(ids[0][mask[0]]).shape == (1, 3)  # a 1-D sequence is a batch of one


@pytest.mark.parametrize("kind", KINDS)
def test_padding_invariance(kind):
    """Each sequence alone (no padding) gives the logits it gets in a padded batch,
    whatever its padding length; padding token ids do not matter either."""
    minilm.manual_seed(1)
    m = _models(pooling=kind).double()
    m.eval()
    seqs = _seqs(2, n=6, lo=1, hi=9)
    ids, mask, _ = pad_sequences(seqs, max_len=11)
    batch = m(Tensor(ids), mask).numpy()
    ids_junk = np.where(mask, ids, 7)  # the padding holds real-looking tokens
    np.testing.assert_allclose(m(Tensor(ids_junk), mask).numpy(), batch, rtol=0, atol=1e-13)
    for i, s in enumerate(seqs):
        alone = m(Tensor(np.array([s])), None).numpy()[0]
        np.testing.assert_allclose(batch[i], alone, rtol=1e-12, atol=1e-13)


def _param_gradcheck(model, ids, mask):
    """float64 gradcheck of the logits with respect to every parameter (each perturbed
    through its ``.data`` while the model runs)."""
    ps = list(model.parameters())

    def fn(*ts):
        saved = [p.data for p in ps]
        for p, t in zip(ps, ts):
            if t is not p:
                p.data = t.data
        try:
            return model(ids, mask)
        finally:
            for p, d in zip(ps, saved):
                p.data = d

    assert minilm.gradcheck(fn, ps)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_tiny(kind):
    minilm.manual_seed(3)
    m = _models(vocab=5, classes=2, pooling=kind, d=4, widths=(1, 3), layers=1,
                max_len=6).double()
    m.eval()
    ids, mask, _ = pad_sequences([[1, 2, 3, 4], [4, 2]], max_len=4)
    _param_gradcheck(m, Tensor(ids), mask)


def _contains_three(n, seed):
    """Sequences of tokens 1..9 (length 2..10); label 1 iff token 3 occurs."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n):
        length = int(rng.integers(2, 11))
        s = rng.choice([1, 2, 4, 5, 6, 7, 8, 9], size=length)
        if i % 2:
            s[rng.integers(length)] = 3
        seqs.append(s.tolist())
        labels.append(i % 2)
    ids, mask, _ = pad_sequences(seqs, max_len=10)
    return ids, mask, np.array(labels)


@pytest.mark.parametrize("kind", KINDS)
def test_learns_token_presence(kind):
    minilm.manual_seed(0)
    m = _models(classes=2, pooling=kind, d=16, layers=1, p=0.1)
    opt = optim.Adam(m.parameters(), lr=1e-2)
    ids, mask, y = _contains_three(512, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(150):
        b = rng.choice(len(y), 32, replace=False)
        loss = F.cross_entropy(m(Tensor(ids[b]), mask[b]), Tensor(y[b]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    tid, tmask, ty = _contains_three(300, seed=1)
    with minilm.no_grad():
        acc = (m(Tensor(tid), tmask).numpy().argmax(1) == ty).mean()
    assert acc >= 0.95, acc


def test_bad_input():
    m = _models(pooling="cls", max_len=6)
    with pytest.raises(ValueError, match=r"mask must be bool of the ids' shape \(2, 3\)"):
        m(Tensor(np.ones((2, 3), np.int64)), np.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"no real token in rows \[1\]"):
        m(Tensor(np.ones((2, 3), np.int64)), np.array([[1, 0, 0], [0, 0, 0]], bool))
    with pytest.raises(ValueError, match=r"7 positions .*plus \[CLS\].* exceed max_len 6"):
        m(Tensor(np.ones((1, 6), np.int64)))
    with pytest.raises(ValueError, match="ids must be integer"):
        m(Tensor(np.ones((1, 3))))
    with pytest.raises(ValueError, match="pooling must be 'cls' or 'mean'"):
        nn.TransformerEncoderClassifier(10, 2, pooling="max")
    with pytest.raises(ValueError, match="kernel_sizes"):
        nn.TextCNN(10, 2, kernel_sizes=())


def test_textcnn_handles_sequences_shorter_than_its_widths():
    m = _models(pooling="textcnn", widths=(3, 5)).double()
    m.eval()
    ids, mask, _ = pad_sequences([[4], [1, 2, 3, 4, 5, 6]])
    np.testing.assert_allclose(m(Tensor(ids), mask).numpy()[0], m(Tensor(ids[:1, :1])).numpy()[0],
                               rtol=1e-12)


def test_encoder_is_bidirectional():
    """Changing the last token changes the [CLS] output (no causal mask)."""
    m = _models(pooling="cls").double()
    m.eval()
    a = m(Tensor(np.array([[1, 2, 3, 4]]))).numpy()
    b = m(Tensor(np.array([[1, 2, 3, 5]]))).numpy()
    assert np.abs(a - b).max() > 1e-6
