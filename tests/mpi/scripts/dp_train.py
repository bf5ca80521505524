"""Data parallel (dp = 2) against the one-process reference, several variants in one job:

- overlap: small buckets, allreduce started from the backward hooks
- unused: as overlap, plus one parameter used (with weight 0) on rank 0 only and one
  never used; the explicit finish() path
- no_overlap: every bucket reduced in finish()
- no_sync: 2 micro-batches per rank, the first under no_sync()
- fp16: compressed buckets; the averaged gradient within the error bound
- local_sgd: LocalSGD(k=1) with momentum SGD equals DP with the same SGD (and a
  one-process SGD run); LocalSGD(k=2) keeps replicas equal right after each sync

Run: mpiexec -n 2 python -m tests.mpi.scripts.dp_train
"""

import numpy as np

import minilm as ml
from minilm import optim
from minilm.nn import Parameter
from minilm.parallel import DataParallel, LocalSGD, install_abort_handler, world
from tests.mpi.common import STEPS, compare, global_batch, make_model, make_optimizer, report

install_abort_handler()
comm = world()
W, R = comm.size, comm.rank
SMALL = 0.005  # MiB: ~650 float64 elements, so the tiny GPT spans many buckets


def my_half(step: int, parts: int = 1) -> list:
    """This rank's contiguous share of the global batch, split into ``parts`` pieces."""
    x, y = global_batch(step)
    n = x.shape[0] // W
    x, y = x[R * n:(R + 1) * n], y[R * n:(R + 1) * n]
    m = n // parts
    return [(x[i * m:(i + 1) * m], y[i * m:(i + 1) * m]) for i in range(parts)]


def mean_over_ranks(v: float) -> float:
    a = np.array([v])
    comm.allreduce(a)
    return float(a[0] / W)


def gather_params(model) -> dict:
    return {n: p.numpy().copy() for n, p in model.named_parameters()}


def identical_across_ranks(model) -> bool:
    flat = np.concatenate([p.numpy().ravel() for p in model.parameters()])
    lo, hi = flat.copy(), flat.copy()
    comm.allreduce(lo, op="min")
    comm.allreduce(hi, op="max")
    return bool((lo == hi).all())


def train_dp(overlap: bool = True, parts: int = 1, compress=None, unused: bool = False,
             make_opt=make_optimizer, steps: int = STEPS) -> tuple:
    model = make_model()
    if unused:
        model.extra_used = Parameter(np.zeros(3))
        model.extra_unused = Parameter(np.ones(5))
    if R != 0:  # perturb: the broadcast from rank 0 must undo it
        for p in model.parameters():
            p.data += 0.5
    dp = DataParallel(model, comm, bucket_size_mb=SMALL, overlap=overlap, compress=compress)
    opt = make_opt(model.parameters())
    losses, checks = [], {"auto_finished": [], "extra_grads": []}
    for step in range(steps):
        total = 0.0
        for i, (x, y) in enumerate(my_half(step, parts)):
            _, loss = dp(ml.tensor(x), ml.tensor(y))
            if unused and R == 0:
                loss = loss + (model.extra_used * 0.0).sum()
            if i < parts - 1:
                with dp.no_sync():
                    (loss / parts).backward()
            else:
                (loss / parts).backward()
            total += loss.item() / parts
        checks["auto_finished"].append(dp._auto_finished)
        dp.finish()
        if unused:
            g = model.extra_used.grad
            checks["extra_grads"].append([g is not None and bool((g.numpy() == 0).all()),
                                          model.extra_unused.grad is None])
        opt.step()
        opt.zero_grad()
        losses.append(mean_over_ranks(total))
    checks["stats"] = dict(dp.stats)
    checks["buckets"] = len(dp.buckets)
    checks["identical"] = identical_across_ranks(model)
    return losses, gather_params(model), checks


results = {}

# (a) overlap, small buckets -------------------------------------------------------------
losses, params, checks = train_dp(overlap=True)
if R == 0:
    results["overlap"] = {**compare(losses, params), **checks}

# (a') unused parameters, explicit finish ------------------------------------------------
losses, params, checks = train_dp(overlap=True, unused=True)
if R == 0:
    results["unused"] = {**compare(losses, params), **checks}

# (b) no overlap -------------------------------------------------------------------------
losses, params, checks = train_dp(overlap=False)
if R == 0:
    results["no_overlap"] = {**compare(losses, params), **checks}

# (c) gradient accumulation with no_sync ------------------------------------------------
losses, params, checks = train_dp(overlap=True, parts=2)
if R == 0:
    results["no_sync"] = {**compare(losses, params), **checks}

# (e) fp16 compression: one step's averaged gradient against the exact average, with
# MPI summing the float16 halves and with the allgather + local sum; then training ------


def fp16_bound_ratio(fp16_reduce: str) -> float:
    """max over elements of |compressed avg - exact avg| / bound (<= 1 expected)."""
    model = make_model()
    dp = DataParallel(model, comm, bucket_size_mb=SMALL, compress="fp16",
                      fp16_reduce=fp16_reduce)
    (x, y), = my_half(0)
    with dp.no_sync():  # the local gradient, kept
        _, loss = dp(ml.tensor(x), ml.tensor(y))
        loss.backward()
    local = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    dp.finish()  # the compressed average of the local gradients just computed
    worst = 0.0
    u, eta = 2.0 ** -11, 2.0 ** -25
    for n, p in model.named_parameters():
        exact = local[n].copy()
        comm.allreduce(exact)
        exact /= W
        mean_abs = np.abs(local[n])
        comm.allreduce(mean_abs)
        mean_abs /= W
        bound = W * u * mean_abs * 1.01 + 2 * W * eta
        worst = max(worst, float((np.abs(p.grad.numpy() - exact) / bound).max()))
    return worst


ratios = {mode: fp16_bound_ratio(mode) for mode in ("mpi", "gather")}
losses, params, _ = train_dp(compress="fp16")
if R == 0:
    ref = compare(losses, params)
    results["fp16"] = {"bound_ratio": ratios, "train_loss_err": ref["loss_err"],
                       "train_param_err": ref["param_err"]}


# (f) local SGD ------------------------------------------------------------------------
def sgd(params):
    return optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.01)


dp_losses, dp_params, _ = train_dp(make_opt=sgd)
model = make_model()
if R != 0:
    for p in model.parameters():
        p.data -= 0.25
local_sgd = LocalSGD(model, comm, sync_every=1)
opt = sgd(model.parameters())
ls_losses = []
for step in range(STEPS):
    (x, y), = my_half(step)
    _, loss = model(ml.tensor(x), ml.tensor(y))
    loss.backward()
    opt.step()
    opt.zero_grad()
    local_sgd.step()
    ls_losses.append(mean_over_ranks(loss.item()))
ls_params = gather_params(model)
# k = 2: replicas drift apart between syncs and agree right after one
model = make_model()
local_sgd = LocalSGD(model, comm, sync_every=2)
opt = sgd(model.parameters())
agree = []
for step in range(4):
    (x, y), = my_half(step)
    _, loss = model(ml.tensor(x), ml.tensor(y))
    loss.backward()
    opt.step()
    opt.zero_grad()
    synced = local_sgd.step()
    agree.append([synced, identical_across_ranks(model)])
# a model that differs between ranks is refused on every rank, before any broadcast
try:
    DataParallel(make_model(n_layers=4 if R == 0 else 3), comm)
    mismatch = None
except ValueError as e:
    mismatch = str(e)
if R == 0:
    results["mismatch"] = mismatch
    # one-process momentum SGD on the global batch
    ref_model = make_model()
    ref_opt = sgd(ref_model.parameters())
    ref_losses = []
    for step in range(STEPS):
        x, y = global_batch(step)
        _, loss = ref_model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
        ref_losses.append(loss.item())

    def rel(a: dict, b: dict) -> float:  # relative to each tensor's scale, as compare()
        return max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for k in b)

    def rel_l(a: list, b: list) -> float:
        return max(abs(p - q) / abs(q) for p, q in zip(a, b))

    ref_params = {n: p.numpy() for n, p in ref_model.named_parameters()}
    results["local_sgd"] = {
        "vs_dp_param": rel(ls_params, dp_params), "vs_dp_loss": rel_l(ls_losses, dp_losses),
        "dp_vs_ref_param": rel(dp_params, ref_params), "dp_vs_ref_loss": rel_l(dp_losses, ref_losses),
        "k2": agree,
    }
    report(results)
