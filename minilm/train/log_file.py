"""The training log on disk: reading ``metrics.jsonl`` (a torn last line tolerated) and
plotting its losses. Rows are JSON objects, one a line: ``{"step", "loss", "lr",
"tokens_per_s", "tokens"}`` per logged step and ``{"step", "val_loss", "val_ppl"}`` per
evaluation (written by :class:`minilm.train.trainer.Trainer`)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["plot_losses", "read_log"]


def read_log(log_path: str | Path) -> list[dict]:
    """The rows of a JSONL metrics log. A torn last line (what a kill or a full disk
    leaves mid-write) is dropped with a warning naming the file; a bad line anywhere else
    is a ValueError naming the file and the line."""
    return [row for _, row in _parse_log(Path(log_path))]


def _parse_log(log_path: Path) -> list[tuple[str, dict]]:
    """(line as written, parsed row) for each row of the log; see :func:`read_log`."""
    lines = log_path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append((line, json.loads(line)))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                warnings.warn(f"{log_path}: dropping a torn last line ({line[:60]!r})",
                              stacklevel=2)
                break
            raise ValueError(f"{log_path}, line {i + 1}: not a JSON row ({exc.msg}); fix or "
                             "remove that line") from None
    return rows


def plot_losses(log_path: str | Path, png_path: str | Path) -> None:
    """Train (raw and smoothed) and validation loss against step, from the JSONL log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    tr = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    va = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if tr:
        s, l = map(np.asarray, zip(*tr))
        ax.plot(s, l, color="tab:blue", alpha=0.3, lw=1, label="train (per step)")
        k = max(1, len(l) // 30)
        smooth = np.convolve(l, np.ones(k) / k, mode="valid")
        ax.plot(s[k - 1:], smooth, color="tab:blue", lw=2, label=f"train ({k}-step mean)")
    if va:
        s, l = map(np.asarray, zip(*va))
        ax.plot(s, l, "o-", color="tab:orange", lw=2, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = str(png_path) + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png_path)
