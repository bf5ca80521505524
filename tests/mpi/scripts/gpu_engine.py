"""The ParallelEngine with the model on the (fake) device: ``python -m
tests.mpi.scripts.gpu_engine DP TP PP MICRO_BATCHES``. The GPT of tests/mpi/common.py is
moved with ``.to("cuda")`` onto the CuPy stand-in (tests/fake_cupy.py, whose arrays
refuse to meet host arrays as CuPy's do); every collective on it is staged through host
memory. Losses and final parameters against the one-process CPU reference, float64 to
1e-9; the parameters must still be device arrays. Rank 0 reports."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: fake_cupy
import fake_cupy  # noqa: E402

import minilm as ml  # noqa: E402
from minilm import backends  # noqa: E402
from minilm.backends.cupy_backend import CupyBackend  # noqa: E402
from minilm.parallel import ProcessGrid, install_abort_handler, world  # noqa: E402
from minilm.parallel.engine import ParallelEngine  # noqa: E402
from tests.mpi.common import LR, STEPS, global_batch, make_model, max_rel_err, reference_run, report  # noqa: E402  # noqa: E402

install_abort_handler()
backend = CupyBackend(xp=fake_cupy)
if type(backend.to_numpy(fake_cupy.zeros(1))) is not np.ndarray:  # as device_fixture.py
    backend.to_numpy = fake_cupy.asnumpy
backends.register_backend("cupy", lambda: backend)
backends._INSTANCES["cupy"] = backend

dp, tp, pp, micro = (int(a) for a in sys.argv[1:5])
CLIP = 0.5
ref_losses, ref_params = reference_run(grad_clip=CLIP)
ml.use_backend("numpy")
grid = ProcessGrid(dp=dp, tp=tp, pp=pp)
engine = ParallelEngine(make_model().to("cuda"), grid, lr=LR, betas=(0.9, 0.95),
                        weight_decay=0.1, micro_batches=micro, bucket_size_mb=0.01,
                        grad_clip=CLIP, decay_groups=False)
losses = [engine.step(*global_batch(step)) for step in range(STEPS)]
on_device = all(type(p.data) is fake_cupy.ndarray for p in engine.stage.parameters())
on_device = bool(world().allgather_json(on_device) == [True] * world().size)
full = engine.full_state_dict()
if world().rank == 0:
    err, worst, missing = max_rel_err({k: np.asarray(v.data if hasattr(v, "data") else v)
                                       for k, v in full.items()}, ref_params)
    loss_err = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
    report({"loss_err": loss_err, "param_err": err, "worst": worst, "missing": missing,
            "on_device": on_device, "cuda_aware": engine.grid.world.cuda_aware})
