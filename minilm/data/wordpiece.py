"""WordPiece: BERT's tokenizer, loaded from a ``vocab.txt`` or trained from a corpus.

Encoding is two stages.

1. **Basic tokenizer** (``basic_tokenize``), on the whole text:

   - clean: drop NUL, U+FFFD and control characters (Unicode category C*, except
     tab, newline and carriage return, which are whitespace); every whitespace
     character (those three, space, category Zs) becomes a space;
   - put spaces around every CJK ideograph (the CJK Unified Ideographs blocks and their
     extensions and compatibility blocks: Chinese has no spaces, so each character is a
     word; Japanese kana and Korean Hangul are not in these blocks and are left alone);
   - split on whitespace; per word, when ``lowercase``: lower-case it, then strip
     accents (``strip_accents``, by default the same as ``lowercase``): Unicode NFD
     decomposition and removal of the combining marks (category Mn), so
     "Café" → "cafe";
   - split each word at punctuation: every punctuation character (ASCII 33–47, 58–64,
     91–96, 123–126, or any Unicode category P*) becomes a word of its own.

   Special tokens written in the text (``[CLS]``, ``[SEP]``, ``[MASK]``, ``[PAD]``,
   ``[UNK]``) are kept whole and map to their ids, as the reference tokenizer does.

2. **WordPiece** (``wordpiece``), per word: greedy longest-match-first against the
   vocabulary. From the start of the word take the longest prefix in the vocabulary;
   then, from where it ended, the longest piece that is in the vocabulary *with* the
   continuation mark ``##``; and so on. If some position has no matching piece, the
   whole word is ``[UNK]`` (not just the unmatched rest); a word longer than
   ``max_input_chars_per_word`` (100) characters is ``[UNK]`` without trying::

       "unaffable" -> ["un", "##aff", "##able"]

``encode(text)`` adds ``[CLS] … [SEP]`` (a pair: ``[CLS] A [SEP] B [SEP]``, token
types 0 up to and including the first ``[SEP]``, 1 after), truncating to ``max_length``
ids including the specials (a pair: the longer text is cut first, see
``pair_truncation``; an empty-string pair counts as no pair, as in the reference
tokenizer). ``batch_encode`` pads with ``[PAD]`` to the longest row and returns the
attention mask (1 at real tokens). ``decode`` joins the pieces, gluing ``##``
continuations to the piece before.

Training (``WordPieceTokenizer.train``): the likelihood criterion of WordPiece as it is
usually described for BERT's vocabulary. Words (after the basic tokenizer) are split
into characters, every non-initial one marked ``##``; the initial vocabulary is every
such symbol. Repeatedly merge the adjacent pair (a, b) with the highest

    score(a, b) = count(ab) / (count(a) · count(b))

— how much more often a and b occur together than their frequencies predict, i.e. the
merge that raises the corpus likelihood under a unigram model the most per use — into
the symbol ab (``##`` kept only from a), until ``vocab_size`` symbols (specials
included). Ties break by the pair's string order, so training is deterministic.
Dividing by the parts' counts favours pairs of rare symbols ("pdb" before "the"), so
common words become whole tokens only once the vocabulary is large next to the corpus
(on Python's documentation, ~20k distinct words: "the" is ``th ##e`` at 4,000 tokens
and one token at 8,000; the corpus shrinks from 282k to 121k tokens between 2,000 and
8,000).
Encoding a trained vocabulary uses the same greedy longest-match as a loaded one.
"""

from __future__ import annotations

import heapq
import os
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .tokenizer import Tokenizer, _as_id_list, register_tokenizer

__all__ = ["SPECIAL_TOKENS", "WordPieceTokenizer", "basic_tokenize", "is_punctuation",
           "pair_truncation", "train_wordpiece"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

#: CJK ideograph blocks (start, end), inclusive: Unified Ideographs, Extension A-E,
#: Compatibility Ideographs and their supplement.
_CJK_BLOCKS = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(cp: int) -> bool:
    return any(a <= cp <= b for a, b in _CJK_BLOCKS)


def is_punctuation(ch: str) -> bool:
    """ASCII symbols that are not letters, digits or space (so ``$``, ``^``, ``` ` ```
    count, though Unicode files them as symbols), and every Unicode P* character."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _clean(text: str) -> str:
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word)
                   if unicodedata.category(c) != "Mn")


def _split_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for i, ch in enumerate(word):
        if is_punctuation(ch):
            if start < i:
                pieces.append(word[start:i])
            pieces.append(ch)
            start = i + 1
    if start < len(word):
        pieces.append(word[start:])
    return pieces


def basic_tokenize(text: str, lowercase: bool = True, strip_accents: bool | None = None,
                   never_split: Iterable[str] = ()) -> list[str]:
    """Stage 1 (see the module docstring): cleaned, CJK-spaced, whitespace-split,
    optionally lower-cased and accent-stripped, punctuation-split words. Words in
    ``never_split`` are kept as they are."""
    strip = lowercase if strip_accents is None else strip_accents
    keep = set(never_split)
    words: list[str] = []
    for word in _clean(text).split():
        if word in keep:
            words.append(word)
            continue
        if lowercase:
            word = word.lower()
        if strip:
            word = _strip_accents(word)
        words.extend(_split_punctuation(word))
    return words


@register_tokenizer
class WordPieceTokenizer(Tokenizer):
    """BERT's WordPiece tokenizer; see the module docstring. ``vocab``: the tokens in
    id order (line i of a ``vocab.txt`` is id i)."""

    type_name = "wordpiece"

    def __init__(self, vocab: Sequence[str], lowercase: bool = True,
                 strip_accents: bool | None = None, max_input_chars_per_word: int = 100,
                 unk_token: str = "[UNK]", cls_token: str = "[CLS]", sep_token: str = "[SEP]",
                 pad_token: str = "[PAD]", mask_token: str = "[MASK]") -> None:
        self.vocab = list(vocab)
        self.token_to_id: dict[str, int] = {}
        for i, tok in enumerate(self.vocab):
            self.token_to_id.setdefault(tok, i)  # a duplicate line keeps its first id
        self.lowercase, self.strip_accents = bool(lowercase), strip_accents
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        names = {"unk_token": unk_token, "cls_token": cls_token, "sep_token": sep_token,
                 "pad_token": pad_token, "mask_token": mask_token}
        missing = [f"{k}={v!r}" for k, v in names.items() if v not in self.token_to_id]
        if missing:
            raise ValueError(f"WordPieceTokenizer: the vocabulary ({len(self.vocab)} tokens) "
                             f"lacks the special tokens {', '.join(missing)}")
        self.specials = dict(names)
        self.unk_id, self.cls_id = self.token_to_id[unk_token], self.token_to_id[cls_token]
        self.sep_id, self.pad_id = self.token_to_id[sep_token], self.token_to_id[pad_token]
        self.mask_id = self.token_to_id[mask_token]
        self.special_ids = frozenset(self.token_to_id[t] for t in names.values())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_vocab_file(cls, path: str | os.PathLike, lowercase: bool = True,
                        **kwargs: Any) -> WordPieceTokenizer:
        """One token per line (trailing newline characters stripped, nothing else)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"WordPiece vocabulary {str(p)!r} does not exist")
        try:
            lines = p.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise ValueError(f"WordPiece vocabulary {str(p)!r} is not UTF-8 ({exc.reason} at "
                             f"byte {exc.start})") from None
        if lines and lines[-1] == "":
            lines.pop()
        return cls([line.rstrip("\r") for line in lines], lowercase=lowercase, **kwargs)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, lowercase: bool = True,
              min_frequency: int = 1, max_word_chars: int = 100) -> WordPieceTokenizer:
        """Learn a vocabulary of ``vocab_size`` tokens (the five specials first) by the
        likelihood criterion of the module docstring."""
        counts: Counter = Counter()
        for text in texts:
            counts.update(w for w in basic_tokenize(text, lowercase)
                          if len(w) <= max_word_chars)
        vocab = train_wordpiece(counts, vocab_size - len(SPECIAL_TOKENS), min_frequency)
        return cls(list(SPECIAL_TOKENS) + vocab, lowercase=lowercase)

    # ------------------------------------------------------------------ encoding
    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of ``text`` (no ``[CLS]``/``[SEP]``)."""
        out: list[str] = []
        never = self.specials.values()
        for word in basic_tokenize(text, self.lowercase, self.strip_accents, never):
            out.extend(self.wordpiece(word))
        return out

    def wordpiece(self, word: str) -> list[str]:
        """Stage 2 for one word: greedy longest-match-first, ``[UNK]`` for the whole
        word when some position matches nothing."""
        if word in self.token_to_id:
            return [word]
        if len(word) > self.max_input_chars_per_word:
            return [self.specials["unk_token"]]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.token_to_id:
                    break
                end -= 1
            if end == start:
                return [self.specials["unk_token"]]
            pieces.append(piece)
            start = end
        return pieces

    def _ids(self, text: str) -> list[int]:
        get = self.token_to_id.get
        return [get(t, self.unk_id) for t in self.tokenize(text)]

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True,
               max_length: int | None = None) -> list[int]:
        """Ids of ``text`` (and ``pair``): ``[CLS] text [SEP] (pair [SEP])``, at most
        ``max_length`` ids including the specials."""
        return self.encode_with_types(text, pair, add_special_tokens, max_length)[0]

    def encode_with_types(self, text: str, pair: str | None = None,
                          add_special_tokens: bool = True,
                          max_length: int | None = None) -> tuple[list[int], list[int]]:
        """``(ids, token_type_ids)``; see :meth:`encode`."""
        if not isinstance(text, str) or (pair is not None and not isinstance(pair, str)):
            raise TypeError(f"WordPieceTokenizer.encode: texts must be str, got "
                            f"{type(text).__name__}" + ("" if pair is None else
                                                        f" and {type(pair).__name__}"))
        a = self._ids(text)
        b = self._ids(pair) if pair else None  # an empty pair is no pair, as in the reference
        n_special = (3 if b is not None else 2) if add_special_tokens else 0
        if max_length is not None:
            if max_length < n_special + (2 if b is not None else 1):
                raise ValueError(f"WordPieceTokenizer.encode: max_length {max_length} "
                                 f"leaves no room for text next to {n_special} special "
                                 "tokens")
            budget = max_length - n_special
            if b is None:
                a = a[:budget]
            else:
                keep_a, keep_b = pair_truncation(len(a), len(b), budget)
                a, b = a[:keep_a], b[:keep_b]
        if not add_special_tokens:
            ids = a + (b or [])
            return ids, [0] * len(a) + [1] * len(b or [])
        ids = [self.cls_id] + a + [self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += b + [self.sep_id]
            types += [1] * (len(b) + 1)
        return ids, types

    def batch_encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                     max_length: int | None = None,
                     pad_to_multiple_of: int | None = None) -> dict[str, np.ndarray]:
        """Encode and pad to the longest row: ``input_ids``, ``attention_mask`` (1 at
        real tokens, 0 at padding) and ``token_type_ids``, each (B, L) int64."""
        if isinstance(texts, str):
            raise TypeError("WordPieceTokenizer.batch_encode: give a list of texts, not one str")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"WordPieceTokenizer.batch_encode: {len(texts)} texts but "
                             f"{len(pairs)} pairs")
        rows = [self.encode_with_types(t, None if pairs is None else pairs[i],
                                       max_length=max_length) for i, t in enumerate(texts)]
        L = max((len(r[0]) for r in rows), default=0)
        if pad_to_multiple_of:
            L = -(-L // pad_to_multiple_of) * pad_to_multiple_of
        ids = np.full((len(rows), L), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), L), dtype=np.int64)
        types = np.zeros((len(rows), L), dtype=np.int64)
        for i, (r, t) in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)], types[i, :len(t)] = r, 1, t
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    # ------------------------------------------------------------------ decoding
    def convert_ids_to_tokens(self, ids: Any) -> list[str]:
        out = []
        for i in _as_id_list(ids):
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"WordPieceTokenizer.decode: id {i} is outside the "
                                 f"vocabulary (0..{len(self.vocab) - 1})")
            out.append(self.vocab[i])
        return out

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        """The pieces joined by spaces, ``##`` continuations glued to the piece before;
        specials dropped unless ``skip_special_tokens=False``."""
        words: list[str] = []
        for i, tok in zip(_as_id_list(ids), self.convert_ids_to_tokens(ids)):
            if skip_special_tokens and i in self.special_ids and i != self.unk_id:
                continue
            if tok.startswith("##") and words:
                words[-1] += tok[2:]
            else:
                words.append(tok)
        return " ".join(words)

    def normalize(self, text: str) -> str:
        """What ``decode(encode(text))`` gives back when no word is ``[UNK]``: the basic
        tokenizer's words joined by spaces."""
        return " ".join(basic_tokenize(text, self.lowercase, self.strip_accents,
                                       self.specials.values()))

    # ------------------------------------------------------------------ the Tokenizer interface
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def to_dict(self) -> dict:
        return {"type": self.type_name, "vocab": self.vocab, "lowercase": self.lowercase,
                "strip_accents": self.strip_accents,
                "max_input_chars_per_word": self.max_input_chars_per_word,
                "specials": self.specials}

    @classmethod
    def from_dict(cls, d: dict) -> WordPieceTokenizer:
        return cls(d["vocab"], lowercase=d["lowercase"], strip_accents=d["strip_accents"],
                   max_input_chars_per_word=d["max_input_chars_per_word"], **d["specials"])

    def save_vocab(self, path: str | os.PathLike) -> None:
        """Write ``vocab.txt`` (one token per line, id order)."""
        Path(path).write_text("".join(t + "\n" for t in self.vocab), encoding="utf-8")

    def __repr__(self) -> str:
        return (f"WordPieceTokenizer(vocab_size={len(self.vocab)}, "
                f"lowercase={self.lowercase})")


def pair_truncation(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """How many tokens of a pair of texts (n1, n2 long) to keep within ``budget``
    ("longest first", as the reference tokenizer does it): a text that fits in half the
    budget keeps all its tokens and the other gets the rest; when neither does, the
    longer keeps ceil(budget / 2) and the shorter floor(budget / 2) (the second text
    counts as the longer on a tie)."""
    if n1 + n2 <= budget:
        return n1, n2
    half, rest = budget // 2, budget - budget // 2
    if min(n1, n2) * 2 <= budget:
        return (n1, budget - n1) if n1 <= n2 else (budget - n2, n2)
    return (rest, half) if n1 > n2 else (half, rest)


# ---------------------------------------------------------------------------- training
def _symbols(word: str) -> tuple[str, ...]:
    return (word[0],) + tuple("##" + c for c in word[1:])


def _joined(a: str, b: str) -> str:
    return a + (b[2:] if b.startswith("##") else b)


def train_wordpiece(word_counts: dict[str, int], n_tokens: int,
                    min_frequency: int = 1) -> list[str]:
    """``n_tokens`` WordPiece symbols (every character symbol first, then merges in
    order) learnt from ``word_counts`` by the score count(ab) / (count(a) count(b)).

    Incremental: pair counts and, per pair, the words that contain it are kept up to
    date; a merge rewrites only the words holding the pair. The best pair comes from a
    heap of (−score, pair) entries, re-checked against the current counts when popped
    (an entry whose score changed is pushed again), so a merge costs about the number
    of words it touches, not a pass over the corpus. A merge of (a, b) lowers count(a)
    and count(b), which raises the score of every other pair holding a or b: those are
    pushed again with their new score."""
    words = {w: c for w, c in word_counts.items() if c >= min_frequency and w}
    split = {w: list(_symbols(w)) for w in words}
    sym_count: Counter = Counter()
    pair_count: Counter = Counter()
    where: defaultdict = defaultdict(set)  # pair -> the words holding it
    by_symbol: defaultdict = defaultdict(set)  # symbol -> the pairs it is part of
    for w, syms in split.items():
        c = words[w]
        for s in syms:
            sym_count[s] += c
        for a, b in zip(syms, syms[1:]):
            pair_count[a, b] += c
            where[a, b].add(w)
            by_symbol[a].add((a, b))
            by_symbol[b].add((a, b))
    vocab = sorted(sym_count)
    seen = set(vocab)
    if len(vocab) >= n_tokens:
        return vocab[:n_tokens]

    def score(p: tuple) -> float:
        return pair_count[p] / (sym_count[p[0]] * sym_count[p[1]])

    heap = [(-score(p), p) for p in pair_count]
    heapq.heapify(heap)
    while len(vocab) < n_tokens and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count[pair] <= 0:
            continue
        current = score(pair)
        if current != -neg:  # stale: its counts moved since it was pushed
            heapq.heappush(heap, (-current, pair))
            continue
        a, b = pair
        new = _joined(a, b)
        touched: set = set()
        for w in list(where.pop(pair, ())):
            syms, c = split[w], words[w]
            for x, y in zip(syms, syms[1:]):  # remove the word's old pairs
                pair_count[x, y] -= c
                where[x, y].discard(w)
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(new)
                    sym_count[a] -= c
                    sym_count[b] -= c
                    sym_count[new] += c
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            split[w] = out
            for x, y in zip(out, out[1:]):
                pair_count[x, y] += c
                where[x, y].add(w)
                by_symbol[x].add((x, y))
                by_symbol[y].add((x, y))
                touched.add((x, y))
        pair_count.pop(pair, None)
        # count(a) and count(b) fell, so every pair with a or b scores higher now: push
        # them again (the stale lower entries are skipped when popped)
        touched |= by_symbol[a] | by_symbol[b]
        for p in touched:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-score(p), p))
        if new not in seen:
            seen.add(new)
            vocab.append(new)
    return vocab
