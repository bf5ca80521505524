"""Text augmentation: each op's invariants, seeded determinism, labels kept, use with
the DataLoader through AugmentedDataset."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilm.data import (
    SYNONYMS,
    AugmentedDataset,
    Compose,
    DataLoader,
    EmbeddingNeighbours,
    EmbeddingNoise,
    RandomDeletion,
    RandomInsertion,
    RandomSwap,
    SynonymReplacement,
    Vocab,
    embedding_noise,
    pad_sequences,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from minilm.tensor import Tensor

SENTENCE = "The big company said profits rose sharply in the early part of the year".split()
token_lists = st.lists(st.sampled_from(["the", "big", "cat", "said", "good", "x", "Rose"]),
                       max_size=30)


def rng(seed=0):
    return np.random.default_rng(seed)


@given(token_lists, st.floats(0, 1), st.integers(0, 1000))
def test_random_deletion_keeps_an_ordered_subsequence(tokens, p, seed):
    out = random_deletion(tokens, p, rng(seed))
    it = iter(tokens)
    assert all(t in it for t in out)  # a subsequence, order kept
    assert (len(out) >= 1) == (len(tokens) >= 1)
    assert random_deletion(tokens, 0.0, rng(seed)) == tokens


@given(token_lists, st.integers(0, 5), st.integers(0, 1000))
def test_random_swap_is_a_permutation(tokens, n, seed):
    out = random_swap(tokens, n, rng(seed))
    assert Counter(out) == Counter(tokens)
    if n == 0:
        assert out == tokens


@given(token_lists, st.integers(0, 5), st.integers(0, 1000))
def test_synonym_replacement_changes_only_words_with_synonyms(tokens, n, seed):
    out = synonym_replacement(tokens, n, rng(seed))
    assert len(out) == len(tokens)  # the test words have one-word synonyms only
    changed = [(a, b) for a, b in zip(tokens, out) if a != b]
    assert len(changed) <= n
    for a, b in changed:
        assert b.lower() in SYNONYMS[a.lower()]
        assert a[0].isupper() == b[0].isupper()


@given(token_lists, st.integers(0, 5), st.integers(0, 1000))
def test_random_insertion_adds_synonyms_and_keeps_the_rest(tokens, n, seed):
    out = random_insertion(tokens, n, rng(seed))
    has_syn = any(t.lower() in SYNONYMS for t in tokens)
    longest = max(len(s.split()) for v in SYNONYMS.values() for s in v)  # "lots of": 2 words
    if has_syn:
        assert len(tokens) + n <= len(out) <= len(tokens) + longest * n
    else:
        assert out == tokens
    it = iter(out)
    assert all(t in it for t in tokens)  # the original is a subsequence
    added = Counter(out) - Counter(tokens)
    syn_words = {w for v in SYNONYMS.values() for s in v for w in s.split()}
    assert set(added) <= syn_words
    pooled = random_insertion(tokens, n, rng(seed), words=["zz"])
    assert Counter(pooled) - Counter(tokens) == Counter({"zz": n})


def test_synonym_table_is_modest_and_clean():
    assert 100 <= len(SYNONYMS) <= 200
    assert all(k == k.lower() and v and k not in v for k, v in SYNONYMS.items())


def test_transforms_are_seeded_and_keep_labels():
    ops = [RandomDeletion(0.3, seed=1), RandomSwap(2, seed=1), RandomInsertion(2, seed=1),
           SynonymReplacement(3, seed=1)]
    again = [RandomDeletion(0.3, seed=1), RandomSwap(2, seed=1), RandomInsertion(2, seed=1),
             SynonymReplacement(3, seed=1)]
    for a, b in zip(ops, again):
        outs = [a((SENTENCE, 4)) for _ in range(3)]
        assert outs == [b((SENTENCE, 4)) for _ in range(3)]
        assert all(label == 4 for _, label in outs)
        assert outs[0][0] != SENTENCE
        s = a(" ".join(SENTENCE))
        assert isinstance(s, str)
    c1 = Compose([SynonymReplacement(2), RandomSwap(1), RandomDeletion(0.1)], seed=3)
    c2 = Compose([SynonymReplacement(2), RandomSwap(1), RandomDeletion(0.1)], seed=3)
    batch = [(SENTENCE, 0), (SENTENCE[::-1], 1)]
    out = c1.batch(batch)
    assert out == c2.batch(batch) and [y for _, y in out] == [0, 1]
    with pytest.raises(ValueError):
        RandomDeletion(1.5)
    with pytest.raises(ValueError):
        RandomSwap(-1)


def test_embedding_neighbours_by_cosine():
    vocab = Vocab(["king", "queen", "apple", "pear", "car"])
    e = np.array([[0, 0], [0, 0], [1, 0.1], [1, 0.2], [0, 1], [0.1, 1], [-1, -1]], dtype=float)
    nb = EmbeddingNeighbours(e, vocab, k=2)
    assert nb["king"] == ["queen", "pear"] and nb["apple"] == ["pear", "queen"]
    assert nb["unknown"] == [] and nb["<pad>"] == []
    assert EmbeddingNeighbours(e, vocab, k=3, min_similarity=0.9)["king"] == ["queen"]
    out = synonym_replacement(["king", "rules"], 1, rng(), synonyms=nb)
    assert out[0] in ("queen", "pear") and out[1] == "rules"
    with pytest.raises(ValueError, match="do not match"):
        EmbeddingNeighbours(e[:3], vocab)


def test_embedding_noise_arrays_tensors_and_mask():
    x = np.ones((2, 3, 4), dtype=np.float32)
    mask = np.array([[True, True, False], [True, False, False]])
    y = embedding_noise(x, 0.5, rng(0), mask=mask)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.array_equal(y[~mask], x[~mask]) and not np.allclose(y[mask], 1)
    assert np.array_equal(y, embedding_noise(x, 0.5, rng(0), mask=mask))
    big = embedding_noise(np.zeros((200, 200)), 0.3, rng(1))
    assert abs(big.std() - 0.3) < 0.01 and abs(big.mean()) < 0.01
    t = Tensor(x, requires_grad=True)
    out = EmbeddingNoise(0.1, seed=0)(t)
    assert isinstance(out, Tensor)
    out.sum().backward()
    np.testing.assert_array_equal(t.grad.data, np.ones_like(x))
    with pytest.raises(ValueError, match="mask shape"):
        embedding_noise(x, 0.1, rng(), mask=mask[0])


def test_augmented_dataset_with_dataloader_is_order_independent():
    vocab = Vocab.build([SENTENCE])
    examples = [(SENTENCE, i % 3) for i in range(10)]

    def encode(ex):
        ids, _, _ = pad_sequences([vocab.encode(ex[0])], 16)
        return ids[0], np.int64(ex[1])

    aug = Compose([SynonymReplacement(2), RandomSwap(1), RandomDeletion(0.2), encode])
    ds = AugmentedDataset(examples, aug, seed=7)
    forward = [ds[i] for i in range(10)]
    backward = [ds[i] for i in reversed(range(10))][::-1]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(forward, backward))
    ds.set_epoch(1)
    assert any(not np.array_equal(ds[i][0], forward[i][0]) for i in range(10))
    ds.set_epoch(0)
    loader = DataLoader(ds, batch_size=4, as_tensor=False, prefetch=0)
    xs, ys = zip(*list(loader))
    assert np.array_equal(np.concatenate(xs), np.stack([f[0] for f in forward]))
    assert np.concatenate(ys).tolist() == [i % 3 for i in range(10)]
