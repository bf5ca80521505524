"""Property tests of the collectives on Hypothesis-drawn shapes and dtypes, run on every
rank in lockstep: ``derandomize=True`` makes all ranks draw the same examples, and each
rank's data is a deterministic function of (example, rank), so every rank can compute
the expected result of the collective with NumPy alone."""

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minilm.parallel import install_abort_handler, world
from tests.mpi.common import report

install_abort_handler()  # a failing rank ends the job instead of hanging the others
comm = world()
P, r = comm.size, comm.rank
SETTINGS = settings(derandomize=True, max_examples=25, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5)
dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.int32])
checked = {}


def data_of(rank: int, shape: tuple, dtype, salt: int) -> np.ndarray:
    rng = np.random.default_rng(1000 * salt + rank)
    return (rng.standard_normal(shape) * 10).astype(dtype)


def count(name: str) -> None:
    checked[name] = checked.get(name, 0) + 1


@SETTINGS
@given(shape=shapes, dtype=dtypes, salt=st.integers(0, 10**6), op=st.sampled_from(["sum", "max", "min"]))
def test_allreduce(shape, dtype, salt, op):
    x = data_of(r, shape, dtype, salt)
    every = np.stack([data_of(q, shape, dtype, salt) for q in range(P)])
    want = {"sum": every.sum(0), "max": every.max(0), "min": every.min(0)}[op].astype(dtype)
    got = comm.allreduce(x.copy(), op=op)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12)
    y = x.copy()
    comm.iallreduce(y, op=op).wait()
    np.testing.assert_array_equal(y, got)
    count("allreduce")


@SETTINGS
@given(shape=shapes, dtype=dtypes, salt=st.integers(0, 10**6))
def test_reduce_scatter_allgather_bcast(shape, dtype, salt):
    block = np.prod(shape)
    x = data_of(r, (P * block,), dtype, salt)
    total = sum(data_of(q, (P * block,), dtype, salt) for q in range(P)).astype(dtype)
    out = np.empty(shape, dtype=dtype)
    comm.reduce_scatter(x, out)
    np.testing.assert_allclose(out.reshape(-1), total[r * block:(r + 1) * block],
                               rtol=1e-6 if dtype == np.float32 else 1e-12)
    mine = data_of(r, shape, dtype, salt)
    gathered = np.empty((P,) + tuple(shape), dtype=dtype)
    comm.allgather(mine, gathered)
    for q in range(P):
        np.testing.assert_array_equal(gathered[q], data_of(q, shape, dtype, salt))
    b = data_of(r, shape, dtype, salt)
    root = salt % P
    comm.bcast(b, root=root)
    np.testing.assert_array_equal(b, data_of(root, shape, dtype, salt))
    count("reduce_scatter/allgather/bcast")


@SETTINGS
@given(shape=shapes, salt=st.integers(0, 10**6))
def test_ring_send_recv_and_json(shape, salt):
    x = data_of(r, shape, np.float64, salt)
    buf = np.empty(shape)
    req = comm.isend(x, (r + 1) % P, tag=7)
    comm.recv(buf, (r - 1) % P, tag=7)
    req.wait()
    np.testing.assert_array_equal(buf, data_of((r - 1) % P, shape, np.float64, salt))
    obj = {"rank": r, "shape": list(shape), "salt": salt}
    assert comm.allgather_json(obj) == [dict(obj, rank=q) for q in range(P)]
    assert comm.bcast_json(obj, root=salt % P)["rank"] == salt % P
    count("send/recv/json")


test_allreduce()
test_reduce_scatter_allgather_bcast()
test_ring_send_recv_and_json()
if r == 0:
    report({"size": P, "checked": checked})
