"""The communicator: a thin layer over mpi4py that also runs with one process and no
mpi4py at all.

Every collective is the buffer-based (upper-case) mpi4py call on NumPy arrays —
no pickling — and works in place where MPI allows it::

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

__all__ = ["Communicator", "ProcessGrid", "Request", "install_abort_handler", "is_mpi_run",
           "world"]

try:  # mpi4py is optional: without it, or with one process, everything runs unchanged
    from mpi4py import MPI
except ImportError:  # pragma: no cover - exercised on machines without mpi4py
    MPI = None

_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "prod": "PROD"}


def _host(buf: Any) -> np.ndarray:
    """MPI reads and writes host memory: CuPy arrays are not supported by this layer."""
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"communicator: expected a NumPy array, got {type(buf).__name__} "
                        "(move GPU arrays to the host first)")
    if not buf.flags.c_contiguous:
        raise ValueError("communicator: buffers must be C-contiguous (use np.ascontiguousarray)")
    return buf


class Request:
    """A pending non-blocking operation; ``wait()`` completes it."""

    def __init__(self, mpi_request: Any = None) -> None:
        self._req = mpi_request

    def wait(self) -> None:
        if self._req is not None:
            self._req.Wait()
            self._req = None

    def test(self) -> bool:
        if self._req is None:
            return True
        done = self._req.Test()
        if done:
            self._req = None
        return bool(done)


class Communicator:
    """Collectives over a group of processes (an ``MPI.Comm``, or ``None`` for a
    single process where every collective is the identity)."""

    def __init__(self, mpi_comm: Any = None) -> None:
        self.mpi = mpi_comm
        self.rank = mpi_comm.Get_rank() if mpi_comm is not None else 0
        self.size = mpi_comm.Get_size() if mpi_comm is not None else 1

    def __repr__(self) -> str:
        return f"<Communicator rank {self.rank} of {self.size}>"

    @property
    def is_single(self) -> bool:
        return self.mpi is None or self.size == 1

    def _op(self, op: str) -> Any:
        if op not in _OPS:
            raise ValueError(f"communicator: unknown reduction {op!r}; use one of {sorted(_OPS)}")
        return getattr(MPI, _OPS[op])

    # ------------------------------------------------------------------ collectives
    def allreduce(self, buf: np.ndarray, op: str = "sum") -> np.ndarray:
        """buf <- op over ranks of buf, in place."""
        _host(buf)
        if not self.is_single:
            self.mpi.Allreduce(MPI.IN_PLACE, buf, op=self._op(op))
        return buf

    def iallreduce(self, buf: np.ndarray, op: str = "sum") -> Request:
        """Start an in-place allreduce of ``buf``; the result is there after ``wait()``."""
        _host(buf)
        if self.is_single:
            return Request()
        return Request(self.mpi.Iallreduce(MPI.IN_PLACE, buf, op=self._op(op)))

    def reduce_scatter(self, sendbuf: np.ndarray, recvbuf: np.ndarray, op: str = "sum"
                       ) -> np.ndarray:
        """recvbuf <- rank r's block (``len(sendbuf) // size`` elements) of op over ranks."""
        _host(sendbuf), _host(recvbuf)
        if sendbuf.size != recvbuf.size * self.size:
            raise ValueError(f"reduce_scatter: send buffer of {sendbuf.size} elements is not "
                             f"{self.size} x the receive buffer's {recvbuf.size}")
        if self.is_single:
            recvbuf[...] = sendbuf.reshape(recvbuf.shape)
        else:
            self.mpi.Reduce_scatter_block(sendbuf, recvbuf, op=self._op(op))
        return recvbuf

    def allgather(self, sendbuf: np.ndarray, recvbuf: np.ndarray) -> np.ndarray:
        """recvbuf <- the concatenation of every rank's sendbuf, in rank order."""
        _host(sendbuf), _host(recvbuf)
        if recvbuf.size != sendbuf.size * self.size:
            raise ValueError(f"allgather: receive buffer of {recvbuf.size} elements is not "
                             f"{self.size} x the send buffer's {sendbuf.size}")
        if self.is_single:
            recvbuf.reshape(-1)[...] = sendbuf.reshape(-1)
        else:
            self.mpi.Allgather(sendbuf, recvbuf)
        return recvbuf

    def iallgather(self, sendbuf: np.ndarray, recvbuf: np.ndarray) -> Request:
        _host(sendbuf), _host(recvbuf)
        if self.is_single:
            recvbuf.reshape(-1)[...] = sendbuf.reshape(-1)
            return Request()
        return Request(self.mpi.Iallgather(sendbuf, recvbuf))

    def bcast(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """buf <- root's buf, in place."""
        _host(buf)
        if not self.is_single:
            self.mpi.Bcast(buf, root=root)
        return buf

    def send(self, buf: np.ndarray, dest: int, tag: int = 0) -> None:
        self._need_peers("send")
        self.mpi.Send(_host(buf), dest=dest, tag=tag)

    def recv(self, buf: np.ndarray, source: int, tag: int = 0) -> np.ndarray:
        self._need_peers("recv")
        self.mpi.Recv(_host(buf), source=source, tag=tag)
        return buf

    def isend(self, buf: np.ndarray, dest: int, tag: int = 0) -> Request:
        self._need_peers("isend")
        return Request(self.mpi.Isend(_host(buf), dest=dest, tag=tag))

    def irecv(self, buf: np.ndarray, source: int, tag: int = 0) -> Request:
        self._need_peers("irecv")
        return Request(self.mpi.Irecv(_host(buf), source=source, tag=tag))

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
