"""The parameter server (minilm/parallel/parameter_server.py).

One 3-rank mpiexec job (server + 2 workers, tests/mpi/scripts/ps_train.py): synchronous
SGD through the server equals the one-process SGD run on the union of the shards to
1e-10 in float64; asynchronous SGD on least squares converges, with a staleness
histogram of τ ≥ 0 that has stale updates. Single-process: the flat-buffer helpers,
the traffic formulas, the staleness summary, and the refusal to run on one rank."""

import numpy as np
import pytest

from minilm import nn, optim
from minilm.parallel import Communicator
from minilm.parallel.parameter_server import (
    flat_grads,
    flat_params,
    run_parameter_server,
    set_flat_params,
    staleness_summary,
    traffic_per_step,
)


@pytest.fixture(scope="module")
def ps_result():
    from tests.mpi.conftest import mpiexec_or_fail, run_mpi

    mpiexec_or_fail()
    return run_mpi(3, "scripts.ps_train", timeout=120)


def test_sync_equals_single_process_sgd(ps_result):
    r = ps_result["sync"]
    assert r["loss_err"] < 1e-10, r
    assert r["param_err"] < 1e-10, r
    assert r["identical"]
    assert r["staleness"] == {"0": 6}  # 3 steps x 2 workers, never stale
    # the server moved 2 workers x P per direction per step (+ the initial parameters)
    assert r["bytes_recv"] >= 3 * 2 * r["param_bytes"]
    assert r["bytes_sent"] >= 4 * 2 * r["param_bytes"]


@pytest.mark.parametrize("name", ["async", "async_aware"])
def test_async_converges_with_stale_updates(ps_result, name):
    r = ps_result[name]
    assert r["updates"] == 120
    hist = {int(k): v for k, v in r["staleness"].items()}
    assert sum(hist.values()) == 120
    assert min(hist) >= 0
    assert sum(v for k, v in hist.items() if k > 0) >= 1
    assert r["after"] < 0.01 * r["before"], r


def test_flat_helpers_round_trip():
    lin = nn.Linear(3, 2).double()
    params = list(lin.parameters())
    flat = flat_params(params)
    assert flat.shape == (8,)
    set_flat_params(params, np.arange(8.0))
    np.testing.assert_array_equal(lin.weight.numpy().ravel(), np.arange(6.0))
    np.testing.assert_array_equal(flat_grads(params), np.zeros(8))  # no gradients yet


def test_traffic_and_staleness_summary():
    t = traffic_per_step(1000, 3, itemsize=4)
    assert t["ps_server"] == 2 * 2 * 4000 and t["ps_worker"] == 2 * 4000
    assert t["allreduce_rank"] == int(4 * 2 / 3 * 4000)
    s = staleness_summary({0: 1, 1: 2, 3: 1})
    assert s == {"mean": 5 / 4, "max": 3, "stale_frac": 0.75}
    assert staleness_summary({})["max"] == 0


def test_refuses_one_process():
    lin = nn.Linear(2, 1)
    with pytest.raises(RuntimeError, match="at least 2 ranks"):
        run_parameter_server(lin, optim.SGD(lin.parameters(), lr=0.1), lambda s: 0.0, 1,
                             comm=Communicator(None))
    with pytest.raises(ValueError, match="mode"):
        run_parameter_server(lin, None, lambda s: 0.0, 1, comm=Communicator(None), mode="x")
