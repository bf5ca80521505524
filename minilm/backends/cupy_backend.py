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

The backend can also be built on another array module and kernel launcher
(``CupyBackend(xp=..., kernels=...)``), which is how a machine without a GPU tests it:
on a host-memory stand-in for CuPy (tests/fake_cupy.py; references only) to check that
nothing on the device path falls back to NumPy, and on NumPy with the CUDA kernels
compiled for the CPU and run thread for thread (tests/cuda_emu.py) to check every fused
kernel, and the Python around it, against the reference.

What each override does, in one line (the formulas are in _cuda_source.py):

- softmax / log_softmax and their backward: one block per row, two reductions, no
  temporaries (the reference makes four arrays);
- masked_softmax and attention: scale + bias + mask + softmax + dropout of the scores
  in one pass, in place, between two cuBLAS batched GEMMs; the backward folds the
  dropout mask into the softmax backward;
- layer_norm / rms_norm: statistics and output in one kernel; the backward's dx in
  one, dw and db as per-chunk column sums (double) added by one reduction;
- gelu, erf, dropout masks, the cross-entropy gradient: one thread per element;
- cross_entropy: log-softmax, the loss and the row weights per row in one kernel;
- embedding_backward: a scatter by atomic adds (the order of the adds of repeated ids
  is not fixed: float sums may differ in the last bits between runs; ids outside the
  table, which the forward refuses, are skipped without a check that would wait for
  the device);
- sgd_step / adam_step: one kernel per parameter, the reference's operations in the
  Numba kernels' order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from . import register_device_array
from ._cuda_kernels import row_threads
from ._fused_dispatch import FusedRowKernels
from .counter_rng import CounterRng
from .numpy_backend import NumpyBackend

__all__ = ["CupyBackend", "find_cupy", "import_cupy"]

_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
_BLOCK = 256  # threads per block of the elementwise kernels
_MAX_GRID = 2**31 - 1
_MAX_GRID_Y = 65535  # blocks along a grid's y


def _is_last(dim: int, ndim: int) -> bool:
    return ndim >= 1 and dim in (-1, ndim - 1)


def _blocks(n: int) -> int:
    return -(-int(n) // _BLOCK)


def find_cupy() -> Any:
    """CuPy, when it imports and sees a CUDA device; else ImportError saying which of
    the two is missing (``minilm.cuda`` reports the same reasons)."""
    try:
        import cupy
    except ImportError:
        raise ImportError("CuPy is not installed") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, or a driver too old
        raise ImportError(f"CuPy finds no usable CUDA device: {exc}") from None
    if count < 1:
        raise ImportError("CuPy sees no CUDA device")
    return cupy


def import_cupy() -> Any:
    """``find_cupy()``, its ImportError also saying how to get CuPy."""
    try:
        return find_cupy()
    except ImportError as exc:
        raise ImportError(f"{exc}; pip install 'minilm[cuda]' (cupy-cuda12x) on a machine "
                          "with an NVIDIA GPU") from None


class CupyBackend(FusedRowKernels, NumpyBackend):
    """``xp`` is CuPy; kernels fused in CUDA where the reference would make temporaries."""

    name = "cupy"
    device = "cuda"
    flash_min_len = None  # causal attention: cuBLAS batched GEMMs + the fused softmax

    def __init__(self, xp: Any = None, kernels: Any = None) -> None:
        if xp is None:
            from ._cuda_kernels import CudaKernels

            xp = import_cupy()
            kernels = CudaKernels(xp)
            # autocast("float16") runs linear as cuBLAS half GEMMs (CuPy accumulates half
            # products in float32); CuPy has no bfloat16
            self.native_low_precision = {"float16": numpy.float16}
        self.xp = xp
        self.kernels = kernels  # a KernelLauncher, or None: the references run
        if xp is not numpy:
            register_device_array(xp.ndarray, self.name)
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
        if type(array) is numpy.ndarray:
            return array
        return self.xp.asnumpy(array)

    # ------------------------------------------------------------------ helpers
    def _fusable(self, *arrays: Any) -> bool:
        """Whether the CUDA kernels take these arrays: kernels present, all float32 or
        all float64, none empty."""
        if self.kernels is None:
            return False
        dt = arrays[0].dtype
        return dt in _FLOATS and all(a.dtype == dt and a.size for a in arrays)

    def _c(self, a: Any, dtype: Any = None) -> Any:
        return self.xp.ascontiguousarray(a, dtype=dtype)

    def _rows(self, a: Any) -> Any:
        a = self._c(a)
        return a.reshape(-1, a.shape[-1])

    # ------------------------------------------------------------------ softmax family
    def _softmax(self, x: Any, dim: int, log: bool) -> Any:
        x2 = self._rows(x)
        R, C = x2.shape
        if not (_is_last(dim, x.ndim) and self._fusable(x) and R <= _MAX_GRID):
            return None
        y = self.xp.empty_like(x2)
        self.kernels("softmax_fwd", x.dtype, R, row_threads(C), x2, y, R, C, int(log))
        return y.reshape(x.shape)

    def softmax(self, x: Any, dim: int) -> Any:
        y = self._softmax(x, dim, False) if x.ndim else None
        return super().softmax(x, dim) if y is None else y

    def log_softmax(self, x: Any, dim: int) -> Any:
        y = self._softmax(x, dim, True) if x.ndim else None
        return super().log_softmax(x, dim) if y is None else y

    def _softmax_bwd(self, y: Any, gy: Any, dim: int, log: bool, drop: Any = None) -> Any:
        if not (y.ndim and _is_last(dim, y.ndim) and y.shape == gy.shape
                and (drop is None or drop.shape == y.shape)
                and self._fusable(y, gy, *([] if drop is None else [drop]))):
            return None
        y2, g2 = self._rows(y), self._rows(gy)
        R, C = y2.shape
        if R > _MAX_GRID:
            return None
        dx = self.xp.empty_like(y2)
        d2 = y2 if drop is None else self._rows(drop)  # not read without dropout
        self.kernels("softmax_bwd", y.dtype, R, row_threads(C), y2, g2, d2, dx, R, C,
                     int(log), int(drop is not None))
        return dx.reshape(y.shape)

    def _slabs(self, mask: Any, full: tuple, dtype: Any) -> tuple:
        """A mask broadcastable to ``full`` (..., lq, lk) as contiguous (M, lq, lk) slabs
        and, for each of the prod(full[:-2]) score matrices, the slab it reads."""
        lead, tail = full[:-2], full[-2:]
        m = mask.reshape((1,) * (len(full) - mask.ndim) + mask.shape)
        mlead = m.shape[:-2]
        slabs = self._c(self.xp.broadcast_to(m, mlead + tail), dtype=dtype)
        count = math.prod(mlead)
        index = numpy.broadcast_to(numpy.arange(count, dtype=numpy.int64).reshape(mlead), lead)
        index = self.xp.asarray(numpy.ascontiguousarray(index).reshape(-1))
        return slabs.reshape((count,) + tail), index

    def _fused_masked_softmax(self, s: Any, keep: Any, bias: Any, scale: float,
                              dropout_p: float) -> tuple | None:
        """Scale + bias + mask + softmax (+ dropout) of the scores ``s`` (..., lq, lk) in
        one kernel, in place when ``s`` already has the full broadcast shape. Returns
        (P, drop, P*drop) (the last two None without dropout), or None when the kernel
        does not apply."""
        xp = self.xp
        if s.ndim < 1 or not self._fusable(s) or (bias is not None and bias.dtype != s.dtype):
            return None
        full = s.shape
        for m in (bias, keep):
            if m is not None:
                full = numpy.broadcast_shapes(full, m.shape)
        if s.shape != full or not s.flags.c_contiguous:
            s = self._c(xp.broadcast_to(s, full))
        shape3 = (1,) * max(0, 2 - len(full)) + tuple(full)
        lq, lk = shape3[-2], shape3[-1]
        s2 = s.reshape(-1, lk)
        R = s2.shape[0]
        if R > _MAX_GRID or not s.size:
            return None
        bias3, bidx = (s2, xp.zeros(1, xp.int64)) if bias is None else \
            self._slabs(bias, shape3, s.dtype)
        keep3, kidx = (xp.zeros(1, xp.bool_), xp.zeros(1, xp.int64)) if keep is None else \
            self._slabs(keep, shape3, xp.bool_)
        drop = pd = None
        key = start = 0
        keep_scale = 1.0
        if dropout_p > 0.0:
            if dropout_p >= 1.0:
                return None
            drop, pd = xp.empty_like(s2), xp.empty_like(s2)
            keep_scale = 1.0 / (1.0 - dropout_p)
            key, start = self.rng.key, self.rng.take(s2.size)
        self.kernels("masked_softmax", s.dtype, R, row_threads(lk), s2, R, lq, lk, scale,
                     bias3, bidx, int(bias is not None), keep3, kidx, int(keep is not None),
                     s2 if drop is None else drop, s2 if pd is None else pd,
                     int(drop is not None), key, start, float(dropout_p), keep_scale)
        if drop is None:
            return s, None, None
        return s, drop.reshape(full), pd.reshape(full)

    # ------------------------------------------------------------------ attention
    def attention_backward(self, g: Any, q: Any, k: Any, v: Any, p: Any, drop: Any,
                           scale: float) -> tuple:
        """dV = Pd^T g and dP = g V^T on cuBLAS; dS = P (dP drop - sum(dP drop P)) in
        one kernel; dQ = dS K scale, dK = dS^T Q scale on cuBLAS."""
        xp = self.xp
        pd = p if drop is None else p * drop
        dv = xp.matmul(xp.swapaxes(pd, -1, -2), g)
        dp = xp.matmul(g, xp.swapaxes(v, -1, -2))
        ds = self._softmax_bwd(p, dp, -1, False, drop)
        if ds is None:
            ds = self.softmax_backward(p, dp if drop is None else dp * drop, -1)
        dq = xp.matmul(ds, k) * scale
        dk = xp.matmul(xp.swapaxes(ds, -1, -2), q) * scale
        return dq, dk, dv, ds

    # ------------------------------------------------------------------ normalisation
    def _norm_forward(self, x: Any, weight: Any, bias: Any, eps: float, rms: bool):
        extra = [a for a in (weight, bias) if a is not None]
        if not (x.ndim >= 1 and self._fusable(x, *extra)):
            return None
        xp = self.xp
        x2 = self._rows(x)
        R, C = x2.shape
        if R > _MAX_GRID:
            return None
        y = xp.empty_like(x2)
        mean = xp.zeros(R, dtype=x.dtype)
        rstd = xp.empty(R, dtype=x.dtype)
        w = x2 if weight is None else self._c(weight).reshape(-1)  # not read when absent
        b = x2 if bias is None else self._c(bias).reshape(-1)
        self.kernels("norm_fwd", x.dtype, R, row_threads(C), x2, w, b, int(weight is not None),
                     int(bias is not None), float(eps), int(rms), y, mean, rstd, R, C)
        stat = x.shape[:-1] + (1,)
        return y.reshape(x.shape), mean.reshape(stat), rstd.reshape(stat)

    def _norm_backward(self, gy: Any, x: Any, weight: Any, mean: Any, rstd: Any,
                       need_wb: bool, rms: bool):
        arrays = [gy, x, rstd] + ([] if rms else [mean]) + ([] if weight is None else [weight])
        if not (x.ndim >= 1 and gy.shape == x.shape and self._fusable(*arrays)):
            return None
        xp = self.xp
        x2, g2 = self._rows(x), self._rows(gy)
        R, C = x2.shape
        if R > _MAX_GRID:
            return None
        m = rstd if rms else mean
        m, r = self._c(m).reshape(-1), self._c(rstd).reshape(-1)
        w = x2 if weight is None else self._c(weight).reshape(-1)
        dx = xp.empty_like(x2)
        self.kernels("norm_bwd", x.dtype, R, row_threads(C), g2, x2, w, int(weight is not None),
                     m, r, int(rms), dx, R, C)
        dw = db = None
        if need_wb:
            per = max(16, -(-R // 128))  # at most 128 chunks of rows
            chunks = -(-R // per)
            dw_part = xp.empty((chunks, C), dtype=xp.float64)
            db_part = xp.empty((chunks, C), dtype=xp.float64)
            self.kernels("norm_wb_partial", x.dtype, (_blocks(C), chunks), _BLOCK, g2, x2, m,
                         r, int(rms), dw_part, db_part, R, C, per)
            dw = dw_part.sum(axis=0).astype(gy.dtype)
            db = db_part.sum(axis=0).astype(gy.dtype)
        return dx.reshape(x.shape), dw, db

    # ------------------------------------------------------------------ elementwise
    def _map(self, name: str, x: Any, *more: Any, extra: tuple = ()) -> Any:
        """Run elementwise kernel ``name`` over x (and same-shape ``more``) into a new
        array like x; None when the kernel does not apply."""
        if not (self._fusable(x, *more) and all(m.shape == x.shape for m in more)):
            return None
        flat = [self._c(a).reshape(-1) for a in (x, *more)]
        out = self.xp.empty_like(flat[0])
        n = flat[0].size
        self.kernels(name, x.dtype, _blocks(n), _BLOCK, *flat, out, n, *extra)
        return out.reshape(x.shape)

    def gelu(self, x: Any, approximate: str = "none") -> Any:
        y = None
        if approximate in ("none", "tanh"):
            y = self._map("gelu_fwd", x, extra=(int(approximate == "tanh"),))
        return super().gelu(x, approximate) if y is None else y

    def gelu_backward(self, x: Any, gy: Any, approximate: str = "none") -> Any:
        dx = None
        if approximate in ("none", "tanh"):
            dx = self._map("gelu_bwd", x, gy, extra=(int(approximate == "tanh"),))
        return super().gelu_backward(x, gy, approximate) if dx is None else dx

    def erf(self, x: Any) -> Any:
        """CUDA's erf in x's dtype (float16 is computed in float32)."""
        if x.dtype == numpy.float16 and self.kernels is not None:
            return self.erf(x.astype(numpy.float32)).astype(numpy.float16)
        y = self._map("erf_fwd", x)
        return super().erf(x) if y is None else y

    def dropout_mask(self, shape: tuple, p: float, dtype: Any) -> Any:
        """As the reference, ``[u >= p] / (1 - p)`` with u the next numbers of ``rng``:
        the same masks as the reference on this backend's generator."""
        dtype = numpy.dtype(dtype)
        n = math.prod(shape)
        if p >= 1.0 or dtype not in _FLOATS or self.kernels is None or not n:
            return super().dropout_mask(shape, p, dtype)
        out = self.xp.empty(n, dtype=dtype)
        key, start = self.rng.key, self.rng.take(n)
        self.kernels("dropout_mask", dtype, _blocks(n), _BLOCK, out, n, key, start, float(p),
                     1.0 / (1.0 - p))
        return out.reshape(shape)

    def embedding_backward(self, ids: Any, gy: Any, num_embeddings: int) -> Any:
        xp = self.xp
        flat = self._c(ids, dtype=xp.int64).reshape(-1)
        D = gy.shape[-1] if gy.ndim else 0
        if not (self._fusable(gy) and gy.ndim >= 1 and flat.size and D
                and gy.size == flat.size * D):
            return super().embedding_backward(ids, gy, num_embeddings)
        g = self._c(gy).reshape(-1)
        dE = xp.zeros((num_embeddings, D), dtype=gy.dtype)
        n = flat.size
        self.kernels("embedding_bwd", gy.dtype, (_blocks(D), min(n, _MAX_GRID_Y)), _BLOCK, flat,
                     g, dE, n, D, int(num_embeddings))
        return dE

    # ------------------------------------------------------------------ cross-entropy
    def _xent_ok(self, z: Any, target: Any, ignore_index: Any, weight: Any) -> bool:
        extra = [] if weight is None else [weight]
        return (z.ndim == 2 and self._fusable(z, *extra) and ignore_index is not None
                and target.shape == (z.shape[0],) and z.shape[0] <= _MAX_GRID)

    def cross_entropy(self, logits: Any, target: Any, ignore_index: int,
                      label_smoothing: float, weight: Any) -> tuple:
        if not self._xent_ok(logits, target, ignore_index, weight):
            return super().cross_entropy(logits, target, ignore_index, label_smoothing, weight)
        xp = self.xp
        N, C = logits.shape
        z = self._c(logits)
        t = self._c(target, dtype=xp.int64)
        w = z if weight is None else self._c(weight)
        logp = xp.empty_like(z)
        loss = xp.empty(N, dtype=z.dtype)
        row_w = xp.empty(N, dtype=z.dtype)
        bad = xp.zeros(1, dtype=xp.int32)
        self.kernels("xent_fwd", z.dtype, N, row_threads(C), z, t, w, int(weight is not None),
                     int(ignore_index), float(label_smoothing), logp, loss, row_w, bad, N, C)
        if int(bad[0]):
            t_host = self.to_numpy(t)
            wrong = t_host[(t_host != ignore_index) & ((t_host < 0) | (t_host >= C))]
            raise IndexError(f"cross_entropy: target {int(wrong[0])} is out of bounds for "
                             f"{C} classes")
        return loss, row_w, logp

    def cross_entropy_backward(self, logp: Any, target: Any, g_row: Any, ignore_index: int,
                               label_smoothing: float, weight: Any) -> Any:
        if not self._xent_ok(logp, target, ignore_index, weight):
            return super().cross_entropy_backward(logp, target, g_row, ignore_index,
                                                  label_smoothing, weight)
        xp = self.xp
        N, C = logp.shape
        t = self._c(target, dtype=xp.int64)
        g = self._c(xp.broadcast_to(xp.asarray(g_row), (N,)), dtype=logp.dtype)
        w = logp if weight is None else self._c(weight)
        wsum = float(weight.sum()) if weight is not None else float(C)
        dz = xp.empty_like(logp, order="C")
        self.kernels("xent_bwd", logp.dtype, (_blocks(C), min(N, _MAX_GRID_Y)), _BLOCK,
                     self._c(logp), t, g, w,
                     int(weight is not None), wsum, int(ignore_index), float(label_smoothing),
                     dz, N, C)
        return dz

    # ------------------------------------------------------------------ optimizer updates
    def _flat_inplace(self, *arrays: Any) -> list | None:
        """Flat views of ``arrays`` (None stays None) when all are C-contiguous, of one
        float dtype and one shape, else None."""
        present = [a for a in arrays if a is not None]
        first = present[0]
        if not (self._fusable(*present)
                and all(a.shape == first.shape and a.flags.c_contiguous for a in present)):
            return None
        return [None if a is None else a.reshape(-1) for a in arrays]

    def sgd_step(self, param: Any, grad: Any, momentum_buf: Any, lr: float,
                 momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, maximize: bool = False,
                 init_buf: bool = False) -> None:
        flat = self._flat_inplace(param, self._c(grad), momentum_buf if momentum != 0.0 else None)
        if flat is None:
            return super().sgd_step(param, grad, momentum_buf, lr, momentum, dampening,
                                    weight_decay, nesterov, maximize, init_buf)
        p, g, buf = flat
        self.kernels("sgd_update", param.dtype, _blocks(p.size), _BLOCK, p, g,
                     p if buf is None else buf, p.size, lr, momentum, dampening,
                     1.0 - dampening, weight_decay, int(nesterov), int(maximize), int(init_buf))

    def adam_step(self, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, step: int,
                  lr: float, beta1: float, beta2: float, eps: float, weight_decay: float = 0.0,
                  decoupled: bool = False, amsgrad_max: Any = None,
                  maximize: bool = False) -> None:
        flat = self._flat_inplace(param, self._c(grad), exp_avg, exp_avg_sq, amsgrad_max)
        if flat is None:
            return super().adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2,
                                     eps, weight_decay, decoupled, amsgrad_max, maximize)
        p, g, m, v, vmax = flat
        bias_correction1 = 1.0 - beta1 ** step
        bias_correction2 = 1.0 - beta2 ** step
        self.kernels("adam_update", param.dtype, _blocks(p.size), _BLOCK, p, g, m, v,
                     p if vmax is None else vmax, int(vmax is not None), p.size,
                     1.0 - lr * weight_decay, 1.0 - beta1, beta1, 1.0 - beta2, beta2,
                     math.sqrt(bias_correction2), eps, lr / bias_correction1, weight_decay,
                     int(decoupled), int(maximize))
