"""MPI + GPU without a GPU: collectives on device arrays, staged through host memory or
handed to a CUDA-aware MPI, on the host-memory CuPy stand-in (tests/fake_cupy.py, the
``fake_gpu`` fixture), and the choice of one GPU per rank.

Single-process tests run a ``Communicator`` over ``TwoRanks``, a stand-in for an
``MPI.Comm`` of two ranks whose other rank holds ``PEER`` times this rank's values: it
records the type of every buffer MPI is given (the staging must hand MPI host arrays,
the CUDA-aware path device arrays) and computes what MPI would. Then a 2-rank mpiexec
job (tests/mpi/scripts/gpu_staging.py) runs the staged collectives and DataParallel on
fake-device arrays over the real MPI library."""

import fake_cupy
import numpy as np
import pytest

import minilm as ml
from minilm.parallel import Communicator
from minilm.parallel import gpu as pgpu
from minilm.parallel.comm import MPI
from tests.mpi.conftest import run_mpi

PEER = 3.0  # rank 1 holds PEER x rank 0's values


class _Req:
    def __init__(self, fn) -> None:
        self.fn = fn

    def Wait(self) -> None:  # noqa: N802 (mpi4py's names)
        self.fn()

    def Test(self) -> bool:  # noqa: N802
        self.fn()
        return True


class TwoRanks:
    """Rank ``rank`` of two; see the module docstring. ``seen``: (call, type) pairs."""

    def __init__(self, rank: int = 0) -> None:
        self.rank, self.seen = rank, []

    def Get_rank(self) -> int:  # noqa: N802
        return self.rank

    def Get_size(self) -> int:  # noqa: N802
        return 2

    def _see(self, call: str, *bufs) -> None:
        for b in bufs:
            self.seen.append((call, type(b)))

    def Allreduce(self, inplace, buf, op) -> None:  # noqa: N802
        assert inplace is MPI.IN_PLACE and op is MPI.SUM
        self._see("Allreduce", buf)
        buf *= 1 + PEER

    def Iallreduce(self, inplace, buf, op) -> _Req:  # noqa: N802
        self._see("Iallreduce", buf)
        return _Req(lambda: buf.__imul__(1 + PEER))

    def Reduce_scatter_block(self, send, recv, op) -> None:  # noqa: N802
        self._see("Reduce_scatter_block", send, recv)
        recv[...] = (send.reshape(2, -1)[self.rank] * (1 + PEER)).reshape(recv.shape)

    def Allgather(self, send, recv) -> None:  # noqa: N802
        self._see("Allgather", send, recv)
        flat = recv.reshape(-1)
        n = send.size
        flat[self.rank * n:(self.rank + 1) * n] = send.reshape(-1)
        flat[(1 - self.rank) * n:(2 - self.rank) * n] = send.reshape(-1) * PEER

    def Iallgather(self, send, recv) -> _Req:  # noqa: N802
        return _Req(lambda: self.Allgather(send, recv))

    def Bcast(self, buf, root) -> None:  # noqa: N802
        self._see("Bcast", buf)
        if self.rank != root:
            buf[...] = -7.0

    def Send(self, buf, dest, tag) -> None:  # noqa: N802
        self._see("Send", buf)
        self.sent = np.array(buf, copy=True)

    def Recv(self, buf, source, tag) -> None:  # noqa: N802
        self._see("Recv", buf)
        buf[...] = 5.0


@pytest.fixture
def dev(fake_gpu, monkeypatch):
    monkeypatch.delenv(pgpu.ENV_CUDA_AWARE, raising=False)
    return fake_gpu.xp


def test_staged_collectives_give_mpi_host_arrays_and_write_back(dev):
    comm = Communicator(TwoRanks())
    assert not comm.cuda_aware  # this MPICH says nothing; no environment variable
    x = dev.arange(6, dtype=np.float64)
    assert comm.allreduce(x) is x and type(x) is fake_cupy.ndarray
    np.testing.assert_array_equal(x.get(), np.arange(6) * (1 + PEER))
    y = dev.ones(4)
    req = comm.iallreduce(y)
    np.testing.assert_array_equal(y.get(), np.ones(4))  # not written before wait()
    req.wait()
    np.testing.assert_array_equal(y.get(), np.full(4, 1 + PEER))
    send, recv = dev.arange(8.0), dev.zeros(4)
    comm.reduce_scatter(send, recv)
    np.testing.assert_array_equal(recv.get(), np.arange(4.0) * (1 + PEER))
    s, g = dev.arange(3.0), dev.zeros(6)
    comm.allgather(s, g)
    np.testing.assert_array_equal(g.get(), [0, 1, 2, 0, PEER, 2 * PEER])
    g2 = dev.zeros(6)
    comm.iallgather(s, g2).wait()
    np.testing.assert_array_equal(g2.get(), g.get())
    b = dev.ones(3)
    comm.bcast(b, root=0)  # the root's buffer is only read
    np.testing.assert_array_equal(b.get(), np.ones(3))
    Communicator(TwoRanks(rank=1)).bcast(b, root=0)
    np.testing.assert_array_equal(b.get(), np.full(3, -7.0))
    comm.send(dev.full(2, 4.0), dest=1)
    np.testing.assert_array_equal(comm.mpi.sent, [4.0, 4.0])
    r = dev.zeros(2)
    comm.recv(r, source=1)
    np.testing.assert_array_equal(r.get(), [5.0, 5.0])
    assert {t for _, t in comm.mpi.seen} == {np.ndarray}  # MPI saw host arrays only


def test_cuda_aware_collectives_give_mpi_the_device_arrays(dev, monkeypatch):
    monkeypatch.setenv(pgpu.ENV_CUDA_AWARE, "1")
    comm = Communicator(TwoRanks())
    assert comm.cuda_aware
    x = dev.arange(4.0)
    comm.allreduce(x)
    np.testing.assert_array_equal(x.get(), np.arange(4.0) * (1 + PEER))
    comm.allgather(dev.ones(2), dev.zeros(4))
    assert {t for _, t in comm.mpi.seen} == {fake_cupy.ndarray}


def test_host_buffers_are_untouched_by_the_device_path(dev):
    comm = Communicator(TwoRanks())
    x = np.arange(3.0)
    comm.allreduce(x)
    np.testing.assert_array_equal(x, np.arange(3.0) * (1 + PEER))
    assert comm.mpi.seen == [("Allreduce", np.ndarray)]
    assert comm._cuda_aware is None  # no device buffer: the question was never asked


def test_one_process_collectives_on_device_arrays(dev):
    comm = Communicator(None)
    x = dev.arange(4.0)
    assert comm.allreduce(x) is x
    recv = dev.zeros(4)
    comm.allgather(dev.arange(4.0), recv)
    assert type(recv) is fake_cupy.ndarray
    np.testing.assert_array_equal(recv.get(), np.arange(4.0))


def test_bad_buffers_are_refused():
    comm = Communicator(TwoRanks())
    with pytest.raises(TypeError, match="NumPy or a device"):
        comm.allreduce([1.0, 2.0])
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.allreduce(np.ones((3, 2)).T)


@pytest.mark.parametrize("env,want", [("1", True), ("yes", True), ("0", False),
                                      ("off", False)])
def test_cuda_aware_from_the_environment(monkeypatch, env, want):
    monkeypatch.setenv(pgpu.ENV_CUDA_AWARE, env)
    assert pgpu.cuda_aware_mpi() is want


def test_cuda_aware_from_mpi4py(monkeypatch):
    monkeypatch.delenv(pgpu.ENV_CUDA_AWARE, raising=False)

    class Reports:
        def __init__(self, answer) -> None:
            self.answer = answer

        def Query_cuda_support(self):  # noqa: N802
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    assert pgpu.cuda_aware_mpi(Reports(True)) is True
    assert pgpu.cuda_aware_mpi(Reports(False)) is False
    assert pgpu.cuda_aware_mpi(Reports(NotImplementedError("no MPIX"))) is False
    assert pgpu.cuda_aware_mpi(object()) is False  # an mpi4py without the query
    monkeypatch.setenv(pgpu.ENV_CUDA_AWARE, "maybe")
    with pytest.raises(ValueError, match="MINILM_CUDA_AWARE_MPI"):
        pgpu.cuda_aware_mpi()


class _FakeCuda:
    """``cupy.cuda`` enough for ``select_device``: a device count, ``Device(i).use()``."""

    def __init__(self, count: int) -> None:
        self.used = []
        outer = self

        class Device:
            def __init__(self, i: int = 0) -> None:
                self.i = i

            def use(self) -> None:
                outer.used.append(self.i)

        class runtime:  # noqa: N801
            @staticmethod
            def getDeviceCount() -> int:  # noqa: N802
                return count

        self.Device, self.runtime = Device, runtime


class _Cupy:
    def __init__(self, count: int) -> None:
        self.cuda = _FakeCuda(count)


class _Local:
    def __init__(self, rank: int) -> None:
        self.rank = rank

    def split_shared(self):
        return self


@pytest.mark.parametrize("local,count,want", [(0, 4, 0), (3, 4, 3), (5, 4, 1), (2, 1, 0)])
def test_select_device_is_the_local_rank_modulo_the_device_count(local, count, want):
    cupy = _Cupy(count)
    assert pgpu.select_device(_Local(local), cupy=cupy) == want
    assert cupy.cuda.used == [want]


class _Ranks(_Local):
    def __init__(self, rank: int, size: int) -> None:
        super().__init__(rank)
        self.size = size


def test_setup_rank_device_only_for_cupy_with_several_processes(monkeypatch):
    monkeypatch.delenv("MINILM_BACKEND", raising=False)
    cupy = _Cupy(2)
    assert pgpu.setup_rank_device("numba", _Ranks(3, 4), cupy=cupy) is None
    assert pgpu.setup_rank_device("cupy", _Ranks(0, 1), cupy=cupy) is None  # one process
    assert pgpu.setup_rank_device(None, _Ranks(3, 4), cupy=cupy) is None
    assert cupy.cuda.used == []
    assert pgpu.setup_rank_device("cupy", _Ranks(3, 4), cupy=cupy) == 1
    monkeypatch.setenv("MINILM_BACKEND", "cupy")
    assert pgpu.setup_rank_device(None, _Ranks(2, 4), cupy=cupy) == 0
    assert cupy.cuda.used == [1, 0]


def test_select_device_without_a_device():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        pgpu.select_device(_Local(0), cupy=_Cupy(0))


def test_local_rank_of_one_process():
    assert pgpu.local_rank(Communicator(None)) == 0


def test_data_parallel_on_device_parameters_over_staged_collectives(dev, monkeypatch):
    """One rank of two (``TwoRanks``: the peer's gradients are PEER x ours): every
    gradient becomes the mean (1 + PEER) / 2 x ours, on the device. (The layout check,
    a JSON exchange, is left out: TwoRanks only plays back numbers.)"""
    from minilm import nn
    from minilm.parallel import DataParallel, data_parallel

    monkeypatch.setattr(data_parallel, "check_same_layout", lambda *a, **k: None)

    ml.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    ref = {n: p.numpy().copy() for n, p in model.named_parameters()}
    model.to("cuda")
    comm = Communicator(TwoRanks())
    ddp = DataParallel(model, comm, bucket_size_mb=1e-4)  # several buckets
    x = ml.tensor(np.random.default_rng(0).standard_normal((5, 4))).to("cuda")
    ddp(x).sum().backward()
    ddp.finish()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(type(g.data) is fake_cupy.ndarray for g in grads.values())
    ml.use_backend("numpy")
    host = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    host.load_state_dict({k: ml.tensor(v) for k, v in ref.items()})
    host(ml.tensor(x.numpy())).sum().backward()
    for n, p in host.named_parameters():
        np.testing.assert_allclose(grads[n].numpy(), p.grad.numpy() * (1 + PEER) / 2,
                                   rtol=1e-12)
    assert {t for _, t in comm.mpi.seen} == {np.ndarray}


def test_two_ranks_stage_device_buffers_over_real_mpi():
    out = run_mpi(2, "scripts.gpu_staging")
    assert out == {"allreduce": [3.0, 6.0], "bcast": [1.0, 2.0], "allgather": [1.0, 2.0],
                   "reduce_scatter": [3.0], "recv": [1.0, 1.0], "ddp_same_grads": True,
                   "on_device": True}


def test_zero_refuses_device_parameters(dev):
    from minilm import nn
    from minilm.optim import AdamW
    from minilm.parallel import ZeroRedundancyOptimizer

    model = nn.Linear(3, 2).to("cuda")
    with pytest.raises(TypeError, match="NumPy \\(host\\) arrays"):
        ZeroRedundancyOptimizer(model.parameters(), AdamW, Communicator(None), lr=1e-3)


@pytest.mark.parametrize("dp,tp,pp,micro", [(2, 1, 1, 1), (1, 2, 1, 1), (1, 1, 2, 2)])
def test_engine_trains_a_device_model_like_one_cpu_process(dp, tp, pp, micro):
    """`minilm train --dp/--tp/--pp` with the model on the device: every collective
    staged, the same losses and parameters as one CPU process (float64, 1e-9)."""
    out = run_mpi(2, "scripts.gpu_engine", str(dp), str(tp), str(pp), str(micro))
    assert out["loss_err"] <= 1e-9 and out["param_err"] <= 1e-9, out
    assert not out["missing"] and out["on_device"] and not out["cuda_aware"]
