"""Any combination of data, tensor and pipeline parallelism for a GPT, behind one
``step()`` — what ``minilm train --dp D --tp T --pp P`` runs.

Building, from a full GPT constructed identically (same seed) on every rank::

    model --tensor_parallel_gpt(tp_comm)--> sharded layers   (tp > 1)
          --PipelineStage(pp_comm)-------> this stage's blocks (always; pp = 1 is the
                                             whole model)
          --DataParallel(dp_comm)--------> bucketed, overlapped gradient allreduce (dp > 1)
    optimizer: AdamW over the stage's parameters, or ZeRO-1 sharding its state over dp

One step on a global batch of B rows (the same on every rank)::

    rows of my data-parallel replica (B / dp) -> M micro-batches through the pipeline
    (GPipe or 1F1B), tensor-parallel collectives inside every layer; DataParallel
    reduces the gradients after the last micro-batch; the tied embedding's gradient is
    summed between the first and last stage; the global gradient norm is clipped;
    optimizer step. The loss is the global batch's mean: equal to one process.

A NaN/inf loss or global gradient norm never reaches the optimizer: every rank takes
the same decision (a flag reduced over the whole grid), forgets the gradients and
leaves parameters and optimizer state as they were (counted in ``skipped_steps``, the
reason in ``last_nonfinite``); then ``step`` raises FloatingPointError, or with
``skip_nonfinite=True`` returns the loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import optim
from ..autograd import no_grad
from ..backends import to_host
from ..nn.transformer import GPT
from . import tensor_parallel as tpm
from .comm import ProcessGrid
from .data_parallel import DataParallel
from .pipeline import (
    PipelineStage,
    _broadcast_loss,
    evaluate,
    full_state_dict,
    run_pipeline,
    stage_state_dict,
    sync_tied_gradients,
)
from .zero import ZeroRedundancyOptimizer

__all__ = ["ParallelEngine"]


class ParallelEngine:
    """A GPT trained on a dp × tp × pp process grid; see the module docstring."""

    def __init__(self, model: GPT, grid: ProcessGrid, *, lr: float = 1e-3,
                 betas: tuple = (0.9, 0.95), weight_decay: float = 0.1, zero: int = 0,
                 micro_batches: int = 1, schedule: str = "1f1b", bucket_size_mb: float = 25.0,
                 grad_clip: float = 0.0, decay_groups: bool = True,
                 skip_nonfinite: bool = False) -> None:
        if zero not in (0, 1):
            raise ValueError(f"ParallelEngine: zero must be 0 or 1 (ZeRO stage 1), got {zero}")
        if schedule not in ("gpipe", "1f1b"):
            raise ValueError(f"ParallelEngine: schedule must be 'gpipe' or '1f1b', got "
                             f"{schedule!r}")
        c = model.config
        n_layers = c.n_layers
        if grid.pp > n_layers:
            raise ValueError(f"ParallelEngine: {n_layers} layers cannot be split into "
                             f"{grid.pp} pipeline stages")
        self.grid, self.config = grid, c
        self.micro_batches, self.schedule, self.grad_clip = int(micro_batches), schedule, grad_clip
        self.skip_nonfinite = bool(skip_nonfinite)
        self.skipped_steps = 0
        self.last_nonfinite: tuple | None = None  # (what, value) of the last step, if bad
        loss_fn = None
        if grid.tp > 1:
            tpm.check_tensor_parallel_sizes(c, grid.tp)
            model = tpm.tensor_parallel_gpt(model, grid.tp_comm)

            def loss_fn(logits: Any, targets: Any) -> Any:
                return tpm.vocab_parallel_cross_entropy(logits, targets, grid.tp_comm,
                                                        reduction="sum")

        self.stage = PipelineStage(model, grid.pp_comm, loss_fn=loss_fn)
        self.sharded = set(tpm._layouts(self.stage)) if grid.tp > 1 else set()
        # no weight decay on biases and norm weights (decay_groups=False: decay everything)
        groups = optim.param_groups_for_weight_decay(self.stage, weight_decay) \
            if decay_groups else list(self.stage.parameters())
        # ZeRO reduce-scatters gradients itself; global-norm clipping needs the averaged
        # full gradient first, so with clipping DataParallel averages and ZeRO only
        # shards the optimizer state (reduce_grads=False)
        use_ddp = grid.dp > 1 and (zero == 0 or grad_clip > 0)
        self.ddp = DataParallel(self.stage, grid.dp_comm, bucket_size_mb=bucket_size_mb) \
            if use_ddp else None
        if zero:
            self.optimizer = ZeroRedundancyOptimizer(
                groups, optim.AdamW, grid.dp_comm, reduce_grads=not use_ddp, lr=lr,
                betas=betas, weight_decay=weight_decay)
        else:
            self.optimizer = optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)

    # ------------------------------------------------------------------ training
    def _my_rows(self, a: Any) -> np.ndarray:
        a = to_host(a)
        B = a.shape[0]
        dp, M = self.grid.dp, self.micro_batches
        if B % (dp * M):
            raise ValueError(f"global batch of {B} rows does not split into dp ({dp}) x "
                             f"micro-batches ({M}) equal parts")
        n = B // dp
        return a[self.grid.dp_rank * n:(self.grid.dp_rank + 1) * n]

    def step(self, x: Any, y: Any) -> float:
        """One optimizer step on the global batch (x, y); returns its mean loss."""
        xs, ys = self._my_rows(x), self._my_rows(y)
        self.optimizer.zero_grad()
        loss = run_pipeline(self.stage, xs, ys, self.schedule, self.micro_batches,
                            no_sync=self.ddp.no_sync if self.ddp is not None else None)
        if self.ddp is not None:
            self.ddp.finish()
        sync_tied_gradients(self.stage)
        out = np.array([_broadcast_loss(self.stage, loss)])
        self.grid.dp_comm.allreduce(out)
        loss = float(out[0]) / self.grid.dp
        norm = self.grad_norm()
        self.last_nonfinite = self._agree_nonfinite(loss, norm)
        if self.last_nonfinite is not None:
            self.optimizer.zero_grad()  # parameters and optimizer state stay as they are
            self.skipped_steps += 1
            if not self.skip_nonfinite:
                what, value = self.last_nonfinite
                raise FloatingPointError(
                    f"ParallelEngine.step: the {what} is {value}; the parameters were not "
                    "updated (skip_nonfinite=True skips such steps)")
            return loss
        if self.grad_clip and self.grad_clip > 0:
            self.clip_grad_norm_(self.grad_clip)  # computes the (finite) norm once more
        self.optimizer.step()
        return loss

    def _agree_nonfinite(self, loss: float, norm: float) -> tuple | None:
        """("loss" or "gradient norm", value) when either is NaN/inf on any rank, else
        None; the same answer on every rank. The loss is reduced and the norm reduced
        over tp and pp, but without DataParallel (ZeRO reducing the gradients itself)
        each dp replica has only its own local gradient: one flag over the whole grid
        keeps every rank on the same branch (the optimizer step is a collective)."""
        flags = np.array([0.0 if math.isfinite(loss) else 1.0,
                          0.0 if math.isfinite(norm) else 1.0])
        self.grid.world.allreduce(flags, op="max")
        if flags[0]:
            return ("loss", loss if not math.isfinite(loss) else math.nan)
        if flags[1]:
            return ("gradient norm", norm if not math.isfinite(norm) else math.nan)
        return None

    def grad_norm(self) -> float:
        """The 2-norm of the whole model's gradient, as one process would compute it:
        sharded parameters summed over tp ranks, replicated ones counted once, the tied
        embedding counted on the first stage only; data-parallel replicas hold the same
        averaged gradient."""
        sq = np.zeros(2)  # [sharded part, replicated part]
        tied = self.stage.tied_weight
        for name, p in self.stage.named_parameters():
            if p.grad is None or (tied is not None and p is tied and not self.stage.is_first):
                continue
            g = p.grad.data
            sq[0 if name in self.sharded else 1] += float((g * g).sum())
        if self.grid.tp > 1:
            sq[1] /= self.grid.tp  # every tp rank holds the same replicated gradients
            self.grid.tp_comm.allreduce(sq)
        self.grid.pp_comm.allreduce(sq)
        return math.sqrt(float(sq.sum()))

    @no_grad()
    def clip_grad_norm_(self, max_norm: float) -> float:
        """Scale every gradient by max_norm / (norm + 1e-6) when the global norm exceeds
        max_norm (the same rule as ``optim.clip_grad_norm_``); returns the norm."""
        norm = self.grad_norm()
        scale = max_norm / (norm + 1e-6)
        if scale < 1.0:
            for p in self.stage.parameters():
                if p.grad is not None:
                    p.grad.data *= scale
        return norm

    def evaluate(self, x: Any, y: Any) -> float:
        """Mean loss of the batch without gradients (every replica evaluates it all)."""
        xs, ys = (to_host(a) for a in (x, y))
        M = self.micro_batches if xs.shape[0] % self.micro_batches == 0 else 1
        return float(evaluate(self.stage, xs, ys, M))

    # ------------------------------------------------------------------ checkpoints
    def full_state_dict(self) -> dict | None:
        """The one-process GPT's state dict, on world rank 0 (None elsewhere): its keys
        in its order, the tied head the very array of the embedding (stored once in a
        checkpoint, whatever the grid). A collective over the whole grid."""
        sd = tpm.full_state_dict(self.stage, self.grid.tp_comm) if self.grid.tp > 1 else None
        full = full_state_dict(self.stage, state_dict=sd)
        if self.grid.tp_rank != 0 or self.grid.dp_rank != 0:
            return None
        return full

    def load_full_state_dict(self, state_dict: dict) -> None:
        """Reshard a one-process state dict onto this rank's stage and tp shard."""
        part = stage_state_dict(self.stage, state_dict)
        if self.grid.tp > 1:
            tpm.load_full_state_dict(self.stage, part, self.grid.tp_comm)
        else:
            self.stage.load_state_dict(part, strict=True)

    @property
    def parameters_per_rank(self) -> int:
        return sum(p.numel() for p in self.stage.parameters())

    def optimizer_state_bytes(self) -> int:
        if isinstance(self.optimizer, ZeroRedundancyOptimizer):
            return self.optimizer.state_bytes()
        return sum(v.nbytes for s in self.optimizer.state.values() for v in s.values()
                   if hasattr(v, "nbytes"))
