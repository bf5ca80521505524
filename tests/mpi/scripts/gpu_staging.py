"""2 ranks: collectives on fake-device arrays (tests/fake_cupy.py) staged through host
memory over the real MPI library, and DataParallel with device parameters: both ranks
end with the same, averaged gradients, still on the device. Rank 0 reports."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: fake_cupy
import fake_cupy  # noqa: E402

import minilm as ml  # noqa: E402
from minilm import backends, nn  # noqa: E402
from minilm.backends.cupy_backend import CupyBackend  # noqa: E402
from minilm.parallel import DataParallel, world  # noqa: E402
from tests.mpi.common import report  # noqa: E402

backend = CupyBackend(xp=fake_cupy)
if type(backend.to_numpy(fake_cupy.zeros(1))) is not np.ndarray:  # as device_fixture.py
    backend.to_numpy = fake_cupy.asnumpy
backends.register_backend("cupy", lambda: backend)
backends._INSTANCES["cupy"] = backend
ml.use_backend("numpy")

c = world()
assert not c.cuda_aware, "MINILM_CUDA_AWARE_MPI must not be set for this test"
r = c.rank
x = fake_cupy.asarray([1.0, 2.0]) * (r + 1)
c.allreduce(x)
b = fake_cupy.asarray([1.0, 2.0]) if r == 0 else fake_cupy.zeros(2)
c.bcast(b, root=0)
g = fake_cupy.zeros(2)
c.allgather(fake_cupy.asarray([float(r + 1)]), g)
rs = fake_cupy.zeros(1)
c.reduce_scatter(fake_cupy.asarray([1.0, 2.0]) * (r + 1), rs)
got = fake_cupy.zeros(2)
if r == 0:
    c.recv(got, source=1)
else:
    c.send(fake_cupy.ones(2), dest=0)

ml.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double().to("cuda")
ddp = DataParallel(model, c, bucket_size_mb=1e-4)
xin = ml.tensor(np.random.default_rng(r).standard_normal((5, 4))).to("cuda")
ddp(xin).sum().backward()
ddp.finish()
flat = np.concatenate([p.grad.numpy().ravel() for p in model.parameters()])
both = np.stack([flat, flat])
c.allgather(flat.copy(), both)
on_device = all(type(p.grad.data) is fake_cupy.ndarray for p in model.parameters())
if r == 0:
    report({"allreduce": x.get().tolist(), "bcast": b.get().tolist(),
            "allgather": g.get().tolist(), "reduce_scatter": rs.get().tolist(),
            "recv": got.get().tolist(), "ddp_same_grads": bool(np.array_equal(both[0], both[1])),
            "on_device": on_device})
