"""ZeRO-1 (dp = 2) against the one-process reference:

- alone: AdamW with weight decay over all parameters plus one extra 1-element parameter
  that never gets a gradient (skipped, as in one process; it also makes the flat length
  odd, so the last shard is padded); the consolidated state_dict equals the one-process
  optimizer's; it loads into a one-process AdamW and into a fresh ZeRO optimizer;
  per-rank state bytes add up to the one-process optimizer's
- groups: decay / no-decay groups with a different lr each, against a local reference
- with_dp: DataParallel averages the gradients, ZeRO(reduce_grads=False) only shards

Run: mpiexec -n 2 python -m tests.mpi.scripts.dp_zero
"""

import numpy as np

import minilm as ml
from minilm import optim
from minilm.nn import Parameter
from minilm.optim import param_groups_for_weight_decay
from minilm.parallel import DataParallel, ZeroRedundancyOptimizer, install_abort_handler, world
from tests.mpi.common import LR, STEPS, compare, global_batch, make_model, report

install_abort_handler()
comm = world()
W, R = comm.size, comm.rank
ADAMW = dict(lr=LR, betas=(0.9, 0.95), weight_decay=0.1)


def my_half(step: int) -> tuple:
    x, y = global_batch(step)
    n = x.shape[0] // W
    return x[R * n:(R + 1) * n], y[R * n:(R + 1) * n]


def mean_over_ranks(v: float) -> float:
    a = np.array([v])
    comm.allreduce(a)
    return float(a[0] / W)


def run(model, opt, forward=None, finish=None) -> list:
    losses = []
    for step in range(STEPS):
        x, y = my_half(step)
        _, loss = (forward or model)(ml.tensor(x), ml.tensor(y))
        loss.backward()
        if finish:
            finish()
        opt.step()
        opt.zero_grad()
        losses.append(mean_over_ranks(loss.item()))
    return losses


def params_of(model) -> dict:
    return {n: p.numpy().copy() for n, p in model.named_parameters()}


def max_rel(a: dict, b: dict) -> float:
    """Worst difference relative to each tensor's scale (as compare() measures)."""
    return max(float(np.max(np.abs(np.asarray(a[k]) - b[k])) / np.max(np.abs(b[k])))
               for k in b)


results = {}

# (d) ZeRO-1 alone ----------------------------------------------------------------------
model = make_model()
if R != 0:
    for p in model.parameters():
        p.data *= 1.5  # the broadcast at construction must undo this
extra = Parameter(np.full(1, 2.0))
zero = ZeroRedundancyOptimizer(list(model.parameters()) + [extra], optim.AdamW, comm, **ADAMW)
losses = run(model, zero)
sd = zero.state_dict()
mine = zero.state_bytes()
total = np.array([mine], dtype=np.int64)
comm.allreduce(total)
# a fresh ZeRO optimizer loads the consolidated dict and gives it back
zero2 = ZeroRedundancyOptimizer(list(model.parameters()) + [extra], optim.AdamW, comm, **ADAMW)
zero2.load_state_dict(sd)
sd2 = zero2.state_dict()
roundtrip = max(float(np.max(np.abs(sd["state"][i][k] - sd2["state"][i][k])))
                for i in sd["state"] for k in sd["state"][i] if k != "step")
if R == 0:
    ref_model = make_model()
    ref_opt = optim.AdamW(list(ref_model.parameters()) + [Parameter(np.full(1, 2.0))], **ADAMW)
    for step in range(STEPS):
        x, y = global_batch(step)
        _, loss = ref_model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
    ref_sd = ref_opt.state_dict()
    state_err = 0.0
    for i, s in ref_sd["state"].items():
        for k, v in s.items():
            got = sd["state"][i][k]
            if k == "step":
                state_err = max(state_err, float(got != v))
            else:
                # moments: relative to each tensor's scale (v ~ g^2 has tiny entries)
                state_err = max(state_err, float(np.max(np.abs(got - v)) / np.max(np.abs(v))))
    one = optim.AdamW(list(make_model().parameters()) + [Parameter(np.ones(1))], **ADAMW)
    one.load_state_dict(sd)  # the consolidated dict is a one-process checkpoint
    results["alone"] = {
        **compare(losses, params_of(model)),
        "extra": float(extra.data[0]),
        "numel": zero.numel, "padded": zero.padded_numel,
        "state_keys_equal": sorted(sd["state"]) == sorted(ref_sd["state"]),
        "state_err": state_err, "roundtrip": roundtrip,
        "groups_equal": sd["param_groups"] == ref_sd["param_groups"],
        "state_bytes_rank0": mine, "state_bytes_total": int(total[0]),
        "state_bytes_ref": sum(v.nbytes for s in ref_opt.state.values() for v in s.values()
                               if hasattr(v, "nbytes")),
    }

# (d') per-group hyperparameters ----------------------------------------------------------


def grouped(model, cls, **kw):
    groups = param_groups_for_weight_decay(model, 0.1)
    groups[1]["lr"] = 3 * LR
    return cls(groups, **kw) if cls is optim.AdamW else cls(groups, optim.AdamW, comm, **kw)


model = make_model()
kw = dict(lr=LR, betas=(0.9, 0.95))
losses = run(model, grouped(model, ZeroRedundancyOptimizer, **kw))
got = params_of(model)
if R == 0:
    ref_model = make_model()
    ref_opt = grouped(ref_model, optim.AdamW, **kw)
    ref_losses = []
    for step in range(STEPS):
        x, y = global_batch(step)
        _, loss = ref_model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
        ref_losses.append(loss.item())
    results["groups"] = {
        "param_err": max_rel(got, params_of(ref_model)),
        "loss_err": max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses)),
    }

# (d'') DataParallel + ZeRO(reduce_grads=False) ----------------------------------------
model = make_model()
dp = DataParallel(model, comm, bucket_size_mb=0.005)
zero = ZeroRedundancyOptimizer(model.parameters(), optim.AdamW, comm, reduce_grads=False, **ADAMW)
losses = run(model, zero, forward=dp, finish=dp.finish)
if R == 0:
    results["with_dp"] = compare(losses, params_of(model))
    report(results)
