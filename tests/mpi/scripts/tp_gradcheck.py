"""Gradient checks of the tensor-parallel pieces ACROSS the ranks of the job, in float64:
``python -m tests.mpi.scripts.tp_gradcheck`` (under ``mpiexec -n 2``).

With one process every collective is the identity, so a one-process gradcheck cannot see
a backward that forgets to sum over ranks (or sums twice). Here each check defines ONE
global scalar function of ALL ranks' inputs and compares every rank's analytic gradient
with central finite differences of that global function (atol 1e-8, rtol 1e-6, eps 1e-6):

- an input is *replicated* (the same array on every rank, one variable of the global
  function: a finite difference moves it on every rank at once) or *sharded* (each
  rank's array is its own variable: a finite difference moves one entry on one rank);
- the output is *replicated* (every rank computes the same value: the global function
  is that value) or *per-rank* (rank r's value depends on its own branch: the global
  function is the sum over ranks).

Every rank differentiates its own scalar (``backward()`` with seed 1), as in training.
"""

import numpy as np

import minilm as ml
from minilm.nn import Embedding, Linear
from minilm.parallel import install_abort_handler, world
from minilm.parallel.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    copy_to_tp_region,
    gather_from_tp_region,
    reduce_from_tp_region,
    scatter_to_tp_region,
    vocab_parallel_cross_entropy,
)
from tests.mpi.common import report

install_abort_handler()
ml.use_backend("numpy")
comm = world()
P, R = comm.size, comm.rank
EPS, ATOL, RTOL = 1e-6, 1e-8, 1e-6
results: dict = {}


def same(seed, shape) -> np.ndarray:
    """The same random array on every rank."""
    return np.random.default_rng([seed, 999]).standard_normal(shape)


def mine(seed, shape) -> np.ndarray:
    """A random array of this rank's own (different on every rank)."""
    return np.random.default_rng([seed, R]).standard_normal(shape)


def leaf(a) -> ml.Tensor:
    return ml.tensor(np.ascontiguousarray(a, dtype=np.float64), requires_grad=True)


def quad(y: ml.Tensor, a: np.ndarray, b: np.ndarray) -> ml.Tensor:
    """sum(a y + b y^2): a scalar whose gradient depends on y."""
    return (y * ml.tensor(a) + y * y * ml.tensor(b)).sum()


def check(name: str, inputs: list, fn, out: str) -> None:
    """``inputs``: [(Tensor, "replicated" | "sharded")]; ``fn()`` builds this rank's
    scalar from them; ``out``: "replicated" or "per-rank" (see the module docstring)."""
    for t, _ in inputs:
        t.grad = None
    fn().backward()
    analytic = [t.grad.numpy().copy() if t.grad is not None else np.zeros(t.shape)
                for t, _ in inputs]

    def global_value() -> float:
        with ml.no_grad():
            v = np.array([float(fn().item())])
        if out == "per-rank":
            comm.allreduce(v)
        return float(v[0])

    worst, largest, count = 0.0, 0.0, 0
    for (t, kind), g in zip(inputs, analytic):
        flat, gflat = t.data.reshape(-1), g.reshape(-1)
        assert np.shares_memory(flat, t.data)
        for owner in (range(P) if kind == "sharded" else [None]):
            moves = owner is None or owner == R
            for i in range(flat.size):  # the same sizes on every rank
                old = flat[i]
                if moves:
                    flat[i] = old + EPS
                plus = global_value()
                if moves:
                    flat[i] = old - EPS
                minus = global_value()
                if moves:
                    flat[i] = old
                    num = (plus - minus) / (2 * EPS)
                    worst = max(worst, abs(gflat[i] - num) / (ATOL + RTOL * abs(num)))
                    largest = max(largest, abs(num))
                    count += 1
    agg = comm.allreduce(np.array([worst, largest]), "max")
    n = comm.allreduce(np.array([count], dtype=np.int64))
    results[name] = {"worst": float(agg[0]), "largest": float(agg[1]), "entries": int(n[0])}


# ---------------------------------------------------------------------------- the mappings
K = 3
x = leaf(same(1, (2, 3, K)))
a_r, b_r = mine(2, (2, 3, K)), mine(3, (2, 3, K))
check("copy_to_tp_region", [(x, "replicated")],
      lambda: quad(copy_to_tp_region(x, comm), a_r, b_r), "per-rank")

x = leaf(mine(4, (2, 3, K)))
a, b = same(5, (2, 3, K)), same(6, (2, 3, K))
check("reduce_from_tp_region", [(x, "sharded")],
      lambda: quad(reduce_from_tp_region(x, comm), a, b), "replicated")

x = leaf(mine(7, (2, 3, K)))
a, b = same(8, (2, 3, K * P)), same(9, (2, 3, K * P))
check("gather_from_tp_region", [(x, "sharded")],
      lambda: quad(gather_from_tp_region(x, comm), a, b), "replicated")

x = leaf(same(10, (2, 3, K * P)))
a_r, b_r = mine(11, (2, 3, K)), mine(12, (2, 3, K))
check("scatter_to_tp_region", [(x, "replicated")],
      lambda: quad(scatter_to_tp_region(x, comm), a_r, b_r), "per-rank")

# Megatron's f / g pair around a rank-specific branch: reduce(tanh(w_r * copy(x)))
x = leaf(same(13, (2, 4)))
w_r = ml.tensor(mine(14, (2, 4)))
a, b = same(15, (2, 4)), same(16, (2, 4))
check("copy_branch_reduce", [(x, "replicated")],
      lambda: quad(reduce_from_tp_region((copy_to_tp_region(x, comm) * w_r).tanh(), comm), a, b),
      "replicated")

# ---------------------------------------------------------------------------- layers
# column-parallel (split output) -> tanh -> row-parallel: the tensor-parallel MLP
ml.manual_seed(21)
col = ColumnParallelLinear.from_linear(Linear(4, 4 * P).double(), comm)
row = RowParallelLinear.from_linear(Linear(4 * P, 3).double(), comm)
x = leaf(same(22, (2, 4)))
a, b = same(23, (2, 3)), same(24, (2, 3))
check("column_tanh_row", [(x, "replicated"), (col.weight, "sharded"), (col.bias, "sharded"),
                          (row.weight, "sharded"), (row.bias, "replicated")],
      lambda: quad(row(col(x).tanh()), a, b), "replicated")

# vocab-parallel embedding: ids from every rank's rows (and repeated ones)
ml.manual_seed(31)
V = 4 * P
emb = VocabParallelEmbedding.from_embedding(Embedding(V, 3).double(), comm)
ids = ml.tensor(np.array([[0, V - 1, 1, 4], [5, 5, 2 * P + 1, V // 2]]) % V)
a, b = same(32, (2, 4, 3)), same(33, (2, 4, 3))
check("vocab_parallel_embedding", [(emb.weight, "sharded")],
      lambda: quad(emb(ids), a, b), "replicated")

# vocab-parallel cross-entropy: logits split over the vocab, targets on every rank's
# slice, two ignored
z = leaf(mine(41, (8, 3)) * 2)
t = ml.tensor(np.array([0, 3 * P - 1, -100, 3, 1, 3 * P - 2, -100, 2]))
for reduction in ("mean", "sum"):
    check(f"vocab_parallel_cross_entropy.{reduction}", [(z, "sharded")],
          lambda r=reduction: vocab_parallel_cross_entropy(z, t, comm, reduction=r),
          "replicated")
v = ml.tensor(same(42, (8,)))
check("vocab_parallel_cross_entropy.none", [(z, "sharded")],
      lambda: (vocab_parallel_cross_entropy(z, t, comm, reduction="none") * v).sum(),
      "replicated")

if R == 0:
    report({"size": P, "checks": results})
