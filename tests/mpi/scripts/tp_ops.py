"""The tensor-parallel pieces on every rank of the job, against their one-process
definitions: ``python -m tests.mpi.scripts.tp_ops``. Prints the worst error of each
check (maximum over ranks) and whether dropout kept the replicated state consistent."""

import numpy as np

import minilm as ml
import minilm.functional as F
from minilm.nn import Embedding, Linear
from minilm.parallel import install_abort_handler, world
from minilm.parallel.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    copy_to_tp_region,
    gather_from_tp_region,
    reduce_from_tp_region,
    replicated_divergence,
    scatter_to_tp_region,
    shard_tensor,
    tensor_parallel_gpt,
    vocab_parallel_cross_entropy,
)
from tests.mpi.common import global_batch, make_model, make_optimizer, report

install_abort_handler()
comm = world()
P, R = comm.size, comm.rank
errs: dict = {}


def record(name: str, got, want) -> None:
    got = got.numpy() if hasattr(got, "numpy") else got
    e = float(np.max(np.abs(np.asarray(got) - np.asarray(want)))) if np.size(want) else 0.0
    errs[name] = max(errs.get(name, 0.0), e)


def leaf(a):
    return ml.tensor(np.array(a), requires_grad=True)


ml.use_backend("numpy")
shapes = np.random.default_rng(0)  # the same shapes on every rank
for trial in range(4):
    lead = tuple(int(n) for n in shapes.integers(1, 4, size=int(shapes.integers(0, 3))))
    k = int(shapes.integers(1, 4))
    shape = lead + (k,)
    per_rank = [np.random.default_rng([trial, r]) for r in range(P)]
    xs = [g.standard_normal(shape) for g in per_rank]  # rank r's input, known to all
    gs = [g.standard_normal(shape) for g in per_rank]
    full = lead + (k * P,)
    xf = np.random.default_rng([trial, 99]).standard_normal(full)  # replicated
    gf = [np.random.default_rng([trial, 100 + r]).standard_normal(full) for r in range(P)]

    x = leaf(xs[R])
    copy_to_tp_region(x, comm).backward(ml.tensor(gs[R]))
    record("copy.forward", copy_to_tp_region(x, comm), xs[R])
    record("copy.backward", x.grad, sum(gs))

    x = leaf(xs[R])
    y = reduce_from_tp_region(x, comm)
    y.backward(ml.tensor(gs[0]))
    record("reduce.forward", y, sum(xs))
    record("reduce.backward", x.grad, gs[0])

    x = leaf(xs[R])
    y = gather_from_tp_region(x, comm)
    y.backward(ml.tensor(gf[0]))
    record("gather.forward", y, np.concatenate(xs, axis=-1))
    record("gather.backward", x.grad, gf[0][..., R * k:(R + 1) * k])

    x = leaf(xf)
    y = scatter_to_tp_region(x, comm)
    y.backward(ml.tensor(gs[R]))
    record("scatter.forward", y, xf[..., R * k:(R + 1) * k])
    record("scatter.backward", x.grad, np.concatenate(gs, axis=-1))

# layers against the full layer (same seed on every rank -> same full weights)
rng = np.random.default_rng(5)
x_np = rng.standard_normal((3, 5, 8))
g_np = rng.standard_normal((3, 5, 6 * P))
for fused, gather in ((1, True), (3, True), (1, False)):
    ml.manual_seed(11)
    lin = Linear(8, 6 * P).double()
    col = ColumnParallelLinear.from_linear(lin, comm, gather_output=gather, fused=fused)
    x1, x2 = leaf(x_np), leaf(x_np)
    y_ref = lin(x1)
    y_ref.backward(ml.tensor(g_np))
    y = col(x2)
    if gather:
        y.backward(ml.tensor(g_np))
        record(f"column.forward.f{fused}", y, y_ref.numpy())
        record(f"column.dx.f{fused}", x2.grad, x1.grad.numpy())
    else:  # split output: rank r's columns; the backward allreduce rebuilds dx
        sl = slice(R * 6, (R + 1) * 6)
        y.backward(ml.tensor(g_np[..., sl]))
        record("column.forward.split", y, y_ref.numpy()[..., sl])
        record("column.dx.split", x2.grad, x1.grad.numpy())
    record(f"column.dW.f{fused}{gather}", col.gather_weight("weight"), lin.weight.numpy())
    record(f"column.gradW.f{fused}{gather}", col.weight.grad,
           shard_tensor(lin.weight.grad.numpy(), 0, R, P, fused))
    record(f"column.gradb.f{fused}{gather}", col.bias.grad,
           shard_tensor(lin.bias.grad.numpy(), 0, R, P, fused))

ml.manual_seed(12)
lin = Linear(4 * P, 6).double()
row = RowParallelLinear.from_linear(lin, comm, input_is_parallel=False)
x_np = rng.standard_normal((2, 3, 4 * P))
g_np = rng.standard_normal((2, 3, 6))
x1, x2 = leaf(x_np), leaf(x_np)
lin(x1).backward(ml.tensor(g_np))
y = row(x2)
y.backward(ml.tensor(g_np))
record("row.forward", y, lin(leaf(x_np)).numpy())
record("row.dx", x2.grad, x1.grad.numpy())
record("row.gradW", row.weight.grad, lin.weight.grad.numpy()[:, R * 4:(R + 1) * 4])
record("row.gradb", row.bias.grad, lin.bias.grad.numpy())
record("row.gather_weight", row.gather_weight(), lin.weight.numpy())

ml.manual_seed(13)
emb = Embedding(4 * P, 5).double()
vemb = VocabParallelEmbedding.from_embedding(emb, comm)
ids = ml.tensor(rng.integers(0, 4 * P, size=(3, 7)))
g_np = rng.standard_normal((3, 7, 5))
emb(ids).backward(ml.tensor(g_np))
y = vemb(ids)
y.backward(ml.tensor(g_np))
record("vocab_embedding.forward", y, emb(ids).numpy())
record("vocab_embedding.gradW", vemb.weight.grad, emb.weight.grad.numpy()[R * 4:(R + 1) * 4])

# vocab-parallel cross-entropy against F.cross_entropy on the full logits
V = 5 * P
z_np = rng.standard_normal((12, V)) * 3
t_np = rng.integers(0, V, size=12)
t_np[[2, 7]] = -100
for reduction in ("mean", "sum", "none"):
    zf = leaf(z_np)
    ref = F.cross_entropy(zf, ml.tensor(t_np), reduction=reduction)
    g_np = rng.standard_normal(ref.shape)
    ref.backward(ml.tensor(g_np))
    zl = leaf(z_np[:, R * 5:(R + 1) * 5])
    loss = vocab_parallel_cross_entropy(zl, ml.tensor(t_np), comm, reduction=reduction)
    loss.backward(ml.tensor(g_np))
    record(f"vocab_ce.{reduction}", loss, ref.numpy())
    record(f"vocab_ce.grad.{reduction}", zl.grad, zf.grad.numpy()[:, R * 5:(R + 1) * 5])

# dropout: same seed on every tp rank keeps the replicated parameters identical
model = tensor_parallel_gpt(make_model(dropout=0.1), comm)
opt = make_optimizer(model.parameters())
drop_losses = []
for step in range(2):
    x, y = global_batch(step)
    _, loss = model(ml.tensor(x), ml.tensor(y))
    loss.backward()
    opt.step()
    opt.zero_grad()
    drop_losses.append(loss.item())
divergence = replicated_divergence(model, comm)
all_drop = comm.allgather_json(drop_losses)

names = sorted(errs)
worst = comm.allreduce(np.array([errs[n] for n in names]), "max")
if R == 0:
    report({"errors": dict(zip(names, worst.tolist())), "dropout_divergence": divergence,
            "dropout_same_loss": all(d == all_drop[0] for d in all_drop), "size": P})
