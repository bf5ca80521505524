"""The training loop for causal language models.

One optimizer step::

    for each of grad_accum_steps micro-batches:
        logits, loss = model(x, y)
        (loss / grad_accum_steps).backward()     # gradients add up in .grad
    clip_grad_norm_(params, grad_clip)
    optimizer.step(); optimizer.zero_grad(); scheduler.step()

Every ``eval_interval`` steps the validation loss (and perplexity exp(loss)) is measured
on a fixed set of windows; every ``ckpt_interval`` steps a checkpoint is written
atomically. A checkpoint holds everything the next step depends on (weights, optimizer
moments, schedule position, the RNG streams of dropout and of the data), so a resumed
run continues bit for bit as if it had never stopped.

The loop, the logs, evaluation and resume are written once, here; what differs on a
process grid is four hooks that :class:`~minilm.train.parallel_trainer.ParallelTrainer`
overrides (nothing else):

- :meth:`Trainer._optimizer_step` — forward, backward, gradient reduction, clipping and
  the optimizer update for one step's micro-batches;
- :meth:`Trainer._batch_loss` — one validation batch's mean loss (reduced over the
  grid), which :func:`evaluate_loss` weights by tokens;
- :meth:`Trainer._write_checkpoint` — how the state is gathered and written;
- :meth:`Trainer._read_checkpoint` — how model, optimizer and schedule are restored,
  returning the checkpoint's ``extra`` and this process's dropout RNG state.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import optim
from ..autograd import no_grad
from ..backends import current_backend
from ..data._io import atomic_write_bytes
from ..nn.transformer import GPT
from ..tensor import Tensor
from .config import TrainConfig
from .training_state import load_training_state, save_training_state

__all__ = ["Trainer", "evaluate_loss", "model_batch_loss", "plot_losses"]

CKPT_NAME = "ckpt.safetensors"
BEST_NAME = "best.safetensors"
LOG_NAME = "metrics.jsonl"


def model_batch_loss(model: Any, x: Any, y: Any) -> float:
    """``model(x, y)``'s mean loss of one batch of token ids, as a float."""
    _, loss = model(Tensor(np.asarray(x)), Tensor(np.asarray(y)))
    return float(loss.item())


@no_grad()
def evaluate_loss(model: Any, batches: Any, max_batches: int | None = None,
                  batch_loss: Callable[[Any, Any], float] | None = None) -> dict:
    """Mean next-token cross-entropy over ``batches`` of (x, y), weighted by tokens, and
    its perplexity exp(loss). ``batch_loss(x, y)`` gives one batch's mean loss (default:
    ``model(x, y)``'s; a process grid passes its engine's, reduced over the grid)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            mean = model_batch_loss(model, x, y) if batch_loss is None else batch_loss(x, y)
            n = int(np.asarray(y).size)
            total += float(mean) * n
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate_loss: no evaluation batch (is the validation split empty?)")
    mean = total / count
    return {"loss": mean, "ppl": math.exp(min(mean, 700.0)), "tokens": count}


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


class Trainer:
    """Train ``model`` on batches from ``train_loader`` (an iterator of (x, y) with
    ``state_dict``/``load_state_dict``), validating on ``val_tokens``."""

    def __init__(self, model: GPT, train_loader: Any, val_tokens: Any, config: TrainConfig,
                 tokenizer: Any = None, optimizer: Any = None, scheduler: Any = None) -> None:
        self.model = model
        self.loader = train_loader
        self.val_tokens = val_tokens
        self.config = c = config
        self.tokenizer = tokenizer
        self.optimizer = optimizer or optim.AdamW(
            optim.param_groups_for_weight_decay(model, c.weight_decay), lr=c.lr,
            betas=(c.beta1, c.beta2))
        self.scheduler = scheduler or optim.lr_scheduler.CosineWithWarmup(
            self.optimizer, warmup_steps=min(c.warmup_steps, c.max_steps), total_steps=c.max_steps,
            min_lr=c.min_lr)
        self.step = 0
        self.best_val = math.inf
        self.bad_evals = 0
        self.tokens_seen = 0
        self.out = Path(c.out_dir)
        self.history: list[dict] = []
        self.is_main = True  # the process that logs, draws the bar and writes files

    # ------------------------------------------------------------------ checkpoints
    def _extra(self) -> dict:
        return {
            "step": self.step,
            "best_val": None if math.isinf(self.best_val) else self.best_val,
            "bad_evals": self.bad_evals,
            "tokens_seen": self.tokens_seen,
            "model_config": self.model.config.to_dict(),
            "train_config": self.config.to_dict(),
            "tokenizer": self.tokenizer.to_dict() if self.tokenizer is not None else None,
            "rng": {"backend": current_backend().get_rng_state(),
                    "loader": self.loader.state_dict()},
        }

    def save(self, path: str | Path) -> None:
        """Write a checkpoint of everything the next step depends on (on a process grid
        a collective: every rank calls it)."""
        self._write_checkpoint(Path(path), self._extra())

    def resume(self, path: str | Path) -> None:
        """Restore everything from a checkpoint written by :meth:`save` (by this run's
        grid or any other: see :meth:`_read_checkpoint`)."""
        extra, rng = self._read_checkpoint(Path(path))
        self.step = int(extra["step"])
        self.best_val = math.inf if extra.get("best_val") is None else float(extra["best_val"])
        self.bad_evals = int(extra.get("bad_evals", 0))
        self.tokens_seen = int(extra.get("tokens_seen", 0))
        current_backend().set_rng_state(rng)
        self.loader.load_state_dict(extra["rng"]["loader"])
        log = self.out / LOG_NAME
        if self.is_main and log.exists():  # drop rows logged after the checkpoint (redone)
            keep = [line for line, row in _parse_log(log) if row.get("step", 0) <= self.step]
            # rewritten atomically: a kill leaves the old log or the new one, never half
            atomic_write_bytes(log, (line.encode() + b"\n" for line in keep))

    # ------------------------------------------------------------------ hooks
    def _write_checkpoint(self, path: Path, extra: dict) -> None:
        """Hook: write model, optimizer, schedule and ``extra`` to ``path``."""
        save_training_state(path, self.model, self.optimizer, self.scheduler, extra)

    def _read_checkpoint(self, path: Path) -> tuple:
        """Hook: restore model, optimizer and schedule from ``path``; returns (the
        checkpoint's ``extra``, the backend RNG state this process continues with)."""
        if load_training_state(path).get("grid"):
            # written by an MPI run: full weights here, optimizer state in per-rank files
            extra = load_training_state(path, self.model, None, self.scheduler)
            if self.is_main:
                print(f"resume: {path} comes from a parallel run (grid {extra['grid']}); "
                      "the optimizer state starts afresh")
        else:
            extra = load_training_state(path, self.model, self.optimizer, self.scheduler)
        return extra, extra["rng"]["backend"]

    def _optimizer_step(self, micro_batches: list) -> float:
        """Hook: one optimizer step over ``micro_batches`` (a list of (x, y), the
        gradients accumulated over them); returns their mean loss."""
        c = self.config
        total = 0.0
        for x, y in micro_batches:
            _, loss = self.model(x, y)
            (loss / len(micro_batches)).backward()
            total += float(loss.item())
        if c.grad_clip and c.grad_clip > 0:
            optim.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return total / len(micro_batches)

    def _batch_loss(self, x: Any, y: Any) -> float:
        """Hook: the mean loss of one validation batch (x, y)."""
        return model_batch_loss(self.model, x, y)

    # ------------------------------------------------------------------ logging
    def _log(self, row: dict) -> None:
        self.history.append(row)
        if not self.is_main:
            return
        with open(self.out / LOG_NAME, "a") as f:
            f.write(json.dumps(row) + "\n")

    def evaluate(self) -> dict:
        from ..data import iter_windows

        c = self.config
        windows = iter_windows(self.val_tokens, c.batch_size, self.model.config.context_length)
        return evaluate_loss(self.model, windows, c.eval_batches, batch_loss=self._batch_loss)

    # ------------------------------------------------------------------ the loop
    def train_step(self, batches: Any) -> float:
        """One optimizer step over ``grad_accum_steps`` micro-batches; the mean loss."""
        micro = [next(batches) for _ in range(self.config.grad_accum_steps)]
        loss = self._optimizer_step(micro)
        self.scheduler.step()
        self.tokens_seen += sum(int(np.prod(y.shape)) for _, y in micro)
        self.step += 1
        return loss

    def fit(self) -> dict:
        """Train until ``max_steps`` (or early stopping); returns the last metrics."""
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        self.model.train()
        batches = iter(self.loader)
        bar = None
        if c.progress and self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=c.max_steps, initial=self.step, desc="train", unit="step",
                       dynamic_ncols=True)
        last: dict = {}
        t_last, tok_last = time.perf_counter(), self.tokens_seen
        stopped_early = False
        try:
            while self.step < c.max_steps:
                lr = self.optimizer.param_groups[0]["lr"]
                loss = self.train_step(batches)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss became {loss} at step {self.step}; lower the learning "
                        f"rate (now {lr:.3g}) or check the data"
                    )
                now = time.perf_counter()
                tps = (self.tokens_seen - tok_last) / max(now - t_last, 1e-9)
                t_last, tok_last = now, self.tokens_seen
                if self.step % c.log_interval == 0 or self.step == 1:
                    self._log({"step": self.step, "loss": loss, "lr": lr,
                               "tokens_per_s": round(tps, 1), "tokens": self.tokens_seen})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
                last = {"step": self.step, "loss": loss}
                if self.step % c.eval_interval == 0 or self.step == c.max_steps:
                    ev = self.evaluate()
                    last.update(val_loss=ev["loss"], val_ppl=ev["ppl"])
                    self._log({"step": self.step, "val_loss": ev["loss"], "val_ppl": ev["ppl"]})
                    if bar is not None:
                        bar.write(f"step {self.step}: val loss {ev['loss']:.4f}, "
                                  f"ppl {ev['ppl']:.2f}")
                    if ev["loss"] < self.best_val:
                        self.best_val, self.bad_evals = ev["loss"], 0
                        self.save(self.out / BEST_NAME)
                    else:
                        self.bad_evals += 1
                        if c.early_stopping_patience is not None \
                                and self.bad_evals >= c.early_stopping_patience:
                            stopped_early = True
                if self.step % c.ckpt_interval == 0 or self.step == c.max_steps or stopped_early:
                    self.save(self.out / CKPT_NAME)
                if stopped_early:
                    if bar is not None:
                        bar.write(f"early stopping at step {self.step}: no improvement in "
                                  f"{self.bad_evals} evaluations")
                    break
        finally:
            if bar is not None:
                bar.close()
            if hasattr(self.loader, "close"):
                self.loader.close()
        if c.plot and self.is_main and (self.out / LOG_NAME).exists():
            plot_losses(self.out / LOG_NAME, self.out / "loss.png")
        last["stopped_early"] = stopped_early
        return last

