"""Byte-level BPE (byte-pair encoding), trained from scratch.

The vocabulary starts as the 256 byte values, so *every* string (as UTF-8 bytes) can be
encoded and ``decode(encode(s)) == s`` exactly. Training repeatedly merges the most
frequent adjacent pair of ids into a new id; the list of merges, in order, *is* the
tokenizer. See docs/tokenizer.md for the algorithm and its complexity.

    tok = ByteBPETokenizer.train(text, vocab_size=512, special_tokens=["<|endoftext|>"])
    ids = tok.encode("def f(x):\\n    return x<|endoftext|>")
    assert tok.decode(ids) == "def f(x):\\n    return x<|endoftext|>"

Text is first split into chunks by :data:`DEFAULT_PATTERN` (words with their leading
space, digit groups, punctuation runs, whitespace runs) and merges never cross a chunk
boundary, so ``" the"`` can become one token but ``"e."`` never will.

Lone surrogates (``"\\ud800"``: a ``str`` can hold them, UTF-8 cannot) are rejected with a
``ValueError`` naming the position.
"""

from __future__ import annotations

import heapq
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .tokenizer import Tokenizer, _as_id_list, register_tokenizer

__all__ = ["DEFAULT_PATTERN", "ByteBPETokenizer", "pretokenize", "train_merges"]

#: The pre-tokenizer: GPT-2's idea written for the stdlib ``re`` module.
#: ``[^\W\d_]`` is "a letter" (a word character that is neither a digit nor ``_``).
#: Every character falls in one of the alternatives (whitespace, letter, digit, or
#: other), so the chunks always concatenate back to the text.
DEFAULT_PATTERN = (
    r"'(?:s|t|re|ve|m|ll|d)"      # English contractions: 's 't 're 've 'm 'll 'd
    r"| ?[^\W\d_]+"               # a word, with at most one leading space
    r"| ?\d{1,3}"                 # numbers, in groups of at most three digits
    r"| ?(?:[^\s\w]|_)+"          # punctuation / symbols (and _), with a leading space
    r"|\s+(?!\S)"                 # a whitespace run, leaving its last space to the next word
    r"|\s+"                       # a whitespace run at the end of the text
)

_CACHE_LIMIT = 200_000  # chunk -> ids entries kept by encode before the cache is reset


def pretokenize(text: str, pattern: str = DEFAULT_PATTERN) -> list[str]:
    """The chunks BPE works inside: ``"".join(pretokenize(s)) == s``."""
    return re.findall(pattern, text)


def _merge(ids: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace every non-overlapping occurrence of (a, b), left to right, by ``new``."""
    out = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] == a and i + 1 < n and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_merges(word_counts: dict[bytes, int], num_merges: int, verbose: bool = False
                 ) -> list[tuple[int, int]]:
    """Learn up to ``num_merges`` merges from unique chunks (as bytes) and their counts.

    Data structures (the standard incremental algorithm):

    - ``words[i]``: chunk i as a list of ids, ``counts[i]``: how often it occurs;
    - ``pair_counts[(a, b)]``: occurrences of the pair, weighted by chunk counts;
    - ``where[(a, b)]``: indices of the chunks containing the pair (a superset: stale
      entries are harmless);
    - ``heap``: ``(-count, pair)`` entries, popped lazily: an entry whose count is no
      longer current is skipped. Ties go to the smallest pair, so training is
      deterministic.

    Each merge only rewrites the chunks containing the pair and pushes the pairs whose
    count changed; nothing is recounted from scratch.
    """
    words = [list(w) for w in word_counts]
    counts = list(word_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, (w, c) in enumerate(zip(words, counts)):
        for p in zip(w, w[1:]):
            pair_counts[p] += c
            where[p].add(i)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    t0 = time.perf_counter()
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:
            continue  # stale entry: the pair's count changed after it was pushed
        new = 256 + len(merges)
        merges.append(pair)
        a, b = pair
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for i in where.pop(pair):
            w = words[i]
            nw = _merge(w, a, b, new)
            if len(nw) == len(w):
                continue  # stale index: this chunk no longer holds the pair
            c = counts[i]
            for p in zip(w, w[1:]):
                delta[p] -= c
            for p in zip(nw, nw[1:]):
                delta[p] += c
                where[p].add(i)
            words[i] = nw
        for p, d in delta.items():
            if d == 0:
                continue
            c = pair_counts[p] + d
            if c > 0:
                pair_counts[p] = c
                heapq.heappush(heap, (-c, p))
            else:
                del pair_counts[p]
        pair_counts.pop(pair, None)
        if verbose and len(merges) % 100 == 0:
            print(f"bpe: {len(merges)}/{num_merges} merges, {time.perf_counter() - t0:.1f}s",
                  file=sys.stderr)
    return merges


def _check_utf8(text: str, who: str, offset: int = 0) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{who}: lone surrogate {text[e.start]!r} at position {offset + e.start} cannot be "
            "encoded as UTF-8 (byte-level BPE works on UTF-8 bytes; fix the text, e.g. "
            "s.encode('utf-8', 'replace').decode())") from None


@register_tokenizer
class ByteBPETokenizer(Tokenizer):
    """Byte-level BPE: 256 byte ids, then one id per merge (id = 256 + rank), then the
    special tokens. ``merges[r] = (a, b)`` means ids a and b merge into 256 + r."""

    type_name = "byte_bpe"

    def __init__(self, merges: Iterable[Sequence[int]] = (), special_tokens: Iterable[str] = (),
                 pattern: str = DEFAULT_PATTERN) -> None:
        vocab = [bytes([i]) for i in range(256)]
        ranks: dict[tuple[int, int], int] = {}
        for r, m in enumerate(merges):
            if len(m) != 2:
                raise ValueError(f"ByteBPETokenizer: merge {r} is {m!r}, expected a pair of ids")
            a, b = int(m[0]), int(m[1])
            if not (0 <= a < 256 + r and 0 <= b < 256 + r):
                raise ValueError(f"ByteBPETokenizer: merge {r} = ({a}, {b}) uses an id that does "
                                 f"not exist yet (ids so far: 0..{255 + r})")
            if (a, b) in ranks:
                raise ValueError(f"ByteBPETokenizer: merge {r} = ({a}, {b}) repeats merge {ranks[a, b]}")
            ranks[a, b] = r
            vocab.append(vocab[a] + vocab[b])
        specials = list(special_tokens)
        for s in specials:
            if not isinstance(s, str) or not s:
                raise ValueError(f"ByteBPETokenizer: special tokens must be non-empty strings, got {s!r}")
            _check_utf8(s, "ByteBPETokenizer: special token")
        if len(set(specials)) != len(specials):
            raise ValueError(f"ByteBPETokenizer: duplicate special tokens in {specials}")
        try:
            self._pat = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"ByteBPETokenizer: bad pre-tokenizer pattern {pattern!r}: {e}") from None
        self.pattern = pattern
        self.merges: list[tuple[int, int]] = list(ranks)
        self._ranks = ranks
        self.special_tokens: dict[str, int] = {s: len(vocab) + i for i, s in enumerate(specials)}
        self._vocab: list[bytes] = vocab + [s.encode("utf-8") for s in specials]
        # Longest first, so that a special token that extends another one wins.
        longest_first = sorted(specials, key=len, reverse=True)
        self._special_pat = re.compile("|".join(map(re.escape, longest_first))) if specials else None
        self._cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: Iterable[str] = (),
              pattern: str = DEFAULT_PATTERN, verbose: bool = False) -> ByteBPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        ``vocab_size`` counts everything: 256 bytes + merges + special tokens. Special
        tokens occurring in ``text`` are cut out before counting. If the text runs out of
        pairs first, fewer merges are learned (check ``tok.vocab_size``).
        """
        specials = list(special_tokens)
        if isinstance(vocab_size, np.integer):
            vocab_size = int(vocab_size)
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(specials):
            raise ValueError(f"ByteBPETokenizer.train: vocab_size must be an int >= 256 + "
                             f"{len(specials)} special tokens = {256 + len(specials)}, got {vocab_size!r}")
        tok = cls((), specials, pattern)   # validates the specials and the pattern
        _check_utf8(text, "ByteBPETokenizer.train")
        chunks: Counter[str] = Counter()
        for _, piece, special in tok._segments(text, allow_special=True):
            if special is None:
                chunks.update(tok._pat.findall(piece))
        word_counts = {w.encode("utf-8"): c for w, c in chunks.items()}
        merges = train_merges(word_counts, vocab_size - 256 - len(specials), verbose)
        return cls(merges, specials, pattern)

    # ------------------------------------------------------------------ encoding
    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def _segments(self, text: str, allow_special: bool) -> Iterator[tuple[int, str, int | None]]:
        """(start, piece, special id or None): ``text`` cut at special tokens."""
        if self._special_pat is None or not allow_special:
            yield 0, text, None
            return
        pos = 0
        for m in self._special_pat.finditer(text):
            if m.start() > pos:
                yield pos, text[pos:m.start()], None
            yield m.start(), m.group(), self.special_tokens[m.group()]
            pos = m.end()
        if pos < len(text):
            yield pos, text[pos:], None

    def _encode_chunk(self, chunk: str, pos: int) -> tuple[int, ...]:
        """Apply the merges to one chunk, lowest rank first, until none applies."""
        ids = list(_check_utf8(chunk, "ByteBPETokenizer.encode", pos))
        ranks = self._ranks
        missing = len(ranks) + 1
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, missing))
            rank = ranks.get(pair)
            if rank is None:
                break
            ids = _merge(ids, pair[0], pair[1], 256 + rank)
        out = tuple(ids)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = out
        return out

    def _iter_chunk_ids(self, text: str, allow_special: bool) -> Iterator[tuple[int, ...]]:
        cache = self._cache
        for start, piece, special in self._segments(text, allow_special):
            if special is not None:
                yield (special,)
                continue
            pos = 0
            for m in self._pat.finditer(piece):
                if m.start() != pos or m.end() == pos:
                    break
                chunk = m.group()
                ids = cache.get(chunk)
                yield ids if ids is not None else self._encode_chunk(chunk, start + pos)
                pos = m.end()
            if pos != len(piece):
                raise ValueError(f"ByteBPETokenizer.encode: the pre-tokenizer pattern does not match "
                                 f"the text at position {start + pos} ({piece[pos:pos + 10]!r}...); "
                                 "its alternatives must cover every character")

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Token ids of ``text``. Special tokens in the text become their ids unless
        ``allow_special=False`` (then they are encoded as ordinary text)."""
        if not isinstance(text, str):
            raise TypeError(f"ByteBPETokenizer.encode: expected str, got {type(text).__name__}")
        out: list[int] = []
        extend = out.extend
        for ids in self._iter_chunk_ids(text, allow_special):
            extend(ids)
        return out

    def iter_encode(self, text: str, chunk_size: int = 1 << 20, allow_special: bool = True
                    ) -> Iterator[list[int]]:
        """``encode(text)`` in lists of about ``chunk_size`` ids, cut at chunk boundaries
        (so the result is exactly that of ``encode``)."""
        buf: list[int] = []
        for ids in self._iter_chunk_ids(text, allow_special):
            buf.extend(ids)
            if len(buf) >= chunk_size:
                yield buf
                buf = []
        if buf:
            yield buf

    # ------------------------------------------------------------------ decoding
    def decode_bytes(self, ids: Any) -> bytes:
        """The raw bytes of ``ids`` (useful to stream generated text: decode only
        complete UTF-8 sequences)."""
        ids = _as_id_list(ids)
        vocab = self._vocab
        if ids and (min(ids) < 0 or max(ids) >= len(vocab)):
            bad = next(i for i in ids if not 0 <= i < len(vocab))
            raise ValueError(f"ByteBPETokenizer.decode: id {bad} is outside the vocabulary [0, {len(vocab)})")
        return b"".join([vocab[i] for i in ids])

    def decode(self, ids: Any, errors: str = "replace") -> str:
        """The text of ``ids``. A sequence cut inside a multi-byte character decodes
        with U+FFFD there (``errors="replace"``); ``encode``'s output always decodes exactly."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def token_bytes(self, i: int) -> bytes:
        """The bytes that id ``i`` stands for."""
        if not 0 <= i < len(self._vocab):
            raise ValueError(f"ByteBPETokenizer.token_bytes: id {i} is outside [0, {len(self._vocab)})")
        return self._vocab[i]

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        return {"type": self.type_name, "version": 1, "vocab_size": self.vocab_size,
                "pattern": self.pattern, "merges": [list(m) for m in self.merges],
                "special_tokens": list(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> ByteBPETokenizer:
        if d.get("type") != cls.type_name:
            raise ValueError(f"ByteBPETokenizer.from_dict: type is {d.get('type')!r}, expected 'byte_bpe'")
        if "merges" not in d:
            raise ValueError("ByteBPETokenizer.from_dict: missing 'merges'")
        tok = cls(d["merges"], d.get("special_tokens", ()), d.get("pattern", DEFAULT_PATTERN))
        if "vocab_size" in d and d["vocab_size"] != tok.vocab_size:
            raise ValueError(f"ByteBPETokenizer.from_dict: vocab_size {d['vocab_size']} does not match "
                             f"256 + {len(tok.merges)} merges + {len(tok.special_tokens)} specials")
        return tok

    def __repr__(self) -> str:
        return (f"ByteBPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")
