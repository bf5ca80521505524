"""Parameter server on 3 ranks (server + 2 workers), two checks in one job:

- sync: SGD through the server equals the one-process SGD run on the union of the two
  workers' shards (the global batch of tests/mpi/common.py), float64, to 1e-10
- async: least squares (convex) with 2 workers pushing 60 gradients each; the loss
  falls, the staleness histogram has only τ ≥ 0 and at least one stale update; also
  with the staleness-aware step lr / (1 + τ)

Run: mpiexec -n 3 python -m tests.mpi.scripts.ps_train
"""

import numpy as np

import minilm as ml
from minilm import nn, optim
from minilm.functional import mse_loss
from minilm.parallel import install_abort_handler, world
from minilm.parallel.parameter_server import run_parameter_server
from tests.mpi.common import STEPS, global_batch, make_model, make_optimizer, reference_trace, report

install_abort_handler()
comm = world()
W, R = comm.size, comm.rank
N = W - 1  # workers
results: dict = {}

# (a) sync == one-process SGD on the union of the shards --------------------------------
model = make_model()
opt = make_optimizer(model.parameters(), "sgd") if R == 0 else None


def gpt_grad(step: int) -> float:
    x, y = global_batch(step)
    n = x.shape[0] // N
    lo = (R - 1) * n
    _, loss = model(ml.tensor(x[lo:lo + n]), ml.tensor(y[lo:lo + n]))
    loss.backward()
    return loss.item()


stats = run_parameter_server(model, opt, gpt_grad, steps=STEPS, comm=comm, mode="sync")
params = {n: p.numpy().copy() for n, p in model.named_parameters()}
if R == 0:
    ref = reference_trace(STEPS, optimizer="sgd")
    loss_err = max(abs(a - b) / abs(b) for a, b in zip(stats["losses"], ref["losses"]))
    param_err = max(float(np.max(np.abs(params[k] - r)) / max(float(np.max(np.abs(r))), 1e-300))
                    for k, r in ref["params"].items())
    nparams = sum(p.numpy().size for p in model.parameters())
    results["sync"] = {"loss_err": loss_err, "param_err": param_err,
                       "losses": stats["losses"], "ref_losses": ref["losses"],
                       "staleness": stats["staleness"], "bytes_sent": stats["bytes_sent"],
                       "bytes_recv": stats["bytes_recv"], "param_bytes": nparams * 8}
# every rank ends with the server's parameters
flat = np.concatenate([p.numpy().ravel() for p in model.parameters()])
lo, hi = flat.copy(), flat.copy()
comm.allreduce(lo, op="min")
comm.allreduce(hi, op="max")
if R == 0:
    results["sync"]["identical"] = bool((lo == hi).all())

# (b) async on least squares -------------------------------------------------------------
rng = np.random.default_rng(0)
X = rng.normal(size=(256, 5))
w_true = rng.normal(size=(5, 1))
Y = X @ w_true + 0.01 * rng.normal(size=(256, 1))


def full_loss(m) -> float:
    return float(np.mean((X @ m.weight.numpy().T + m.bias.numpy() - Y) ** 2))


for name, aware in (("async", False), ("async_aware", True)):
    ml.manual_seed(7)
    lin = nn.Linear(5, 1).double()
    opt = optim.SGD(lin.parameters(), lr=0.05) if R == 0 else None
    before = full_loss(lin)
    shard = slice((R - 1) * 128, R * 128) if R > 0 else slice(0, 0)
    brng = np.random.default_rng(100 + R)

    def lin_grad(step: int, lin=lin, shard=shard, brng=brng) -> float:
        idx = brng.integers(0, 128, size=32)
        x, y = X[shard][idx], Y[shard][idx]
        loss = mse_loss(lin(ml.tensor(x)), ml.tensor(y))
        loss.backward()
        return loss.item()

    stats = run_parameter_server(lin, opt, lin_grad, steps=60, comm=comm, mode="async",
                                 staleness_aware=aware)
    if R == 0:
        results[name] = {"before": before, "after": full_loss(lin),
                         "staleness": stats["staleness"], "updates": stats["updates"]}

if R == 0:
    report(results)
