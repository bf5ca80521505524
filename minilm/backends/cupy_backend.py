"""The CuPy backend: every op on an NVIDIA GPU, with its hot kernels fused in CUDA.

``xp`` is CuPy, so every ``Function`` and every reference kernel (written against
``xp``) runs on the device unchanged: matrix products go to cuBLAS through
``cupy.matmul``, everything else to CuPy's elementwise and reduction kernels. Where the
reference would launch many kernels and make many temporaries (a softmax is five
passes over memory in NumPy form), this backend overrides the kernel with one CUDA
kernel of its own (``_cuda_kernels.py``, compiled once by NVRTC and cached by CuPy).

Random numbers come from ``CounterRng`` (counter_rng.py): its state is two integers, it
has the NumPy ``Generator`` methods minilm uses, and it draws the same numbers on the
host and the device.

The backend can also be built on a CuPy-like module (``CupyBackend(xp=...)``): the
tests build it on a host-memory stand-in that behaves like CuPy at the host/device
boundary, to check on a machine without a GPU that nothing on the device path quietly
falls back to NumPy. On such a module the fused kernels are off and the references run.
"""

from __future__ import annotations

from typing import Any

import numpy

from . import register_device_array
from .counter_rng import CounterRng
from .numpy_backend import NumpyBackend

__all__ = ["CupyBackend", "import_cupy"]


def import_cupy() -> Any:
    """CuPy, when it imports and sees a CUDA device; else ImportError saying what is
    missing and how to get it."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"CuPy is not installed ({exc}); pip install 'minilm[cuda]' "
                          "(cupy-cuda12x) on a machine with an NVIDIA GPU") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, or a driver too old
        raise ImportError(f"CuPy imports but finds no usable CUDA device ({exc})") from exc
    if count < 1:
        raise ImportError("CuPy imports but this machine has no CUDA device")
    return cupy


class CupyBackend(NumpyBackend):
    """``xp`` is CuPy; kernels fused in CUDA where the reference would make temporaries."""

    name = "cupy"
    device = "cuda"
    flash_min_len = None  # causal attention: cuBLAS batched GEMMs + the fused softmax

    def __init__(self, xp: Any = None) -> None:
        real = xp is None
        self.xp = import_cupy() if real else xp
        register_device_array(self.xp.ndarray, self.name)
        self.kernels = None
        if real:
            from ._cuda_kernels import CudaKernels

            self.kernels = CudaKernels(self.xp)
        self.seed(NumpyBackend.default_seed)

    # ------------------------------------------------------------------ random numbers
    @property
    def rng(self) -> CounterRng:
        return self._rng

    @rng.setter
    def rng(self, generator: CounterRng) -> None:
        self._rng = generator

    def seed(self, seed: int) -> None:
        self._rng = CounterRng(self.xp, seed)

    def get_rng_state(self) -> dict:
        return self._rng.state

    def set_rng_state(self, state: dict) -> None:
        self._rng.set_state(state)

    # ------------------------------------------------------------------ arrays
    def asarray(self, data: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, array: Any) -> numpy.ndarray:
        """A host copy of a device array (NumPy arrays are returned as they are)."""
        if isinstance(array, numpy.ndarray):
            return array
        return self.xp.asnumpy(array)
