"""The trial log: one JSON object per line (JSONL), appended as each trial ends::

    {"trial": 3, "params": {"lr": 0.002}, "budget": 60, "loss": 4.12,
     "status": "ok", "seconds": 8.1}

A failed trial has ``"status": "failed"``, ``"loss": null`` and an ``"error"``. Each
line is flushed and fsynced before the next trial is handed out, so a crash loses at
most the trials that were running; a half-written last line is ignored when reading.
:meth:`TrialLog.replay` feeds the finished trials back into a fresh strategy (built
with the same settings and seed), so that the search resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["TrialLog", "trial_record"]

_KEYS = ("trial", "params", "budget", "loss", "status", "seconds")


def trial_record(spec: dict, loss: float | None, seconds: float, error: str | None = None,
                 **extra: Any) -> dict:
    """The record of a finished trial: ``spec`` (from ``ask``) with its result;
    ``status`` is ``failed`` if ``error`` is given or the loss is not finite."""
    ok = error is None and loss is not None and math.isfinite(loss)
    rec = {"trial": int(spec["trial"]), "params": dict(spec["params"]),
           "budget": spec.get("budget"), "loss": float(loss) if ok else None,
           "status": "ok" if ok else "failed", "seconds": round(float(seconds), 3)}
    for k in ("bracket", "rung"):
        if k in spec:
            rec[k] = spec[k]
    if not ok:
        rec["error"] = error or f"loss is not finite ({loss})"
    rec.update(extra)
    return rec


class TrialLog:
    """Append-only JSONL log of trial records at ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def read(self) -> list[dict]:
        """The records in the file (none if it does not exist). A last line without its
        newline, or that is not JSON, is a write cut short by a crash: it is skipped.
        A damaged line before the end is a ValueError naming the line."""
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            last = i == len(lines) - 1  # no newline after it: possibly cut short
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if last or all(not rest.strip() for rest in lines[i + 1:]):
                    break
                raise ValueError(f"{self.path}: line {i + 1} is not JSON: {line[:80]!r}") from None
            if last:
                break  # written without its newline: not complete
            if not isinstance(rec, dict) or any(k not in rec for k in ("trial", "params", "status")):
                raise ValueError(f"{self.path}: line {i + 1} is not a trial record "
                                 f"(needs {', '.join(_KEYS)})")
            out.append(rec)
        return out

    def _repair(self) -> None:
        """Drop a half-written last line, so that the next append starts a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)
                f.flush()
                os.fsync(f.fileno())

    def append(self, record: dict) -> None:
        """Write one record as a line, flushed and fsynced."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        line = json.dumps(record, sort_keys=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def replay(self, strategy: Any, records: list[dict] | None = None) -> list[dict]:
        """Tell ``strategy`` (fresh, same settings and seed) the logged results: ask it
        for trials in order; a trial the log holds is told its logged record (its params
        replace the asked ones), one it lacks (it was running at the crash) is returned,
        to be run first. Stops once every logged trial is told. Returns the specs to run."""
        done = {int(r["trial"]): r for r in (self.read() if records is None else records)}
        todo: list[dict] = []
        while done:
            spec = strategy.ask()
            if spec is None:
                break
            rec = done.pop(spec["trial"], None)
            if rec is None:
                todo.append(spec)
                continue
            spec["params"] = dict(rec["params"])
            strategy.tell({**spec, **rec})
        if done:
            raise ValueError(f"{self.path}: trials {sorted(done)[:10]} in the log are not "
                             "ones this search asks: the log belongs to another search "
                             "(other strategy, space or seed); use another --out-dir")
        return todo
