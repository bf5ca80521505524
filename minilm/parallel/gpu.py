"""MPI with GPUs: one rank per GPU, and collectives on device (CuPy) arrays.

One rank per GPU. The ranks of one node are told apart by their *local rank*, their
rank in the communicator of the processes that share the node's memory
(``Split_type(COMM_TYPE_SHARED)``, ``Communicator.split_shared``); local rank r uses
GPU ``r % count``::

    node A: world ranks 0 1 2 3 -> local ranks 0 1 2 3 -> cupy.cuda.Device(0 1 2 3)
    node B: world ranks 4 5 6 7 -> local ranks 0 1 2 3 -> cupy.cuda.Device(0 1 2 3)

``select_device(world())`` does this (``setup_rank_device(backend, world())``: only for
the cupy backend in a job of several processes); call it on every rank (it is a
collective) *before* the CuPy backend or any device array is created, so that nothing
lands on GPU 0 first.

Collectives on device arrays. MPI reads and writes memory through pointers; a plain MPI
library only understands host pointers. So by default ``Communicator`` *stages* a
device buffer through host memory::

    device buf --(to_host: a copy)--> host copy --MPI call--> host copy --(upload)--> buf

(the upload only for buffers MPI writes: the in-place allreduce, the receive buffers).
A *CUDA-aware* MPI library (Open MPI or MPICH built with CUDA, MVAPICH2-GDR, …) accepts
device pointers and moves the data GPU to GPU (NVLink, GPUDirect RDMA) without the two
copies; mpi4py hands it the pointer through ``__cuda_array_interface__``. Whether the
library is CUDA-aware cannot be told portably, so ``cuda_aware_mpi()`` says yes when:

- the environment says so: ``MINILM_CUDA_AWARE_MPI=1`` (``0`` forces staging), or
- mpi4py reports it: ``MPI.Query_cuda_support()`` (MPI 4.1's ``MPIX_Query_cuda_support``,
  where mpi4py and the library have it) returns True.

The device is synchronised before a device pointer is given to MPI: CuPy kernels run
asynchronously on a stream, and MPI does not wait for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends import backend_for_array, is_device_array, to_host

__all__ = ["cuda_aware_mpi", "local_rank", "select_device", "setup_rank_device", "stage",
           "synchronize"]

ENV_CUDA_AWARE = "MINILM_CUDA_AWARE_MPI"


def cuda_aware_mpi(mpi: Any = None) -> bool:
    """Whether collectives may be given device arrays directly (see the module
    docstring): ``MINILM_CUDA_AWARE_MPI`` if set (1/0, true/false, yes/no), else what
    ``mpi`` (the ``mpi4py.MPI`` module; imported if None) reports, else False."""
    env = os.environ.get(ENV_CUDA_AWARE, "").strip().lower()
    if env:
        if env in ("1", "true", "yes", "on"):
            return True
        if env in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{ENV_CUDA_AWARE}={env!r}: use 1 (the MPI library is CUDA-aware) "
                         "or 0 (stage device buffers through host memory)")
    if mpi is None:
        try:
            from mpi4py import MPI as mpi
        except ImportError:
            return False
    query = getattr(mpi, "Query_cuda_support", None)
    if query is None:
        return False
    try:
        return bool(query())
    except Exception:  # the call exists in mpi4py, not in the library it was built on
        return False


def local_rank(comm: Any) -> int:
    """This process's rank among the processes of ``comm`` (a ``Communicator``, e.g.
    ``world()``) that share its node's memory. A collective over ``comm``."""
    return comm.split_shared().rank


def select_device(comm: Any, cupy: Any = None) -> int:
    """Make GPU ``local_rank(comm) % count`` this process's current CUDA device and
    return its number. ``cupy``: the CuPy module (default: imported, with a clear
    ImportError when it or a device is missing). A collective over ``comm`` (e.g.
    ``world()``): every rank calls it, before creating device arrays."""
    if cupy is None:
        from ..backends.cupy_backend import import_cupy

        cupy = import_cupy()
    count = int(cupy.cuda.runtime.getDeviceCount())
    if count < 1:
        raise RuntimeError("select_device: this node has no CUDA device")
    device = local_rank(comm) % count
    cupy.cuda.Device(device).use()
    return device


def setup_rank_device(backend: str | None, comm: Any, cupy: Any = None) -> int | None:
    """What ``minilm train`` calls before selecting its backend: ``select_device(comm)``
    when ``backend`` (default: ``MINILM_BACKEND``) is ``"cupy"`` and ``comm`` has more
    than one process; the device chosen, or None (nothing done). A collective over
    ``comm`` in the first case: every rank calls it with the same backend."""
    backend = backend or os.environ.get("MINILM_BACKEND")
    if backend != "cupy" or comm.size < 2:
        return None
    return select_device(comm, cupy)


def synchronize(array: Any) -> None:
    """Wait until the kernels queued on the current device have finished (before MPI
    reads a device buffer that they write)."""
    xp = backend_for_array(array).xp
    cuda = getattr(xp, "cuda", None)
    if cuda is not None and hasattr(cuda, "Device"):
        cuda.Device().synchronize()


def check_buffer(buf: Any) -> None:
    """A communicator buffer: a NumPy or a device array, C-contiguous."""
    if not (isinstance(buf, np.ndarray) or is_device_array(buf)):
        raise TypeError(f"communicator: expected a NumPy or a device (CuPy) array, got "
                        f"{type(buf).__module__}.{type(buf).__name__}")
    if not buf.flags.c_contiguous:
        raise ValueError("communicator: buffers must be C-contiguous (use ascontiguousarray)")


def stage(buf: Any, writes: bool, cuda_aware: bool) -> tuple[Any, Callable[[], None]]:
    """What to hand MPI for ``buf``, and what to call once MPI is done with it.

    A NumPy buffer is handed over as it is (it must be C-contiguous). A device buffer
    is handed over as it is when ``cuda_aware`` (after a device synchronise); otherwise
    as a host copy, and, when MPI ``writes`` the buffer, the returned ``finish`` uploads
    the host copy back into ``buf``. ``finish`` does nothing in the other cases."""
    check_buffer(buf)
    if not is_device_array(buf):
        return buf, _nothing
    if cuda_aware:
        synchronize(buf)
        return buf, _nothing
    host = np.ascontiguousarray(to_host(buf))  # device -> host (waits for the device)
    if not writes:
        return host, _nothing
    xp = backend_for_array(buf).xp

    def finish() -> None:  # host -> device, into the caller's array
        buf[...] = xp.asarray(host)

    return host, finish


def _nothing() -> None:
    return None
