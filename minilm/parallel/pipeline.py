"""Pipeline parallelism: a GPT's blocks split into stages, one stage per process of the
pipeline communicator, micro-batches flowing through them (GPipe and 1F1B schedules).

Layout (``pp`` stages, blocks balanced by parameter count, see ``partition_balanced``)::

    stage 0        tok_emb (+ pos_emb), dropout, blocks[0:a]       -> activation (b, T, d)
    stage 1..pp-2  blocks[a:b] ...                                  -> activation (b, T, d)
    stage pp-1     blocks[..:L], ln_f, head (tied copy of tok_emb), loss

A batch (B, T) is cut into M micro-batches of b = B / M rows. A forward action F(i)
receives micro-batch i's activation from the previous stage (``Recv`` into a buffer
preallocated from the known shape (b, T, d_model)), runs the stage and ``Isend``s the
output on. A backward action B(i) receives d(loss)/d(output) from the next stage, runs
``output.backward(gradient=...)`` through the graph kept alive since F(i), and sends
d(loss)/d(input) = ``input.grad`` back. The last stage's loss of micro-batch i is
``sum of its token losses / (valid tokens in the whole batch)`` (= mean / M without
ignored targets), so the M backward passes accumulate exactly the gradient of the
whole-batch mean loss of one process.

Schedules (per stage, an explicit list of actions; ``format_schedule`` prints them)::

    GPipe  (pp=4, M=4)                       1F1B (pp=4, M=4)
    stage 0: F0 F1 F2 F3 B0 B1 B2 B3         stage 0: F0 F1 F2 F3 B0 B1 B2 B3
    stage 3: F0 F1 F2 F3 B0 B1 B2 B3         stage 3: F0 B0 F1 B1 F2 B2 F3 B3

1F1B runs ``pp - stage - 1`` warm-up forwards, then alternates one forward and one
backward, then drains the remaining backwards. Both have the same bubble
(pp - 1) / (M + pp - 1) of idle time, but a GPipe stage keeps the activations of all M
micro-batches alive at once and a 1F1B stage at most ``pp - stage``.

Why this cannot deadlock. Every send is non-blocking (``Isend``; the array is kept
until the request completes) and every receive blocking, so a stage only ever waits in
a ``Recv`` for a message that its neighbour sends as soon as it finishes the matching
action. Each stage runs its list in order; the actions with their data dependencies
F(s-1, i) -> F(s, i) and B(s+1, i) -> B(s, i) plus the per-stage order form an acyclic
graph for both schedules (``simulate_schedule`` executes exactly this machine and raises
if it ever gets stuck; the tests run it for many pp and M). With blocking ``Send`` it
could deadlock: in the 1F1B steady state stage s sends an activation to s+1 while s+1
sends a gradient to s, and two rendezvous sends facing each other wait forever (the
reason Megatron batches them as isend/irecv). Messages between two stages in one
direction are matched in order (MPI never reorders messages of one source, tag and
communicator), and activations, gradients and the tied-weight exchange use distinct
tags on the pipeline communicator, so nothing is confused with another group's traffic.

Tied embedding: with ``pp > 1`` the first stage's ``tok_emb.weight`` and the last
stage's ``head.weight`` are two copies of one parameter. After backward
``sync_tied_gradients`` swaps their gradients (Isend + Recv) and both add them
(a + b == b + a exactly in IEEE arithmetic), so both copies get the same update and
stay bit-identical.

Composition: a stage is an ordinary Module (the model's own submodules and Parameters)
and talks only on the pipeline communicator it is given, so the other modes wrap it::

    grid = ProcessGrid(dp=2, tp=2, pp=2)
    model = tensor_parallel_gpt(GPT(cfg), grid.tp_comm)             # optional
    stage = PipelineStage(model, grid.pp_comm, loss_fn=lambda lg, tg:
                          vocab_parallel_cross_entropy(lg, tg, grid.tp_comm, reduction="sum"))
    ddp = DataParallel(stage, grid.dp_comm)                          # optional
    loss = train_step(stage, (x, y), opt, "1f1b", micro_batches=8,
                      no_sync=ddp.no_sync, after_backward=ddp.finish)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import checkpoint, no_grad
from ..backends import is_device_array, to_host
from ..nn.module import Module, ModuleDict
from ..tensor import Tensor
from .comm import Communicator, Request
from .pipeline_schedule import (
    BACKWARD,
    FORWARD,
    Action,
    bubble_fraction,
    format_schedule,
    gpt_layer_costs,
    make_schedule,
    max_in_flight,
    partition_balanced,
    simulate_schedule,
)

__all__ = [
    "Action", "PipelineStage", "bubble_fraction", "build_stage", "evaluate",
    "format_schedule", "full_state_dict", "gpt_layer_costs", "load_full_state_dict",
    "make_schedule", "partition_balanced", "run_pipeline", "simulate_schedule",
    "stage_state_dict", "sync_tied_gradients", "tied_state_dict", "train_step",
]

_TAG_ACT, _TAG_GRAD, _TAG_TIED = 11, 12, 13


# ---------------------------------------------------------------------------- the stage


class PipelineStage(Module):
    """This process's part of a GPT: the embeddings on the first stage, a contiguous run
    of blocks, ln_f + head + loss on the last. Built from a full GPT (made identically
    on every rank); the submodules are the model's own (no copy), registered under the
    full model's names (``blocks.2.attn...``), so ``state_dict()`` keys are a subset of
    the full model's and other wrappers (data/tensor parallel) see ordinary Parameters.

    ``comm`` is the pipeline communicator (``ProcessGrid.pp_comm``); its rank is the
    stage. ``stage``/``n_stages`` override it (building a stage without MPI). ``partition``
    is a list of (start, stop) block ranges per stage (default: balanced by parameter
    count). ``loss_fn(logits_2d, targets_1d)`` returns the *summed* loss (default
    cross-entropy with reduction='sum', ignore_index=-100)."""

    def __init__(self, model: Module, comm: Communicator | None = None, *,
                 stage: int | None = None, n_stages: int | None = None,
                 partition: Sequence[tuple[int, int]] | None = None,
                 loss_fn: Callable | None = None, ignore_index: int = -100) -> None:
        super().__init__()
        if getattr(getattr(model, "config", None), "share_layers", False):
            raise ValueError("PipelineStage: share_layers=True (one block applied n_layers "
                             "times) cannot be split into pipeline stages; train it without "
                             "--pp, or with share_layers=False")
        comm = comm if comm is not None else Communicator(None)
        self.comm = comm
        self.n_stages = comm.size if n_stages is None else int(n_stages)
        self.stage_id = comm.rank if stage is None else int(stage)
        if not 0 <= self.stage_id < self.n_stages:
            raise ValueError(f"PipelineStage: stage {self.stage_id} is outside "
                             f"0..{self.n_stages - 1}")
        self.config = model.config
        n_layers = len(model.blocks)
        if partition is None:
            costs, first, last = gpt_layer_costs(model)
            partition = partition_balanced(costs, self.n_stages, first, last)
        partition = [tuple(p) for p in partition]
        if len(partition) != self.n_stages or partition[0][0] != 0 \
                or partition[-1][1] != n_layers \
                or any(a[1] != b[0] for a, b in zip(partition, partition[1:])) \
                or any(lo >= hi for lo, hi in partition):
            raise ValueError(f"PipelineStage: partition {partition} does not cover the "
                             f"{n_layers} blocks in {self.n_stages} contiguous non-empty runs")
        self.partition = partition
        self.layers = partition[self.stage_id]
        self.is_first = self.stage_id == 0
        self.is_last = self.stage_id == self.n_stages - 1
        self.tied = getattr(model.head, "weight", None) is getattr(model.tok_emb, "weight", 0)
        if self.is_first:
            self.tok_emb = model.tok_emb
            if "pos_emb" in model._modules:
                self.pos_emb = model.pos_emb
            if "pos_table" in model._buffers:
                self.register_buffer("pos_table", model.pos_table, persistent=False)
            self.drop = model.drop
        self.blocks = ModuleDict({str(i): model.blocks[i] for i in range(*self.layers)})
        if self.is_last:
            self.ln_f = model.ln_f
            self.head = model.head
        self.loss_fn = loss_fn
        self.ignore_index = ignore_index
        self.last_stats: dict = {}
        self._pool: dict = {}

    # ------------------------------------------------------------------ pieces
    @property
    def tied_weight(self) -> Tensor | None:
        """This stage's copy of the tied embedding/head weight (None if it has none)."""
        if not self.tied or self.n_stages == 1:
            return None
        if self.is_first:
            return self.tok_emb.weight
        if self.is_last:
            return self.head.weight
        return None

    @property
    def activation_dtype(self) -> np.dtype:
        p = next(iter(self.blocks.values())).parameters()
        return np.dtype(next(p).dtype)

    def embed(self, ids: Tensor) -> Tensor:
        """Token (+ learned or sinusoidal position) embeddings and dropout (first stage)."""
        T = ids.shape[1]
        x = self.tok_emb(ids)
        if "pos_emb" in self._modules:
            x = x + self.pos_emb(Tensor._make(x.backend.xp.arange(T)))
        elif "pos_table" in self._buffers:
            x = x + Tensor._make(self.pos_table.data[:T].astype(x.dtype))
        return self.drop(x)

    def forward(self, x: Tensor) -> Tensor:
        """Token ids (first stage) or an activation (b, T, d) -> this stage's output:
        an activation, or the logits (b, T, vocab) on the last stage."""
        c = self.config
        if self.is_first:
            x = self.embed(_on_stage(x, self))
        for block in self.blocks.values():
            if c.checkpoint_activations and self.training:
                x = checkpoint(block, x)
            else:
                x = block(x, context_length=c.context_length)
        if self.is_last:
            x = self.head(self.ln_f(x))
        return x

    def loss(self, logits: Tensor, targets: Any, n_tokens: int) -> Tensor:
        """Summed token loss of a micro-batch divided by the valid tokens of the batch."""
        targets = _on_stage(targets, self)
        lg, tg = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        if self.loss_fn is not None:
            total = self.loss_fn(lg, tg)
        else:
            total = F.cross_entropy(lg, tg, ignore_index=self.ignore_index, reduction="sum")
        return total * (1.0 / max(n_tokens, 1))

    def _buffers_for(self, role: str, shape: tuple, dtype: np.dtype, count: int) -> list:
        """``count`` receive buffers for ``role`` (activations or gradients) of ``shape``
        and ``dtype``, allocated once and reused by later steps."""
        key = (role, shape, np.dtype(dtype).str)
        pool = self._pool.setdefault(key, [])
        while len(pool) < count:
            pool.append(np.empty(shape, dtype=dtype))
        return pool

    def extra_repr(self) -> str:
        parts = [f"stage {self.stage_id} of {self.n_stages}", f"blocks {self.layers}"]
        if self.tied_weight is not None:
            parts.append("tied embedding copy")
        return ", ".join(parts)


def build_stage(model: Module, comm: Communicator | None = None, **kwargs: Any) -> PipelineStage:
    """``PipelineStage(model, comm, **kwargs)``: keep this rank's part of ``model``."""
    return PipelineStage(model, comm, **kwargs)


# ---------------------------------------------------------------------------- running a step


def _host(a: Any) -> np.ndarray:
    return np.ascontiguousarray(to_host(a))  # a device array: a host copy, for MPI


def _like(buf: np.ndarray, stage: PipelineStage) -> Any:
    xp = next(stage.parameters()).backend.xp
    return buf if xp is np else xp.asarray(buf)


def _on_stage(a: Any, stage: PipelineStage) -> Tensor:
    """Token ids or targets (an array or a Tensor, on the host or the device) as a
    Tensor where the stage's parameters are."""
    data = a.data if isinstance(a, Tensor) else a
    xp = next(stage.parameters()).backend.xp
    if xp is np:
        return a if isinstance(a, Tensor) and not is_device_array(data) else \
            Tensor(np.asarray(to_host(data)))
    if is_device_array(data):
        return a if isinstance(a, Tensor) else Tensor(data)
    return Tensor(xp.asarray(np.asarray(data)))  # host -> device


def _rows(a: Any, lo: int, hi: int) -> Tensor:
    data = a.data if isinstance(a, Tensor) else (a if hasattr(a, "shape") else np.asarray(a))
    return Tensor(data[lo:hi])


def run_pipeline(stage: PipelineStage, inputs: Any, targets: Any, schedule: str = "1f1b",
                 micro_batches: int = 1, *, no_sync: Callable[[], Any] | None = None,
                 before_last_backward: Callable[[], None] | None = None) -> float | None:
    """Forward and backward of one batch through the pipeline, accumulating parameter
    gradients (nothing is zeroed or stepped). ``inputs``/``targets`` (B, T) are the
    batch of this pipeline (every stage passes it: the first stage reads the ids, the
    last the targets, all the shape). ``no_sync()`` (a context-manager factory, e.g.
    data parallel's) wraps every backward but the stage's last; ``before_last_backward()``
    runs just before that last one. Returns the batch loss on the last stage, None on
    the others; timings go to ``stage.last_stats``."""
    comm, s, P = stage.comm, stage.stage_id, stage.n_stages
    shape = tuple(inputs.shape if inputs is not None else targets.shape)
    if len(shape) != 2:
        raise ValueError(f"run_pipeline: batch must be (B, T) token ids, got shape {shape}")
    B, T = shape
    M = int(micro_batches)
    if M < 1 or B % M:
        raise ValueError(f"run_pipeline: batch of {B} rows does not split into {M} "
                         f"micro-batches; use a divisor of {B}")
    b = B // M
    acts = make_schedule(schedule, P, s, M)
    last_backward = max(k for k, a in enumerate(acts) if a.op == BACKWARD)
    act_shape, dtype = (b, T, stage.config.d_model), stage.activation_dtype
    in_bufs = list(stage._buffers_for("act", act_shape, dtype, max_in_flight(acts))) \
        if not stage.is_first else []
    grad_buf = stage._buffers_for("grad", act_shape, dtype, 1)[0] if not stage.is_last else None
    n_tokens = 0
    if stage.is_last:
        tg = to_host(targets)
        n_tokens = int((tg != stage.ignore_index).sum())
    inputs_of: dict = {}   # micro-batch -> received activation Tensor (requires grad)
    outputs_of: dict = {}  # micro-batch -> stage output Tensor (or loss on the last stage)
    free_bufs: dict = {}
    sends: list = []       # (Request, array): the array must live until the send completes
    total = 0.0
    waited = 0.0
    peak = 0               # most micro-batches alive at once (activation memory)
    t0 = time.perf_counter()

    def blocking_recv(buf: np.ndarray, source: int, tag: int) -> None:
        nonlocal waited
        t = time.perf_counter()
        comm.recv(buf, source, tag)
        waited += time.perf_counter() - t

    def send(arr: Any, dest: int, tag: int, what: str) -> None:
        host = _host(arr)
        if host.shape != act_shape or host.dtype != dtype:
            raise ValueError(f"pipeline stage {s}: {what} of shape {host.shape} {host.dtype} "
                             f"does not match the expected {act_shape} {dtype}")
        sends.append((comm.isend(host, dest, tag), host))

    for k, a in enumerate(acts):
        lo, hi = a.mb * b, (a.mb + 1) * b
        if a.op == FORWARD:
            if stage.is_first:
                x = _rows(inputs, lo, hi)
            else:
                buf = in_bufs.pop()
                blocking_recv(buf, s - 1, _TAG_ACT)
                x = Tensor(_like(buf, stage), requires_grad=True)
                inputs_of[a.mb], free_bufs[a.mb] = x, buf
            out = stage(x)
            if stage.is_last:
                out = stage.loss(out, _rows(targets, lo, hi), n_tokens)
                total += float(out.item())
            else:
                send(out.data, s + 1, _TAG_ACT, "activation")
            outputs_of[a.mb] = out
            peak = max(peak, len(outputs_of))
        else:
            out = outputs_of.pop(a.mb)
            if k == last_backward and before_last_backward is not None:
                before_last_backward()
            ctx = no_sync() if (no_sync is not None and k != last_backward) else nullcontext()
            with ctx:
                if stage.is_last:
                    out.backward()
                else:
                    blocking_recv(grad_buf, s + 1, _TAG_GRAD)
                    out.backward(gradient=Tensor(_like(grad_buf, stage)))
            del out
            if not stage.is_first:
                x = inputs_of.pop(a.mb)
                g = x.grad.data if x.grad is not None else np.zeros(act_shape, dtype)
                send(g, s - 1, _TAG_GRAD, "input gradient")
                in_bufs.append(free_bufs.pop(a.mb))  # its graph is freed: reuse the buffer
        sends[:] = [(r, arr) for r, arr in sends if not r.test()]  # also drives MPI progress
    t = time.perf_counter()
    for r, _ in sends:
        r.wait()
    waited += time.perf_counter() - t
    elapsed = time.perf_counter() - t0
    stage.last_stats = {"stage": s, "time": elapsed, "wait": waited, "busy": elapsed - waited,
                        "wait_fraction": waited / elapsed if elapsed > 0 else 0.0,
                        "peak_in_flight": peak}
    return total if stage.is_last else None


def sync_tied_gradients(stage: PipelineStage) -> None:
    """Sum the gradients of the two copies of the tied embedding/head weight (first and
    last stage), in place on both, so the copies stay identical after the optimizer
    step. Nothing to do with one stage (one shared Parameter) or untied weights; middle
    stages return at once."""
    w = stage.tied_weight
    if w is None:
        return
    comm = stage.comm
    peer = stage.n_stages - 1 if stage.is_first else 0
    if w.grad is None:
        w.grad = Tensor._make(w.backend.xp.zeros(w.shape, dtype=w.dtype))
    mine = _host(w.grad.data).copy()
    other = np.empty_like(mine)
    req: Request = comm.isend(mine, peer, _TAG_TIED)
    comm.recv(other, peer, _TAG_TIED)
    req.wait()
    w.grad.data += _like(other, stage)  # a + b == b + a: both copies get the same sum
    w.grad._version.value += 1


def _broadcast_loss(stage: PipelineStage, loss: float | None) -> float:
    if stage.n_stages == 1:
        return float(loss)
    buf = np.array([loss if loss is not None else 0.0], dtype=np.float64)
    stage.comm.bcast(buf, root=stage.n_stages - 1)
    return float(buf[0])


def train_step(stage: PipelineStage, batch: tuple, optimizer: Any, schedule: str = "1f1b",
               micro_batches: int = 1, *, no_sync: Callable[[], Any] | None = None,
               before_last_backward: Callable[[], None] | None = None,
               after_backward: Callable[[], None] | None = None) -> float:
    """One optimizer step on ``batch = (inputs, targets)``: zero the gradients, run the
    schedule over ``micro_batches``, call ``after_backward()`` (e.g. wait for data
    parallel's gradient allreduce), sum the tied embedding's gradient between first and
    last stage, ``optimizer.step()``. Returns the batch loss on every stage."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = run_pipeline(stage, inputs, targets, schedule, micro_batches, no_sync=no_sync,
                        before_last_backward=before_last_backward)
    if after_backward is not None:
        after_backward()
    sync_tied_gradients(stage)
    optimizer.step()
    return _broadcast_loss(stage, loss)


def evaluate(stage: PipelineStage, inputs: Any, targets: Any, micro_batches: int = 1) -> float:
    """The batch's mean loss without gradients (forwards only, micro-batch by
    micro-batch) in eval mode (dropout off), returned on every stage."""
    comm, s = stage.comm, stage.stage_id
    B, T = tuple(inputs.shape if inputs is not None else targets.shape)
    M = int(micro_batches)
    if M < 1 or B % M:
        raise ValueError(f"evaluate: batch of {B} rows does not split into {M} micro-batches")
    b = B // M
    act_shape, dtype = (b, T, stage.config.d_model), stage.activation_dtype
    buf = stage._buffers_for("act", act_shape, dtype, 1)[0] if not stage.is_first else None
    n_tokens = 0
    if stage.is_last:
        tg = to_host(targets)
        n_tokens = int((tg != stage.ignore_index).sum())
    total = 0.0
    was_training = stage.training
    stage.eval()
    try:
        with no_grad():
            for i in range(M):
                lo, hi = i * b, (i + 1) * b
                if stage.is_first:
                    x = _rows(inputs, lo, hi)
                else:
                    x = Tensor(_like(comm.recv(buf, s - 1, _TAG_ACT), stage))
                out = stage(x)
                if stage.is_last:
                    total += float(stage.loss(out, _rows(targets, lo, hi), n_tokens).item())
                else:
                    comm.send(_host(out.data), s + 1, _TAG_ACT)  # forwards only: no cycle
    finally:
        stage.train(was_training)
    return _broadcast_loss(stage, total if stage.is_last else None)


# ---------------------------------------------------------------------------- checkpoints


def full_state_dict(stage: PipelineStage, comm: Communicator | None = None,
                    state_dict: dict | None = None) -> dict | None:
    """The full model's state dict (same keys, shapes and order as the one-process GPT),
    as NumPy arrays, gathered on rank 0 of the pipeline communicator; None elsewhere.
    ``state_dict`` is this stage's part (default ``stage.state_dict()``; pass e.g. the
    tensor-parallel gathered one when tp > 1). A collective: every stage must call it."""
    comm = comm if comm is not None else stage.comm
    own_sd = stage.state_dict() if state_dict is None else state_dict
    own = OrderedDict((k, _host(v.data if isinstance(v, Tensor) else v))
                      for k, v in own_sd.items())
    if comm.is_single:
        return own
    metas = comm.allgather_json([[k, list(v.shape), v.dtype.str] for k, v in own.items()])
    if comm.rank != 0:
        for arr in own.values():
            comm.send(arr, 0, _TAG_TIED)
        return None
    full: OrderedDict = OrderedDict()
    for src, meta in enumerate(metas):
        for name, shp, dt in meta:
            if src == 0:
                arr = own[name]
            else:
                arr = comm.recv(np.empty(tuple(shp), dtype=np.dtype(dt)), src, _TAG_TIED)
            full.setdefault(name, arr)
    return tied_state_dict(full, stage.tied)


def tied_state_dict(state_dict: dict, tied: bool) -> dict:
    """A full state dict in the one-process layout: with tied weights, ``head.weight``
    is the very array of ``tok_emb.weight`` (as in ``GPT.state_dict()``, where both
    names hold one Parameter), so a checkpoint stores it once, whatever the grid.

    The first and last stages each hold a copy of the tied weight; the last stage's
    copy comes back as a separate ``head.weight``, and checkpoints of older versions
    stored it as a second tensor. It is dropped (replaced by the embedding) when it
    equals the embedding: both copies receive the same summed gradient and stay equal
    bit for bit, so it carries nothing. A copy that differs is an error: loading it
    would silently keep one of two different weights."""
    if not tied or "tok_emb.weight" not in state_dict:
        return state_dict
    out = OrderedDict(state_dict)
    emb = out["tok_emb.weight"]
    head = out.get("head.weight", emb)
    if head is not emb:
        e, h = (to_host(a) for a in (emb, head))
        if e.shape != h.shape or not np.array_equal(e, h):
            raise ValueError(
                f"tied_state_dict: head.weight {h.shape} {h.dtype} differs from "
                f"tok_emb.weight {e.shape} {e.dtype}, but the model ties them (one weight); "
                "the checkpoint is corrupted or comes from an untied model "
                "(tie_weights=False)")
    out["head.weight"] = emb
    return out


def stage_state_dict(stage: PipelineStage, state_dict: dict) -> dict:
    """The entries of a full (one-process) state dict that belong to ``stage``; a tied
    ``head.weight`` is taken from ``tok_emb.weight`` (see :func:`tied_state_dict`)."""
    state_dict = tied_state_dict(state_dict, stage.tied)
    return {k: state_dict[k] for k in stage.state_dict() if k in state_dict}


def load_full_state_dict(stage: PipelineStage, state_dict: dict) -> None:
    """Load this stage's part of a full (one-process) state dict: resharding a
    checkpoint onto any number of stages (with tp > 1, pass ``stage_state_dict(stage,
    sd)`` to the tensor-parallel loader instead)."""
    stage.load_state_dict(stage_state_dict(stage, state_dict), strict=True)
