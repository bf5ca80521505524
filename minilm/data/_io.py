"""Small file helpers shared by the data package: atomic writes and JSON.

Every file the data package writes (tokenizers, token caches, their sidecars) goes
through :func:`atomic_write_bytes`: the bytes go to a temporary file in the same
folder, are flushed to disk, and the temporary file is renamed over the target with
``os.replace`` (atomic on POSIX and Windows). A reader therefore sees either the old
file or the complete new one, never a half-written file, even when the writer
crashes or several MPI ranks write the same cache at once.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "read_json"]


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


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse the JSON file at ``path``; a missing or malformed file is a ValueError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{what} {str(path)!r} does not exist") from None
    except OSError as e:
        raise ValueError(f"cannot read {what} {str(path)!r}: {e}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {e}") from None
