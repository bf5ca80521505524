"""Small file helpers shared by the data package: atomic writes and JSON.

Every file the data package writes (tokenizers, token caches, their sidecars) goes
through :func:`atomic_write_bytes`: the bytes go to a temporary file in the same
folder, are flushed to disk, and the temporary file is renamed over the target with
``os.replace`` (atomic on POSIX and Windows). A reader therefore sees either the old
file or the complete new one, never a half-written file, even when the writer
crashes or several MPI ranks write the same cache at once.

Every file it reads whole (corpora, tokenizer JSON, sidecars) goes through
:func:`read_regular_file`: it must be a regular file (a device such as ``/dev/zero``,
a FIFO or a socket is refused before a byte is read, so a read neither runs until
memory is gone nor blocks forever) of at most ``max_bytes`` bytes
(:data:`DEFAULT_MAX_BYTES`, 2 GiB, unless the caller passes another limit).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

__all__ = ["DEFAULT_MAX_BYTES", "atomic_write", "atomic_write_bytes", "atomic_write_json",
           "file_kind", "limit_text", "read_json", "read_regular_file"]

#: The most bytes :func:`read_regular_file` reads unless told otherwise: 2 GiB.
DEFAULT_MAX_BYTES = 2 << 30


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary binary file, then rename it to ``path``."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or an iterable of byte chunks) to ``path`` atomically."""
    def write(f: IO[bytes]) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            f.write(data)
        else:
            for chunk in data:
                f.write(chunk)

    atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (ASCII, so any str survives) atomically."""
    text = json.dumps(obj, indent=1, sort_keys=False, ensure_ascii=True) + "\n"
    atomic_write_bytes(path, text.encode("ascii"))


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words: "a regular file", "a character device" …"""
    for test, words in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a regular file"


def read_regular_file(path: str | os.PathLike, max_bytes: int | None = DEFAULT_MAX_BYTES,
                      what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them (``None``:
    no limit). A missing or unreadable file, anything but a regular file (device,
    FIFO, socket, folder), or a file over the limit is a ValueError naming the path.

    The file is opened non-blocking (so a FIFO swapped in after a check cannot hang
    the open) and checked with ``fstat`` on the open descriptor; at most
    ``max_bytes + 1`` bytes are read, so a file that grows while it is read is caught too."""
    path = Path(path)
    name = str(path)
    try:  # a socket cannot even be opened: say what it is first
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # the open below says why
    if mode is not None and not stat.S_ISREG(mode):
        raise ValueError(_not_regular(what, name, mode))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ValueError(f"{what} {name!r} does not exist") from None
    except OSError as e:
        raise ValueError(f"{what} {name!r} cannot be read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(_not_regular(what, name, st.st_mode))
        if max_bytes is not None and st.st_size > max_bytes:
            raise ValueError(_too_big(what, name, f"is {st.st_size} bytes", max_bytes))
        with os.fdopen(fd, "rb") as f:
            fd = -1
            raw = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as e:
        raise ValueError(f"{what} {name!r} cannot be read: {e.strerror or e}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if max_bytes is not None and len(raw) > max_bytes:
        raise ValueError(_too_big(what, name, "grew while it was read", max_bytes))
    return raw


def _not_regular(what: str, name: str, mode: int) -> str:
    return (f"{what} {name!r} is {file_kind(mode)}, not a regular file; "
            "data must be read from a regular file")


def limit_text(max_bytes: int) -> str:
    """``max_bytes`` in words: "2147483648 bytes (2 GiB)"."""
    if max_bytes >= 2**30:
        return f"{max_bytes} bytes ({max_bytes / 2**30:.3g} GiB)"
    if max_bytes >= 2**20:
        return f"{max_bytes} bytes ({max_bytes / 2**20:.3g} MiB)"
    return f"{max_bytes} bytes"


def _too_big(what: str, name: str, size: str, max_bytes: int) -> str:
    return (f"{what} {name!r} {size}, over the limit of {limit_text(max_bytes)}; "
            "pass a larger max_bytes to read it")


def read_json(path: str | os.PathLike, what: str = "JSON file",
              max_bytes: int | None = DEFAULT_MAX_BYTES) -> Any:
    """Parse the JSON file at ``path``; a missing, malformed, non-regular or too
    large (over ``max_bytes``) file is a ValueError."""
    path = Path(path)
    raw = read_regular_file(path, max_bytes, what)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {e}") from None
