"""Compiling and launching the CuPy backend's CUDA kernels (their source: _cuda_source.py).

``KernelLauncher`` reads every kernel's parameter list from the source, so a launch
checks what it is given before the GPU sees it: an array must be of the dtype its
pointer parameter names (``const T*`` of the instantiation's T, ``long long*`` int64,
``bool*`` bool, ``int*`` int32, ``double*`` float64) and C-contiguous, and a scalar is
converted to the exact C type of its parameter (``long long`` -> int64, ``T`` ->
float32 or float64, ...). ``CudaKernels`` compiles the source with NVRTC through
``cupy.RawModule`` on first use; a launcher over another "device" (the tests' CPU
emulation of these kernels, tests/cuda_emu) reuses the same checks.
"""

from __future__ import annotations

import re
from typing import Any

import numpy

from ._cuda_source import CUDA_SOURCE

__all__ = ["CudaKernels", "KernelLauncher", "kernel_signatures", "row_threads"]

_CTYPES = {"float": numpy.float32, "double": numpy.float64}
_CTYPE_OF = {numpy.dtype(v): k for k, v in _CTYPES.items()}  # float32 -> "float", ...
_SCALARS = {"long long": numpy.int64, "int": numpy.int32, "double": numpy.float64,
            "unsigned long long": numpy.uint64}
_POINTERS = {"long long": numpy.int64, "bool": numpy.bool_, "int": numpy.int32,
             "double": numpy.float64}


def kernel_signatures(source: str = CUDA_SOURCE) -> dict:
    """{kernel name: [(C type, parameter name), ...]} of every ``__global__`` template."""
    out = {}
    for m in re.finditer(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", source):
        params = []
        for part in m.group(2).split(","):
            words = part.replace("*", " * ").split()
            params.append((" ".join(words[:-1]), words[-1]))
        out[m.group(1)] = params
    return out


def row_threads(C: int) -> int:
    """Threads per block of a row kernel over rows of C: a power of two from 32 (one
    warp) up to 256, or 1024 for rows of 16384 and more (a vocabulary's logits)."""
    top = 1024 if C >= 16384 else 256
    return max(32, min(top, 1 << max(0, int(C) - 1).bit_length()))


class KernelLauncher:
    """``launcher(name, dtype, grid, block, *args)`` runs kernel ``name<T>`` (T from
    ``dtype``) on a ``grid`` of blocks (an int or (x, y)) of ``block`` threads after
    checking and converting ``args`` against its parameter list. Subclasses provide
    ``_run(name, ctype, grid, block, args)``."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.signatures = kernel_signatures()

    def __call__(self, name: str, dtype: Any, grid: Any, block: int, *args: Any) -> None:
        dtype = numpy.dtype(dtype)
        ctype = _CTYPE_OF.get(dtype)
        if ctype is None:
            raise TypeError(f"cuda kernel {name}: no instantiation for {dtype}")
        params = self.signatures[name]
        if len(args) != len(params):
            raise TypeError(f"cuda kernel {name}: takes {len(params)} arguments, got {len(args)}")
        converted = [self._convert(name, ctype, p, a) for p, a in zip(params, args, strict=True)]
        grid = (int(grid), 1) if isinstance(grid, int | numpy.integer) else tuple(map(int, grid))
        if grid[0] < 1 or grid[1] < 1:
            return  # nothing to do (an empty array)
        self._run(name, ctype, grid, int(block), converted)

    def _convert(self, name: str, ctype: str, param: tuple, value: Any) -> Any:
        ptype, pname = param
        is_pointer = ptype.endswith("*")
        base = ptype.replace("const", "").replace("*", "").strip()
        if base == "T":
            base = ctype
        if is_pointer:
            want = numpy.dtype(_CTYPES.get(base) or _POINTERS[base])
            if value.dtype != want or not value.flags.c_contiguous:
                raise TypeError(f"cuda kernel {name}: {pname} must be a C-contiguous {want} "
                                f"array, got {value.dtype} (contiguous: "
                                f"{value.flags.c_contiguous})")
            return value
        return (_CTYPES.get(base) or _SCALARS[base])(value)

    def _run(self, name: str, ctype: str, grid: tuple, block: int, args: list) -> None:
        raise NotImplementedError


class CudaKernels(KernelLauncher):
    """The kernels on the current CUDA device, compiled by NVRTC on first use (CuPy
    caches the binary on disk, so later processes load it)."""

    OPTIONS = ("--std=c++14",)

    def __init__(self, cupy: Any) -> None:
        super().__init__(cupy)
        names = [f"{k}<{c}>" for k in self.signatures for c in _CTYPES]
        self.module = cupy.RawModule(code=CUDA_SOURCE, options=self.OPTIONS,
                                     name_expressions=names)
        self._functions: dict = {}

    def _run(self, name: str, ctype: str, grid: tuple, block: int, args: list) -> None:
        key = f"{name}<{ctype}>"
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = self.module.get_function(key)
        fn(grid, (block,), tuple(args))
