"""The token cache: encode a corpus once, memory-map the ids on every later run.

    tokens = encode_to_memmap(tok, text, "cache/train.bin")   # np.memmap, read-only

writes two files:

- ``train.bin``: the ids as a flat little-endian ``uint16`` array (``uint32`` when the
  vocabulary has more than 65536 ids), nothing else, so ``np.memmap`` (or any
  language) reads it directly;
- ``train.bin.json``: the sidecar ``{"dtype", "length", "tokenizer" (fingerprint),
  "text_sha256", ...}``.

A later call with the same tokenizer (same fingerprint) and the same text (same
SHA-256) finds the sidecar and memory-maps ``train.bin`` without encoding anything.
Both files are written atomically, the sidecar last and removed first during a
rebuild, so a crash can never leave a sidecar that vouches for the wrong ids. Several
processes (MPI ranks) may build the same cache at once safely, but it is cheaper to
build on rank 0 and let the others call it after a barrier (they then just map it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._io import atomic_write, atomic_write_json, read_json
from .tokenizer import Tokenizer

__all__ = ["TokenFile", "encode_to_memmap", "text_digest", "token_dtype"]

_FORMAT = "minilm-tokens"


def token_dtype(vocab_size: int) -> np.dtype:
    """The on-disk id type: little-endian uint16 for vocabularies up to 65536 ids,
    uint32 beyond."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def text_digest(text: str, block: int = 1 << 22) -> str:
    """SHA-256 of the UTF-8 text (computed in blocks, so a huge text is never copied
    whole; lone surrogates are hashed with ``surrogatepass``)."""
    h = hashlib.sha256()
    for i in range(0, len(text), block):
        h.update(text[i:i + block].encode("utf-8", "surrogatepass"))
    return h.hexdigest()


class TokenFile:
    """A token cache on disk: ``tokens`` (a read-only ``np.memmap``) and ``meta`` (the
    sidecar). ``reused`` says whether :meth:`build` found a valid cache."""

    def __init__(self, path: Path, tokens: np.ndarray, meta: dict, reused: bool) -> None:
        self.path = path
        self.tokens = tokens
        self.meta = meta
        self.reused = reused

    @staticmethod
    def sidecar(path: str | os.PathLike) -> Path:
        """The sidecar of ``path``: the same name with ``.json`` appended."""
        path = Path(path)
        return path.with_name(path.name + ".json")

    @classmethod
    def open(cls, path: str | os.PathLike) -> TokenFile:
        """Map an existing cache; a missing, truncated or foreign file is a ValueError."""
        path = Path(path)
        meta = read_json(cls.sidecar(path), "token cache sidecar")
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ValueError(f"TokenFile.open: {str(cls.sidecar(path))!r} is not a {_FORMAT} sidecar")
        return cls._map(path, meta, reused=True)

    @classmethod
    def _map(cls, path: Path, meta: dict, reused: bool) -> TokenFile:
        dtype = np.dtype(meta["dtype"])
        length = int(meta["length"])
        try:
            size = path.stat().st_size
        except OSError:
            raise ValueError(f"TokenFile.open: token file {str(path)!r} does not exist") from None
        if size != length * dtype.itemsize:
            raise ValueError(f"TokenFile.open: {str(path)!r} has {size} bytes, the sidecar promises "
                             f"{length} x {dtype.itemsize}")
        if length == 0:  # mmap cannot map an empty file
            tokens: np.ndarray = np.zeros(0, dtype=dtype)
        else:
            tokens = np.memmap(path, dtype=dtype, mode="r", shape=(length,))
        return cls(path, tokens, meta, reused)

    @classmethod
    def build(cls, tokenizer: Tokenizer, text: str, path: str | os.PathLike,
              chunk_size: int = 1 << 20, force: bool = False) -> TokenFile:
        """Encode ``text`` into ``path`` unless a cache for this exact tokenizer and text
        is already there (then just map it). Encoding streams ``tokenizer.iter_encode``
        in pieces of about ``chunk_size`` ids, so memory stays bounded by the text."""
        path = Path(path)
        fingerprint = tokenizer.fingerprint()
        digest = text_digest(text)
        if not force:
            try:
                tf = cls.open(path)
            except (ValueError, KeyError, TypeError):
                tf = None
            if (tf is not None and tf.meta.get("tokenizer") == fingerprint
                    and tf.meta.get("text_sha256") == digest):
                return tf
        side = cls.sidecar(path)
        side.unlink(missing_ok=True)  # from here on no sidecar vouches for path
        dtype = token_dtype(tokenizer.vocab_size)
        length = 0

        def write(f: IO[bytes]) -> None:
            nonlocal length
            for ids in tokenizer.iter_encode(text, chunk_size):
                arr = np.asarray(ids, dtype=dtype)
                f.write(arr.tobytes())
                length += arr.size

        atomic_write(path, write)
        meta = {
            "format": _FORMAT, "version": 1, "dtype": dtype.str, "length": length,
            "vocab_size": tokenizer.vocab_size, "tokenizer": fingerprint,
            "tokenizer_type": tokenizer.to_dict().get("type"),
            "text_sha256": digest, "text_chars": len(text),
        }
        atomic_write_json(side, meta)
        # Map with the meta in hand: another process building the same cache at the same
        # moment may have removed the sidecar, but its file has these very bytes.
        return cls._map(path, meta, reused=False)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, key: Any) -> Any:
        return self.tokens[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = np.asarray(self.tokens)
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return (f"TokenFile({str(self.path)!r}, length={len(self)}, dtype={self.tokens.dtype}, "
                f"reused={self.reused})")


def encode_to_memmap(tokenizer: Tokenizer, text: str, path: str | os.PathLike,
                     chunk_size: int = 1 << 20, force: bool = False) -> np.ndarray:
    """The ids of ``tokenizer.encode(text)`` as a read-only memmap cached at ``path``
    (see :class:`TokenFile`; ``force=True`` re-encodes)."""
    return TokenFile.build(tokenizer, text, path, chunk_size, force).tokens
