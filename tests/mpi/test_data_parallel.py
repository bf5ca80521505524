"""Data parallelism, ZeRO-1 and local SGD.

Single-process tests of the bucketing machinery run rank 0 of a two-rank job against a
played-back rank 1 (``PeerComm``): rank 1 runs first, on its own data, and what it puts
into each collective is recorded; rank 0 then runs with those buffers added in. The two
ranks hold different gradients, so the result must be their explicit mean: a gradient
never reduced (rank 0's own), summed instead of averaged, or reduced in the wrong bucket
order all fail. Then 2-rank mpiexec jobs compared, in float64, with the one-process
reference of tests/mpi/common.py to 1e-9 relative (scripts: tests/mpi/scripts/dp_*.py;
several variants share one job because each mpiexec start costs about a second)."""

import subprocess
import sys

import numpy as np
import pytest

import minilm as ml
from minilm import nn, optim
from minilm.parallel import Communicator, DataParallel, LocalSGD, ZeroRedundancyOptimizer
from minilm.parallel.comm import Request
from minilm.parallel.data_parallel import assign_buckets, to_half
from tests.mpi.common import global_batch, make_model
from tests.mpi.conftest import ROOT, mpi_env, mpiexec_or_fail, run_mpi

# ---------------------------------------------------------------------------- stand-ins

PEER_SEED = 10  # rank 1's data: mlp_loss(model, PEER_SEED + i) where rank 0 uses seed i


class PeerComm(Communicator):
    """Rank 0 of two, in one process, with rank 1 played back. Built with ``peer=None``
    it is rank 1 and records, in order, the buffer it contributes to every sum or
    gather (``sent``); built with ``peer=`` that list it is rank 0 and adds rank 1's
    buffer to each sum (allgather: appends it). Records each non-blocking launch
    (buffer size, how many parameters had a gradient then)."""

    def __init__(self, params=(), peer=None) -> None:
        super().__init__(None)
        self.size = 2
        self.rank = 0 if peer is not None else 1
        self.params = list(params)
        self.peer = None if peer is None else list(peer)
        self.sent: list = []
        self.launches: list = []

    def _other(self, buf):
        self.sent.append(np.array(buf, copy=True))
        if self.peer is None:  # rank 1 itself: its result does not matter here
            return np.zeros_like(buf)
        other = self.peer.pop(0)
        assert other.shape == buf.shape and other.dtype == buf.dtype, (other.shape, buf.shape)
        return other

    def allreduce(self, buf, op="sum"):
        assert op == "sum"
        buf += self._other(buf)
        return buf

    def iallreduce(self, buf, op="sum"):
        self.launches.append((buf.size, sum(p.grad is not None for p in self.params)))
        self.allreduce(buf, op)
        return Request()

    def iallgather(self, sendbuf, recvbuf):
        other = self._other(sendbuf)
        mine, theirs = (sendbuf, other) if self.rank == 0 else (other, sendbuf)
        recvbuf.reshape(2, -1)[0], recvbuf.reshape(2, -1)[1] = mine.ravel(), theirs.ravel()
        return Request()

    def bcast(self, buf, root=0):
        return buf


def two_ranks(run, comm_class=PeerComm, **dp_kwargs):
    """``run(dp, seed)`` (forwards and backwards) on rank 1 with seed PEER_SEED, then on
    rank 0 with seed 0 and rank 1's buffers played back; rank 0's (model, dp, comm)."""
    m1 = tiny_mlp()
    c1 = comm_class(m1.parameters())
    run(DataParallel(m1, c1, **dp_kwargs), PEER_SEED)
    m0 = tiny_mlp()
    c0 = comm_class(m0.parameters(), peer=c1.sent)
    dp = DataParallel(m0, c0, **dp_kwargs)
    run(dp, 0)
    assert c0.peer == [] and len(c0.sent) == len(c1.sent) > 0  # the same collectives
    return m0, dp, c0


def tiny_mlp(dtype=np.float64) -> nn.Module:
    ml.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 3))
    return m.to(dtype)


def mlp_loss(model, seed=0):
    rng = np.random.default_rng(seed)
    x = ml.tensor(rng.standard_normal((5, 6)))
    return (model(x) ** 2).mean()


def local_grads(seed=0, steps=1) -> list:
    model = tiny_mlp()
    for s in range(steps):
        mlp_loss(model, seed + s).backward()
    return [p.grad.numpy().copy() for p in model.parameters()]


# ---------------------------------------------------------------------------- bucketing


def test_buckets_take_parameters_in_reverse_order_and_respect_the_cap():
    ps = [nn.Parameter(np.zeros(n)) for n in (10, 20, 30, 40, 50)]
    cap_mb = 45 * 8 / 2**20  # 45 float64 elements
    assert assign_buckets(ps, cap_mb) == [[4], [3, 2], [1, 0]]
    assert assign_buckets(ps, 1.0) == [[4, 3, 2, 1, 0]]
    big = [nn.Parameter(np.zeros(1000)), nn.Parameter(np.zeros(2))]
    assert assign_buckets(big, 8 / 2**20) == [[1], [0]]  # bigger than the cap: alone


def test_buckets_split_where_the_dtype_changes():
    ps = [nn.Parameter(np.zeros(3, np.float32)), nn.Parameter(np.zeros(3, np.float32)),
          nn.Parameter(np.zeros(3)), nn.Parameter(np.zeros(3, np.float32))]
    assert assign_buckets(ps, 1.0) == [[3], [2], [1, 0]]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="bucket_size_mb"):
        assign_buckets([nn.Parameter(np.zeros(2))], 0)
    with pytest.raises(ValueError, match="compress"):
        DataParallel(tiny_mlp(), Communicator(None), compress="int8")
    with pytest.raises(TypeError, match="Module"):
        DataParallel([nn.Parameter(np.zeros(2))], Communicator(None))
    with pytest.raises(ValueError, match="sync_every"):
        LocalSGD(tiny_mlp(), Communicator(None), sync_every=0)


def mean_of_ranks(steps=1) -> list:
    """The explicit mean of rank 0's and rank 1's gradients (checked to differ)."""
    g0, g1 = local_grads(0, steps), local_grads(PEER_SEED, steps)
    assert all(np.max(np.abs(a - b)) > 0.1 * np.max(np.abs(a)) for a, b in zip(g0, g1))
    return [(a + b) / 2 for a, b in zip(g0, g1)]


SMALL_BUCKETS = dict(bucket_size_mb=100 * 8 / 2**20)  # 100 float64: several buckets


@pytest.mark.parametrize("overlap", [True, False])
def test_buckets_are_reduced_during_backward_only_with_overlap(overlap):
    def run(dp, seed):
        mlp_loss(dp, seed).backward()  # every parameter got a gradient: finished at once

    model, dp, comm = two_ranks(run, overlap=overlap, **SMALL_BUCKETS)
    assert len(dp.buckets) >= 3
    assert [b.params for b in dp.buckets][0][0] is list(model.parameters())[-1]
    assert len(comm.launches) == len(dp.buckets)
    assert [n for n, _ in comm.launches] == [b.numel + len(b.params) for b in dp.buckets]
    n_params = len(list(model.parameters()))
    seen = [k for _, k in comm.launches]
    if overlap:  # the first bucket left while backward had gradients still to compute
        assert seen[0] < n_params and dp.stats["launched_in_backward"] == len(dp.buckets)
    else:
        assert seen == [n_params] * len(dp.buckets) and dp.stats["launched_in_backward"] == 0
    dp.finish()  # a no-op now
    assert len(comm.launches) == len(dp.buckets) and dp.stats["rounds"] == 1
    for p, g in zip(model.parameters(), mean_of_ranks()):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-14, atol=1e-16)


def test_no_sync_accumulates_locally_and_the_next_backward_reduces_the_sum():
    def run(dp, seed):
        with dp.no_sync():
            mlp_loss(dp, seed).backward()
        assert dp.comm.launches == []
        mlp_loss(dp, seed + 1).backward()

    model, dp, comm = two_ranks(run, **SMALL_BUCKETS)
    assert len(comm.launches) == len(dp.buckets)
    for p, g in zip(model.parameters(), mean_of_ranks(steps=2)):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-14, atol=1e-16)


def test_unused_parameters_keep_no_grad_and_forgetting_finish_is_caught():
    # an extra parameter in a bucket that never fills: the explicit finish() path
    def build():
        m = tiny_mlp()
        m.unused = nn.Parameter(np.ones(4))
        return m

    m1, m0 = build(), build()
    c1 = PeerComm(m1.parameters())
    d1 = DataParallel(m1, c1, **SMALL_BUCKETS)
    mlp_loss(d1, PEER_SEED).backward()
    d1.finish()
    c0 = PeerComm(m0.parameters(), peer=c1.sent)
    dp = DataParallel(m0, c0, **SMALL_BUCKETS)
    mlp_loss(dp, 0).backward()
    assert not dp._auto_finished  # a bucket can never fill: finish() is needed
    with pytest.raises(RuntimeError, match="finish"):
        mlp_loss(dp)
    with pytest.raises(RuntimeError, match="second gradient"):
        mlp_loss(dp.module).backward()
    dp.finish()
    assert m0.unused.grad is None and c0.peer == []
    assert len(c0.launches) == len(dp.buckets)
    used = [p for n, p in m0.named_parameters() if n != "unused"]
    for p, g in zip(used, mean_of_ranks(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_half_cast_is_bitwise_numpys(dtype):
    rng = np.random.default_rng(0)
    sub = np.arange(-1030, 1031) * 2.0 ** -24  # every subnormal, both signs, the boundary
    ties = (np.arange(-40, 40) + 0.5) * 2.0 ** -24  # exact halves: round to even
    x = np.concatenate([
        sub, ties, sub + 2.0 ** -27, sub - 2.0 ** -27,
        rng.standard_normal(3000) * 10.0 ** rng.integers(-12, 5, 3000),
        [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 1e6, 2.0 ** -14, 6e-8, 2.9e-8,
         3.0e-8, np.finfo(np.float32).tiny, 1e-45],
    ]).astype(dtype)
    got = to_half(x, np.empty(x.size, np.float16))
    with np.errstate(over="ignore"):
        expect = x.astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16), expect.view(np.uint16))


def _halves(g):
    return (g / 2).astype(np.float16)  # each rank's gradient, scaled by 1/W, in float16


def test_fp16_compression_rounds_each_bucket_to_half_precision():
    def run(dp, seed):
        mlp_loss(dp, seed).backward()

    model, dp, _ = two_ranks(run, compress="fp16", fp16_reduce="mpi", **SMALL_BUCKETS)
    mean = mean_of_ranks()
    for p, a, b, m in zip(model.parameters(), local_grads(0), local_grads(PEER_SEED), mean):
        expect = (_halves(a) + _halves(b)).astype(np.float64)  # summed in float16 (as MPI)
        np.testing.assert_array_equal(p.grad.numpy(), expect)
        bound = 2 * 2.0 ** -11 * (np.abs(a) + np.abs(b)) / 2 + 4 * 2.0 ** -25
        assert np.all(np.abs(p.grad.numpy() - m) <= bound)


def test_fp16_without_a_float16_mpi_sum_falls_back_to_allgather():
    class OldMPI(PeerComm):
        def allreduce(self, buf, op="sum"):
            if buf.dtype == np.float16:
                raise TypeError("no MPI datatype for float16")
            return super().allreduce(buf, op)

    model = tiny_mlp()
    comm = OldMPI(model.parameters(), peer=[])
    comm.size = 4  # "auto" would let MPI sum beyond 2 ranks, but this MPI cannot
    with pytest.raises(RuntimeError, match="cannot sum float16"):
        DataParallel(model, comm, compress="fp16", fp16_reduce="mpi")

    def run(dp, seed):
        assert dp.fp16_reduce == "gather"
        dp.comm.size = 2
        mlp_loss(dp, seed).backward()

    def four_then_two(params, peer=None):
        c = OldMPI(params, peer)
        c.size = 4
        return c

    model, dp, _ = two_ranks(run, comm_class=four_then_two, compress="fp16", **SMALL_BUCKETS)
    for p, a, b in zip(model.parameters(), local_grads(0), local_grads(PEER_SEED)):
        # every rank's halves gathered, summed in the gradient's dtype
        expect = _halves(a).astype(np.float64) + _halves(b).astype(np.float64)
        np.testing.assert_array_equal(p.grad.numpy(), expect)


def test_single_process_data_parallel_changes_nothing():
    model = tiny_mlp()
    dp = DataParallel(model, Communicator(None))
    mlp_loss(dp).backward()
    for p, g in zip(model.parameters(), local_grads()):
        np.testing.assert_array_equal(p.grad.numpy(), g)


# ---------------------------------------------------------------------------- ZeRO, 1 process


def test_zero_on_one_process_is_the_wrapped_optimizer():
    a, b = make_model(), make_model()
    za = ZeroRedundancyOptimizer(a.parameters(), optim.AdamW, Communicator(None), lr=1e-2,
                                 weight_decay=0.1)
    ob = optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1)
    for step in range(2):
        x, y = global_batch(step)
        for model, opt in ((a, za), (b, ob)):
            model(ml.tensor(x), ml.tensor(y))[1].backward()
            opt.step()
            opt.zero_grad()
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())
    sa, sb = za.state_dict(), ob.state_dict()
    assert sa["param_groups"] == sb["param_groups"] and sa["state"].keys() == sb["state"].keys()
    for i in sb["state"]:
        for k, v in sb["state"][i].items():
            np.testing.assert_array_equal(sa["state"][i][k], v)
    assert za.state_bytes() == sum(v.nbytes for s in ob.state.values() for v in s.values()
                                   if hasattr(v, "nbytes"))
    ob.load_state_dict(sa)
    za.load_state_dict(sb)


def test_zero_follows_lr_changes_made_on_its_param_groups():
    a, b = tiny_mlp(), tiny_mlp()
    zero = ZeroRedundancyOptimizer(a.parameters(), optim.SGD, Communicator(None), lr=0.1)
    sgd = optim.SGD(b.parameters(), lr=0.1)
    scheds = [optim.StepLR(o, step_size=1, gamma=0.5) for o in (zero, sgd)]
    for step in range(3):
        for model, opt in ((a, zero), (b, sgd)):
            mlp_loss(model, step).backward()
            opt.step()
            opt.zero_grad()
        for s in scheds:
            s.step()
    assert zero.param_groups[0]["lr"] == sgd.param_groups[0]["lr"] == 0.1 / 8
    assert zero.optim.param_groups[0]["lr"] == 0.1 / 4  # what the last step() used
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_zero_refuses_what_it_cannot_shard():
    with pytest.raises(TypeError, match="one dtype"):
        ZeroRedundancyOptimizer([nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(2, np.float32))],
                                optim.AdamW, Communicator(None))
    with pytest.raises(TypeError, match="optimizer_class"):
        ZeroRedundancyOptimizer([nn.Parameter(np.zeros(2))], "adamw", Communicator(None))
    zero = ZeroRedundancyOptimizer([nn.Parameter(np.zeros(2))], optim.AdamW, Communicator(None))
    with pytest.raises(NotImplementedError):
        zero.add_param_group({"params": [nn.Parameter(np.zeros(2))]})


# ---------------------------------------------------------------------------- 2 ranks


@pytest.fixture(scope="module")
def dp_results():
    return run_mpi(2, "scripts.dp_train", timeout=120)


@pytest.fixture(scope="module")
def zero_results():
    return run_mpi(2, "scripts.dp_zero", timeout=120)


def _equal_to_reference(r: dict) -> None:
    assert r["ok"], r
    assert r["loss_err"] <= 1e-9 and r["param_err"] <= 1e-9 and not r["missing"]
    assert r["identical"]  # all ranks hold the same parameters


@pytest.mark.mpi
def test_dp2_overlap_small_buckets_equals_one_process(dp_results):
    r = dp_results["overlap"]
    _equal_to_reference(r)
    assert r["buckets"] >= 5 and r["auto_finished"] == [True] * 3
    assert r["stats"]["launched_in_backward"] == 3 * r["buckets"]


@pytest.mark.mpi
def test_dp2_parameters_used_on_some_ranks_or_none(dp_results):
    r = dp_results["unused"]
    _equal_to_reference(r)
    # used (with weight 0) on rank 0 only: a zero gradient everywhere; never used: None
    assert r["extra_grads"] == [[True, True]] * 3 and r["auto_finished"] == [False] * 3


@pytest.mark.mpi
def test_dp2_refuses_models_that_differ_between_ranks(dp_results):
    msg = dp_results["mismatch"]
    assert msg and "ranks disagree on the parameters" in msg and "rank 1 has" in msg, msg


@pytest.mark.mpi
def test_dp2_without_overlap_equals_one_process(dp_results):
    r = dp_results["no_overlap"]
    _equal_to_reference(r)
    assert r["stats"]["launched_in_backward"] == 0
    assert r["stats"]["launched_in_finish"] == 3 * r["buckets"]


@pytest.mark.mpi
def test_dp2_gradient_accumulation_with_no_sync_equals_one_process(dp_results):
    r = dp_results["no_sync"]
    _equal_to_reference(r)
    assert r["stats"]["rounds"] == 3  # one reduction per optimizer step, not per micro-batch


@pytest.mark.mpi
def test_dp2_fp16_compression_within_error_bound(dp_results):
    r = dp_results["fp16"]
    # |avg16 - avg| <= W 2^-11 mean|g_i| + 2 W 2^-25, element by element, whether MPI sums
    # the float16 halves or every rank sums the gathered halves itself
    for mode in ("mpi", "gather"):
        assert r["bound_ratio"][mode] <= 1.0, r
        assert r["bound_ratio"][mode] > 0.05, r  # the gradients really went through float16
    assert r["train_loss_err"] < 1e-3, r  # 3 AdamW steps on compressed gradients


@pytest.mark.mpi
def test_local_sgd_every_step_equals_data_parallel(dp_results):
    r = dp_results["local_sgd"]
    assert r["vs_dp_param"] <= 1e-9 and r["vs_dp_loss"] <= 1e-9, r
    assert r["dp_vs_ref_param"] <= 1e-9 and r["dp_vs_ref_loss"] <= 1e-9, r
    # sync_every=2: replicas differ after steps 1 and 3, agree after the syncs 2 and 4
    assert r["k2"] == [[False, False], [True, True], [False, False], [True, True]]


@pytest.mark.mpi
def test_zero1_adamw_equals_one_process(zero_results):
    r = zero_results["alone"]
    assert r["ok"], r
    assert r["extra"] == 2.0  # no gradient on any rank: skipped, weight decay not applied
    assert r["padded"] == r["numel"] + 1  # an odd length: the last shard is padded


@pytest.mark.mpi
def test_zero1_state_dict_is_the_one_process_state(zero_results):
    r = zero_results["alone"]
    assert r["state_keys_equal"] and r["groups_equal"]
    assert r["state_err"] <= 1e-9 and r["roundtrip"] == 0.0
    assert r["state_bytes_total"] == r["state_bytes_ref"]
    assert r["state_bytes_rank0"] <= r["state_bytes_ref"] // 2 + 64


@pytest.mark.mpi
def test_zero1_with_param_groups_equals_one_process(zero_results):
    r = zero_results["groups"]
    assert r["param_err"] <= 1e-9 and r["loss_err"] <= 1e-9, r


@pytest.mark.mpi
def test_zero1_after_data_parallel_reduction_equals_one_process(zero_results):
    assert zero_results["with_dp"]["ok"], zero_results["with_dp"]


@pytest.mark.mpi
def test_an_exception_on_one_rank_aborts_the_job(tmp_path):
    """Without the abort handler rank 0 would wait in the allreduce forever (the
    timeout is only a safety net: a hang fails with it; the checks are on how the job
    ended and what each rank wrote to its own file)."""
    exe = mpiexec_or_fail()
    cmd = [exe, "-n", "2", sys.executable, "-m", "tests.mpi.scripts.dp_fault", str(tmp_path)]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=mpi_env(), capture_output=True, text=True,
                           timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the job hung after rank 1 failed instead of aborting:\n{exc.stdout}"
                    f"{exc.stderr}")
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in (0, 1))
    assert "[rank 1/2] uncaught exception, aborting the job" in rank1, (rank1, out)
    assert "RuntimeError: injected failure on rank 1" in rank1, rank1
    assert "dp_fault.py" in rank1  # the traceback, with the failing line
    assert rank0 == "rank 0 completed step 0\n", (rank0, out)  # never got past step 1
    assert rank1.startswith("rank 1 completed step 0\n"), rank1
