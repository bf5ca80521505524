"""The ParallelEngine (what `minilm train --dp/--tp/--pp/--zero` runs) against the
one-process reference, with global-norm gradient clipping:
``python -m tests.mpi.scripts.engine_train DP TP PP ZERO SCHEDULE MICRO_BATCHES CLIP``."""

import sys

from minilm.parallel import ProcessGrid, install_abort_handler, world
from minilm.parallel.engine import ParallelEngine
from tests.mpi.common import LR, STEPS, compare, global_batch, make_model, report

install_abort_handler()
dp, tp, pp, zero = (int(a) for a in sys.argv[1:5])
schedule, micro, clip = sys.argv[5], int(sys.argv[6]), float(sys.argv[7])
grid = ProcessGrid(dp=dp, tp=tp, pp=pp)
engine = ParallelEngine(make_model(), grid, lr=LR, betas=(0.9, 0.95), weight_decay=0.1,
                        zero=zero, micro_batches=micro, schedule=schedule,
                        bucket_size_mb=0.01, grad_clip=clip,
                        decay_groups=False)  # the reference decays every parameter
losses = [engine.step(*global_batch(step)) for step in range(STEPS)]
norm = engine.grad_norm()
params = engine.full_state_dict()
if world().rank == 0:
    res = compare(losses, params, grad_clip=clip)
    res["last_grad_norm"] = norm
    report(res)
