"""A non-finite gradient on one rank only, through the ParallelEngine: at step BAD rank 1
poisons one entry of its first parameter's gradient (+inf) after the data-parallel
reduction (so only that replica sees it; on a pipeline only that stage). Every rank must
take the same decision: with ``skip_nonfinite`` all skip the update (parameters and
optimizer state exactly unchanged) and go on; without it all raise FloatingPointError,
also with nothing updated.

Run: mpiexec -n 2 python -m tests.mpi.scripts.nonfinite_step DP PP ZERO CLIP MODE
(MODE: skip or raise)
"""

import copy
import sys

import numpy as np

import minilm.parallel.engine as engine_mod
from minilm.parallel import ProcessGrid, install_abort_handler, world
from minilm.parallel.engine import ParallelEngine
from tests.mpi.common import LR, global_batch, make_model, report

install_abort_handler()
dp, pp, zero = (int(a) for a in sys.argv[1:4])
clip, mode = float(sys.argv[4]), sys.argv[5]
BAD, STEPS = 1, 3
comm = world()
grid = ProcessGrid(dp=dp, tp=1, pp=pp)
engine = ParallelEngine(make_model(), grid, lr=LR, zero=zero, grad_clip=clip,
                        micro_batches=2 if pp > 1 else 1, skip_nonfinite=(mode == "skip"))
now = {"step": 0}
sync = engine_mod.sync_tied_gradients


def poisoned(stage: object) -> None:
    sync(stage)
    if now["step"] == BAD and comm.rank == 1:
        next(iter(stage.parameters())).grad.data.flat[0] = np.inf


engine_mod.sync_tied_gradients = poisoned


def flat(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: flat(v) for k, v in obj.items() if k != "param_groups"}
    if isinstance(obj, (list, tuple)):
        return [flat(v) for v in obj]
    return obj.tobytes() if hasattr(obj, "tobytes") else obj


def snapshot() -> tuple:
    params = {n: p.numpy().copy() for n, p in engine.stage.named_parameters()}
    return params, flat(copy.deepcopy(engine.optimizer.state_dict()))  # a collective (ZeRO)


mine: dict = {"rank": comm.rank, "raised": [], "unchanged": None, "moved_after": None}
for step in range(STEPS):
    now["step"] = step
    before = snapshot()
    x, y = global_batch(step)
    try:
        loss = engine.step(x, y)
    except FloatingPointError as exc:
        mine["raised"].append([step, str(exc)])
    after = snapshot()
    same = all(np.array_equal(before[0][n], after[0][n]) for n in before[0]) \
        and before[1] == after[1]
    if step == BAD:
        mine["unchanged"] = bool(same)
        mine["reason"] = list(engine.last_nonfinite or [])
    elif step == BAD + 1:
        mine["moved_after"] = not same
params = np.concatenate([p.numpy().ravel() for p in engine.stage.parameters()])
lo, hi = params.copy(), params.copy()
grid.dp_comm.allreduce(lo, "min")
grid.dp_comm.allreduce(hi, "max")
mine["dp_identical"] = bool((lo == hi).all())
mine["skipped"] = engine.skipped_steps
views = comm.allgather_json(mine)
if comm.rank == 0:
    report({"views": views})
