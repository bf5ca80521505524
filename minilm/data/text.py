"""Text pipeline for classification: cleaning, word tokens, duplicates, vocabulary,
padding with masks, length buckets and TF-IDF features.

    texts = [clean_text(t, lowercase=True) for t in raw]
    report = duplicate_report(texts, names=files, labels=labels)   # exact + MinHash
    print(report.summary(texts))
    vocab = Vocab.build([tokenize(t) for t in texts], min_count=2, max_size=20000)
    ids, mask, lengths = pad_sequences([vocab.encode(tokenize(t)) for t in texts], 256)
    for idx in bucket_batches(lengths, 32, n_buckets=8, seed=0): ...
    X = TfidfVectorizer(sublinear_tf=True).fit_transform(texts)    # CSRMatrix
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["WORD_PATTERN", "CSRMatrix", "DuplicateReport", "MinHash", "TfidfVectorizer",
           "Vocab", "bucket_batches", "clean_text", "duplicate_report", "find_exact_duplicates",
           "find_near_duplicates", "jaccard", "lsh_candidate_pairs", "pad_sequences", "shingles",
           "text_hash", "tokenize"]

_SPACE = re.compile(r"\s+")

# A word token is, in order of preference:
#   \d+(?:[.,]\d+)+              a number with decimal points or thousands separators
#                                ("15.8", "1,000,000"); a unit after it is its own token
#   [^\W_]+(?:['’][^\W_]+)*      a run of Unicode letters/digits, with inner apostrophes
#                                kept ("don't", "BBC's", "o’clock"); "_" is not a letter
# With punct=True every other non-space character ("£", ",", "-") is a one-character token.
WORD_PATTERN = r"\d+(?:[.,]\d+)+|[^\W_]+(?:['’][^\W_]+)*"
_WORD = re.compile(WORD_PATTERN)
_WORD_OR_PUNCT = re.compile(WORD_PATTERN + r"|[^\w\s]|_")


def clean_text(text: str, lowercase: bool = False) -> str:
    """Unicode NFKC normalisation (compatibility forms: ligatures, full-width letters,
    non-breaking spaces become their plain forms), every whitespace run (newlines, tabs)
    collapsed to one space, ends stripped; optionally lower-cased (``str.lower``)."""
    if not isinstance(text, str):
        raise TypeError(f"clean_text: expected str, got {type(text).__name__}")
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    return text.lower() if lowercase else text


def tokenize(text: str, punct: bool = False) -> list[str]:
    """Word tokens of ``text`` by :data:`WORD_PATTERN` (punctuation too with ``punct``)."""
    return (_WORD_OR_PUNCT if punct else _WORD).findall(text)


# --------------------------------------------------------------------------- duplicates

def text_hash(text: str) -> str:
    """SHA-1 of the cleaned, lower-cased text: equal hashes mean exact duplicates up to
    Unicode form, whitespace and case."""
    return hashlib.sha1(clean_text(text, lowercase=True).encode("utf-8")).hexdigest()


def find_exact_duplicates(texts: Sequence[str]) -> list[list[int]]:
    """Groups (ascending index lists, each of two or more) of texts with equal
    :func:`text_hash`, ordered by their first index."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(text_hash(t), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def shingles(tokens: Sequence[str], k: int = 5) -> set[str]:
    """The set of word k-shingles (k consecutive tokens joined by one space). A text of
    fewer than k tokens (but at least one) has one shingle, all its tokens; none has none."""
    if k < 1:
        raise ValueError(f"shingles: k must be >= 1, got {k}")
    if len(tokens) < k:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i:i + k]) for i in range(len(tokens) - k + 1)}


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity |a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


class MinHash:
    """MinHash signatures (Broder 1997) of shingle sets.

    Each shingle is first hashed to a 32-bit integer x (CRC-32 of its UTF-8 bytes, the same
    on every machine). Hash function i of ``num_perm`` is the universal hash
    ``h_i(x) = (a_i x + b_i) mod p`` with the Mersenne prime p = 2^31 - 1 and a_i in
    [1, p), b_i in [0, p) drawn from ``default_rng(seed)`` (a_i x < 2^62: no uint64
    overflow). The signature holds ``min over the set of h_i(x)`` for each i. For sets A, B,
    P[min h_i(A) = min h_i(B)] = J(A, B), so the fraction of equal signature entries is an
    unbiased estimate of the Jaccard similarity with standard error sqrt(J(1-J)/num_perm).
    The empty set's signature is p in every entry (two empty sets estimate 1.0).
    """

    PRIME = (1 << 31) - 1

    def __init__(self, num_perm: int = 128, k: int = 5, seed: int = 0) -> None:
        if num_perm < 1 or k < 1:
            raise ValueError(f"MinHash: num_perm and k must be >= 1, got {num_perm}, {k}")
        self.num_perm, self.k, self.seed = num_perm, k, seed
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, self.PRIME, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, self.PRIME, size=num_perm, dtype=np.uint64)

    def signature_of_set(self, items: Iterable[str]) -> np.ndarray:
        """The (num_perm,) uint64 signature of a set of strings (shingles)."""
        x = np.fromiter((zlib.crc32(s.encode("utf-8")) for s in items), dtype=np.uint64)
        if x.size == 0:
            return np.full(self.num_perm, self.PRIME, dtype=np.uint64)
        x %= np.uint64(self.PRIME)
        h = (self.a[:, None] * x[None, :] + self.b[:, None]) % np.uint64(self.PRIME)
        return h.min(axis=1)

    def signature(self, tokens: Sequence[str]) -> np.ndarray:
        """The signature of the token list's word k-shingles."""
        return self.signature_of_set(shingles(tokens, self.k))

    def signatures(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """(n, num_perm) signatures, one row per token list."""
        out = np.empty((len(token_lists), self.num_perm), dtype=np.uint64)
        for i, toks in enumerate(token_lists):
            out[i] = self.signature(toks)
        return out

    @staticmethod
    def estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
        """Estimated Jaccard similarity: the fraction of equal signature entries."""
        return float(np.mean(sig_a == sig_b))


def lsh_candidate_pairs(signatures: np.ndarray, bands: int) -> set[tuple[int, int]]:
    """LSH banding: split each signature into ``bands`` bands of r = num_perm / bands rows;
    two texts are candidates if they agree on every row of at least one band. A pair of
    Jaccard s becomes a candidate with probability 1 - (1 - s^r)^bands (an S-curve whose
    threshold is about (1/bands)^(1/r))."""
    n, m = signatures.shape
    if bands < 1 or m % bands:
        raise ValueError(f"lsh_candidate_pairs: bands={bands} must divide num_perm={m}")
    r = m // bands
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i in range(n):
            buckets.setdefault(signatures[i, band * r:(band + 1) * r].tobytes(), []).append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs


def find_near_duplicates(texts: Sequence[str], threshold: float = 0.8, k: int = 5,
                         num_perm: int = 128, bands: int | None = 32,
                         seed: int = 0) -> list[tuple[int, int, float, float]]:
    """Pairs ``(i, j, estimated, exact)`` (i < j) whose MinHash estimate of the Jaccard
    similarity of their word k-shingle sets (cleaned, lower-cased text) is >= threshold,
    most similar first. ``bands`` selects candidates by LSH (:func:`lsh_candidate_pairs`);
    ``bands=None`` compares all n(n-1)/2 signature pairs. ``exact`` is the true Jaccard."""
    token_lists = [tokenize(clean_text(t, lowercase=True)) for t in texts]
    sets = [shingles(toks, k) for toks in token_lists]
    mh = MinHash(num_perm, k, seed)
    sigs = np.stack([mh.signature_of_set(s) for s in sets]) if sets else np.empty((0, num_perm))
    if bands is None:
        candidates = [(i, j) for i in range(len(sets)) for j in range(i + 1, len(sets))]
    else:
        candidates = sorted(lsh_candidate_pairs(sigs, bands))
    found = []
    for i, j in candidates:
        est = MinHash.estimate(sigs[i], sigs[j])
        if est >= threshold:
            found.append((i, j, est, jaccard(sets[i], sets[j])))
    return sorted(found, key=lambda p: (-p[2], p[0], p[1]))


@dataclass
class DuplicateReport:
    """What :func:`duplicate_report` found: exact groups, near-duplicate pairs (those
    that are not exact duplicates of each other), and the pairs whose labels differ."""

    n_texts: int
    exact_groups: list[list[int]]
    near_pairs: list[tuple[int, int, float, float]]
    threshold: float
    names: list[str] | None = None
    labels: list[int] | None = None
    cross_label: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n_exact_redundant(self) -> int:
        """Texts that could be dropped keeping one per exact group."""
        return sum(len(g) - 1 for g in self.exact_groups)

    def _name(self, i: int) -> str:
        return self.names[i] if self.names is not None else f"#{i}"

    def summary(self, texts: Sequence[str] | None = None, examples: int = 3) -> str:
        lines = [f"{self.n_texts} texts; {len(self.exact_groups)} exact-duplicate groups "
                 f"({self.n_exact_redundant} redundant texts); {len(self.near_pairs)} "
                 f"near-duplicate pairs (MinHash Jaccard >= {self.threshold}); "
                 f"{len(self.cross_label)} duplicate pairs with different labels"]
        for g in self.exact_groups[:examples]:
            lines.append("  exact: " + ", ".join(self._name(i) for i in g))
        for i, j, est, exact in self.near_pairs[:examples]:
            lines.append(f"  near: {self._name(i)} ~ {self._name(j)} "
                         f"(estimated {est:.2f}, exact {exact:.2f})")
            if texts is not None:
                lines.append(f"    {clean_text(texts[i])[:70]!r}\n    {clean_text(texts[j])[:70]!r}")
        return "\n".join(lines)


def duplicate_report(texts: Sequence[str], names: Sequence[str] | None = None,
                     labels: Sequence[int] | None = None, threshold: float = 0.8,
                     **near_kwargs: Any) -> DuplicateReport:
    """Exact duplicates (:func:`find_exact_duplicates`) and near duplicates
    (:func:`find_near_duplicates`, keyword arguments passed on) of ``texts``."""
    exact = find_exact_duplicates(texts)
    group_of = {i: gi for gi, g in enumerate(exact) for i in g}
    near = [p for p in find_near_duplicates(texts, threshold, **near_kwargs)
            if group_of.get(p[0], -1) != group_of.get(p[1], -2)]
    pairs = [(g[0], j) for g in exact for j in g[1:]] + [(i, j) for i, j, _, _ in near]
    cross = [] if labels is None else [(i, j) for i, j in pairs if labels[i] != labels[j]]
    return DuplicateReport(len(texts), exact, near, threshold,
                           None if names is None else list(names),
                           None if labels is None else [int(v) for v in labels], cross)


# --------------------------------------------------------------------------- vocabulary

class Vocab:
    """Word vocabulary: ``<pad>`` = 0, ``<unk>`` = 1, then words by decreasing count
    (ties in string order). Unknown words encode to 1."""

    PAD, UNK = "<pad>", "<unk>"
    pad_id, unk_id = 0, 1

    def __init__(self, words: Sequence[str]) -> None:
        words = [w for w in words if w not in (self.PAD, self.UNK)]
        self.itos: list[str] = [self.PAD, self.UNK, *words]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("Vocab: the word list has duplicates")

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_count: int = 1,
              max_size: int | None = None) -> Vocab:
        """Words seen at least ``min_count`` times; at most ``max_size`` entries in all
        (the two specials included)."""
        if max_size is not None and max_size < 2:
            raise ValueError(f"Vocab.build: max_size must be >= 2 (the specials), got {max_size}")
        counts = Counter(w for toks in token_lists for w in toks)
        words = sorted((w for w, c in counts.items() if c >= min_count and w not in (cls.PAD, cls.UNK)),
                       key=lambda w: (-counts[w], w))
        return cls(words if max_size is None else words[:max_size - 2])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        return np.array([self.stoi.get(w, self.unk_id) for w in tokens], dtype=np.int64)

    def decode(self, ids: Iterable[int], skip_pad: bool = True) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"Vocab.decode: id {i} outside [0, {len(self.itos)})")
            if not (skip_pad and i == self.pad_id):
                out.append(self.itos[i])
        return out

    def to_dict(self) -> dict:
        """JSON-able: ``{"type": "word_vocab", "itos": [...]}``."""
        return {"type": "word_vocab", "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        itos = d.get("itos") if isinstance(d, dict) else None
        if d.get("type") != "word_vocab" or not isinstance(itos, list) or itos[:2] != [cls.PAD, cls.UNK]:
            raise ValueError("Vocab.from_dict: not a word_vocab dict with <pad>, <unk> first")
        return cls(itos[2:])


# --------------------------------------------------------------------------- padding, buckets

def pad_sequences(seqs: Sequence[Sequence[int]], max_len: int | None = None, pad_id: int = 0,
                  truncate: str = "end") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, mask, lengths)``: ids (n, L) int64 padded with ``pad_id`` on the right,
    mask (n, L) bool with True on real tokens, lengths (n,) int64 = mask.sum(1).
    L = ``max_len``, or the longest sequence when None. Longer sequences lose their end
    (``truncate="end"``) or their start (``"start"``). An empty sequence gives an
    all-False mask row; a model must not pool over it."""
    if truncate not in ("end", "start"):
        raise ValueError(f"pad_sequences: truncate must be 'end' or 'start', got {truncate!r}")
    if max_len is None:
        max_len = max((len(s) for s in seqs), default=0)
    if max_len < 0:
        raise ValueError(f"pad_sequences: max_len must be >= 0, got {max_len}")
    ids = np.full((len(seqs), max_len), pad_id, dtype=np.int64)
    lengths = np.zeros(len(seqs), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int64).reshape(-1)
        s = s[:max_len] if truncate == "end" else s[max(0, len(s) - max_len):]
        ids[i, :len(s)] = s
        lengths[i] = len(s)
    mask = np.arange(max_len)[None, :] < lengths[:, None]
    return ids, mask, lengths


def bucket_batches(lengths: Sequence[int], batch_size: int, n_buckets: int = 10,
                   shuffle: bool = True, seed: int = 0) -> list[np.ndarray]:
    """Index batches of similar length: sort the indices by length (ties in a seeded
    random order when ``shuffle``, else by index), cut the order into ``n_buckets``
    contiguous buckets of near-equal size, shuffle inside each bucket, cut each bucket
    into batches of ``batch_size`` (the last of a bucket may be smaller), and shuffle
    the batch order. Every index appears in exactly one batch. ``shuffle=False`` gives
    the batches in increasing length with no randomness."""
    lengths = np.asarray(lengths).reshape(-1)
    if batch_size < 1 or n_buckets < 1:
        raise ValueError(f"bucket_batches: batch_size and n_buckets must be >= 1, "
                         f"got {batch_size}, {n_buckets}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    order = idx[np.argsort(lengths[idx], kind="stable")]
    batches: list[np.ndarray] = []
    for bucket in np.array_split(order, min(n_buckets, max(1, len(order)))):
        if shuffle:
            bucket = rng.permutation(bucket)
        batches.extend(bucket[s:s + batch_size] for s in range(0, len(bucket), batch_size))
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return [b.astype(np.int64) for b in batches if len(b)]


# --------------------------------------------------------------------------- TF-IDF

class CSRMatrix:
    """A sparse matrix in compressed sparse row form: row i's non-zeros are
    ``data[indptr[i]:indptr[i+1]]`` in columns ``indices[indptr[i]:indptr[i+1]]``."""

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
                 shape: tuple[int, int]) -> None:
        self.data, self.indices = np.asarray(data), np.asarray(indices, dtype=np.int64)
        self.indptr, self.shape = np.asarray(indptr, dtype=np.int64), (int(shape[0]), int(shape[1]))
        if len(self.indptr) != self.shape[0] + 1 or len(self.data) != len(self.indices) \
                or self.indptr[-1] != len(self.data):
            raise ValueError(f"CSRMatrix: inconsistent arrays for shape {self.shape}: data "
                             f"{len(self.data)}, indices {len(self.indices)}, indptr {len(self.indptr)}")

    @property
    def nnz(self) -> int:
        return len(self.data)

    def toarray(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=self.data.dtype)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        out[rows, self.indices] = self.data
        return out

    def __matmul__(self, dense: Any) -> np.ndarray:
        """``self @ dense`` for a (n_cols,) or (n_cols, k) NumPy array, row by row."""
        dense = np.asarray(dense)
        if dense.shape[0] != self.shape[1]:
            raise ValueError(f"CSRMatrix @: shapes {self.shape} and {dense.shape} are not aligned")
        out = np.zeros((self.shape[0],) + dense.shape[1:], dtype=np.result_type(self.data, dense))
        for i in range(self.shape[0]):
            s, e = self.indptr[i], self.indptr[i + 1]
            if e > s:
                out[i] = self.data[s:e] @ dense[self.indices[s:e]]
        return out

    def transpose(self) -> CSRMatrix:
        """The transpose, again in CSR form (so ``X.transpose() @ g`` is X^T g)."""
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        order = np.argsort(self.indices, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(self.indices, minlength=self.shape[1]))])
        return CSRMatrix(self.data[order], rows[order], indptr, (self.shape[1], self.shape[0]))

    @property
    def T(self) -> CSRMatrix:  # noqa: N802 (NumPy's name)
        return self.transpose()

    def __getitem__(self, rows: Any) -> CSRMatrix:
        """The rows ``rows`` (an index array, list or slice) as a new CSRMatrix."""
        rows = np.arange(self.shape[0])[rows].reshape(-1)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)] or [np.zeros(0, np.int64)])
        indptr = np.concatenate([[0], np.cumsum(ends - starts)])
        return CSRMatrix(self.data[take], self.indices[take], indptr, (len(rows), self.shape[1]))


class TfidfVectorizer:
    """TF-IDF features of texts, as a sparse :class:`CSRMatrix` (one row per text).

    For term t in document d of a corpus of n documents, with df(t) the number of
    documents containing t:

        tf(t, d)  = count(t, d)                 (sublinear_tf: 1 + log count(t, d))
        idf(t)    = log((1 + n) / (1 + df(t))) + 1     (smooth_idf; else log(n / df(t)) + 1)
        x(t, d)   = tf(t, d) * idf(t),  then each row divided by its L2 norm (norm="l2";
                    an all-zero row stays zero; norm=None leaves rows as they are)

    n and df come from ``fit``; terms unseen by ``fit`` are ignored by ``transform``.
    Terms are word n-grams (``ngram_range``) of :func:`tokenize` on :func:`clean_text`
    (lower-cased with ``lowercase``); kept if min_df <= df and df <= max_df * n, then the
    ``max_features`` most frequent in the corpus. Columns are the kept terms in string order.
    """

    def __init__(self, lowercase: bool = True, ngram_range: tuple[int, int] = (1, 1),
                 min_df: int = 1, max_df: float = 1.0, max_features: int | None = None,
                 sublinear_tf: bool = False, smooth_idf: bool = True, norm: str | None = "l2") -> None:
        lo, hi = ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"TfidfVectorizer: bad ngram_range {ngram_range}")
        if norm not in ("l2", None):
            raise ValueError(f"TfidfVectorizer: norm must be 'l2' or None, got {norm!r}")
        self.lowercase, self.ngram_range, self.min_df, self.max_df = lowercase, (lo, hi), min_df, max_df
        self.max_features, self.sublinear_tf, self.smooth_idf, self.norm = \
            max_features, sublinear_tf, smooth_idf, norm
        self.vocabulary_: dict[str, int] = {}
        self.idf_: np.ndarray = np.zeros(0)

    def analyze(self, text: str) -> list[str]:
        toks = tokenize(clean_text(text, self.lowercase))
        lo, hi = self.ngram_range
        return [" ".join(toks[i:i + n]) for n in range(lo, hi + 1) for i in range(len(toks) - n + 1)]

    def fit(self, texts: Sequence[str]) -> TfidfVectorizer:
        if len(texts) == 0:
            raise ValueError("TfidfVectorizer.fit: no texts")
        df: Counter = Counter()
        total: Counter = Counter()
        for t in texts:
            c = Counter(self.analyze(t))
            df.update(c.keys())
            total.update(c)
        n = len(texts)
        terms = [t for t, d in df.items() if d >= self.min_df and d <= self.max_df * n]
        if self.max_features is not None:
            terms = sorted(terms, key=lambda t: (-total[t], t))[:self.max_features]
        terms.sort()
        self.vocabulary_ = {t: j for j, t in enumerate(terms)}
        d = np.array([df[t] for t in terms], dtype=np.float64)
        self.idf_ = (np.log((1 + n) / (1 + d)) if self.smooth_idf else np.log(n / d)) + 1.0
        self.n_docs_ = n
        return self

    def transform(self, texts: Sequence[str]) -> CSRMatrix:
        data, indices, indptr = [], [], [0]
        for t in texts:
            c = Counter(w for w in self.analyze(t) if w in self.vocabulary_)
            pairs = sorted((self.vocabulary_[w], k) for w, k in c.items())
            cols = np.array([j for j, _ in pairs], dtype=np.int64)
            counts = np.array([k for _, k in pairs], dtype=np.float64)
            tf = 1.0 + np.log(counts) if self.sublinear_tf else counts
            x = tf * self.idf_[cols]
            if self.norm == "l2" and len(x):
                x = x / np.sqrt(np.sum(x * x))
            data.append(x)
            indices.append(cols)
            indptr.append(indptr[-1] + len(cols))
        return CSRMatrix(np.concatenate([np.zeros(0), *data]),
                         np.concatenate([np.zeros(0, np.int64), *indices]), np.array(indptr),
                         (len(texts), len(self.vocabulary_)))

    def fit_transform(self, texts: Sequence[str]) -> CSRMatrix:
        return self.fit(texts).transform(texts)

    def to_dict(self) -> dict:
        """JSON-able parameters, terms (in column order) and idf."""
        return {"type": "tfidf", "lowercase": self.lowercase, "ngram_range": list(self.ngram_range),
                "min_df": self.min_df, "max_df": self.max_df, "max_features": self.max_features,
                "sublinear_tf": self.sublinear_tf, "smooth_idf": self.smooth_idf, "norm": self.norm,
                "terms": sorted(self.vocabulary_, key=self.vocabulary_.get), "idf": self.idf_.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> TfidfVectorizer:
        if not isinstance(d, dict) or d.get("type") != "tfidf" or len(d["terms"]) != len(d["idf"]):
            raise ValueError("TfidfVectorizer.from_dict: not a tfidf dict")
        v = cls(d["lowercase"], tuple(d["ngram_range"]), d["min_df"], d["max_df"], d["max_features"],
                d["sublinear_tf"], d["smooth_idf"], d["norm"])
        v.vocabulary_ = {t: j for j, t in enumerate(d["terms"])}
        v.idf_ = np.asarray(d["idf"], dtype=np.float64)
        return v
