"""Data parallelism: every rank holds the whole model, reads its own share of the batch,
and the gradients are averaged over the data-parallel ranks before the optimizer step.

Usage (``python -m`` script under ``mpiexec -n 2``)::

    comm = ProcessGrid(dp=2).dp_comm            # or world()
    model = DataParallel(GPT(cfg), comm)        # parameters broadcast from rank 0
    opt = AdamW(model.parameters(), lr=1e-3)
    for x, y in my_shard_of_the_data:           # DistributedSampler: disjoint shards
        _, loss = model(x, y)
        loss.backward()                         # buckets are allreduced *during* backward
        model.finish()                          # wait; p.grad <- average over ranks
        opt.step(); opt.zero_grad()

How the gradients travel — bucketed flat buffers, as in PyTorch DDP::

    registration order   p0 p1 p2 p3 p4 p5 p6 p7          (forward runs p0 .. p7)
    bucket order         [p7 p6 p5] [p4 p3] [p2 p1 p0]    (reversed: backward order)
                          bucket 0   bucket 1  bucket 2
    backward:  grad p7 ready -> copy into bucket 0's flat buffer
               ...  p5 ready -> bucket 0 full -> comm.iallreduce(bucket 0) starts,
                                while backward goes on computing p4, p3, ...
    finish():  wait for every bucket, divide by world size, copy back into each p.grad

Buckets are *launched in order* (bucket i only after buckets 0..i-1), so every rank issues
the same sequence of collectives even if its gradients become ready in another order.

Details worth knowing:

- ``finish()`` (alias ``wait()``) must run after the synchronised backward and before
  ``optimizer.step()``. When every parameter received a gradient, the hook of the last
  one calls it automatically, so ``p.grad`` already holds the average when
  ``backward()`` returns; calling ``finish()`` again is then a no-op. It is *required*
  when some parameters got no gradient this step (the buckets holding them cannot fill
  up during backward). Forgetting it is caught at the next forward (RuntimeError).
- Parameters without a gradient: each bucket carries one extra "has a gradient" flag per
  parameter, summed by the same allreduce. A parameter that got a gradient on *some*
  rank gets the average over all ranks, with zeros for the ranks that had none (exactly
  the gradient of the global loss); one that got no gradient on *any* rank keeps
  ``p.grad = None``, so the optimizer skips it exactly as in one process.
- ``no_sync()``: inside it backward only accumulates into ``p.grad`` locally (the hooks
  do nothing); the next backward outside it reduces the accumulated sum. The backward
  must run inside the block (the flag is read when the gradients arrive).
- ``overlap=False``: buckets are filled during backward but all allreduced in
  ``finish()`` (the no-overlap baseline of ``bench/parallel.py``).
- ``compress="fp16"``: a bucket is scaled by 1/world (so the sum cannot overflow where
  the average would not) and cast to float16 for the transfer, then cast back. How the
  halves are summed is ``fp16_reduce``: ``"mpi"`` allreduces them in float16 (MPI does
  the sum; MPICH >= 4 can, in software, about 10x slower than a float32 sum here);
  ``"gather"`` allgathers every rank's halves and sums them in the bucket's dtype with
  NumPy (the same bytes as an allreduce for 2 ranks, (W-1)/(2(W-1)/W) = W/2 times more
  beyond); ``"auto"`` (default) gathers for 2 ranks or when MPI cannot sum float16, and
  lets MPI sum otherwise. Error per element is at most ``W * 2**-11 * mean_i |g_i| +
  2 * W * 2**-25`` (a float16 rounding of each scaled term and, with "mpi", of each
  partial sum; 2**-25 is half the subnormal spacing), tested in
  tests/mpi/test_data_parallel.py. Values past 65504 become inf, which a GradScaler would
  then see.
- Everything goes through host (NumPy) buffers; CuPy gradients are copied to the host
  and back (the buckets are host arrays, whatever ``Communicator.cuda_aware`` says:
  docs/gpu.md, "MPI + GPU").

:class:`LocalSGD` is the other option: no gradient communication at all, the ranks run
their own optimizer steps and *average the parameters* every ``sync_every`` steps.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..autograd import no_grad
from ..backends import backend_for_array, is_device_array, to_host
from ..nn.module import Module
from ..tensor import Tensor
from .comm import Communicator, Request, world

__all__ = ["DataParallel", "LocalSGD", "assign_buckets", "average_parameters",
           "broadcast_parameters", "check_same_layout", "to_half"]

_MB = 1 << 20


# ---------------------------------------------------------------------------- host staging


def _from_host(a: np.ndarray, like: Any) -> Any:
    """``a`` as an array of the same backend as ``like`` (no copy for NumPy)."""
    if not is_device_array(like):
        return a
    return backend_for_array(like).xp.asarray(a)  # host -> device


def to_half(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = x.astype(float16)``, bit for bit (round to nearest even), but fast.

    NumPy converts a value that lands in float16's *subnormal* range (``|x| < 2**-14``,
    i.e. most gradients once scaled) one slow element at a time: about 40x slower than
    the rest. Those values are multiples of ``2**-24``, so their float16 bit pattern is
    just ``sign << 15 | rint(|x| * 2**24)`` (the scaling is exact; ``rint`` rounds half
    to even; a result of 1024 is the bit pattern of ``2**-14``, the smallest normal)."""
    tiny = np.abs(x) < 2.0 ** -14          # NaN compares False: converted by NumPy
    with np.errstate(over="ignore"):       # past 65504 -> inf, as documented
        out[...] = np.where(tiny, 0.0, x)
    idx = np.flatnonzero(tiny)
    if idx.size:
        v = x.reshape(-1)[idx]
        q = np.abs(np.rint(v * 2.0 ** 24)).astype(np.uint16)
        q |= np.signbit(v).astype(np.uint16) << 15
        out.reshape(-1).view(np.uint16)[idx] = q
    return out


# ---------------------------------------------------------------------------- parameter sync


def _flat_groups(params: list) -> dict:
    """Parameters grouped by dtype: {dtype: [params]} in the given order."""
    groups: dict = {}
    for p in params:
        groups.setdefault(np.dtype(p.dtype), []).append(p)
    return groups


def broadcast_parameters(params: Iterable, comm: Communicator, root: int = 0) -> None:
    """Every rank's parameters <- root's, one flat ``Bcast`` per dtype."""
    params = list(params)
    if comm.size == 1 or not params:
        return
    with no_grad():
        for dtype, ps in _flat_groups(params).items():
            flat = np.concatenate([to_host(p.data).reshape(-1) for p in ps]).astype(dtype)
            comm.bcast(flat, root=root)
            _scatter_back(flat, ps)


def average_parameters(params: Iterable, comm: Communicator) -> None:
    """Every rank's parameters <- their mean over the ranks (one flat allreduce per dtype)."""
    params = list(params)
    if comm.size == 1 or not params:
        return
    with no_grad():
        for dtype, ps in _flat_groups(params).items():
            flat = np.concatenate([to_host(p.data).reshape(-1) for p in ps]).astype(dtype)
            comm.allreduce(flat)
            flat *= 1.0 / comm.size
            _scatter_back(flat, ps)


def _scatter_back(flat: np.ndarray, params: list) -> None:
    o = 0
    for p in params:
        n = p.data.size
        p.data[...] = _from_host(flat[o:o + n].reshape(p.shape), p.data)
        p._version.value += 1
        o += n


def check_same_layout(comm: Communicator, who: str, layout: list) -> None:
    """Refuse, on every rank at once, to start when the ranks disagree on the parameters
    (count, shapes, dtypes): the flat buffers would not line up and a collective of
    different lengths would hang or mix numbers."""
    if comm.size == 1:
        return
    layouts = comm.allgather_json(layout)
    for r, other in enumerate(layouts):
        if other != layouts[0]:
            n0 = sum(int(np.prod(e[0])) for e in layouts[0])
            nr = sum(int(np.prod(e[0])) for e in other)
            raise ValueError(f"{who}: ranks disagree on the parameters: rank 0 has "
                             f"{len(layouts[0])} tensors ({n0} elements), rank {r} has "
                             f"{len(other)} ({nr} elements); build the same model on every rank")


# ---------------------------------------------------------------------------- buckets


class _Bucket:
    """A flat buffer holding the gradients of a few parameters, plus one "has a gradient"
    flag per parameter after them::

        buf = [ g(p_a) ... | g(p_b) ... | g(p_c) ... | flag_a flag_b flag_c ]
    """

    def __init__(self, index: int, params: list, dtype: np.dtype) -> None:
        self.index = index
        self.params = params
        self.dtype = dtype
        self.offsets = []
        o = 0
        for p in params:
            self.offsets.append(o)
            o += p.data.size
        self.numel = o
        self.buf = np.zeros(o + len(params), dtype=dtype)
        self.half: np.ndarray | None = None  # the float16 copy, with compress="fp16"
        self.gathered: np.ndarray | None = None  # fp16 fallback: every rank's halves
        self.ready: list[bool] = [False] * len(params)
        self.n_ready = 0
        self.request: Request | None = None
        self.launched = False

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def reset(self) -> None:
        self.ready = [False] * len(self.params)
        self.n_ready = 0
        self.request = None
        self.launched = False

    def fill(self, j: int) -> None:
        """Copy parameter j's current ``.grad`` (or zeros) into the buffer; set its flag."""
        p = self.params[j]
        o, n = self.offsets[j], p.data.size
        if p.grad is None:
            self.buf[o:o + n] = 0
            self.buf[self.numel + j] = 0
        else:
            self.buf[o:o + n] = to_host(p.grad.data).reshape(-1)
            self.buf[self.numel + j] = 1
        if not self.ready[j]:
            self.ready[j] = True
            self.n_ready += 1

    @property
    def full(self) -> bool:
        return self.n_ready == len(self.params)

    def __repr__(self) -> str:
        return (f"<bucket {self.index}: {len(self.params)} parameters, {self.numel} "
                f"{self.dtype} elements>")


def assign_buckets(params: list, bucket_size_mb: float) -> list[list[int]]:
    """Indices into ``params`` for each bucket: parameters are taken in *reverse* order
    (the order backward produces their gradients) and a bucket is closed as soon as it
    holds ``bucket_size_mb`` MiB or more, or when the dtype changes. A parameter larger
    than the cap gets a bucket of its own."""
    if not bucket_size_mb > 0:
        raise ValueError(f"DataParallel: bucket_size_mb must be > 0, got {bucket_size_mb!r}")
    cap = bucket_size_mb * _MB
    buckets: list[list[int]] = []
    cur: list[int] = []
    cur_bytes = 0
    cur_dtype = None
    for i in reversed(range(len(params))):
        p = params[i]
        dt = np.dtype(p.dtype)
        if cur and dt != cur_dtype:
            buckets.append(cur)
            cur, cur_bytes = [], 0
        cur.append(i)
        cur_dtype = dt
        cur_bytes += p.data.size * dt.itemsize
        if cur_bytes >= cap:
            buckets.append(cur)
            cur, cur_bytes = [], 0
    if cur:
        buckets.append(cur)
    return buckets


# ---------------------------------------------------------------------------- DataParallel


class DataParallel(Module):
    """``DataParallel(module, comm=None, bucket_size_mb=25, overlap=True, compress=None,
    broadcast=True, fp16_reduce="auto")``: wraps ``module`` (``self.module``) so that ``backward()``
    averages the gradients over ``comm`` (default: the world). See the module docstring.

    ``model(*args)`` calls ``module(*args)``; save checkpoints from ``model.module``.
    ``stats`` accumulates, since ``reset_stats()``: ``wait_s`` (seconds blocked waiting
    for communication in ``finish()``), ``hook_s`` (seconds in the hooks: copies and
    launches), ``rounds``, ``launched_in_backward`` / ``launched_in_finish`` (buckets)."""

    def __init__(self, module: Module, comm: Communicator | None = None,
                 bucket_size_mb: float = 25.0, overlap: bool = True,
                 compress: str | None = None, broadcast: bool = True,
                 fp16_reduce: str = "auto") -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel: expected a Module, got {type(module).__name__}")
        if compress not in (None, "fp16"):
            raise ValueError(f"DataParallel: compress must be None or 'fp16', got {compress!r}")
        if fp16_reduce not in ("auto", "mpi", "gather"):
            raise ValueError("DataParallel: fp16_reduce must be 'auto', 'mpi' or 'gather', got "
                             f"{fp16_reduce!r}")
        self.module = module
        self.comm = comm if comm is not None else world()
        self.overlap = bool(overlap)
        self.compress = compress
        self.bucket_size_mb = float(bucket_size_mb)
        # everything that can fail comes before the broadcast and the hooks
        check_same_layout(self.comm, "DataParallel", [[list(p.shape), str(p.dtype),
                                                       p.requires_grad] for p in module.parameters()])
        self._params = [p for p in module.parameters() if p.requires_grad]
        layout = assign_buckets(self._params, self.bucket_size_mb)
        self.fp16_reduce = fp16_reduce  # resolved to "mpi" or "gather"
        if compress == "fp16":
            if fp16_reduce == "auto":
                self.fp16_reduce = "gather" if self.comm.size == 2 else "mpi"
            if self.fp16_reduce == "mpi" and self.comm.size > 1 and not self._probe_fp16():
                if fp16_reduce == "mpi":
                    raise RuntimeError("DataParallel: this MPI cannot sum float16 buffers; use "
                                       "fp16_reduce='gather' or 'auto'")
                self.fp16_reduce = "gather"
        if broadcast:
            broadcast_parameters(module.parameters(), self.comm)
        self._buckets: list[_Bucket] = []
        self._where: dict[int, tuple[int, int]] = {}  # id(param) -> (bucket, slot)
        for b, idx in enumerate(layout):
            ps = [self._params[i] for i in idx]
            bucket = _Bucket(b, ps, np.dtype(ps[0].dtype))
            if compress == "fp16":
                bucket.half = np.zeros(bucket.buf.size, dtype=np.float16)
            self._buckets.append(bucket)
            for j, p in enumerate(ps):
                self._where[id(p)] = (b, j)
        self._sync = True
        self._in_round = False      # a synchronised backward has started filling buckets
        self._auto_finished = False  # ... and the last hook already finished it
        self._next_launch = 0
        self._n_ready = 0           # parameters whose hook fired in this round
        self._handles = [p.register_post_accumulate_grad_hook(self._hook) for p in self._params]
        self.reset_stats()

    # ------------------------------------------------------------------ user API
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._in_round:
            raise RuntimeError(
                "DataParallel: the previous backward's gradient reduction was never finished "
                "(some parameters got no gradient, so it could not finish by itself); call "
                "model.finish() after loss.backward() and before optimizer.step()")
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward inside this block accumulates gradients locally, with no
        communication; the first backward after it averages the accumulated sum. (Or
        run every micro-batch's backward in it and call ``finish()`` once after.)"""
        old = self._sync
        self._sync = False
        try:
            yield
        finally:
            self._sync = old

    def finish(self) -> None:
        """Wait for every bucket's allreduce (starting those not started yet), and write
        the average over ranks into each ``p.grad``. Call after ``backward()`` and
        before ``optimizer.step()``; a no-op when the last hook already did it. Every
        rank must call it (it is a collective when there is work left)."""
        if self._auto_finished:
            self._auto_finished = False
            return
        self._auto_finished = False
        for bucket in self._buckets:  # parameters whose hook did not fire this round
            for j in range(len(bucket.params)):
                if not bucket.ready[j]:
                    if bucket.launched:  # pragma: no cover - launched buckets are full
                        raise AssertionError("DataParallel: launched bucket is not full")
                    bucket.fill(j)
        self._launch_ready(in_backward=False)
        t0 = time.perf_counter()
        for bucket in self._buckets:
            bucket.request.wait()
        self.stats["wait_s"] += time.perf_counter() - t0
        with no_grad():
            for bucket in self._buckets:
                self._write_back(bucket)
                bucket.reset()
        self._next_launch = 0
        self._n_ready = 0
        self._in_round = False
        self.stats["rounds"] += 1

    wait = finish

    def reset_stats(self) -> None:
        self.stats = {"wait_s": 0.0, "hook_s": 0.0, "rounds": 0,
                      "launched_in_backward": 0, "launched_in_finish": 0}

    def remove_hooks(self) -> None:
        """Detach from the module (its parameters stop triggering communication)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def buckets(self) -> list:
        """The buckets, in launch order (each has ``params``, ``numel``, ``nbytes``)."""
        return list(self._buckets)

    def extra_repr(self) -> str:
        return (f"world={self.comm.size}, buckets={len(self._buckets)}, "
                f"bucket_size_mb={self.bucket_size_mb}, overlap={self.overlap}, "
                f"compress={self.compress}" + (f" ({self.fp16_reduce})" if self.compress else ""))

    # ------------------------------------------------------------------ machinery
    def _hook(self, p: Tensor) -> None:
        if not self._sync:
            return
        t0 = time.perf_counter()
        if not self._in_round:
            self._in_round = True
            self._auto_finished = False
        b, j = self._where[id(p)]
        bucket = self._buckets[b]
        if bucket.ready[j]:
            raise RuntimeError(
                f"DataParallel: a parameter of shape {p.shape} received a second gradient "
                "before the reduction of the first finished; call model.finish() (and "
                "optimizer.step()) between backward passes, or accumulate under "
                "model.no_sync()")
        bucket.fill(j)
        self._n_ready += 1
        if self.overlap:
            for other in self._buckets[:self._next_launch]:  # let MPI make progress
                if other.request is not None:
                    other.request.test()
            if bucket.full:
                self._launch_ready(in_backward=True)
        self.stats["hook_s"] += time.perf_counter() - t0
        if self._n_ready == len(self._params):
            self.finish()               # every parameter has its gradient: finish now
            self._auto_finished = True

    def _launch_ready(self, in_backward: bool) -> None:
        """Start the allreduce of every full bucket from the next one in order on."""
        while self._next_launch < len(self._buckets) and self._buckets[self._next_launch].full:
            bucket = self._buckets[self._next_launch]
            self._start(bucket)
            self.stats["launched_in_backward" if in_backward else "launched_in_finish"] += 1
            self._next_launch += 1

    def _start(self, bucket: _Bucket) -> None:
        bucket.launched = True
        if self.compress == "fp16":
            np.multiply(bucket.buf, 1.0 / self.comm.size, out=bucket.buf)
            to_half(bucket.buf, bucket.half)
            if self.fp16_reduce == "mpi":
                bucket.request = self.comm.iallreduce(bucket.half)
            else:  # gather everyone's halves, sum them locally
                if bucket.gathered is None:
                    bucket.gathered = np.empty(bucket.half.size * self.comm.size, np.float16)
                bucket.request = self.comm.iallgather(bucket.half, bucket.gathered)
        else:
            bucket.request = self.comm.iallreduce(bucket.buf)

    def _write_back(self, bucket: _Bucket) -> None:
        buf = bucket.buf
        if self.compress == "fp16":
            if self.fp16_reduce == "mpi":
                buf[...] = bucket.half
            else:
                parts = bucket.gathered.reshape(self.comm.size, -1)
                buf[...] = parts[0]
                for k in range(1, self.comm.size):
                    buf += parts[k]
        else:
            buf *= 1.0 / self.comm.size
        for j, p in enumerate(bucket.params):
            if buf[bucket.numel + j] == 0:  # no rank had a gradient: leave p.grad None
                continue
            o, n = bucket.offsets[j], p.data.size
            avg = buf[o:o + n].reshape(p.shape)
            if p.grad is None:
                p.grad = Tensor._make(_from_host(avg.astype(p.data.dtype, copy=True), p.data))
            else:
                p.grad.data[...] = _from_host(avg, p.grad.data)
                p.grad._version.value += 1

    def _probe_fp16(self) -> bool:
        """Can this MPI sum float16? (MPICH >= 4 can.) Every rank gets the same answer."""
        try:
            self.comm.allreduce(np.ones(1, dtype=np.float16))
            return True
        except Exception:  # pragma: no cover - depends on the MPI library
            return False


# ---------------------------------------------------------------------------- local SGD


class LocalSGD:
    """``LocalSGD(module, comm=None, sync_every=k, broadcast=True)``: periodic parameter
    averaging. Each rank trains on its own data with its own optimizer and no gradient
    communication; call ``step()`` after every ``optimizer.step()`` and every ``k``-th
    call replaces each parameter by its mean over the ranks (one flat allreduce).

    With ``k = 1`` and an optimizer linear in the gradient (SGD, with momentum and weight
    decay) this equals gradient averaging; with Adam it does not (the moments stay local)
    and is its own algorithm. Larger ``k`` trades communication for some drift between
    replicas. Optimizer state is not averaged."""

    def __init__(self, module: Module, comm: Communicator | None = None, sync_every: int = 1,
                 broadcast: bool = True) -> None:
        if not isinstance(sync_every, int) or isinstance(sync_every, bool) or sync_every < 1:
            raise ValueError(f"LocalSGD: sync_every must be a positive int, got {sync_every!r}")
        self.module = module
        self.comm = comm if comm is not None else world()
        self.sync_every = sync_every
        self.steps = 0
        self.syncs = 0
        if broadcast:
            broadcast_parameters(module.parameters(), self.comm)

    def step(self) -> bool:
        """Count one optimizer step; average the parameters if it is the k-th. Returns
        whether it averaged (a collective: every rank calls ``step()`` equally often)."""
        self.steps += 1
        if self.steps % self.sync_every:
            return False
        self.sync()
        return True

    def sync(self) -> None:
        """Average the parameters now."""
        average_parameters(self.module.parameters(), self.comm)
        self.syncs += 1
