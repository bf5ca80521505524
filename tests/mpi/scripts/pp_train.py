"""Pipeline-parallel training against the one-process reference:
``python -m tests.mpi.scripts.pp_train SCHEDULE MICRO_BATCHES [DP [TP]]`` on
DP x TP x PP ranks (pp = world size / (dp tp)). Data parallel replicas take disjoint
rows of the global batch; tensor parallel shards every stage's layers."""

import sys

import numpy as np

from minilm.parallel import DataParallel, ProcessGrid, install_abort_handler, world
from minilm.parallel import tensor_parallel as tpm
from minilm.parallel.pipeline import (
    PipelineStage,
    evaluate,
    full_state_dict,
    load_full_state_dict,
    stage_state_dict,
    train_step,
)
from tests.mpi.common import (
    GLOBAL_BATCH,
    STEPS,
    compare,
    global_batch,
    make_model,
    make_optimizer,
    reference_run,
    report,
)

install_abort_handler()
schedule, micro_batches = sys.argv[1], int(sys.argv[2])
dp = int(sys.argv[3]) if len(sys.argv) > 3 else 1
tp = int(sys.argv[4]) if len(sys.argv) > 4 else 1
grid = ProcessGrid(dp=dp, tp=tp, pp=world().size // (dp * tp))


def build() -> PipelineStage:
    if tp == 1:
        return PipelineStage(make_model(), grid.pp_comm)
    model = tpm.tensor_parallel_gpt(make_model(), grid.tp_comm)
    return PipelineStage(model, grid.pp_comm, loss_fn=lambda logits, targets: (
        tpm.vocab_parallel_cross_entropy(logits, targets, grid.tp_comm, reduction="sum")))


def gather(stage: PipelineStage) -> dict | None:
    sd = tpm.full_state_dict(stage, grid.tp_comm) if tp > 1 else None
    return full_state_dict(stage, state_dict=sd)


def my_rows(batch: tuple) -> tuple:
    n = GLOBAL_BATCH // dp
    return tuple(a[grid.dp_rank * n:(grid.dp_rank + 1) * n] for a in batch)


stage = build()
hooks = {}
if dp > 1:
    ddp = DataParallel(stage, grid.dp_comm, bucket_size_mb=0.01)
    hooks = dict(no_sync=ddp.no_sync, after_backward=ddp.finish)
opt = make_optimizer(stage.parameters())
losses = []
for step in range(STEPS):
    loss = np.array([train_step(stage, my_rows(global_batch(step)), opt, schedule,
                                micro_batches, **hooks)])
    grid.dp_comm.allreduce(loss)
    losses.append(float(loss[0]) / dp)
peaks = grid.pp_comm.allgather_json(stage.last_stats["peak_in_flight"])
eval_loss = evaluate(stage, *global_batch(STEPS), micro_batches)
params = gather(stage)

# resharding: every stage keeps its part of the reference's final (full) parameters
_, ref_params = reference_run()
fresh = build()
if tp > 1:
    tpm.load_full_state_dict(fresh, stage_state_dict(fresh, ref_params), grid.tp_comm)
else:
    load_full_state_dict(fresh, ref_params)
reloaded = gather(fresh)

if world().rank == 0:
    res = compare(losses, params)
    res["tied_equal"] = bool(np.array_equal(params["head.weight"], params["tok_emb.weight"]))
    res["keys"] = list(params)
    res["reload_equal"] = bool(
        list(reloaded) == list(params)
        and all(np.array_equal(reloaded[k], ref_params[k]) for k in ref_params)
        and np.array_equal(reloaded["head.weight"], ref_params["tok_emb.weight"]))
    res["layers"] = stage.partition
    res["wait_fraction"] = stage.last_stats["wait_fraction"]
    res["peak_in_flight"] = peaks
    # the loss of the final parameters on a fresh batch, as one process computes it
    model = make_model()
    model.load_state_dict(ref_params, strict=False)
    _, ref_eval = model(*global_batch(STEPS))
    res["eval_err"] = abs(eval_loss - ref_eval.item()) / abs(ref_eval.item())
    report(res)
