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

Run safety: SIGINT / SIGTERM make :meth:`Trainer.fit` finish the current step, write
``ckpt.safetensors`` and raise :class:`TrainingInterrupted` (a second signal exits at
once); a non-finite loss or gradient norm never reaches the optimizer: the run stops
with :class:`NonFiniteLoss` (the last good checkpoint kept) or, with
``skip_nonfinite``, the step is skipped and counted.

The loop, the logs, evaluation and resume are written once, here; what differs on a
process grid is six hooks that :class:`~minilm.train.parallel_trainer.ParallelTrainer`
overrides (nothing else):

- :meth:`Trainer._optimizer_step` — forward, backward, gradient reduction, clipping and
  the optimizer update for one step's micro-batches;
- :meth:`Trainer._batch_loss` — one validation batch's mean loss (reduced over the
  grid), which :func:`evaluate_loss` weights by tokens;
- :meth:`Trainer._write_checkpoint` — how the state is gathered and written;
- :meth:`Trainer._read_checkpoint` — how model, optimizer and schedule are restored,
  returning the checkpoint's ``extra`` and this process's dropout RNG state;
- :meth:`Trainer._stop_requested` — whether any process received a stop signal (all
  processes must stop after the same step);
- :meth:`Trainer._nonfinite_step` — what was non-finite in the last step (None if
  nothing), as seen by the code that refused the update.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import optim
from ..amp import GradScaler, autocast
from ..autograd import no_grad
from ..backends import get_num_threads
from ..backends.threads import thread_map
from ..data._io import atomic_write_bytes
from ..data.prefetch import device_batches
from ..nn.module import model_backend
from ..nn.transformer import GPT
from ..tensor import Tensor
from .batch_threads import _overflow_quiet, loss_terms, threaded_backward
from .config import TrainConfig
from .log_file import _parse_log, plot_losses, read_log
from .training_state import load_training_state, save_training_state

__all__ = ["NonFiniteLoss", "Trainer", "TrainingInterrupted", "evaluate_loss",
           "model_backend", "model_batch_loss", "plot_losses", "read_log"]

CKPT_NAME = "ckpt.safetensors"
BEST_NAME = "best.safetensors"
LOG_NAME = "metrics.jsonl"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after a whole step, with the checkpoint
    ``path`` written at ``step``; ``code`` is the shell's exit status for the signal
    (128 + signum: 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int, step: int, path: str | Path) -> None:
        self.signum, self.step, self.path = int(signum), int(step), Path(path)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name} after step "
                         f"{self.step}; checkpoint written to {self.path}; continue with "
                         "--resume")

    @property
    def code(self) -> int:
        return 128 + self.signum


class NonFiniteLoss(FloatingPointError):
    """A step's loss or gradient norm was NaN/inf; the parameters were not updated and
    no checkpoint was written after it (``checkpoint``/``checkpoint_step``: the last
    good one, or None)."""

    def __init__(self, step: int, what: str, value: float, lr: float,
                 checkpoint: Path | None, checkpoint_step: int | None) -> None:
        self.step, self.what, self.value, self.lr = step, what, value, lr
        self.checkpoint, self.checkpoint_step = checkpoint, checkpoint_step
        kept = (f"the last good checkpoint {checkpoint} (step {checkpoint_step}) is kept"
                if checkpoint is not None else "no checkpoint was written yet")
        super().__init__(f"{what} became {value} at step {step} (lr {lr:.3g}); the "
                         f"parameters were not updated and {kept}; lower --lr, set "
                         "--grad-clip, or pass --skip-nonfinite to skip such steps")


def model_batch_loss(model: Any, x: Any, y: Any) -> float:
    """``model(x, y)``'s mean loss of one batch of token ids (arrays or Tensors, on the
    host or the device), as a float; the ids are moved to the model's backend."""
    backend = model_backend(model)

    def put(a: Any) -> Tensor:
        a = a.data if isinstance(a, Tensor) else a
        return Tensor(np.asarray(a) if backend.xp is np else backend.asarray(a))

    _, loss = model(put(x), put(y))
    return float(loss.item())


@no_grad()
def evaluate_loss(model: Any, batches: Any, max_batches: int | None = None,
                  batch_loss: Callable[[Any, Any], float] | None = None) -> dict:
    """Mean next-token cross-entropy over ``batches`` of (x, y), weighted by the targets
    each batch's mean counts (targets of -100 are not counted), and
    its perplexity exp(loss). ``batch_loss(x, y)`` gives one batch's mean loss (default:
    ``model(x, y)``'s; a process grid passes its engine's, reduced over the grid).

    With the default on a CPU backend, the batches are spread over threads
    (``thread_map``: whole batches to whole threads, kernels single-threaded) and summed
    in order; on a device, and with a ``batch_loss`` (it may talk to other ranks), they
    run one by one in this thread."""
    was_training = model.training
    model.eval()
    batches = itertools.islice(batches, max_batches)

    def one(xy: tuple) -> tuple:
        with no_grad():  # grad mode is per thread
            return model_batch_loss(model, *xy), loss_terms(xy[1])

    try:
        if batch_loss is None and model_backend(model).xp is np:
            results = thread_map(one, batches)
        elif batch_loss is None:
            results = [one(xy) for xy in batches]
        else:
            results = [(batch_loss(x, y), loss_terms(y)) for x, y in batches]
    finally:
        model.train(was_training)
    total = sum(float(mean) * n for mean, n in results if n)  # all-ignored batch: no term
    count = sum(n for _, n in results)
    if count == 0:
        raise ValueError("evaluate_loss: no evaluation batch (is the validation split empty?)")
    mean = total / count
    return {"loss": mean, "ppl": math.exp(min(mean, 700.0)), "tokens": count}


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
        self.skipped_steps = 0  # steps whose update was skipped (non-finite loss or grad)
        self._nonfinite: tuple | None = None  # (what, value) of the last step, if bad
        self._last_ckpt: tuple | None = None  # (path, step) of the last ckpt written/read
        self._signal: int = 0  # the first stop signal received (0: none)
        self._bar: Any = None  # fit's progress bar (warnings are written through it)
        # mixed precision: autocast's dtype (None: off), and the loss scaler (fp16 only)
        self._amp = {"fp16": "float16", "bf16": "bfloat16"}.get(c.amp)
        self.scaler = GradScaler(enabled=c.amp == "fp16")
        self._batches: Any = None  # fit's batches on the model's device (device_batches)

    # ------------------------------------------------------------------ checkpoints
    def _extra(self) -> dict:
        return {
            "step": self.step,
            "best_val": None if math.isinf(self.best_val) else self.best_val,
            "bad_evals": self.bad_evals,
            "tokens_seen": self.tokens_seen,
            "skipped_steps": self.skipped_steps,
            "batch_threads": self._batch_threads(),  # slices per micro-batch (dropout streams)
            "scaler": self.scaler.state_dict(),
            "model_config": self.model.config.to_dict(),
            "train_config": self.config.to_dict(),
            "tokenizer": self.tokenizer.to_dict() if self.tokenizer is not None else None,
            "rng": {"backend": model_backend(self.model).get_rng_state(),
                    "loader": (self._batches or self.loader).state_dict()},
        }

    def save(self, path: str | Path) -> None:
        """Write a checkpoint of everything the next step depends on (on a process grid
        a collective: every rank calls it)."""
        self._write_checkpoint(Path(path), self._extra())
        if Path(path).name == CKPT_NAME:
            self._last_ckpt = (Path(path), self.step)

    def resume(self, path: str | Path) -> None:
        """Restore everything from a checkpoint written by :meth:`save` (by this run's
        grid or any other: see :meth:`_read_checkpoint`)."""
        extra, rng = self._read_checkpoint(Path(path))
        self.step = int(extra["step"])
        self.best_val = math.inf if extra.get("best_val") is None else float(extra["best_val"])
        self.bad_evals = int(extra.get("bad_evals", 0))
        self.tokens_seen = int(extra.get("tokens_seen", 0))
        self.skipped_steps = int(extra.get("skipped_steps", 0))
        if extra.get("scaler") is not None and self.scaler.enabled:
            self.scaler.load_state_dict(extra["scaler"])
        was, now = extra.get("batch_threads"), self._batch_threads()
        if was is not None and int(was) != now and self.is_main:
            _say(self._bar, f"resume: {now} batch threads now, {was} when the checkpoint was "
                            "written: with dropout the run continues on other random streams "
                            "than an uninterrupted one would (give --batch-threads "
                            f"{was} to match)")
        if Path(path).name == CKPT_NAME:
            self._last_ckpt = (Path(path), self.step)
        self._set_rng_state(rng)
        self.loader.load_state_dict(extra["rng"]["loader"])
        log = self.out / LOG_NAME
        if self.is_main and log.exists():  # drop rows logged after the checkpoint (redone)
            keep = [line for line, row in _parse_log(log) if row.get("step", 0) <= self.step]
            # rewritten atomically: a kill leaves the old log or the new one, never half
            atomic_write_bytes(log, (line.encode() + b"\n" for line in keep))

    def _set_rng_state(self, state: Any) -> None:
        """Continue the dropout stream of the checkpoint; one written on another kind of
        backend (NumPy's generator on the host, the counter generator on a GPU) cannot
        be continued: the generator stays as seeded, and a note says so."""
        backend = model_backend(self.model)
        try:
            backend.set_rng_state(state)
        except (ValueError, TypeError, KeyError):
            if self.is_main:
                kind = state.get("bit_generator") if isinstance(state, dict) else "?"
                _say(self._bar, f"resume: the checkpoint's dropout generator ({kind}) is not "
                                f"the {backend.name} backend's; dropout continues from this "
                                "run's seed (weights, optimizer and data continue exactly)")

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
        threads = self._batch_threads()
        scale = self.scaler.get_scale()  # 1 unless fp16 mixed precision
        if threads > 1:
            mean = threaded_backward(self._amp_loss, micro_batches, threads, scale)
        else:
            total = 0.0
            for x, y in micro_batches:
                loss = self._amp_loss(x, y)
                with _overflow_quiet(scale):
                    (loss * (scale / len(micro_batches))).backward()
                total += float(loss.item())
            mean = total / len(micro_batches)
        mean = self._after_backward(mean)
        overflow = self.scaler.unscale_(self.optimizer) if self.scaler.enabled else False
        params = list(self.model.parameters())
        norm = optim.get_total_norm([p.grad for p in params if p.grad is not None])
        self._nonfinite = _check_finite(mean, norm)
        if overflow and math.isfinite(mean):
            # fp16 gradients overflowed at this loss scale: the scaler skips the step
            # and halves the scale (its normal work, not an error)
            self._nonfinite = None
        elif self._nonfinite is None:
            if c.grad_clip and c.grad_clip > 0:
                optim.clip_grad_norm_(params, c.grad_clip)
            self.scaler.step(self.optimizer)
        if self.scaler.enabled:
            self.scaler.update()
        self.optimizer.zero_grad()  # a non-finite step leaves parameters and moments as is
        if self._nonfinite is not None and not c.skip_nonfinite:
            raise FloatingPointError(f"{self._nonfinite[0]} is {self._nonfinite[1]}")
        return mean

    def _amp_loss(self, x: Any, y: Any) -> Tensor:
        """The micro-batch loss under ``autocast`` when mixed precision is on (autocast
        is per thread: each batch-thread worker enters it here)."""
        if self._amp is None:
            return self._micro_loss(x, y)
        with autocast(self._amp):
            return self._micro_loss(x, y)

    def _batch_threads(self) -> int:
        """Hook: how many threads split each micro-batch's rows (train/batch_threads.py):
        ``config.batch_threads``, 0 meaning one per core (``minilm.get_num_threads``), on
        the CPU backends (the model's); 1 (the plain loop) elsewhere and for a trainer that splits the
        rows itself (data parallelism over MPI ranks)."""
        n = self.config.batch_threads or get_num_threads()
        if model_backend(self.model).xp is not np:
            return 1
        return max(1, min(n, self.config.batch_size))

    def _after_backward(self, mean_loss: float) -> float:
        """Hook: runs after the micro-batches' backward, before the gradient norm; a
        data-parallel trainer averages the gradients and the loss over its replicas
        here. Returns the step's loss to log."""
        return mean_loss

    def _micro_loss(self, x: Any, y: Any) -> Tensor:
        """The training loss of one micro-batch, to differentiate: the model's mean
        next-token cross-entropy (a distillation run adds its teacher's term)."""
        return self.model(x, y)[1]

    def _batch_loss(self, x: Any, y: Any) -> float:
        """Hook: the mean loss of one validation batch (x, y)."""
        return model_batch_loss(self.model, x, y)

    def _stop_requested(self, signum: int) -> int:
        """Hook: the stop signal every process acts on after this step, given this
        process's (0: none). One process: its own; a grid agrees on the largest."""
        return signum

    def _nonfinite_step(self) -> tuple | None:
        """Hook: (what, value) when the last :meth:`_optimizer_step` refused a
        non-finite update (parameters and optimizer state unchanged), else None."""
        return self._nonfinite

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
        # the plain model loss spreads its batches over threads (evaluate_loss); a
        # subclass's own batch loss (a process grid's, a teacher's) runs one at a time
        own = type(self)._batch_loss is not Trainer._batch_loss
        return evaluate_loss(self.model, windows, c.eval_batches,
                             batch_loss=self._batch_loss if own else None)

    # ------------------------------------------------------------------ the loop
    def train_step(self, batches: Any) -> float:
        """One optimizer step over ``grad_accum_steps`` micro-batches; the mean loss."""
        micro = [next(batches) for _ in range(self.config.grad_accum_steps)]
        lr = self.optimizer.param_groups[0]["lr"]
        try:
            loss = self._optimizer_step(micro)
        except FloatingPointError:
            bad = self._nonfinite_step()
            if bad is None:
                raise
            ckpt = self._last_ckpt or (None, None)
            raise NonFiniteLoss(self.step + 1, bad[0], bad[1], lr, *ckpt) from None
        bad = self._nonfinite_step()
        if bad is not None:  # skip_nonfinite: the data, schedule and step count go on
            self.skipped_steps += 1
            if self.is_main:
                _say(self._bar, f"step {self.step + 1}: {bad[0]} is {bad[1]}; update "
                     f"skipped ({self.skipped_steps} skipped so far)")
        self.scheduler.step()
        self.tokens_seen += sum(int(np.prod(y.shape)) for _, y in micro)
        self.step += 1
        return loss

    def fit(self) -> dict:
        """Train until ``max_steps`` (or early stopping); returns the last metrics.
        SIGINT / SIGTERM: the current step is finished, ``ckpt.safetensors`` written and
        :class:`TrainingInterrupted` raised; a second signal exits at once."""
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        self.model.train()
        # on a GPU the next batch uploads while this one computes (minilm.data.prefetch)
        self._batches = batches = device_batches(iter(self.loader), model_backend(self.model))
        self._bar = bar = None
        if c.progress and self.is_main:
            from tqdm import tqdm

            self._bar = bar = tqdm(total=c.max_steps, initial=self.step, desc="train",
                                   unit="step", dynamic_ncols=True)
        last: dict = {}
        t_last, tok_last = time.perf_counter(), self.tokens_seen
        stopped_early = False
        self._signal = 0
        previous = self._install_signal_handlers()
        try:
            first = True
            while self.step < c.max_steps:
                lr = self.optimizer.param_groups[0]["lr"]
                if first:
                    loss = self._first_step(batches)
                    first = False
                else:
                    loss = self.train_step(batches)
                now = time.perf_counter()
                tps = (self.tokens_seen - tok_last) / max(now - t_last, 1e-9)
                t_last, tok_last = now, self.tokens_seen
                row = {"step": self.step, "loss": loss, "lr": lr,
                       "tokens_per_s": round(tps, 1), "tokens": self.tokens_seen}
                if self.skipped_steps:
                    row["skipped"] = self.skipped_steps
                if self.scaler.enabled:  # fp16: the loss scale and the steps it skipped
                    row["loss_scale"] = self.scaler.get_scale()
                    row["amp_skipped"] = self.scaler.skipped
                logged = self.step % c.log_interval == 0 or self.step == 1
                if logged:
                    self._log(row)
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
                saved = self.step % c.ckpt_interval == 0 or self.step == c.max_steps \
                    or stopped_early
                if saved:
                    self.save(self.out / CKPT_NAME)
                if stopped_early:
                    if bar is not None:
                        bar.write(f"early stopping at step {self.step}: no improvement in "
                                  f"{self.bad_evals} evaluations")
                    break
                signum = self._stop_requested(self._signal)  # every process, every step
                if signum and self.step < c.max_steps:
                    if not logged:
                        self._log(row)  # the log ends at the checkpoint's step
                    if not saved:
                        self.save(self.out / CKPT_NAME)
                    raise TrainingInterrupted(signum, self.step, self.out / CKPT_NAME)
        finally:
            self._restore_signal_handlers(previous)
            if bar is not None:
                bar.close()
            self._bar = None
            batches.close()  # a batch read ahead goes back to the loader
            self._batches = None
            if hasattr(self.loader, "close"):
                self.loader.close()
        if c.plot and self.is_main and (self.out / LOG_NAME).exists():
            plot_losses(self.out / LOG_NAME, self.out / "loss.png")
        last["stopped_early"] = stopped_early
        return last

    # ------------------------------------------------------------------ signals
    def _first_step(self, batches: Any) -> float:
        """The first step of ``fit``. On the Numba backend it compiles the kernels the
        first time they run on a machine (seconds per dtype; cached in __pycache__
        after that): if it takes longer than ``COMPILE_NOTICE_S``, one line says so."""
        if model_backend(self.model).name != "numba" or not self.is_main:
            return self.train_step(batches)
        t0 = time.perf_counter()
        dtype = next(iter(self.model.parameters())).data.dtype
        fired: list = []

        def notice() -> None:
            fired.append(True)
            _say(self._bar, f"compiling the Numba kernels for {dtype} (once per machine "
                            "and dtype; later runs load them from the cache) ...")

        timer = threading.Timer(COMPILE_NOTICE_S, notice)
        timer.daemon = True
        timer.start()
        try:
            return self.train_step(batches)
        finally:
            timer.cancel()
            if fired:
                _say(self._bar, f"first step done after {time.perf_counter() - t0:.1f} s")

    def _install_signal_handlers(self) -> dict:
        """SIGINT / SIGTERM handlers for :meth:`fit` (main thread only; elsewhere Python
        cannot set them): the first signal asks for a stop after the current step, a
        second one while that is pending restores the default handling and exits at
        once (KeyboardInterrupt for SIGINT, SystemExit(143) for SIGTERM: a checkpoint
        being written is left unpublished, the previous one stays). Returns the
        previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

        def handler(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self._signal:
                for s in STOP_SIGNALS:
                    signal.signal(s, signal.SIG_DFL)
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt(f"second {name}: stopped at once")
                raise SystemExit(128 + signum)
            self._signal = signum
            if self.is_main:  # os.write: safe inside a signal handler, unlike print
                os.write(2, f"\n{name} received: finishing step {self.step + 1}, then writing "
                            f"a checkpoint (send it again to stop at once)\n".encode())

        for s in STOP_SIGNALS:
            signal.signal(s, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


COMPILE_NOTICE_S = 3.0  # a first step slower than this says it is compiling kernels


def _check_finite(loss: float, grad_norm: float) -> tuple | None:
    """("loss", value) or ("gradient norm", value) when that is NaN/inf, else None."""
    if not math.isfinite(loss):
        return ("loss", loss)
    if not math.isfinite(grad_norm):
        return ("gradient norm", grad_norm)
    return None


def _say(bar: Any, msg: str) -> None:
    """One line that does not break the progress bar."""
    if bar is not None:
        bar.write(msg)
    else:
        print(msg, flush=True)
