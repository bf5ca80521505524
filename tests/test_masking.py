"""Dynamic masking for MLM pretraining (minilm/data/masking.py): 15% of the non-special
positions selected (within a binomial tolerance), 80/10/10 mask / random / unchanged,
labels -100 elsewhere, specials never touched, a new mask every batch, seeded and
resumable; whole-word masking selects all the pieces of a word together."""

import numpy as np
import pytest

from minilm.data.masking import IGNORE_INDEX, DynamicMasking, mask_tokens, word_start_table

V, MASK, CLS, SEP, PAD = 1000, 103, 101, 102, 0
SPECIALS = (PAD, 100, CLS, SEP, MASK)


def batch(rng, B=64, L=128):
    x = rng.integers(200, V, size=(B, L))
    x[:, 0], x[:, -1] = CLS, SEP
    x[::3, -20:] = PAD  # some padded rows
    return x


def test_selection_rate_and_80_10_10_split():
    rng = np.random.default_rng(0)
    x = batch(rng, B=256)
    inputs, labels = mask_tokens(x, np.random.default_rng(1), V, MASK, SPECIALS)
    cand = ~np.isin(x, SPECIALS)
    sel = labels != IGNORE_INDEX
    n = cand.sum()
    rate = sel.sum() / n
    assert abs(rate - 0.15) < 4 * np.sqrt(0.15 * 0.85 / n)        # 4 sigma of a binomial
    assert not (sel & ~cand).any()                                 # specials never selected
    np.testing.assert_array_equal(labels[sel], x[sel])             # label = the original id
    assert (inputs[~sel] == x[~sel]).all()                         # the rest unchanged
    k = sel.sum()
    masked = (inputs[sel] == MASK).mean()
    changed = ((inputs[sel] != MASK) & (inputs[sel] != x[sel])).mean()
    kept = (inputs[sel] == x[sel]).mean()
    for frac, want in ((masked, 0.8), (changed, 0.1), (kept, 0.1)):
        assert abs(frac - want) < 4 * np.sqrt(want * (1 - want) / k) + 2e-3  # a random id may equal x
    assert not np.isin(inputs[sel & (inputs != MASK)], SPECIALS).any()  # random ids: no specials
    assert labels.dtype == np.int64 and inputs.dtype == np.int64


def test_dynamic_masks_differ_every_batch_and_resume_exactly():
    class Windows:  # the same windows every time: only the mask can change
        def __init__(self):
            self.count = 0
            self.x = batch(np.random.default_rng(5), B=8, L=32)

        def next_batch(self):
            self.count += 1
            return self.x, self.x

        def state_dict(self):
            return {"count": self.count}

        def load_state_dict(self, s):
            self.count = s["count"]

    dm = DynamicMasking(Windows(), V, MASK, SPECIALS, seed=3)
    a, b = next(dm), next(dm)
    assert not np.array_equal(a[1], b[1])                          # re-drawn per batch
    state = dm.state_dict()
    c = next(dm)
    again = DynamicMasking(Windows(), V, MASK, SPECIALS, seed=99)
    again.load_state_dict(state)
    d = next(again)
    np.testing.assert_array_equal(c[0], d[0])
    np.testing.assert_array_equal(c[1], d[1])
    first = next(DynamicMasking(Windows(), V, MASK, SPECIALS, seed=3))
    np.testing.assert_array_equal(first[0], a[0])                  # seeded


def test_whole_word_masking_takes_every_piece_of_a_word():
    vocab = [f"w{i}" for i in range(V)]
    for i in range(500, 1000):
        vocab[i] = f"##p{i}"                                       # ids >= 500 continue a word
    starts = word_start_table(vocab)
    rng = np.random.default_rng(2)
    x = rng.integers(200, 1000, size=(128, 64))
    x[:, 0], x[:, -1] = CLS, SEP
    inputs, labels = mask_tokens(x, np.random.default_rng(4), V, MASK, SPECIALS,
                                 word_starts=starts)
    sel = labels != IGNORE_INDEX
    for r in range(x.shape[0]):
        word = 0
        words: dict = {}
        for t in range(1, x.shape[1] - 1):
            if starts[x[r, t]] or t == 1:
                word += 1
            words.setdefault(word, []).append(sel[r, t])
        for pieces in words.values():
            assert all(pieces) or not any(pieces)                  # all or nothing per word
    rate = sel.sum() / (~np.isin(x, SPECIALS)).sum()
    assert 0.10 < rate < 0.20                                      # ~15% of the pieces


def test_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="integer array"):
        mask_tokens(np.zeros(5), rng, V, MASK, SPECIALS)
    with pytest.raises(ValueError, match="mlm_probability must be in"):
        mask_tokens(np.zeros((2, 3), int), rng, V, MASK, SPECIALS, mlm_probability=1.5)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 1000\)"):
        mask_tokens(np.full((2, 3), 1000), rng, V, MASK, SPECIALS)
