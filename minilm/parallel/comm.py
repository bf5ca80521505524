"""The communicator: a thin layer over mpi4py that also runs with one process and no
mpi4py at all.

Every collective is the buffer-based (upper-case) mpi4py call on NumPy arrays —
no pickling — and works in place where MPI allows it. Device (CuPy) arrays are
accepted too: staged through host memory, or handed to a CUDA-aware MPI as they are
(gpu.py, which also picks one GPU per rank)::

    comm = world()                       # MPI.COMM_WORLD, or a 1-process stand-in
    comm.allreduce(grad)                 # grad <- sum over ranks, in place
    req = comm.iallreduce(bucket)        # non-blocking; req.wait() later
    comm.reduce_scatter(flat, shard)     # shard <- my 1/size slice of the sum
    comm.allgather(shard, flat)          # flat <- concatenation of every rank's shard
    comm.bcast(params, root=0)
    comm.send(x, dest); comm.recv(x, source)

``ProcessGrid(dp, tp, pp)`` splits the world into the data-, tensor- and
pipeline-parallel groups with ``Comm.Split``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import numpy as np

from .gpu import _nothing, check_buffer, cuda_aware_mpi, stage

__all__ = ["Communicator", "ProcessGrid", "Request", "install_abort_handler", "is_mpi_run",
           "world"]

try:  # mpi4py is optional: without it, or with one process, everything runs unchanged
    from mpi4py import MPI
except ImportError:  # pragma: no cover - exercised on machines without mpi4py
    MPI = None

_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "prod": "PROD"}


def _host(buf: Any) -> np.ndarray:
    """A NumPy buffer MPI can read and write in place (no staging: the JSON helpers)."""
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"communicator: expected a NumPy array, got {type(buf).__name__}")
    if not buf.flags.c_contiguous:
        raise ValueError("communicator: buffers must be C-contiguous (use np.ascontiguousarray)")
    return buf


def _keep(obj: Any) -> Any:
    """A finish callback that holds a reference to ``obj`` until the request completes."""
    return lambda: obj


class Request:
    """A pending non-blocking operation; ``wait()`` completes it (and then runs
    ``finish``: the upload of a staged device buffer, gpu.py)."""

    def __init__(self, mpi_request: Any = None, finish: Any = None) -> None:
        self._req = mpi_request
        self._finish = finish
        if mpi_request is None:
            self._done()

    def _done(self) -> None:
        self._req = None
        if self._finish is not None:
            finish, self._finish = self._finish, None
            finish()

    def wait(self) -> None:
        if self._req is not None:
            self._req.Wait()
            self._done()

    def test(self) -> bool:
        if self._req is None:
            return True
        done = self._req.Test()
        if done:
            self._done()
        return bool(done)


class Communicator:
    """Collectives over a group of processes (an ``MPI.Comm``, or ``None`` for a
    single process where every collective is the identity)."""

    def __init__(self, mpi_comm: Any = None) -> None:
        self.mpi = mpi_comm
        self.rank = mpi_comm.Get_rank() if mpi_comm is not None else 0
        self.size = mpi_comm.Get_size() if mpi_comm is not None else 1
        self._cuda_aware: bool | None = None  # decided at the first device buffer

    def __repr__(self) -> str:
        return f"<Communicator rank {self.rank} of {self.size}>"

    @property
    def is_single(self) -> bool:
        return self.mpi is None or self.size == 1

    def _op(self, op: str) -> Any:
        if op not in _OPS:
            raise ValueError(f"communicator: unknown reduction {op!r}; use one of {sorted(_OPS)}")
        return getattr(MPI, _OPS[op])

    # ------------------------------------------------------------------ device buffers
    @property
    def cuda_aware(self) -> bool:
        """Whether device (CuPy) buffers go to MPI as they are, not staged through host
        memory (gpu.py ``cuda_aware_mpi``; decided once per communicator)."""
        if self._cuda_aware is None:
            self._cuda_aware = cuda_aware_mpi(MPI)
        return self._cuda_aware

    def _stage(self, buf: Any, writes: bool) -> tuple:
        """(what MPI gets for ``buf``, what to call after the MPI call): gpu.py ``stage``."""
        if type(buf) is np.ndarray:  # the common case, first
            return _host(buf), _nothing
        return stage(buf, writes, self.cuda_aware)

    # ------------------------------------------------------------------ collectives
    # Buffers are NumPy arrays or device (CuPy) arrays, C-contiguous; a device buffer
    # is staged through host memory unless MPI is CUDA-aware (gpu.py). With one
    # process every collective is done by the array module itself, with no copy.
    def allreduce(self, buf: Any, op: str = "sum") -> Any:
        """buf <- op over ranks of buf, in place."""
        check_buffer(buf)
        if not self.is_single:
            mpi_buf, finish = self._stage(buf, writes=True)
            self.mpi.Allreduce(MPI.IN_PLACE, mpi_buf, op=self._op(op))
            finish()
        return buf

    def iallreduce(self, buf: Any, op: str = "sum") -> Request:
        """Start an in-place allreduce of ``buf``; the result is there after ``wait()``."""
        check_buffer(buf)
        if self.is_single:
            return Request()
        mpi_buf, finish = self._stage(buf, writes=True)
        return Request(self.mpi.Iallreduce(MPI.IN_PLACE, mpi_buf, op=self._op(op)), finish)

    def reduce_scatter(self, sendbuf: Any, recvbuf: Any, op: str = "sum") -> Any:
        """recvbuf <- rank r's block (``len(sendbuf) // size`` elements) of op over ranks."""
        check_buffer(sendbuf), check_buffer(recvbuf)
        if sendbuf.size != recvbuf.size * self.size:
            raise ValueError(f"reduce_scatter: send buffer of {sendbuf.size} elements is not "
                             f"{self.size} x the receive buffer's {recvbuf.size}")
        if self.is_single:
            recvbuf[...] = sendbuf.reshape(recvbuf.shape)
        else:
            send, _ = self._stage(sendbuf, writes=False)
            recv, finish = self._stage(recvbuf, writes=True)
            self.mpi.Reduce_scatter_block(send, recv, op=self._op(op))
            finish()
        return recvbuf

    def allgather(self, sendbuf: Any, recvbuf: Any) -> Any:
        """recvbuf <- the concatenation of every rank's sendbuf, in rank order."""
        self._check_gather(sendbuf, recvbuf)
        if self.is_single:
            recvbuf.reshape(-1)[...] = sendbuf.reshape(-1)
        else:
            send, _ = self._stage(sendbuf, writes=False)
            recv, finish = self._stage(recvbuf, writes=True)
            self.mpi.Allgather(send, recv)
            finish()
        return recvbuf

    def iallgather(self, sendbuf: Any, recvbuf: Any) -> Request:
        self._check_gather(sendbuf, recvbuf)
        if self.is_single:
            recvbuf.reshape(-1)[...] = sendbuf.reshape(-1)
            return Request()
        send, _ = self._stage(sendbuf, writes=False)
        recv, upload = self._stage(recvbuf, writes=True)

        def finish() -> Any:  # holds the staged send copy until the gather is done
            upload()
            return send

        return Request(self.mpi.Iallgather(send, recv), finish)

    def _check_gather(self, sendbuf: Any, recvbuf: Any) -> None:
        check_buffer(sendbuf), check_buffer(recvbuf)
        if recvbuf.size != sendbuf.size * self.size:
            raise ValueError(f"allgather: receive buffer of {recvbuf.size} elements is not "
                             f"{self.size} x the send buffer's {sendbuf.size}")

    def bcast(self, buf: Any, root: int = 0) -> Any:
        """buf <- root's buf, in place."""
        check_buffer(buf)
        if not self.is_single:
            mpi_buf, finish = self._stage(buf, writes=self.rank != root)
            self.mpi.Bcast(mpi_buf, root=root)
            finish()
        return buf

    def send(self, buf: Any, dest: int, tag: int = 0) -> None:
        self._need_peers("send")
        self.mpi.Send(self._stage(buf, writes=False)[0], dest=dest, tag=tag)

    def recv(self, buf: Any, source: int, tag: int = 0) -> Any:
        self._need_peers("recv")
        mpi_buf, finish = self._stage(buf, writes=True)
        self.mpi.Recv(mpi_buf, source=source, tag=tag)
        finish()
        return buf

    def isend(self, buf: Any, dest: int, tag: int = 0) -> Request:
        self._need_peers("isend")
        mpi_buf, _ = self._stage(buf, writes=False)
        # the request keeps a staged host copy alive until the send completes
        return Request(self.mpi.Isend(mpi_buf, dest=dest, tag=tag), _keep(mpi_buf))

    def irecv(self, buf: Any, source: int, tag: int = 0) -> Request:
        self._need_peers("irecv")
        mpi_buf, finish = self._stage(buf, writes=True)
        return Request(self.mpi.Irecv(mpi_buf, source=source, tag=tag), finish)

    def barrier(self) -> None:
        if not self.is_single:
            self.mpi.Barrier()

    def _need_peers(self, op: str) -> None:
        if self.is_single:
            raise RuntimeError(f"{op}: point-to-point needs more than one process")

    # ------------------------------------------------------------------ small objects as JSON
    def bcast_json(self, obj: Any, root: int = 0) -> Any:
        """Broadcast a JSON-serialisable object (as bytes: nothing is pickled)."""
        if self.is_single:
            return obj
        data = json.dumps(obj).encode() if self.rank == root else b""
        n = np.array([len(data)], dtype=np.int64)
        self.mpi.Bcast(n, root=root)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root \
            else np.empty(int(n[0]), dtype=np.uint8)
        self.mpi.Bcast(buf, root=root)
        return json.loads(buf.tobytes().decode())

    def allgather_json(self, obj: Any) -> list:
        """Every rank's JSON-serialisable object, in rank order."""
        if self.is_single:
            return [obj]
        data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8).copy()
        sizes = np.zeros(self.size, dtype=np.int64)
        self.mpi.Allgather(np.array([data.size], dtype=np.int64), sizes)
        out = np.empty(int(sizes.sum()), dtype=np.uint8)
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.mpi.Allgatherv(data, [out, sizes, displs, MPI.BYTE])
        return [json.loads(out[o:o + s].tobytes().decode()) for o, s in zip(displs, sizes)]

    # ------------------------------------------------------------------ groups
    def split(self, color: int, key: int | None = None) -> Communicator:
        """Processes with the same ``color`` form a new communicator, ordered by ``key``."""
        if self.mpi is None:
            return Communicator(None)
        return Communicator(self.mpi.Split(color, self.rank if key is None else key))

    def split_shared(self) -> Communicator:
        """The processes of this communicator that share this node's memory."""
        if self.mpi is None:
            return Communicator(None)
        return Communicator(self.mpi.Split_type(MPI.COMM_TYPE_SHARED, self.rank))

    def abort(self, code: int = 1) -> None:
        if self.mpi is not None:
            self.mpi.Abort(code)
        os._exit(code)  # pragma: no cover

    def all_failed(self, timeout: float = 2.0) -> bool:
        """Called by a rank that hit an error: True when every rank of this communicator
        calls it within ``timeout`` seconds (the same bad input fails everywhere), so the
        job can end with a normal exit on every rank and one error message; False when
        some rank is elsewhere (then the caller reports and aborts the job).

        A point-to-point handshake on a reserved tag, not a collective: the ranks that
        did not fail may be blocked in a collective of this communicator, and a barrier
        would not match it. Every rank tells rank 0; rank 0 answers each once it has
        heard from all of them. A rank that hears nothing within ``2 * timeout`` gives up."""
        if self.is_single:
            return True
        import time

        comm, deadline = self.mpi, time.monotonic() + timeout
        if self.rank != 0:
            sent = comm.isend(True, dest=0, tag=_FAIL_TAG)
            deadline += timeout  # rank 0 may have started its count just now
            while time.monotonic() < deadline:
                if comm.Iprobe(source=0, tag=_FAIL_TAG + 1):
                    answer = bool(comm.recv(source=0, tag=_FAIL_TAG + 1))
                    sent.wait()  # rank 0 answers only after receiving it: returns at once
                    return answer
                time.sleep(0.01)
            return False  # the caller aborts the job; the unmatched send goes with it
        heard: set[int] = set()
        while len(heard) < self.size - 1 and time.monotonic() < deadline:
            status = MPI.Status()
            if comm.Iprobe(source=MPI.ANY_SOURCE, tag=_FAIL_TAG, status=status):
                heard.add(status.Get_source())
                comm.recv(source=status.Get_source(), tag=_FAIL_TAG)
            else:
                time.sleep(0.01)
        everyone = len(heard) == self.size - 1
        for r in heard:
            comm.send(everyone, dest=r, tag=_FAIL_TAG + 1)
        return everyone


# message tags of the failure handshake (``Communicator.all_failed``); nothing else in
# minilm sends point-to-point messages with tags this high
_FAIL_TAG = 32000


_WORLD: Communicator | None = None


def world() -> Communicator:
    """The communicator of every process in the job (a 1-process stand-in without MPI)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = Communicator(MPI.COMM_WORLD if MPI is not None else None)
    return _WORLD


def is_mpi_run() -> bool:
    return world().size > 1


def install_abort_handler() -> None:
    """On an uncaught exception in any rank, print that rank's traceback and abort the
    whole job at once (``MPI_Abort``) instead of leaving the other ranks waiting forever
    in a collective."""
    comm = world()
    if comm.size == 1:
        return
    previous = sys.excepthook

    def hook(exc_type: Any, exc: Any, tb: Any) -> None:
        msg = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(f"\n[rank {comm.rank}/{comm.size}] uncaught exception, aborting the "
                         f"job:\n{msg}")
        sys.stderr.flush()
        try:
            comm.abort(1)
        finally:  # pragma: no cover
            previous(exc_type, exc, tb)

    sys.excepthook = hook


class ProcessGrid:
    """dp × tp × pp process groups. Tensor-parallel ranks are adjacent (fastest
    varying: they talk every layer, so they should share a node), then data-parallel,
    then pipeline stages::

        rank = (pp_rank * dp + dp_rank) * tp + tp_rank

    ``tp_comm`` joins the tp ranks of one (pp, dp) slot, ``dp_comm`` the dp ranks of
    one (pp, tp) slot, ``pp_comm`` the stages of one (dp, tp) slot."""

    def __init__(self, dp: int = 1, tp: int = 1, pp: int = 1,
                 comm: Communicator | None = None) -> None:
        comm = comm if comm is not None else world()
        for name, v in (("dp", dp), ("tp", tp), ("pp", pp)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"ProcessGrid: {name} must be a positive integer, got {v!r}")
        if dp * tp * pp != comm.size:
            raise ValueError(
                f"ProcessGrid: dp ({dp}) x tp ({tp}) x pp ({pp}) = {dp * tp * pp} processes, "
                f"but the job has {comm.size}; launch with mpiexec -n {dp * tp * pp} or "
                "change --dp/--tp/--pp"
            )
        self.dp, self.tp, self.pp = dp, tp, pp
        self.world = comm
        r = comm.rank
        self.tp_rank = r % tp
        self.dp_rank = (r // tp) % dp
        self.pp_rank = r // (tp * dp)
        self.tp_comm = comm.split(self.pp_rank * dp + self.dp_rank, self.tp_rank)
        self.dp_comm = comm.split(self.pp_rank * tp + self.tp_rank, self.dp_rank)
        self.pp_comm = comm.split(self.dp_rank * tp + self.tp_rank, self.pp_rank)

    def rank_of(self, dp_rank: int, tp_rank: int, pp_rank: int) -> int:
        return (pp_rank * self.dp + dp_rank) * self.tp + tp_rank

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1

    def __repr__(self) -> str:
        return (f"<ProcessGrid dp={self.dp} tp={self.tp} pp={self.pp}; rank {self.world.rank}: "
                f"dp_rank {self.dp_rank}, tp_rank {self.tp_rank}, pp_rank {self.pp_rank}>")
