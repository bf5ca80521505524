"""The failure handshake (Communicator.all_failed) that lets the CLI end a job cleanly.

Run: mpiexec -n 3 python -m tests.mpi.scripts.fail_handshake all
     mpiexec -n 3 python -m tests.mpi.scripts.fail_handshake one DIR

``all``: every rank "fails" (calls all_failed) at a different moment, within the
timeout; each must learn that everyone failed, and the communicator must still work
afterwards (the handshake left no message behind). Rank 0 prints the gathered answers.

``one``: rank 1 fails while ranks 0 and 2 wait in a barrier it never joins; rank 1 must
learn, after the timeout, that it is alone (False), write that to DIR/rank1.txt, and
abort the job, which must not hang.
"""

import json
import sys
import time

import numpy as np

from minilm.parallel import world

comm = world()
mode = sys.argv[1]
if mode == "all":
    time.sleep(0.1 * comm.rank)  # arrive one after another
    answer = comm.all_failed(timeout=2.0)
    flags = np.array([float(answer)])
    comm.allreduce(flags)  # the communicator still works: sum of the answers
    if comm.rank == 0:
        print("RESULT " + json.dumps({"answer": answer, "sum": float(flags[0])}))
elif mode == "one":
    if comm.rank == 1:
        t = time.monotonic()
        answer = comm.all_failed(timeout=0.3)
        with open(f"{sys.argv[2]}/rank1.txt", "w") as f:
            f.write(json.dumps({"answer": answer, "seconds": time.monotonic() - t}))
        comm.abort(2)
    comm.mpi.Barrier()  # never completes: rank 1 does not join
else:
    raise SystemExit(f"unknown mode {mode!r}")
