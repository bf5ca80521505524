"""The :class:`~minilm.train.trainer.Trainer` on a dp × tp × pp process grid: the same
loop, logs, evaluation, checkpoints and resume (written once, in ``trainer.py``), with
its hooks done by a parallel engine (:class:`minilm.parallel.engine.ParallelEngine`,
chosen by :mod:`minilm.run`; this module does not import ``minilm.parallel``: the
engine is passed in).

- Every rank draws the same global batch (same data seed) and keeps its replica's rows.
- Only world rank 0 logs, draws the progress bar, plots and writes the model checkpoint.
- Checkpoints: ``ckpt.safetensors`` holds the *full* one-process model (gathered over
  tp and pp, the same keys as the one-process model's ``state_dict()``), the schedule,
  RNG states, step and configs: ``minilm sample`` and a one-process ``--resume`` read it
  directly, and a parallel run with any grid reshards it on load. Each rank also writes
  its optimizer state and its dropout RNG state to
  ``<name>.optim-rank<r>-of-<world>.safetensors``; a resume on the same grid restores
  them exactly, another grid starts the optimizer afresh (said in the log).

The engine provides: ``stage`` (this rank's Module), ``optimizer``, ``grid`` (with
``dp``, ``tp``, ``pp``, ``world``), ``config`` (the full model's GPTConfig),
``step(x, y) -> loss``, ``evaluate(x, y) -> loss``, ``full_state_dict()`` and
``load_full_state_dict(state)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig
from .trainer import Trainer
from .training_state import load_model_weights, load_training_state, save_training_state

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
    """:class:`Trainer` whose step, validation loss and checkpoint I/O go through
    ``engine`` (see the module docstring); everything else is inherited."""

    def __init__(self, engine: Any, train_loader: Any, val_tokens: Any,
                 config: TrainConfig, tokenizer: Any = None) -> None:
        super().__init__(engine.stage, train_loader, val_tokens, config, tokenizer=tokenizer,
                         optimizer=engine.optimizer)
        self.engine = engine
        self.grid = engine.grid
        self.is_main = self.grid.world.rank == 0

    def _grid_dict(self) -> dict:
        return {"dp": self.grid.dp, "tp": self.grid.tp, "pp": self.grid.pp}

    def _rank_file(self, path: Path) -> Path:
        w = self.grid.world
        return path.with_name(f"{path.stem}.optim-rank{w.rank}-of-{w.size}{path.suffix}")

    def _extra(self) -> dict:
        extra = super()._extra()
        extra["model_config"] = self.engine.config.to_dict()
        extra["grid"] = self._grid_dict()
        return extra

    # ------------------------------------------------------------------ hooks
    def _optimizer_step(self, micro_batches: list) -> float:
        """Gradient accumulation is pipeline micro-batching here: the
        ``grad_accum_steps`` global batches are stacked into one engine step."""
        x = np.concatenate([np.asarray(a.numpy()) for a, _ in micro_batches])
        y = np.concatenate([np.asarray(b.numpy()) for _, b in micro_batches])
        return self.engine.step(x, y)

    def _batch_loss(self, x: Any, y: Any) -> float:
        return self.engine.evaluate(x, y)

    def _write_checkpoint(self, path: Path, extra: dict) -> None:
        """A collective: every rank must call it (the weights are gathered)."""
        full = self.engine.full_state_dict()
        if self.is_main:
            save_training_state(path, _Snapshot(full), None, self.scheduler, extra)
        state = self.optimizer.state_dict()  # a collective under ZeRO
        # this rank's dropout RNG too: pipeline stages draw different numbers of values
        save_training_state(self._rank_file(path), None, _Snapshot(state), None,
                            {"step": self.step, "grid": extra["grid"],
                             "rng_backend": extra["rng"]["backend"]})
        self.grid.world.barrier()

    def _read_checkpoint(self, path: Path) -> tuple:
        """The full weights are resharded onto this grid; the optimizer state and this
        rank's dropout RNG come from its rank file when the grid is the same."""
        extra = load_training_state(path, None, None, self.scheduler)
        self.engine.load_full_state_dict(_pad_vocab(load_model_weights(path),
                                                    self.engine.config.vocab_size))
        mine = self._rank_file(path)
        rng = extra["rng"]["backend"]  # rank 0's
        if extra.get("grid") == self._grid_dict() and mine.exists():
            opt_extra = load_training_state(mine, None, self.optimizer, None)
            if int(opt_extra.get("step", -1)) != int(extra["step"]):
                raise ValueError(f"{mine}: optimizer state of step {opt_extra.get('step')} "
                                 f"does not match {path} (step {extra['step']})")
            rng = opt_extra.get("rng_backend", rng)
        elif self.is_main:
            print(f"resume: {path} comes from grid {extra.get('grid')}; the optimizer state "
                  "starts afresh on this grid")
        return extra, rng

    # ------------------------------------------------------------------ run safety
    def _stop_requested(self, signum: int) -> int:
        """A signal may reach only some ranks, or ranks at different steps: once per
        step every rank contributes its own (0: none) and all act on the largest, so
        all stop after the same step and write the checkpoint together."""
        flag = np.array([signum], dtype=np.int64)
        self.grid.world.allreduce(flag, op="max")
        return int(flag[0])

    def _nonfinite_step(self) -> tuple | None:
        """The engine refused the last update (the same decision on every rank)."""
        return self.engine.last_nonfinite
