"""Owned run directories: a run knows what it is, only one process writes it, and a
resume continues exactly that run.

A run directory (``--out-dir``) holds, besides checkpoints and logs:

- ``run.json``, the *record*, written once when the run is created: the model and
  training configs, the SHA-256 of the tokenizer and of the training text, the minilm
  and Python versions, the command line. ``--resume`` checks the directory against it;
  ``minilm eval`` checks the data against it.
- ``run.lock`` while a process trains into it: ``{"pid", "host", "start"}`` (``start``
  is the process's start time from ``/proc``, so a reused PID is not mistaken for the
  owner). A lock whose process is gone (``kill -9``, a crash, a reboot) is *stale* and
  taken over with a note; a live one refuses the second writer.

The rules :class:`RunDir` applies (one process, or rank 0 of an MPI job):

============================  =========================================================
``train`` into …              outcome
============================  =========================================================
a new or empty directory      the run is created (record written once data, tokenizer
                              and model are known to be good; a failure before that
                              removes what this attempt wrote)
an existing run               refused: continue it with ``--resume``, or start afresh
                              with ``--overwrite``, which *moves* the old run to
                              ``<dir>.old-<date>-<time>`` (nothing is ever deleted)
a non-empty non-run folder    refused: pick another ``--out-dir``
a file, an unwritable path    refused, naming the path
a directory locked by a live  refused, naming the PID
process
============================  =========================================================

On ``--resume`` the settings come from the record; settings given again on the command
line or in ``--config`` must equal the recorded ones, except :data:`RESUME_MAY_CHANGE`
(run length, logging and evaluation cadence, the backend and the process grid, none of
which changes what one training step computes). The tokenizer file must be the
recorded one and the one inside the checkpoint; the training text must hash to the
recorded digest (the file may have moved: it is the content that counts).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..data._io import atomic_write_bytes

__all__ = ["LAUNCH_SETTINGS", "LOCK_NAME", "RECORD_NAME", "RESUME_MAY_CHANGE", "RunDir", "RunLock",
           "config_differences", "data_digest", "read_record", "tokenizer_digest"]

RECORD_NAME = "run.json"
LOCK_NAME = "run.lock"

#: TrainConfig fields a ``--resume`` may set to a new value. ``max_steps`` also sets the
#: length of the learning-rate schedule (the cosine is stretched from the resumed step
#: on); the rest only change when things are logged, evaluated and saved, how a step is
#: spread over processes, or how a non-finite step is handled.
RESUME_MAY_CHANGE = frozenset({
    "max_steps", "eval_interval", "eval_batches", "log_interval", "ckpt_interval",
    "early_stopping_patience", "progress", "plot", "prefetch", "backend", "out_dir",
    "dp", "tp", "pp", "zero", "micro_batches", "schedule", "bucket_mb", "skip_nonfinite",
    "batch_threads",
})

#: Of those, the settings of the launch itself (the process grid, the backend, the
#: progress bar): a resume takes them from its own command line and defaults, never
#: from the checkpoint.
LAUNCH_SETTINGS = frozenset({
    "out_dir", "backend", "progress", "prefetch", "dp", "tp", "pp", "zero", "micro_batches",
    "schedule", "bucket_mb", "batch_threads",
})

#: Marks a run directory whatever else it holds.
_RUN_FILES = (RECORD_NAME, "ckpt.safetensors", "best.safetensors", "metrics.jsonl",
              "tokenizer.json")


def data_digest(text: str) -> str:
    """The training text's SHA-256 (the token cache's digest)."""
    from ..data import text_digest

    return text_digest(text)


def tokenizer_digest(tokenizer: Any) -> str:
    """The tokenizer's fingerprint (SHA-256 of its canonical JSON); a dict is read as
    ``to_dict()`` output."""
    from ..data import tokenizer_from_dict

    return (tokenizer_from_dict(tokenizer) if isinstance(tokenizer, dict) else tokenizer).fingerprint()


def read_record(out_dir: str | os.PathLike) -> dict | None:
    """The run's record (``run.json``), or None for a run made before records existed."""
    path = Path(out_dir) / RECORD_NAME
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable run record ({exc}); restore it from a backup "
                         "or start a new run") from None
    if not isinstance(record, dict) or not isinstance(record.get("train_config"), dict):
        raise ValueError(f"{path}: not a minilm run record")
    return record


def config_differences(recorded: dict, wanted: dict, labels: dict | None = None,
                       may_change: frozenset = frozenset()) -> list[str]:
    """``label value (run: recorded)`` for each key of ``wanted`` whose value differs
    from ``recorded`` and is not in ``may_change`` (``labels`` maps a key to the flag
    or TOML key it came from; missing keys are compared as given)."""
    labels = labels or {}
    diffs = []
    for key, value in wanted.items():
        if key in may_change or key not in recorded:
            continue
        if _norm(recorded[key]) != _norm(value):
            who = labels.get(key, key)
            diffs.append(f"{who} {value!r} (run: {recorded[key]!r})")
    return diffs


def _norm(v: Any) -> Any:
    """Compare 2 and 2.0 as equal, tuples as lists (JSON round trips change them)."""
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return v


# =========================================================================== the lock
def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie, dead but not yet reaped by its
    parent, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class RunLock:
    """An exclusive lock file: created atomically with its content (written to a temp
    file, then hard-linked to the lock name, which fails if the name exists)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.held = False

    def _mine(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "start": _start_time(os.getpid()), "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    def owner(self) -> dict | None:
        """The lock's content, None if there is no lock, {} if it is unreadable."""
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def is_stale(self, owner: dict) -> bool:
        """The owning process is gone (same host: by PID and start time)."""
        if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
            return False  # cannot tell from here
        pid = owner["pid"]
        if not _alive(pid):
            return True
        return owner.get("start") is not None and _start_time(pid) not in (None, owner["start"])

    def describe(self, owner: dict) -> str:
        if not owner:
            return f"{self.path} exists but is unreadable"
        return (f"process {owner.get('pid')} on {owner.get('host')} holds {self.path} "
                f"(since {owner.get('since')})")

    def acquire(self, log: Any = print) -> None:
        """Take the lock; a stale one is taken over (said in the log); a live one, or
        one on another host, is a ValueError saying what to do."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self._mine()))
        except OSError as exc:
            raise ValueError(f"cannot write in {str(self.path.parent)!r} "
                             f"({exc.strerror or exc}); check its permissions") from None
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return
                except FileExistsError:
                    owner = self.owner()
                    if owner is None:
                        continue  # released meanwhile
                    if owner and self.is_stale(owner):
                        log(f"note: taking over the stale lock {self.path} of process "
                            f"{owner['pid']}, which no longer runs")
                        with contextlib.suppress(FileNotFoundError):
                            self.path.unlink()
                        continue
                    raise ValueError(
                        f"{self.describe(owner)}: another process is training into "
                        f"{str(self.path.parent)!r}; wait for it to finish or stop it (if "
                        f"no such process runs, delete {self.path})") from None
            raise ValueError(f"could not take the lock {self.path}; try again")
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self.held:
            owner = self.owner()
            if owner and owner.get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self.held = False


# =========================================================================== the directory
class RunDir:
    """The run directory of one ``train`` call, on the process that writes it. Use
    :meth:`open`, then :meth:`created` once the run is known to be good (fresh runs),
    and :meth:`close` (or the context manager) on every exit."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.resume = resume
        self.lock = RunLock(path / LOCK_NAME)
        self.made_dir = False
        self.moved_to: Path | None = None
        self.record = None

    @classmethod
    def open(cls, out_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False,
             log: Any = print) -> RunDir:
        """Check ``out_dir`` against the rules in the module docstring and lock it."""
        path = Path(out_dir)
        if resume and overwrite:
            raise ValueError("--resume continues a run and --overwrite replaces it; give one")
        if path.exists() and not path.is_dir():
            raise ValueError(f"--out-dir {str(path)!r} exists and is not a directory; "
                             "give a directory path")
        self = cls(path, resume)
        if resume:
            if not (path / "ckpt.safetensors").exists():
                raise ValueError(f"--resume: no checkpoint at {str(path / 'ckpt.safetensors')!r}"
                                 f"; train first without --resume")
            self.lock.acquire(log)
            try:
                self.record = read_record(path)
            except Exception:
                self.close()
                raise
            return self
        if path.is_dir() and any(path.iterdir()):
            if not any((path / n).exists() for n in _RUN_FILES):
                raise ValueError(f"--out-dir {str(path)!r} is a non-empty folder that is not a "
                                 "minilm run; give a new or empty directory")
            if not overwrite:
                raise ValueError(
                    f"--out-dir {str(path)!r} already holds a run{_step_of(path)}; continue it "
                    f"with --resume, or start a new one there with --overwrite (moves the old "
                    f"run to {path.name}.old-<date>-<time>; nothing is deleted)")
            owner = self.lock.owner()
            if owner is not None and not (owner and self.lock.is_stale(owner)):
                raise ValueError(f"--overwrite: {self.lock.describe(owner)}; the run is in use")
            self.moved_to = _move_aside(path)
            log(f"moved the existing run {path} to {self.moved_to}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            self.made_dir = True
        except FileExistsError:
            pass  # an empty directory
        except OSError as exc:
            raise ValueError(f"--out-dir {str(path)!r}: cannot create it "
                             f"({exc.strerror or exc})") from None
        try:
            self.lock.acquire(log)
        except Exception:
            self._remove_if_made()
            raise
        return self

    def created(self, model_config: dict, train_config: dict, tokenizer: Any,
                data: dict) -> None:
        """Write the record of a new run (atomically; once)."""
        record = {
            "format": 1,
            "minilm_version": _version(),
            "python": sys.version.split()[0],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": sys.argv,
            "model_config": model_config,
            "train_config": train_config,
            "tokenizer_sha256": tokenizer_digest(tokenizer),
            "data": data,
        }
        atomic_write_bytes(self.path / RECORD_NAME,
                           [json.dumps(record, indent=1, sort_keys=True).encode() + b"\n"])
        self.record = record

    def abandon(self) -> None:
        """A new run failed before its record was written: remove what it wrote (only
        files this attempt can have made) and the directory if this call made it; an
        old run that ``--overwrite`` moved aside is moved back."""
        if self.resume or self.record is not None:
            return
        for name in ("tokenizer.json", "tokens.bin", "tokens.bin.json"):
            with contextlib.suppress(OSError):
                (self.path / name).unlink()
        self.close()
        self._remove_if_made()
        if self.moved_to is not None and not self.path.exists():
            self.moved_to.rename(self.path)  # --overwrite: the old run back where it was
            self.moved_to = None

    def _remove_if_made(self) -> None:
        if self.made_dir:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty

    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("minilm")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _step_of(path: Path) -> str:
    """`` (step N)`` from the run's log, best effort, for the refusal message."""
    log = path / "metrics.jsonl"
    try:
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        return f" (step {int(json.loads(lines[-1])['step'])})" if lines else ""
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        target = path.with_name(f"{path.name}.old-{stamp}" + (f"-{i}" if i else ""))
        if not target.exists():
            path.rename(target)
            return target
    raise ValueError(f"--overwrite: could not find a free name to move {path} aside")
