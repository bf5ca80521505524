"""Text corpora: the built-in one (shipped with CPython) or your own files.

    text = load_corpus()                  # built-in: pydoc's help topics, ~465 KB
    text = load_corpus("book.txt")        # one UTF-8 file
    text = load_corpus("corpus/")         # every *.txt / *.md below, sorted, "\\n\\n"-joined

The built-in corpus is ``pydoc_data.topics.topics`` (the text of ``help("if")`` and
friends): English prose with Python code, present in every CPython install, so demos
and tests need no download. Its values are joined in sorted key order, so it is the
same string on every run (for a given Python version).

Only regular files are read (``/dev/zero``, a FIFO or a socket given as the corpus is
a ValueError naming it and what it is; in a folder such entries are not corpus files),
and at most ``max_bytes`` bytes in all (default :data:`DEFAULT_MAX_BYTES`, 2 GiB): a
larger corpus is a ValueError, not a run that dies of MemoryError.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._io import DEFAULT_MAX_BYTES, limit_text, read_regular_file

__all__ = ["CORPUS_SUFFIXES", "DEFAULT_MAX_BYTES", "builtin_corpus", "corpus_files", "load_corpus"]

#: File suffixes a corpus folder contributes.
CORPUS_SUFFIXES = (".txt", ".md")


def builtin_corpus() -> str:
    """CPython's pydoc help topics, joined by blank lines in sorted key order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some stripped-down Python builds drop pydoc_data
        raise ValueError("load_corpus: the built-in corpus needs the stdlib module "
                         "pydoc_data, which this Python lacks; pass a path instead") from e
    return "\n\n".join(topics[k] for k in sorted(topics))


def corpus_files(folder: str | os.PathLike) -> list[Path]:
    """The *.txt and *.md regular files below ``folder`` (recursively, hidden files and
    folders skipped; devices, FIFOs and sockets are not files), sorted by their path
    relative to ``folder``."""
    folder = Path(folder)
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in CORPUS_SUFFIXES and p.is_file():
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _read_text(path: Path, max_bytes: int | None) -> str:
    """A regular file's text (at most ``max_bytes`` bytes), decoded as strict UTF-8
    (a leading BOM dropped, line endings kept)."""
    raw = _read_bytes(path, max_bytes)
    return _decode(path, raw)


def _read_bytes(path: Path, max_bytes: int | None) -> bytes:
    return read_regular_file(path, max_bytes, "load_corpus:")


def _decode(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"load_corpus: {str(path)!r} is not valid UTF-8 (byte {e.start}: "
                         f"{raw[e.start:e.start + 1]!r})") from None
    return text.removeprefix("\ufeff")


def load_corpus(path: str | os.PathLike | None = None,
                max_bytes: int | None = DEFAULT_MAX_BYTES) -> str:
    """The training text: the built-in corpus (``path=None``), a UTF-8 file, or a
    folder's *.txt / *.md files (recursive, sorted, empty files skipped, joined by a
    blank line). A missing path, an empty file or folder, a file that is not UTF-8,
    a path that is not a regular file (a device, FIFO or socket), or more than
    ``max_bytes`` bytes of text in all (``None``: no limit) is a ``ValueError`` naming
    the path."""
    if path is None:
        return builtin_corpus()
    p = Path(path)
    if p.is_dir():
        files = corpus_files(p)
        texts = []
        total = 0
        for f in files:
            raw = _read_bytes(f, max_bytes)
            total += len(raw)
            if max_bytes is not None and total > max_bytes:
                raise ValueError(f"load_corpus: folder {str(p)!r} holds more than "
                                 f"{limit_text(max_bytes)} of "
                                 f"{'/'.join('*' + s for s in CORPUS_SUFFIXES)} files (over the "
                                 f"limit at {str(f)!r}); pass a larger max_bytes to read it")
            text = _decode(f, raw)
            if text:
                texts.append(text)
        if not texts:
            what = "only empty" if files else "no"
            raise ValueError(f"load_corpus: folder {str(p)!r} has {what} "
                             f"{'/'.join('*' + s for s in CORPUS_SUFFIXES)} files")
        return "\n\n".join(texts)
    if not p.exists():
        raise ValueError(f"load_corpus: {str(p)!r} does not exist")
    text = _read_text(p, max_bytes)
    if not text:
        raise ValueError(f"load_corpus: {str(p)!r} is empty")
    return text
