"""Run the CuPy backend's CUDA kernels on the CPU, thread for thread.

The CUDA source (minilm/backends/_cuda_source.py) is compiled as C++20 by g++ with a
prelude that gives the CUDA built-ins a CPU meaning:

- a launch runs the grid's blocks one after another on ``blockDim.x`` real threads
  (``std::thread``), with ``threadIdx`` / ``blockIdx`` thread-local and a barrier
  between blocks;
- ``__syncthreads()`` is a ``std::barrier`` over the block's threads, ``__shared__``
  is ``static`` (one block runs at a time, so that is the block's shared memory);
- ``__shfl_xor_sync(mask, v, m)``: every thread of the block publishes v, waits on the
  barrier, reads lane ``lane ^ m`` of its own warp, and waits again (every kernel here
  calls it from all threads of the block, as the butterfly reductions do);
- ``atomicAdd`` takes a mutex.

So the indexing, the strided loops, the block reductions across several warps and the
arithmetic all run as written; what cannot be checked here is timing and the memory
model of a real GPU. ``EmuLauncher`` plugs the result into the same argument checks as
the real launcher (minilm/backends/_cuda_kernels.py), so the CuPy backend's Python side
runs unchanged on NumPy arrays.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy

from minilm.backends._cuda_kernels import _CTYPES, KernelLauncher, kernel_signatures
from minilm.backends._cuda_source import CUDA_SOURCE

PRELUDE = r"""
#include <barrier>
#include <cmath>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
using std::exp; using std::log; using std::sqrt; using std::erf; using std::tanh;
using std::fmax; using std::isfinite;
struct emu_dim3 { unsigned x, y, z; };
static thread_local emu_dim3 threadIdx, blockIdx;
static emu_dim3 blockDim, gridDim;
static std::barrier<>* emu_barrier;
static double emu_slots[1024];
static std::mutex emu_mutex;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
template <typename T> T __shfl_xor_sync(unsigned, T v, int m) {
    const unsigned t = threadIdx.x;
    emu_slots[t] = (double)v;
    __syncthreads();
    T r = (T)emu_slots[(t & ~31u) | ((t & 31u) ^ (unsigned)m)];
    __syncthreads();
    return r;
}
template <typename T> T atomicAdd(T* a, T v) {
    std::lock_guard<std::mutex> g(emu_mutex);
    T old = *a; *a = old + v; return old;
}
static void emu_launch(unsigned gx, unsigned gy, unsigned bx, const std::function<void()>& f) {
    gridDim = {gx, gy, 1}; blockDim = {bx, 1, 1};
    std::barrier<> bar(bx);
    emu_barrier = &bar;
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < bx; ++t)
        threads.emplace_back([&, t] {
            for (unsigned y = 0; y < gy; ++y)
                for (unsigned x = 0; x < gx; ++x) {
                    threadIdx = {t, 0, 0}; blockIdx = {x, y, 0};
                    f();
                    bar.arrive_and_wait();  // the block is done before the next starts
                }
        });
    for (auto& th : threads) th.join();
}
"""

_ARG_CTYPES = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "double": ctypes.c_double,
               "unsigned long long": ctypes.c_ulonglong, "float": ctypes.c_float}


def _wrappers(signatures: dict) -> str:
    out = []
    for name, params in signatures.items():
        for ctype in _CTYPES:
            decl = ", ".join(f"{_subst(t, ctype)} {n}" for t, n in params)
            names = ", ".join(n for _, n in params)
            out.append(f'extern "C" void emu_{name}_{ctype}(unsigned emu_gx, unsigned emu_gy, '
                       f"unsigned emu_bx, {decl}) {{ emu_launch(emu_gx, emu_gy, emu_bx, "
                       f"[&] {{ {name}<{ctype}>({names}); }}); }}")
    return "\n".join(out)


def _subst(ptype: str, ctype: str) -> str:
    """A parameter type with the template's T replaced by ``ctype``."""
    return " ".join(ctype if w == "T" else w for w in ptype.split())


def build_library(directory: str | None = None, cuda_source: str = CUDA_SOURCE) -> str:
    """Compile the emulation of ``cuda_source`` into a shared library (cached by the
    source's hash)."""
    source = PRELUDE + cuda_source + _wrappers(kernel_signatures(cuda_source))
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    directory = directory or os.path.join(tempfile.gettempdir(), "minilm-cuda-emu")
    os.makedirs(directory, exist_ok=True)
    lib = os.path.join(directory, f"emu-{digest}.so")
    if not os.path.exists(lib):
        src = os.path.join(directory, f"emu-{digest}.cpp")
        with open(src, "w") as f:
            f.write(source)
        tmp = f"{lib}.{os.getpid()}.tmp"
        cmd = [shutil.which("g++") or "g++", "-std=c++20", "-O1", "-fPIC", "-shared",
               "-pthread", "-w", src, "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"g++ failed on the CUDA emulation:\n{done.stderr[-4000:]}")
        os.replace(tmp, lib)
    return lib


class EmuLauncher(KernelLauncher):
    """The kernels on the CPU (see the module docstring), on NumPy arrays."""

    def __init__(self, library: str | None = None) -> None:
        super().__init__(numpy)
        self.lib = ctypes.CDLL(library or build_library())
        self.launches: list = []  # (name, ctype, grid, block) of every launch, for tests

    def _run(self, name: str, ctype: str, grid: tuple, block: int, args: list) -> None:
        fn = getattr(self.lib, f"emu_{name}_{ctype}")
        params = self.signatures[name]
        fn.argtypes = [ctypes.c_uint] * 3 + [
            ctypes.c_void_p if t.endswith("*") else _ARG_CTYPES[_subst(t, ctype)]
            for t, _ in params]
        values = [a.ctypes.data if isinstance(a, numpy.ndarray) else a.item() for a in args]
        self.launches.append((name, ctype, grid, block))
        fn(grid[0], grid[1], block, *values)
