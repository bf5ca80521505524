"""Fault handling: rank 1 raises in the middle of data-parallel training while rank 0 is
inside the gradient allreduce. With install_abort_handler() the job must end at once
(non-zero exit, rank 1's traceback reported), never hang.

Run: mpiexec -n 2 python -m tests.mpi.scripts.dp_fault DIR

Each rank writes its stderr (where the abort handler reports) and the steps it completed
to DIR/rank<r>.txt, line by line: unlike the job's forwarded output, which the abort can
cut short, what reached the file stays there. Rank 0 must never complete step 1, whose
allreduce rank 1 never joins.
"""

import sys

import minilm as ml
from minilm.parallel import DataParallel, install_abort_handler, world
from tests.mpi.common import global_batch, make_model

comm = world()
log = open(f"{sys.argv[1]}/rank{comm.rank}.txt", "w", buffering=1)  # noqa: SIM115
sys.stderr = log
install_abort_handler()
model = DataParallel(make_model(), comm, bucket_size_mb=0.005)
for step in range(3):
    x, y = global_batch(step)
    n = x.shape[0] // comm.size
    x, y = x[comm.rank * n:(comm.rank + 1) * n], y[comm.rank * n:(comm.rank + 1) * n]
    _, loss = model(ml.tensor(x), ml.tensor(y))
    if step == 1 and comm.rank == 1:
        raise RuntimeError("injected failure on rank 1 at step 1")
    loss.backward()  # rank 0 blocks here (buckets) and in finish(), waiting for rank 1
    model.finish()
    log.write(f"rank {comm.rank} completed step {step}\n")
    comm.barrier()  # rank 1 fails only after rank 0 has written its line
