"""The harness itself: a 2-rank job runs, and the reference is deterministic."""

from tests.mpi.common import reference_run


def test_reference_run_is_deterministic():
    a = reference_run(2)
    b = reference_run(2)
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys() and all((a[1][k] == b[1][k]).all() for k in a[1])


def test_two_ranks_start_and_allreduce(mpi):
    res = mpi(2, "scripts.hello")
    assert res == {"size": 2, "sum": 3.0}


def test_collectives_on_hypothesis_shapes(mpi):
    for n in (2, 3):
        res = mpi(n, "scripts.comm_props")
        assert res["size"] == n
        assert set(res["checked"]) == {"allreduce", "reduce_scatter/allgather/bcast",
                                       "send/recv/json"}
        assert min(res["checked"].values()) >= 10  # examples actually ran on every rank
