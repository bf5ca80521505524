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
  ``<name>.optim-step<N>-rank<r>-of-<world>.safetensors``; a resume on the same grid
  restores them exactly, another grid starts the optimizer afresh (said in the log).
- A checkpoint is one consistent set, published at once: every rank writes its rank file
  of step N (a new name: the previous set is untouched), then rank 0 replaces the main
  file (atomically) with one whose ``extra["optim_files"]`` lists the set's rank files
  (name and size), then the previous set's rank files are removed. A kill at any moment
  leaves the previous complete set or the new one; a resume reads the rank files the
  main file names, and refuses a missing or mismatched one with the files named.
  Checkpoints of older versions (rank files ``<name>.optim-rank<r>-of-<world>``, no
  list) still resume when their steps match.

The engine provides: ``stage`` (this rank's Module), ``optimizer``, ``grid`` (with
``dp``, ``tp``, ``pp``, ``world``), ``config`` (the full model's GPTConfig),
``step(x, y) -> loss``, ``evaluate(x, y) -> loss``, ``full_state_dict()`` and
``load_full_state_dict(state)``.
"""

from __future__ import annotations

import re
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


def _rank_name(path: Path, step: int | None, rank: int, size: int) -> str:
    """The name of rank ``rank``'s optimizer file of checkpoint ``path`` at ``step``
    (``None``: the un-tagged name older versions wrote, one set per checkpoint name)."""
    tag = "" if step is None else f"step{step}-"
    return f"{path.stem}.optim-{tag}rank{rank}-of-{size}{path.suffix}"


def _publish(path: Path, full: dict, scheduler: Any, extra: dict, is_main: bool) -> None:
    """Called by every rank once all rank files are written: rank 0 replaces the main
    file (atomically), and the new set becomes the checkpoint."""
    if is_main:
        save_training_state(path, _Snapshot(full), None, scheduler, extra)


def _remove_stale(path: Path, keep: list, rank: int, size: int, is_main: bool) -> None:
    """Remove the optimizer files of ``path``'s earlier sets (after the main file naming
    ``keep`` is published): each rank its own (its disk may be its own), rank 0 also any
    other (an older layout, another world size, a set a kill left unpublished)."""
    pattern = f"{path.stem}.optim-*{path.suffix}"
    mine = re.compile(rf"{re.escape(path.stem)}\.optim-(step\d+-)?rank{rank}-of-{size}"
                      rf"{re.escape(path.suffix)}")
    for f in path.parent.glob(pattern):
        if f.name not in keep and (is_main or mine.fullmatch(f.name)):
            f.unlink(missing_ok=True)


def _set_problems(path: Path, files: list, size: int) -> list:
    """What is wrong with the list of rank files a main file names (empty: nothing)."""
    if len(files) != size:
        return [f"it names {len(files)} rank files for {size} processes"]
    problems = []
    for entry in files:
        f = path.with_name(entry["file"])
        if not f.is_file():
            problems.append(f"{f.name} is missing")
        elif "bytes" in entry and f.stat().st_size != entry["bytes"]:
            problems.append(f"{f.name} has {f.stat().st_size} bytes, not the {entry['bytes']} "
                            "written with it")
    return problems


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

    def _rank_file(self, path: Path, step: int) -> Path:
        """This rank's optimizer file of the checkpoint ``path`` written at ``step``."""
        w = self.grid.world
        return path.with_name(_rank_name(path, step, w.rank, w.size))

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
        """A collective: every rank must call it (the weights are gathered). Rank files
        first, then the main file that names them, then the old set goes (the module
        docstring)."""
        w = self.grid.world
        full = self.engine.full_state_dict()
        state = self.optimizer.state_dict()  # a collective under ZeRO
        mine = self._rank_file(path, self.step)
        # this rank's dropout RNG too: pipeline stages draw different numbers of values
        save_training_state(mine, None, _Snapshot(state), None,
                            {"step": self.step, "grid": extra["grid"],
                             "rng_backend": extra["rng"]["backend"]})
        # the allgather returns once every rank's file is on disk
        files = w.allgather_json({"file": mine.name, "bytes": mine.stat().st_size})
        _publish(path, full, self.scheduler, dict(extra, optim_files=files), self.is_main)
        w.barrier()  # the new set is published: the old one may go
        _remove_stale(path, [f["file"] for f in files], w.rank, w.size, self.is_main)
        w.barrier()  # no rank writes its next set while rank 0 still cleans up

    def _read_checkpoint(self, path: Path) -> tuple:
        """The full weights are resharded onto this grid; the optimizer state and this
        rank's dropout RNG come from the rank files the main file names when the grid is
        the same (every rank checks the whole set and all raise together)."""
        w = self.grid.world
        extra = load_training_state(path, None, None, self.scheduler)
        self.engine.load_full_state_dict(_pad_vocab(load_model_weights(path),
                                                    self.engine.config.vocab_size))
        rng = extra["rng"]["backend"]  # rank 0's
        if extra.get("grid") != self._grid_dict():
            if self.is_main:
                print(f"resume: {path} comes from grid {extra.get('grid')}; the optimizer "
                      "state starts afresh on this grid")
            return extra, rng
        step = int(extra["step"])
        files = extra.get("optim_files")
        if files is None:  # written by an older version: un-tagged names, no list
            files = [{"file": _rank_name(path, None, r, w.size)} for r in range(w.size)]
        problems = _set_problems(path, files, w.size)
        opt_extra: dict = {}
        if not problems:
            mine = path.with_name(files[w.rank]["file"])
            opt_extra = load_training_state(mine, None, self.optimizer, None)
            if int(opt_extra.get("step", -1)) != step:
                problems.append(f"{mine.name} holds the optimizer state of step "
                                f"{opt_extra.get('step')}, not {step}")
        problems = [p for rank in w.allgather_json(problems) for p in rank]
        if problems:
            raise ValueError(
                f"{path} (step {step}) cannot be resumed on this grid: its optimizer rank "
                f"files do not match it: {'; '.join(dict.fromkeys(problems))}. The rank "
                f"files must sit beside {path.name}, as written with it (copy them "
                "together); a resume on another grid, or in one process, reads only "
                f"{path.name} and starts the optimizer afresh")
        return extra, opt_extra.get("rng_backend", rng)

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
