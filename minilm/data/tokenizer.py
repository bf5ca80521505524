"""Tokenizers: the common interface, the character tokenizer and the registry.

Every tokenizer maps ``str -> list[int]`` and back, and serialises to a small JSON
dict (so it can live inside checkpoint metadata)::

    tok = CharTokenizer.train("hello world")
    ids = tok.encode("hello")            # [3, 2, 4, 4, 5]
    tok.decode(ids)                      # "hello"
    tok.save("tok.json"); load_tokenizer("tok.json")
    tokenizer_from_dict(tok.to_dict())   # dispatches on d["type"]

The byte-level BPE tokenizer lives in :mod:`minilm.data.bpe`; docs/tokenizer.md
explains both.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from ._io import atomic_write_json, read_json

__all__ = [
    "CharTokenizer", "Tokenizer", "load_tokenizer", "register_tokenizer", "tokenizer_from_dict",
]

_REGISTRY: dict[str, type[Tokenizer]] = {}


def register_tokenizer(cls: type[Tokenizer]) -> type[Tokenizer]:
    """Class decorator: make ``cls`` loadable by :func:`tokenizer_from_dict` under
    ``cls.type_name``."""
    name = cls.type_name
    if not name:
        raise ValueError(f"register_tokenizer: {cls.__name__} has no type_name")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"register_tokenizer: type {name!r} is already taken by "
                         f"{_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from ``to_dict()`` output, choosing the class by ``d["type"]``."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError("tokenizer_from_dict: expected a dict with a 'type' key, got "
                         f"{type(d).__name__}" + (f" with keys {sorted(d)}" if isinstance(d, dict) else ""))
    cls = _REGISTRY.get(d["type"])
    if cls is None:
        raise ValueError(f"tokenizer_from_dict: unknown tokenizer type {d['type']!r}; "
                         f"known: {sorted(_REGISTRY)}")
    return cls.from_dict(d)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load any tokenizer saved with ``save(path)``."""
    return tokenizer_from_dict(read_json(path, "tokenizer file"))


def _as_id_list(ids: Any) -> list[int]:
    """``ids`` (list, tuple, NumPy array, minilm Tensor, any iterable of ints) as a list."""
    if hasattr(ids, "tolist"):          # NumPy arrays and minilm Tensors
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


class Tokenizer:
    """Interface shared by all tokenizers.

    Subclasses implement ``encode``, ``decode``, ``vocab_size``, ``to_dict`` and
    ``from_dict``, and set ``type_name`` (the ``"type"`` key of their dict).
    """

    type_name: ClassVar[str] = ""

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Any) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        raise NotImplementedError

    # ---------------------------------------------------------------- shared helpers
    def iter_encode(self, text: str, chunk_size: int = 1 << 20) -> Iterator[list[int]]:
        """Encode ``text`` piece by piece (lists of ids whose concatenation equals
        ``encode(text)``), so a large file never needs all its ids in one list.
        The default cuts the text every ``chunk_size`` characters, which is exact for
        tokenizers without context across characters; BPE overrides it."""
        for start in range(0, len(text), chunk_size):
            yield self.encode(text[start:start + chunk_size])

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of ``to_dict()``: equal fingerprints mean the
        two tokenizers encode every text identically (used by the token cache)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("ascii")).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write ``to_dict()`` as JSON to ``path`` atomically (temp file + rename)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a tokenizer saved with :meth:`save`. ``Tokenizer.load`` accepts any
        type; ``CharTokenizer.load`` insists on a character tokenizer."""
        tok = load_tokenizer(path)
        if cls is not Tokenizer and not isinstance(tok, cls):
            raise ValueError(f"{cls.__name__}.load: {str(path)!r} holds a {type(tok).__name__}")
        return tok

    def __len__(self) -> int:
        return self.vocab_size

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.fingerprint())


@register_tokenizer
class CharTokenizer(Tokenizer):
    """One id per character: the vocabulary is the sorted set of characters seen.

    ``unk`` (optional) is the id that unknown characters map to; without it, encoding
    a character outside the vocabulary raises ``ValueError`` naming it and its position.
    """

    type_name = "char"

    def __init__(self, chars: Iterable[str], unk: int | None = None) -> None:
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer: vocabulary entries must be single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: vocabulary has duplicate characters")
        if not chars:
            raise ValueError("CharTokenizer: empty vocabulary")
        if unk is not None and not (isinstance(unk, int) and 0 <= unk < len(chars)):
            raise ValueError(f"CharTokenizer: unk id {unk!r} is outside the vocabulary [0, {len(chars)})")
        self.chars: list[str] = chars
        self.unk = unk
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text: str, unk_char: str | None = None) -> CharTokenizer:
        """The tokenizer whose vocabulary is the sorted unique characters of ``text``.
        With ``unk_char`` (e.g. ``"\\ufffd"``) that character joins the vocabulary and
        unknown characters encode to it instead of raising."""
        chars = set(text)
        if unk_char is not None:
            chars.add(unk_char)
        if not chars:
            raise ValueError("CharTokenizer.train: empty text")
        chars_sorted = sorted(chars)
        return cls(chars_sorted, None if unk_char is None else chars_sorted.index(unk_char))

    from_text = train

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode: expected str, got {type(text).__name__}")
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pass
        if self.unk is not None:
            unk = self.unk
            return [stoi.get(c, unk) for c in text]
        for pos, c in enumerate(text):
            if c not in stoi:
                raise ValueError(f"CharTokenizer.encode: character {c!r} (U+{ord(c):04X}) at "
                                 f"position {pos} is not in the vocabulary of {len(self.chars)} "
                                 "characters") from None
        raise AssertionError("unreachable")

    def decode(self, ids: Any) -> str:
        ids = _as_id_list(ids)
        n = len(self.chars)
        if ids and (min(ids) < 0 or max(ids) >= n):
            bad = next(i for i in ids if not 0 <= i < n)
            raise ValueError(f"CharTokenizer.decode: id {bad} is outside the vocabulary [0, {n})")
        chars = self.chars
        return "".join([chars[i] for i in ids])

    def to_dict(self) -> dict:
        return {"type": self.type_name, "version": 1, "chars": list(self.chars), "unk": self.unk}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        if d.get("type") != cls.type_name:
            raise ValueError(f"CharTokenizer.from_dict: type is {d.get('type')!r}, expected 'char'")
        if "chars" not in d:
            raise ValueError("CharTokenizer.from_dict: missing 'chars'")
        return cls(d["chars"], d.get("unk"))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unk={self.unk})"

