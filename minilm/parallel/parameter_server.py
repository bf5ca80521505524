"""A parameter server: the teaching counterpart of allreduce data parallelism.

Rank 0 is the *server*: it holds the parameters and the optimizer and computes nothing.
Ranks 1..W-1 are *workers*: each holds a replica of the model, reads its own data shard,
and computes gradients. Everything travels point to point (``Send``/``Recv`` of flat
NumPy buffers, nothing pickled).

Notation: θ_t the server's parameters at version t, g_r(θ) worker r's gradient on its
shard, η the learning rate, N = W - 1 workers, P the number of parameters (b bytes each).

**Synchronous mode** (``mode="sync"``)::

    every worker r:  pull θ_t, compute g_r(θ_t), push g_r          (Send to rank 0)
    server:          ḡ = (1/N) Σ_r g_r(θ_t)                         (Recv from each r)
                     θ_{t+1} = opt.step(θ_t, ḡ)                     (e.g. θ_t - η ḡ)
                     send θ_{t+1} to every worker

With equal shards, ḡ is the gradient of the mean loss over the union of the shards, so
the update is exactly allreduce data parallelism's (and a one-process run on the union;
tests/mpi/test_parameter_server.py checks it to 1e-10 in float64).

**Asynchronous mode** (``mode="async"``): no barrier. The server polls
(``Iprobe(ANY_SOURCE)``) and applies each gradient as it arrives to its *current*
parameters::

    worker r pulled version v_r, computed g_r(θ_{v_r}), pushes (v_r, g_r)
    server at version t:  τ = t - v_r                              (staleness, ≥ 0)
                          η_τ = η / (1 + τ)   if staleness_aware else η
                          θ_{t+1} = opt.step(θ_t, g_r(θ_{v_r})) with lr η_τ
                          send (t + 1, θ_{t+1}) back to worker r only

The staleness histogram ``{τ: count}`` is recorded. Fast workers are never held up by
slow ones, but each gradient was computed on parameters that are τ updates old.

**Traffic per step** (one synchronous step, bytes; headers of a few bytes ignored)::

    server:     receives N·P·b, sends N·P·b     -> 2 N P b, grows with the workers
    a worker:   sends P·b, receives P·b         -> 2 P b
    ring allreduce, every rank: 2 (W-1)/W · P·b sent (and as much received)  ≈ 2 P b

The server's link carries N times a worker's traffic: the single-node bottleneck that
made allreduce (every rank moves ~2P, no rank is special) the standard.

Usage (every rank runs the same code; see examples/parameter_server.py)::

    comm = world()
    model = make_model()                       # the same initial model on every rank
    opt = SGD(model.parameters(), lr=0.1) if comm.rank == 0 else None
    def grad_fn(step):                         # workers: backward on my shard, return loss
        loss = model_loss(model, my_shard(step)); loss.backward(); return loss.item()
    stats = run_parameter_server(model, opt, grad_fn, steps=100, comm=comm, mode="sync")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..autograd import no_grad
from ..backends import to_host
from ..nn.module import Module
from ..tensor import Tensor
from .comm import MPI, Communicator, world
from .data_parallel import _from_host, _scatter_back

__all__ = ["ParameterServer", "PSWorker", "flat_grads", "flat_params", "run_parameter_server",
           "set_flat_params", "staleness_summary", "traffic_per_step"]

# message tags (far from the failure handshake's 32000)
TAG_HEADER = 7101   # worker -> server: float64 [version the gradient was computed on, loss]
TAG_GRAD = 7102     # worker -> server: the flat gradient
TAG_VERSION = 7103  # server -> worker: int64 [version, keep going (1) or stop (0)]
TAG_PARAMS = 7104   # server -> worker: the flat parameters


# ---------------------------------------------------------------------------- flat buffers


def _params(model: Any) -> list:
    params = list(model.parameters()) if isinstance(model, Module) or hasattr(model, "parameters") \
        else list(model)
    dtypes = {np.dtype(p.dtype) for p in params}
    if len(dtypes) != 1:
        raise ValueError(f"parameter server: the parameters must share one dtype, got {dtypes}")
    return params


def flat_params(params: list) -> np.ndarray:
    """The parameters concatenated into one contiguous host buffer."""
    return np.concatenate([to_host(p.data).reshape(-1) for p in params])


def set_flat_params(params: list, flat: np.ndarray) -> None:
    """Every parameter <- its slice of ``flat`` (uploaded to a device parameter)."""
    with no_grad():
        _scatter_back(flat, params)


def flat_grads(params: list, out: np.ndarray | None = None) -> np.ndarray:
    """The gradients concatenated (zeros for a parameter without one)."""
    if out is None:
        out = np.zeros(sum(p.data.size for p in params), dtype=params[0].dtype)
    o = 0
    for p in params:
        n = p.data.size
        out[o:o + n] = 0.0 if p.grad is None else to_host(p.grad.data).reshape(-1)
        o += n
    return out


def _set_grads(params: list, flat: np.ndarray) -> None:
    o = 0
    for p in params:
        n = p.data.size
        p.grad = Tensor._make(_from_host(flat[o:o + n].reshape(p.shape).astype(p.data.dtype,
                                                                                   copy=True),
                                         p.data))  # on the parameter's device
        o += n


def traffic_per_step(n_params: int, world_size: int, itemsize: int = 4) -> dict:
    """Bytes moved per synchronous step (sent + received) by the server, by a worker, and
    by every rank of a ring allreduce over ``world_size`` ranks."""
    pb, n = n_params * itemsize, world_size - 1
    return {"ps_server": 2 * n * pb, "ps_worker": 2 * pb,
            "allreduce_rank": int(2 * 2 * (world_size - 1) / world_size * pb)}


# ---------------------------------------------------------------------------- the server


class ParameterServer:
    """Rank 0's side: holds the parameters (``model``) and ``optimizer``."""

    def __init__(self, model: Any, optimizer: Any, comm: Communicator,
                 staleness_aware: bool = False) -> None:
        if comm.rank != 0 or comm.size < 2:
            raise ValueError("ParameterServer runs on rank 0 of a job with at least 2 ranks")
        self.params, self.opt, self.comm = _params(model), optimizer, comm
        self.workers = list(range(1, comm.size))
        self.staleness_aware = staleness_aware
        self.version = 0
        self.flat = flat_params(self.params)
        self.grad = np.empty_like(self.flat)
        self.header = np.empty(2, dtype=np.float64)
        self.staleness: dict[int, int] = {}
        self.losses: list[float] = []
        self.bytes_sent = self.bytes_recv = 0
        self.wait_s = 0.0

    def _send_params(self, dest: int, go: bool = True) -> None:
        self.comm.send(np.array([self.version, int(go)], dtype=np.int64), dest, TAG_VERSION)
        self.comm.send(self.flat, dest, TAG_PARAMS)
        self.bytes_sent += self.flat.nbytes + 16

    def _recv_grad(self, source: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        self.comm.recv(self.header, source, TAG_HEADER)
        self.comm.recv(self.grad, source, TAG_GRAD)
        self.wait_s += time.perf_counter() - t0
        self.bytes_recv += self.grad.nbytes + 16
        return int(self.header[0]), float(self.header[1])

    def _apply(self, grad: np.ndarray, lr_scale: float = 1.0) -> None:
        _set_grads(self.params, grad)
        saved = [g["lr"] for g in self.opt.param_groups]
        if lr_scale != 1.0:
            for g in self.opt.param_groups:
                g["lr"] = g["lr"] * lr_scale
        self.opt.step()
        for g, lr in zip(self.opt.param_groups, saved):
            g["lr"] = lr
        self.opt.zero_grad()
        self.version += 1
        self.flat = flat_params(self.params)

    def run_sync(self, steps: int) -> None:
        for r in self.workers:
            self._send_params(r)
        for step in range(steps):
            total = np.zeros_like(self.flat)
            loss = 0.0
            for r in self.workers:  # fixed order: the sum is the same on every run
                _, lo = self._recv_grad(r)
                total += self.grad
                loss += lo
            self.losses.append(loss / len(self.workers))
            self._apply(total / len(self.workers))
            self.staleness[0] = self.staleness.get(0, 0) + len(self.workers)
            for r in self.workers:
                self._send_params(r, go=step < steps - 1)

    def run_async(self, steps: int) -> None:
        """``steps`` pushes per worker; each applied on arrival."""
        for r in self.workers:
            self._send_params(r)
        left = {r: steps for r in self.workers}
        status = MPI.Status()
        while any(left.values()):
            t0 = time.perf_counter()
            while not self.comm.mpi.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_HEADER, status=status):
                time.sleep(0)
            self.wait_s += time.perf_counter() - t0
            r = status.Get_source()
            v, loss = self._recv_grad(r)
            tau = self.version - v
            self.staleness[tau] = self.staleness.get(tau, 0) + 1
            self.losses.append(loss)
            self._apply(self.grad, 1.0 / (1.0 + tau) if self.staleness_aware else 1.0)
            left[r] -= 1
            self._send_params(r, go=left[r] > 0)


# ---------------------------------------------------------------------------- a worker


class PSWorker:
    """A worker's side: pull parameters, compute a gradient with ``grad_fn(step)`` (which
    runs backward on the replica and returns the loss), push it, repeat until told to stop."""

    def __init__(self, model: Any, comm: Communicator) -> None:
        self.params, self.comm = _params(model), comm
        self.flat = flat_params(self.params)
        self.gbuf = np.empty_like(self.flat)
        self.vbuf = np.empty(2, dtype=np.int64)
        self.bytes_sent = self.bytes_recv = 0
        self.wait_s = 0.0
        self.versions: list[int] = []

    def _pull(self) -> bool:
        t0 = time.perf_counter()
        self.comm.recv(self.vbuf, 0, TAG_VERSION)
        self.comm.recv(self.flat, 0, TAG_PARAMS)
        self.wait_s += time.perf_counter() - t0
        self.bytes_recv += self.flat.nbytes + 16
        set_flat_params(self.params, self.flat)
        return bool(self.vbuf[1])

    def run(self, grad_fn: Callable[[int], float]) -> None:
        go, step = self._pull(), 0
        while True:
            for p in self.params:
                p.grad = None
            loss = grad_fn(step)
            version = int(self.vbuf[0])
            self.versions.append(version)
            self.comm.send(np.array([version, loss], dtype=np.float64), 0, TAG_HEADER)
            self.comm.send(flat_grads(self.params, self.gbuf), 0, TAG_GRAD)
            self.bytes_sent += self.gbuf.nbytes + 16
            go = self._pull()
            step += 1
            if not go:
                return


# ---------------------------------------------------------------------------- one call


def run_parameter_server(model: Any, optimizer: Any, grad_fn: Callable[[int], float],
                         steps: int, comm: Communicator | None = None, mode: str = "sync",
                         staleness_aware: bool = False) -> dict:
    """Train with a parameter server; every rank calls this. Rank 0 needs ``optimizer``
    (workers pass None), workers need ``grad_fn``. ``steps``: server updates in sync mode,
    pushes per worker in async mode. At the end every rank's ``model`` holds the server's
    final parameters. Returns this rank's stats: ``role``, ``bytes_sent``, ``bytes_recv``,
    ``wait_s``, ``time_s``, and on the server ``losses`` (sync: per step the mean over
    workers; async: per update), ``staleness`` ({τ: count}), ``updates``."""
    comm = comm if comm is not None else world()
    if int(steps) < 1:  # (the workers would push a first gradient nobody receives)
        raise ValueError(f"parameter server: steps must be >= 1, got {steps}")
    if mode not in ("sync", "async"):
        raise ValueError(f"parameter server: mode must be 'sync' or 'async', got {mode!r}")
    if comm.size < 2 or MPI is None:
        raise RuntimeError("parameter server: needs mpi4py and at least 2 ranks "
                           "(mpiexec -n 3 ...): rank 0 serves, the others compute")
    t0 = time.perf_counter()
    if comm.rank == 0:
        if optimizer is None:
            raise ValueError("parameter server: rank 0 needs the optimizer")
        ps = ParameterServer(model, optimizer, comm, staleness_aware=staleness_aware)
        ps.run_sync(steps) if mode == "sync" else ps.run_async(steps)
        out = {"role": "server", "losses": ps.losses, "updates": ps.version,
               "staleness": {int(k): v for k, v in sorted(ps.staleness.items())},
               "bytes_sent": ps.bytes_sent, "bytes_recv": ps.bytes_recv, "wait_s": ps.wait_s}
        flat = ps.flat
    else:
        w = PSWorker(model, comm)
        w.run(grad_fn)
        out = {"role": "worker", "pushes": len(w.versions), "bytes_sent": w.bytes_sent,
               "bytes_recv": w.bytes_recv, "wait_s": w.wait_s}
        flat = w.flat
    comm.barrier()
    comm.bcast(flat, root=0)  # async: the last replies may precede other workers' updates
    if comm.rank != 0:
        set_flat_params(_params(model), flat)
    out["time_s"] = time.perf_counter() - t0
    return out


def staleness_summary(hist: dict) -> dict:
    """mean, max and share of stale (τ > 0) updates of a staleness histogram."""
    hist = {int(k): int(v) for k, v in hist.items()}
    n = sum(hist.values())
    if n == 0:
        return {"mean": 0.0, "max": 0, "stale_frac": 0.0}
    return {"mean": sum(k * v for k, v in hist.items()) / n, "max": max(hist),
            "stale_frac": sum(v for k, v in hist.items() if k > 0) / n}
