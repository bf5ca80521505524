"""The Trainer on a dp × tp × pp grid: the same loop, logs, checkpoints and resume as
:class:`minilm.train.Trainer`, with the step done by a :class:`ParallelEngine`.

- Every rank draws the same global batch (same data seed) and keeps its replica's rows.
- Only world rank 0 logs, draws the progress bar, plots and writes the model checkpoint.
- Checkpoints: ``ckpt.safetensors`` holds the *full* one-process model (gathered over
  tp and pp), the schedule, RNG states, step and configs: ``minilm sample`` and a
  one-process ``--resume`` read it directly, and a parallel run with any grid reshards
  it on load. Each rank also writes its optimizer state and its dropout RNG state to
  ``<name>.optim-rank<r>-of-<world>.safetensors``; a resume on the same grid restores
  them exactly, another grid starts the optimizer afresh (said in the log).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import optim
from ..backends import current_backend
from ..train.checkpoint import load_model_weights, load_training_state, save_training_state
from ..train.config import TrainConfig
from ..train.trainer import LOG_NAME, Trainer
from .engine import ParallelEngine

__all__ = ["ParallelTrainer"]


def _pad_vocab(state: dict, vocab: int) -> dict:
    """A checkpoint with fewer vocabulary rows than this run (tensor parallelism pads
    the vocabulary to a multiple of tp) gets zero rows appended: ids that no tokenizer
    produces."""
    out = dict(state)
    for key in ("tok_emb.weight", "head.weight"):
        if key in out and np.shape(out[key])[0] < vocab:
            w = np.asarray(out[key])
            pad = np.zeros((vocab - w.shape[0],) + w.shape[1:], dtype=w.dtype)
            out[key] = np.concatenate([w, pad])
    return out


class _Snapshot:
    """Hands an already-assembled state dict (the gathered model, or this rank's
    optimizer state) to save_training_state, which asks for ``.state_dict()``."""

    def __init__(self, state: dict) -> None:
        self._state = state

    def state_dict(self) -> dict:
        return self._state


class ParallelTrainer(Trainer):
    def __init__(self, engine: ParallelEngine, train_loader: Any, val_tokens: Any,
                 config: TrainConfig, tokenizer: Any = None) -> None:
        c = config
        sched = optim.lr_scheduler.CosineWithWarmup(
            engine.optimizer, warmup_steps=min(c.warmup_steps, c.max_steps),
            total_steps=c.max_steps, min_lr=c.min_lr)
        super().__init__(engine.stage, train_loader, val_tokens, config, tokenizer=tokenizer,
                         optimizer=engine.optimizer, scheduler=sched)
        self.engine = engine
        self.grid = engine.grid
        self.is_main = self.grid.world.rank == 0

    def _rank_file(self, path: Path) -> Path:
        w = self.grid.world
        return path.with_name(f"{path.stem}.optim-rank{w.rank}-of-{w.size}{path.suffix}")

    def _extra(self) -> dict:
        extra = super()._extra()
        extra["model_config"] = self.engine.config.to_dict()
        extra["grid"] = {"dp": self.grid.dp, "tp": self.grid.tp, "pp": self.grid.pp}
        return extra

    def save(self, path: str | Path) -> None:
        """A collective: every rank must call it (the weights are gathered)."""
        path = Path(path)
        full = self.engine.full_state_dict()
        extra = self._extra()
        if self.is_main:
            save_training_state(path, _Snapshot(full), None, self.scheduler, extra)
        state = self.optimizer.state_dict()  # a collective under ZeRO
        # this rank's dropout RNG too: pipeline stages draw different numbers of values
        save_training_state(self._rank_file(path), None, _Snapshot(state), None,
                            {"step": self.step, "grid": extra["grid"],
                             "rng_backend": extra["rng"]["backend"]})
        self.grid.world.barrier()

    def resume(self, path: str | Path) -> None:
        path = Path(path)
        extra = load_training_state(path, None, None, self.scheduler)
        self.engine.load_full_state_dict(_pad_vocab(load_model_weights(path),
                                                    self.engine.config.vocab_size))
        mine = self._rank_file(path)
        same_grid = extra.get("grid") == {"dp": self.grid.dp, "tp": self.grid.tp,
                                          "pp": self.grid.pp}
        rng = extra["rng"]["backend"]  # rank 0's
        if same_grid and mine.exists():
            opt_extra = load_training_state(mine, None, self.optimizer, None)
            if int(opt_extra.get("step", -1)) != int(extra["step"]):
                raise ValueError(f"{mine}: optimizer state of step {opt_extra.get('step')} "
                                 f"does not match {path} (step {extra['step']})")
            rng = opt_extra.get("rng_backend", rng)
        elif self.is_main:
            print(f"resume: {path} comes from grid {extra.get('grid')}; the optimizer state "
                  "starts afresh on this grid")
        self.step = int(extra["step"])
        self.best_val = math.inf if extra.get("best_val") is None else float(extra["best_val"])
        self.bad_evals = int(extra.get("bad_evals", 0))
        self.tokens_seen = int(extra.get("tokens_seen", 0))
        current_backend().set_rng_state(rng)
        self.loader.load_state_dict(extra["rng"]["loader"])
        log = self.out / LOG_NAME
        if self.is_main and log.exists():  # drop rows logged after the checkpoint (redone)
            keep = [r for r in log.read_text().splitlines()
                    if r.strip() and json.loads(r).get("step", 0) <= self.step]
            log.write_text("".join(r + "\n" for r in keep))

    def train_step(self, batches: Any) -> float:
        """One optimizer step; gradient accumulation is pipeline micro-batching here:
        ``grad_accum_steps`` global batches are stacked into one step."""
        c = self.config
        xs, ys = zip(*(next(batches) for _ in range(c.grad_accum_steps)))
        x = np.concatenate([np.asarray(a.numpy()) for a in xs])
        y = np.concatenate([np.asarray(a.numpy()) for a in ys])
        loss = self.engine.step(x, y)
        self.scheduler.step()
        self.tokens_seen += int(y.size)
        self.step += 1
        return loss

    def evaluate(self) -> dict:
        from ..data import iter_windows

        c = self.config
        total, count = 0.0, 0
        T = self.engine.config.context_length
        for i, (x, y) in enumerate(iter_windows(self.val_tokens, c.batch_size, T)):
            if i >= c.eval_batches:
                break
            n = int(np.asarray(y).size)
            total += self.engine.evaluate(x, y) * n
            count += n
        mean = total / count
        return {"loss": mean, "ppl": math.exp(min(mean, 700.0)), "tokens": count}
