"""The ParallelEngine (what `minilm train --dp/--tp/--pp/--zero` runs) against the
one-process reference, step by step:
``python -m tests.mpi.scripts.engine_train DP TP PP ZERO SCHEDULE MICRO_BATCHES VARIANT...``
with each VARIANT ``OPTIMIZER:CLIP`` (``adamw:0.5``, ``sgd:0`` ...) run on a fresh engine.

Compared with one process, in float64 to 1e-9 (tests/mpi/common.py ``compare_trace``):

- the full gradient of every named parameter before clipping, at every step (gathered
  over tp and pp; the averaged one over dp: where ZeRO reduce-scatters the gradients
  itself, the averaged slices it hands to its optimizer, gathered over dp). Clipping
  scales every gradient by the same factor and AdamW divides a constant factor out, so
  losses and parameters alone would not show a gradient off by a constant factor;
- the engine's global gradient norm (what clipping uses) with the norm of the
  reference's gradients;
- with clipping, the gradients after clipping (what the optimizer receives);
- the losses and the final parameters (plain SGD: the update is -lr g itself);
- that the data-parallel replicas hold identical gradients and parameters.
"""

import sys

import numpy as np

from minilm import optim
from minilm.parallel import ProcessGrid, ZeroRedundancyOptimizer, install_abort_handler, world
from minilm.parallel import tensor_parallel as tpm
from minilm.parallel.engine import ParallelEngine
from minilm.parallel.pipeline import full_state_dict
from tests.mpi.common import (
    LR,
    SGD_LR,
    STEPS,
    compare_trace,
    global_batch,
    make_model,
    max_rel_err,
    reference_trace,
    report,
)

install_abort_handler()
dp, tp, pp, zero = (int(a) for a in sys.argv[1:5])
schedule, micro = sys.argv[5], int(sys.argv[6])
variants = [(v.split(":")[0], float(v.split(":")[1])) for v in sys.argv[7:]]
grid = ProcessGrid(dp=dp, tp=tp, pp=pp)
is_root = world().rank == 0


def same_on_dp_ranks(arrays: list) -> bool:
    flat = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(1)
    lo, hi = flat.copy(), flat.copy()
    grid.dp_comm.allreduce(lo, "min")
    grid.dp_comm.allreduce(hi, "max")
    return bool((lo == hi).all())


def gather_full(engine: ParallelEngine, local: dict) -> dict | None:
    """{name: full array} on world rank 0 from this rank's {stage parameter name: local
    shard}: tensor-parallel shards merged, pipeline stages collected."""
    if tp > 1:
        layouts = tpm._layouts(engine.stage)
        local = {n: tpm._gather_full(a, *layouts[n], grid.tp_comm) if n in layouts
                 else a.copy() for n, a in local.items()}
    full = full_state_dict(engine.stage, grid.pp_comm, state_dict=local)
    if full is None or grid.tp_rank != 0 or grid.dp_rank != 0:
        return None
    return {k: np.array(v, copy=True) for k, v in full.items()}


def local_grads(engine: ParallelEngine) -> dict:
    return {n: (p.grad.numpy().copy() if p.grad is not None else np.zeros(p.shape))
            for n, p in engine.stage.named_parameters()}


def zero_averaged_grads(engine: ParallelEngine) -> dict:
    """The averaged gradient ZeRO computed itself (reduce-scatter): its slices, gathered
    over dp, laid back onto the parameters."""
    z = engine.optimizer
    flat = np.empty(z.padded_numel, dtype=z.dtype)
    grid.dp_comm.allgather(np.ascontiguousarray(z._gshard), flat)
    by_id = {id(p): flat[o:o + p.data.size].reshape(p.shape)
             for p, o in zip(z._flat, z._offsets)}
    return {n: by_id[id(p)].copy() for n, p in engine.stage.named_parameters()}


def run(kind: str, clip: float) -> dict:
    engine = ParallelEngine(make_model(), grid, lr=LR, betas=(0.9, 0.95), weight_decay=0.1,
                            zero=zero, micro_batches=micro, schedule=schedule,
                            bucket_size_mb=0.01, grad_clip=clip,
                            decay_groups=False)  # the reference decays every parameter
    zero_reduces = zero and engine.ddp is None  # ZeRO reduce-scatters the gradients
    if kind == "sgd":  # the engine builds AdamW; swap in plain SGD the same way
        params = list(engine.stage.parameters())
        engine.optimizer = (
            ZeroRedundancyOptimizer(params, optim.SGD, grid.dp_comm, reduce_grads=zero_reduces,
                                    lr=SGD_LR) if zero else optim.SGD(params, lr=SGD_LR))
    trace: dict = {"losses": [], "params": None, "grads": [], "norms": [], "clipped": []}
    dp_same = []
    clip_original = engine.clip_grad_norm_
    step_original = engine.optimizer.step

    def clip_and_record(max_norm: float) -> float:
        grads = local_grads(engine)
        dp_same.append(same_on_dp_ranks(list(grads.values())))
        trace["grads"].append(gather_full(engine, grads))
        norm = clip_original(max_norm)
        trace["norms"].append(norm)
        return norm

    def step_and_record(*args, **kwargs):
        if not clip:  # the gradients the optimizer gets are those before clipping
            if not zero_reduces:
                grads = local_grads(engine)
                dp_same.append(same_on_dp_ranks(list(grads.values())))
                trace["grads"].append(gather_full(engine, grads))
                trace["norms"].append(engine.grad_norm())
        else:
            trace["clipped"].append(gather_full(engine, local_grads(engine)))
        out = step_original(*args, **kwargs)
        if zero_reduces:  # p.grad is still the local gradient: take ZeRO's average
            trace["grads"].append(gather_full(engine, zero_averaged_grads(engine)))
            trace["norms"].append(None)  # no global norm is computed on this path
        return out

    engine.clip_grad_norm_ = clip_and_record
    engine.optimizer.step = step_and_record
    for step in range(STEPS):
        trace["losses"].append(engine.step(*global_batch(step)))
    trace["params"] = engine.full_state_dict()
    dp_same.append(same_on_dp_ranks([p.numpy() for p in engine.stage.parameters()]))
    if not is_root:
        return {}
    ref = reference_trace(STEPS, clip, kind)
    res = compare_trace(trace, ref)
    res["dp_identical"] = all(dp_same)
    res["clipped_err"] = 0.0
    if clip:  # what the optimizer received: the reference's gradient times the factor
        for step, got in enumerate(trace["clipped"]):
            scale = min(1.0, clip / (ref["norms"][step] + 1e-6))
            want = {k: g * scale for k, g in ref["grads"][step].items()}
            res["clipped_err"] = max(res["clipped_err"], max_rel_err(got, want)[0])
        res["clip_active"] = all(n > clip for n in ref["norms"])
        res["ok"] = res["ok"] and len(trace["clipped"]) == STEPS and res["clipped_err"] <= 1e-9
    res["ok"] = res["ok"] and res["dp_identical"]
    return res


results = {f"{kind}:{clip:g}": run(kind, clip) for kind, clip in variants}
if is_root:
    report(results)
