"""Text pipeline: cleaning, tokens, duplicates (exact and MinHash), vocabulary, padding,
buckets, TF-IDF against a dense NumPy reference."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilm.data import (
    CSRMatrix,
    MinHash,
    TfidfVectorizer,
    Vocab,
    bucket_batches,
    clean_text,
    duplicate_report,
    find_exact_duplicates,
    find_near_duplicates,
    jaccard,
    pad_sequences,
    shingles,
    tokenize,
)


def test_clean_text():
    assert clean_text("  Caf\u00e9\u00a0 au\n\n\tlait  ") == "Café au lait"
    assert clean_text("ﬁne ＡＢＣ") == "fine ABC"  # NFKC: ligature, full-width
    assert clean_text("e\u0301") == "é"  # NFKC composes
    assert clean_text("Hello  World", lowercase=True) == "hello world"
    with pytest.raises(TypeError):
        clean_text(b"bytes")


def test_tokenize():
    assert tokenize("Don't pay £15.8m for 1,000 o’clock BBC's shares_now!") == [
        "Don't", "pay", "15.8", "m", "for", "1,000", "o’clock", "BBC's", "shares", "now"]
    assert tokenize("a-b, c!", punct=True) == ["a", "-", "b", ",", "c", "!"]
    assert tokenize("") == []


def test_shingles_and_jaccard():
    assert shingles("a b c d".split(), 2) == {"a b", "b c", "c d"}
    assert shingles(["a"], 3) == {"a"} and shingles([], 3) == set()
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0


@given(st.integers(0, 60), st.integers(0, 60), st.integers(1, 60), st.integers(0, 2**16))
def test_minhash_estimates_jaccard(n_a, n_b, n_common, seed):
    a = {f"s{i}" for i in range(n_common)} | {f"a{i}" for i in range(n_a)}
    b = {f"s{i}" for i in range(n_common)} | {f"b{i}" for i in range(n_b)}
    mh = MinHash(num_perm=256, seed=seed)
    est = MinHash.estimate(mh.signature_of_set(a), mh.signature_of_set(b))
    j = jaccard(a, b)
    # 256 permutations: standard error <= 0.5 / 16; allow 5 of them
    assert abs(est - j) <= 5 * np.sqrt(j * (1 - j) / 256) + 0.02


def test_minhash_signature_is_deterministic():
    toks = "the quick brown fox jumps over the lazy dog".split()
    s1, s2 = MinHash(64, 3, seed=1).signature(toks), MinHash(64, 3, seed=1).signature(toks)
    assert s1.dtype == np.uint64 and np.array_equal(s1, s2)
    assert MinHash.estimate(s1, MinHash(64, 3, seed=1).signature(toks[::-1])) < 0.5


def _corpus(rng, n=40, length=60):
    words = [f"w{i}" for i in range(400)]
    return [" ".join(rng.choice(words, size=length)) for _ in range(n)]


def test_dedup_finds_planted_duplicates():
    rng = np.random.default_rng(0)
    texts = _corpus(rng)
    texts.append("  " + texts[3].upper() + "\n")            # 40: exact dup of 3 (case, space)
    toks = texts[7].split()
    toks[30] = "changed"
    texts.append(" ".join(toks))                             # 41: near dup of 7
    texts.append(" ".join(texts[11].split()[:55]))           # 42: near dup of 11 (cut)
    assert find_exact_duplicates(texts) == [[3, 40]]
    near = find_near_duplicates(texts, threshold=0.7, k=3)
    assert {(i, j) for i, j, _, _ in near} == {(3, 40), (7, 41), (11, 42)}
    brute = find_near_duplicates(texts, threshold=0.7, k=3, bands=None)
    assert [p[:2] for p in brute] == [p[:2] for p in near]
    labels = [0] * len(texts)
    labels[42] = 1
    rep = duplicate_report(texts, names=[f"doc{i}" for i in range(len(texts))], labels=labels,
                           threshold=0.7, k=3)
    assert rep.exact_groups == [[3, 40]] and rep.n_exact_redundant == 1
    assert {(i, j) for i, j, _, _ in rep.near_pairs} == {(7, 41), (11, 42)}
    assert rep.cross_label == [(11, 42)]
    text = rep.summary(texts)
    assert "1 exact-duplicate groups" in text and "doc3, doc40" in text and "doc7 ~ doc41" in text


def test_vocab_build_encode_decode_roundtrip():
    docs = [["the", "cat", "sat"], ["the", "dog", "sat"], ["the", "end"]]
    v = Vocab.build(docs, min_count=2)
    assert v.itos == ["<pad>", "<unk>", "the", "sat"]
    assert v.encode(["the", "cat", "sat"]).tolist() == [2, 1, 3]
    assert v.decode([2, 1, 3, 0, 0]) == ["the", "<unk>", "sat"]
    assert len(Vocab.build(docs, max_size=3)) == 3
    again = Vocab.from_dict(json.loads(json.dumps(v.to_dict())))
    assert again.itos == v.itos and "the" in again
    with pytest.raises(ValueError):
        Vocab.from_dict({"type": "char"})
    with pytest.raises(ValueError, match="outside"):
        v.decode([9])


def test_pad_sequences_mask_and_lengths():
    ids, mask, lengths = pad_sequences([[5, 6, 7], [8], []], max_len=2)
    assert ids.tolist() == [[5, 6], [8, 0], [0, 0]]
    assert mask.tolist() == [[True, True], [True, False], [False, False]]
    assert lengths.tolist() == [2, 1, 0] and mask.dtype == bool
    ids, mask, _ = pad_sequences([[5, 6, 7], [8]], max_len=2, truncate="start", pad_id=9)
    assert ids.tolist() == [[6, 7], [8, 9]]
    ids, mask, lengths = pad_sequences([[1, 2, 3], [4]])
    assert ids.shape == (2, 3) and np.array_equal(mask.sum(1), lengths)


@given(st.lists(st.integers(0, 50), min_size=0, max_size=80), st.integers(1, 9),
       st.integers(1, 6), st.booleans(), st.integers(0, 100))
def test_bucket_batches_cover_every_index_once(lengths, batch_size, n_buckets, shuffle, seed):
    batches = bucket_batches(lengths, batch_size, n_buckets, shuffle, seed)
    got = np.sort(np.concatenate(batches)) if batches else np.zeros(0)
    assert np.array_equal(got, np.arange(len(lengths)))
    assert all(0 < len(b) <= batch_size for b in batches)
    again = bucket_batches(lengths, batch_size, n_buckets, shuffle, seed)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_bucket_batches_group_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 500, size=400)
    batches = bucket_batches(lengths, 20, n_buckets=10, seed=0)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.15 * np.ptp(lengths)
    plain = bucket_batches(lengths, 20, n_buckets=10, shuffle=False)
    assert np.all(np.diff(lengths[np.concatenate(plain)]) >= 0)


def _dense_tfidf(docs, sublinear, smooth):
    terms = sorted({w for d in docs for w in d})
    counts = np.array([[d.count(t) for t in terms] for d in docs], dtype=float)
    n, df = len(docs), (counts > 0).sum(0)
    idf = np.log((1 + n) / (1 + df)) + 1 if smooth else np.log(n / df) + 1
    tf = np.where(counts > 0, 1 + np.log(np.maximum(counts, 1)), 0) if sublinear else counts
    x = tf * idf
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return terms, x / np.where(norms == 0, 1, norms)


@pytest.mark.parametrize("sublinear", [False, True])
@pytest.mark.parametrize("smooth", [False, True])
def test_tfidf_equals_dense_reference(sublinear, smooth):
    texts = ["The cat sat on the mat.", "The dog sat.", "A cat, a dog, a cat!", "mat mat mat"]
    vec = TfidfVectorizer(sublinear_tf=sublinear, smooth_idf=smooth)
    X = vec.fit_transform(texts)
    terms, ref = _dense_tfidf([tokenize(t.lower()) for t in texts], sublinear, smooth)
    assert sorted(vec.vocabulary_, key=vec.vocabulary_.get) == terms
    assert isinstance(X, CSRMatrix) and X.shape == ref.shape
    np.testing.assert_allclose(X.toarray(), ref, rtol=1e-12)
    w = np.random.default_rng(0).normal(size=(len(terms), 3))
    np.testing.assert_allclose(X @ w, ref @ w, rtol=1e-12)
    np.testing.assert_allclose(X.T.toarray(), ref.T)
    np.testing.assert_allclose(X[[2, 0]].toarray(), ref[[2, 0]])
    # unseen words are ignored; an all-unseen text is a zero row
    Y = vec.transform(["cat zebra", "zebra"])
    assert Y.shape == (2, len(terms)) and Y.toarray()[1].sum() == 0
    back = TfidfVectorizer.from_dict(json.loads(json.dumps(vec.to_dict())))
    np.testing.assert_allclose(back.transform(texts).toarray(), ref)


def test_tfidf_options_and_hand_value():
    # two docs, "a" in both: idf(a) = log(3/3) + 1 = 1, idf(b) = log(3/2) + 1
    X = TfidfVectorizer(norm=None).fit_transform(["a a b", "a"]).toarray()
    np.testing.assert_allclose(X, [[2.0, np.log(1.5) + 1], [1.0, 0.0]])
    v = TfidfVectorizer(ngram_range=(1, 2), min_df=2).fit(["a b c", "a b d"])
    assert list(v.vocabulary_) == ["a", "a b", "b"]
    assert list(TfidfVectorizer(max_features=1).fit(["a b b", "b"]).vocabulary_) == ["b"]
    with pytest.raises(ValueError, match="not aligned"):
        TfidfVectorizer().fit_transform(["a b"]) @ np.ones(3)
    with pytest.raises(ValueError):
        CSRMatrix(np.ones(2), np.zeros(2), np.array([0, 1]), (1, 3))
