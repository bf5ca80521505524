"""The Numba backend: the NumPy reference with its hot kernels fused by Numba.

A NumPy op such as ``y * (gy - (gy * y).sum(-1, keepdims=True))`` walks memory four
times and allocates three temporaries, on one thread. Each kernel here is one
``@njit(parallel=True)`` loop that ``prange``-s over rows (or blocks of a flat array)
and makes one or two passes over a row while it sits in cache. Matrix products stay in
NumPy (BLAS); only what surrounds them is fused.

Conventions, shared by every kernel:

- Kernels are compiled for float32 and float64 C-contiguous arrays of at most three
  dims (inputs are reshaped to (rows, last dim) or flattened first) and auxiliary
  arguments of fixed types (a missing weight or bias is passed as ones / zeros, other
  optional arrays as 1-element dummies with a ``has_*`` flag; read-only inputs are
  copied), so that each kernel has two signatures and a fresh machine compiles little
  (about 12 s of CPU for everything in float32, as much again for float64). Anything
  else (float16, a softmax over a dim that is not the last, operands of mixed dtypes,
  empty arrays) goes to the NumPy reference.
- Speed comes from vectorised inner loops, which fastmath=False allows only when a
  loop has no library call and no strict-order reduction: ``error_model="numpy"`` (a
  division does not test for zero), row reductions in 8 interleaved partial sums
  accumulated in float64, and for float32 an ``exp`` written in arithmetic (within 1
  ulp of libm's) and the reference's own float32 erf (A&S 7.1.26) on it. float64
  keeps libm's ``exp``, ``erf`` and ``tanh``: it is the dtype of the checks.
- Optimizer updates do the reference's operations in its order, in the array's dtype
  with scalars cast to it, as NumPy does, so both backends round the same way.
- ``cache=True``: compiled code is written next to this file (``__pycache__``) or
  under ``NUMBA_CACHE_DIR``, so only the first process on a machine compiles.
- Numba's thread pool is started with sleeping (passive) OpenMP threads so that it
  and BLAS's do not steal each other's cores (see ``_start_thread_pool``);
  ``minilm.set_num_threads`` sets both pools' size.
- Dropout masks come from a counter-based generator (SplitMix64 of the element's
  index and a seed drawn from ``self.rng``): every element's draw depends only on
  (seed, index), never on which thread ran it, so masks are repeatable under
  ``minilm.manual_seed`` and any thread count. They are *not* the masks the NumPy
  reference draws for the same seed (only their distribution is the same).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._fused_dispatch import FusedRowKernels
from ._numba_attention import _FLOATS, FlashAttention, _c, _same_float
from ._numba_kernels import (
    _cross_entropy_backward_kernel,
    _cross_entropy_kernel,
    _dropout_kernel,
    _erf_kernel,
    _gelu32_kernel,
    _gelu64_kernel,
    _masked_softmax_kernel,
    _norm_backward_kernel,
    _norm_kernel,
    _softmax_backward_kernel,
    _softmax_kernel,
)
from ._numba_quant_kernels import (
    _group_sums,
    _int8_matmul_kernel,
    _linear_int4_kernel,
    _linear_int8_kernel,
)
from ._numba_rnn_kernels import gru_backward, gru_forward, lstm_backward, lstm_forward
from ._numba_update_kernels import _adam_kernel, _embedding_backward_kernel, _sgd_kernel
from .numpy_backend import NumpyBackend

__all__ = ["NumbaBackend"]

_INT8_MAX_K = 2**31 // 128**2  # int32 sums of int8 products cannot overflow up to here


# ============================================================================ helpers


def _start_thread_pool() -> None:
    """Start Numba's thread pool now, with OpenMP threads that sleep when idle.

    By default GNU OpenMP threads spin for a while after each parallel loop, and BLAS
    threads after each matmul; on a machine with as many threads as cores the two
    pools then take turns stealing each other's cores (measured: an Adam kernel right
    after a batched matmul 4x slower than the two apart). ``OMP_WAIT_POLICY=PASSIVE``
    is set only while Numba loads its OpenMP layer (which reads it once) and only when
    the user has set neither it nor ``GOMP_SPINCOUNT``; other OpenMP runtimes loaded
    later (e.g. PyTorch's) do not see it."""
    import os

    user_set = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
    try:
        from numba.np.ufunc.parallel import _launch_threads
    except ImportError:  # a Numba without this (private) entry point: pool starts lazily
        return
    if not user_set:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        _launch_threads()
    finally:
        if not user_set:
            del os.environ["OMP_WAIT_POLICY"]


def _rows(x):
    """``x`` as a C-contiguous (rows, last dim) array (a view when it already is one)."""
    return _c(x).reshape(-1, x.shape[-1])


def _is_last(dim: int, ndim: int) -> bool:
    return ndim >= 1 and dim in (-1, ndim - 1)


def _dummy(dtype, ndim: int = 1):
    return np.zeros((1,) * ndim, dtype=dtype)


def _slabs(mask, full: tuple, dtype):
    """A mask broadcastable to ``full`` (..., lq, lk) as contiguous (M, lq, lk) slabs of
    ``dtype`` and, for each of the prod(full[:-2]) score matrices, the slab it reads."""
    lead, tail = full[:-2], full[-2:]
    m = mask.reshape((1,) * (len(full) - mask.ndim) + mask.shape)
    mlead = m.shape[:-2]
    slabs = _c(np.broadcast_to(m, mlead + tail), dtype=dtype)
    count = math.prod(mlead)
    index = np.broadcast_to(np.arange(count, dtype=np.int64).reshape(mlead), lead)
    return slabs.reshape((count,) + tail), _c(index).reshape(-1)


class NumbaBackend(FlashAttention, FusedRowKernels, NumpyBackend):
    """CPU backend whose hot kernels are Numba-compiled fused loops (see the module
    docstring); everything it does not override is the NumPy reference."""

    name = "numba"


    def __init__(self) -> None:
        super().__init__()
        from . import _apply_numba_threads

        _start_thread_pool()
        _apply_numba_threads(started=True)

    def _seed64(self) -> np.uint64:
        """A fresh 64-bit seed for the counter-based generator, from ``self.rng``."""
        return np.uint64(self.rng.integers(0, 2**63, dtype=np.int64))

    # ------------------------------------------------------------------ softmax family
    def softmax(self, x, dim: int):
        if not (_is_last(dim, x.ndim) and _same_float(x) and x.size):
            return super().softmax(x, dim)
        x2 = _rows(x)
        y = np.empty_like(x2)
        _softmax_kernel(x2, y, False)
        return y.reshape(x.shape)

    def log_softmax(self, x, dim: int):
        if not (_is_last(dim, x.ndim) and _same_float(x) and x.size):
            return super().log_softmax(x, dim)
        x2 = _rows(x)
        y = np.empty_like(x2)
        _softmax_kernel(x2, y, True)
        return y.reshape(x.shape)

    def _softmax_bwd(self, y, gy, dim: int, log: bool):
        if not (_is_last(dim, y.ndim) and y.shape == gy.shape and _same_float(y, gy)
                and y.size):
            return None
        y2, g2 = _rows(y), _rows(gy)
        dx = np.empty_like(y2)
        _softmax_backward_kernel(y2, g2, dx, log, _dummy(y.dtype, 2), False)
        return dx.reshape(y.shape)

    def _fused_masked_softmax(self, s, keep, bias, scale: float, dropout_p: float):
        """Scale + bias + mask + softmax (+ dropout) of the scores ``s`` (..., lq, lk),
        in place when ``s`` is already the full broadcast shape. Returns (P, drop, P*drop)
        (drop and P*drop None without dropout), or None when it cannot be fused."""
        if s.ndim < 1 or not _same_float(s) or (bias is not None and bias.dtype != s.dtype):
            return None
        full = s.shape
        for m in (bias, keep):
            if m is not None:
                full = np.broadcast_shapes(full, m.shape)
        if s.shape != full or not s.flags.c_contiguous:
            s = np.array(np.broadcast_to(s, full), order="C")
        if s.size == 0:
            return None
        shape3 = (1,) * max(0, 2 - len(full)) + full  # at least (lq, lk)
        lq, lk = shape3[-2], shape3[-1]
        s2 = s.reshape(-1, lk)
        dt = s.dtype.type
        bias3, bidx = (_dummy(s.dtype, 3), _dummy(np.int64)) if bias is None else \
            _slabs(bias, shape3, s.dtype)
        keep3, kidx = (_dummy(np.bool_, 3), _dummy(np.int64)) if keep is None else \
            _slabs(keep, shape3, np.bool_)
        drop = pd = None
        if dropout_p > 0.0:
            drop, pd = np.empty_like(s2), np.empty_like(s2)
            keep_scale = 0.0 if dropout_p >= 1.0 else 1.0 / (1.0 - dropout_p)
            seed = self._seed64()
        else:
            keep_scale, seed = 1.0, np.uint64(0)
        _masked_softmax_kernel(
            s2, lq, dt(scale), dt(-np.inf), bias3, bidx, bias is not None, keep3, kidx, keep is not None,
            _dummy(s.dtype, 2) if drop is None else drop,
            _dummy(s.dtype, 2) if pd is None else pd, drop is not None,
            seed, float(dropout_p), dt(keep_scale))
        if drop is None:
            return s, None, None
        return s, drop.reshape(full), pd.reshape(full)

    # ------------------------------------------------------------------ attention
    def attention_backward(self, g, q, k, v, p, drop, scale: float):
        """dV = Pd^T g and dP = g V^T on BLAS; dS = P (dP drop - sum(dP drop P)) in one
        fused pass, in place on dP; dQ = dS K scale, dK = dS^T Q scale on BLAS."""
        pd = p if drop is None else p * drop
        dv = np.matmul(np.swapaxes(pd, -1, -2), g)
        dp = np.matmul(g, np.swapaxes(v, -1, -2))
        arrays = (p, dp) if drop is None else (p, dp, drop)
        if not (dp.shape == p.shape and (drop is None or drop.shape == p.shape)
                and _same_float(*arrays) and p.size and p.ndim >= 1):
            ds = self.softmax_backward(p, dp if drop is None else dp * drop, -1)
        else:
            dp = _c(dp)
            d2 = dp.reshape(-1, p.shape[-1])
            _softmax_backward_kernel(_rows(p), d2, d2, False,
                                     _dummy(p.dtype, 2) if drop is None else _rows(drop),
                                     drop is not None)
            ds = dp
        dq = np.matmul(ds, k)
        dq *= dq.dtype.type(scale)
        dk = np.matmul(np.swapaxes(ds, -1, -2), q)
        dk *= dk.dtype.type(scale)
        return dq, dk, dv, ds

    # ------------------------------------------------------------------ normalisation
    def _norm_forward(self, x, weight, bias, eps: float, rms: bool):
        if not (x.ndim >= 1 and x.size and _same_float(
                x, *(a for a in (weight, bias) if a is not None))):
            return None
        x2 = _rows(x)
        R, C = x2.shape
        y = np.empty_like(x2)
        mean = np.empty(R, dtype=x.dtype)
        rstd = np.empty(R, dtype=x.dtype)
        w = np.ones(C, x.dtype) if weight is None else _c(weight).reshape(-1)
        b = np.zeros(C, x.dtype) if bias is None else _c(bias).reshape(-1)
        _norm_kernel(x2, w, b, float(eps), rms, y, mean, rstd)
        stat = x.shape[:-1] + (1,)
        return y.reshape(x.shape), mean.reshape(stat), rstd.reshape(stat)

    def _norm_backward(self, gy, x, weight, mean, rstd, need_wb: bool, rms: bool):
        arrays = [gy, x, rstd] + ([] if rms else [mean]) + ([] if weight is None else [weight])
        if not (x.ndim >= 1 and x.size and gy.shape == x.shape and _same_float(*arrays)):
            return None
        x2, g2 = _rows(x), _rows(gy)
        R, C = x2.shape
        dx = np.empty_like(x2)
        nchunks = min(R, 64)  # fixed by the shape: the same sums whatever the thread count
        width = C if need_wb else 1
        dw_part, db_part = np.zeros((nchunks, width)), np.zeros((nchunks, width))
        w = np.ones(C, x.dtype) if weight is None else _c(weight).reshape(-1)
        _norm_backward_kernel(g2, x2, w,
                              _c(rstd if rms else mean).reshape(-1),
                              _c(rstd).reshape(-1), rms, bool(need_wb), dx,
                              dw_part, db_part)
        dw = db = None
        if need_wb:
            dw = dw_part.sum(axis=0).astype(gy.dtype)
            db = db_part.sum(axis=0).astype(gy.dtype)
        return dx.reshape(x.shape), dw, db

    # ------------------------------------------------------------------ activations
    def _gelu(self, x, gy, approximate: str):
        """The GELU kernel (forward, or backward when ``gy`` is given) on a (rows, last
        dim) view; None when it does not apply."""
        arrays = [x] + ([] if gy is None else [gy])
        if not (_same_float(*arrays) and x.size and approximate in ("none", "tanh")
                and (gy is None or gy.shape == x.shape)):
            return None
        C = x.shape[-1] if x.ndim else 1
        x2 = _c(x).reshape(-1, C)
        g2 = _dummy(x.dtype, 2) if gy is None else _c(gy).reshape(-1, C)
        out = np.empty_like(x2)
        kernel = _gelu32_kernel if x.dtype == np.float32 else _gelu64_kernel
        kernel(x2, g2, out, approximate == "tanh", gy is not None)
        return out.reshape(x.shape)

    def gelu(self, x, approximate: str = "none"):
        y = self._gelu(x, None, approximate)
        return super().gelu(x, approximate) if y is None else y

    def gelu_backward(self, x, gy, approximate: str = "none"):
        dx = self._gelu(x, gy, approximate)
        return super().gelu_backward(x, gy, approximate) if dx is None else dx

    def erf(self, x):
        """math.erf in float64 for float32 and float64 (float32 thus more accurate than
        the reference's polynomial)."""
        if not (_same_float(x) and x.size):
            return super().erf(x)
        xf = _c(x).reshape(-1)
        out = np.empty_like(xf)
        _erf_kernel(xf, out)
        return out.reshape(x.shape)

    # ------------------------------------------------------------------ dropout
    def dropout_mask(self, shape: tuple, p: float, dtype):
        """As the reference, from a counter-based generator seeded by ``self.rng`` (the
        masks differ from the reference's for the same seed; see the module docstring)."""
        dtype = np.dtype(dtype)
        if p >= 1.0 or dtype not in _FLOATS:
            return super().dropout_mask(shape, p, dtype)
        out = np.empty(shape, dtype=dtype)
        if out.size:
            _dropout_kernel(out.reshape(-1), self._seed64(), float(p),
                            dtype.type(1.0 / (1.0 - p)))
        return out

    # ------------------------------------------------------------------ embedding
    def embedding_backward(self, ids, gy, num_embeddings: int):
        flat = _c(ids, dtype=np.int64).reshape(-1)
        if not (_same_float(gy) and gy.ndim >= 1 and flat.size and gy.shape[-1]
                and gy.size == flat.size * gy.shape[-1]
                and 0 <= flat.min() and flat.max() < num_embeddings):
            return super().embedding_backward(ids, gy, num_embeddings)
        D = gy.shape[-1]
        g = _c(gy).reshape(flat.size, D)
        dE = np.zeros((num_embeddings, D), dtype=gy.dtype)
        block = -(-D // (4 * numba.get_num_threads()))  # ~4 tasks per thread
        block = max(16, -(-block // 16) * 16)  # whole cache lines of float32
        _embedding_backward_kernel(flat, g, dE, block)
        return dE

    # ------------------------------------------------------------------ cross-entropy
    def cross_entropy(self, logits, target, ignore_index: int, label_smoothing: float, weight):
        arrays = [logits] if weight is None else [logits, weight]
        if not (logits.ndim == 2 and logits.size and _same_float(*arrays)
                and ignore_index is not None
                and target.shape == (logits.shape[0],)):
            return super().cross_entropy(logits, target, ignore_index, label_smoothing, weight)
        N, C = logits.shape
        z = _c(logits)
        t = _c(target, dtype=np.int64)
        w = np.zeros(1) if weight is None else _c(weight, dtype=np.float64)
        logp = np.empty_like(z)
        loss = np.empty(N, dtype=z.dtype)
        row_w = np.empty(N, dtype=z.dtype)
        nbad = _cross_entropy_kernel(z, t, w, weight is not None, int(ignore_index),
                                     float(label_smoothing), logp, loss, row_w)
        if nbad:  # let the reference raise its IndexError
            return super().cross_entropy(logits, target, ignore_index, label_smoothing, weight)
        return loss, row_w, logp

    def cross_entropy_backward(self, logp, target, g_row, ignore_index: int,
                               label_smoothing: float, weight):
        arrays = [logp] if weight is None else [logp, weight]
        if not (logp.ndim == 2 and logp.size and _same_float(*arrays)
                and ignore_index is not None
                and target.shape == (logp.shape[0],)):
            return super().cross_entropy_backward(logp, target, g_row, ignore_index,
                                                  label_smoothing, weight)
        N, C = logp.shape
        t = _c(target, dtype=np.int64)
        g = _c(np.broadcast_to(g_row, (N,)), dtype=np.float64)
        w = np.zeros(1) if weight is None else _c(weight, dtype=np.float64)
        wsum = float(w.sum()) if weight is not None else float(C)
        dz = np.empty_like(logp, order="C")
        nbad = _cross_entropy_backward_kernel(_c(logp), t, g, w,
                                              weight is not None, wsum, int(ignore_index),
                                              float(label_smoothing), dz)
        if nbad:  # let the reference raise its IndexError
            return super().cross_entropy_backward(logp, target, g_row, ignore_index,
                                                  label_smoothing, weight)
        return dz

    # ------------------------------------------------------------------ optimizer updates
    @staticmethod
    def _flat_inplace(*arrays):
        """Flat views of ``arrays`` (None stays None) if all are C-contiguous float32 or
        float64 arrays of one dtype and shape, else None."""
        present = [a for a in arrays if a is not None]
        first = present[0]
        if not (_same_float(*present) and first.size
                and all(a.shape == first.shape and a.flags.c_contiguous for a in present)):
            return None
        return [None if a is None else a.reshape(-1) for a in arrays]

    def sgd_step(self, param, grad, momentum_buf, lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False, init_buf: bool = False) -> None:
        flat = self._flat_inplace(param, _c(grad),
                                  momentum_buf if momentum != 0.0 else None)
        if flat is None or not param.flags.writeable:
            return super().sgd_step(param, grad, momentum_buf, lr, momentum, dampening,
                                    weight_decay, nesterov, maximize, init_buf)
        p, g, buf = flat
        dt = param.dtype.type
        _sgd_kernel(p, g, _dummy(param.dtype) if buf is None else buf, dt(lr), dt(momentum),
                    dt(dampening), dt(1.0 - dampening), dt(weight_decay), bool(nesterov), bool(maximize),
                    bool(init_buf))

    def adam_step(self, param, grad, exp_avg, exp_avg_sq, step: int, lr: float, beta1: float,
                  beta2: float, eps: float, weight_decay: float = 0.0, decoupled: bool = False,
                  amsgrad_max=None, maximize: bool = False) -> None:
        flat = self._flat_inplace(param, _c(grad), exp_avg, exp_avg_sq,
                                  amsgrad_max)
        if flat is None or not param.flags.writeable:
            return super().adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2,
                                     eps, weight_decay, decoupled, amsgrad_max, maximize)
        p, g, m, v, vmax = flat
        dt = param.dtype.type
        bias_correction1 = 1.0 - beta1 ** step
        bias_correction2 = 1.0 - beta2 ** step
        _adam_kernel(p, g, m, v, _dummy(param.dtype) if vmax is None else vmax,
                     vmax is not None, dt(lr), dt(1.0 - lr * weight_decay), dt(1.0 - beta1),
                     dt(beta1), dt(1.0 - beta2), dt(beta2), dt(math.sqrt(bias_correction2)),
                     dt(eps), dt(lr / bias_correction1), dt(weight_decay), bool(decoupled),
                     bool(maximize))

    # ------------------------------------------------------------------ quantized linear
    def int8_matmul(self, a, b):
        """a (M, K) int8 @ b (N, K)^T in int32 by a Numba loop (NumPy's integer matmul
        has no BLAS); exact, as the reference."""
        if not (a.ndim == 2 and b.ndim == 2 and a.dtype == np.int8 and b.dtype == np.int8
                and a.shape[1] == b.shape[1] and 0 < a.shape[1] <= _INT8_MAX_K
                and a.size and b.size):
            return super().int8_matmul(a, b)
        out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
        _int8_matmul_kernel(_c(a), _c(b), out)
        return out

    def _quant_linear_args(self, x, scale, zero, group_size: int, bias, N: int):
        """The float32 (rows, K) view of x and the float32 (N, G) scale and zero, the
        (N,) bias and group sums, or None when the fused kernel does not apply (x not
        float32, a group size not dividing K, mismatched shapes)."""
        if not (x.dtype == np.float32 and x.ndim >= 1 and x.size and N):
            return None
        K = x.shape[-1]
        if not (group_size >= 1 and K % group_size == 0):
            return None
        G = K // group_size
        if scale.size != N * G or zero.size != N * G or (bias is not None and bias.size != N):
            return None
        x2 = _rows(x)
        s = _c(scale, dtype=np.float32).reshape(N, G)
        z = _c(zero, dtype=np.float32).reshape(N, G)
        b = np.zeros(N, np.float32) if bias is None else _c(bias, dtype=np.float32).reshape(N)
        has_zero = bool(np.any(z))
        xs = np.empty((x2.shape[0], G), np.float32)
        if has_zero:
            _group_sums(x2, group_size, G, xs)
        return x2, s, z, b, has_zero, xs

    def linear_int8_weight(self, x, q, scale, zero, group_size: int, bias):
        """The weight-only int8 linear, reading the int8 weight and scaling per group on
        the fly (_numba_quant_kernels.py)."""
        args = None
        if q.ndim == 2 and q.dtype == np.int8 and x.ndim >= 1 and q.shape[1] == x.shape[-1]:
            args = self._quant_linear_args(x, scale, zero, int(group_size), bias, q.shape[0])
        if args is None:
            return super().linear_int8_weight(x, q, scale, zero, group_size, bias)
        x2, s, z, b, has_zero, xs = args
        out = np.empty((x2.shape[0], q.shape[0]), np.float32)
        _linear_int8_kernel(x2, _c(q), s, z, int(group_size), has_zero, xs, b, out)
        return out.reshape(x.shape[:-1] + (q.shape[0],))

    def linear_int4_weight(self, x, packed, scale, zero, group_size: int, bias):
        """The weight-only int4 linear, unpacking the nibbles and scaling per group on
        the fly; rows must start on a byte (K even) and groups too (group size even),
        else the reference runs."""
        N = scale.shape[0] if scale.ndim else 0
        K = x.shape[-1] if x.ndim else 0
        gs = int(group_size)
        args = None
        if (packed.dtype == np.uint8 and K % 2 == 0 and gs % 2 == 0
                and packed.shape == (N, K // 2)):
            args = self._quant_linear_args(x, scale, zero, gs, bias, N)
        if args is None:
            return super().linear_int4_weight(x, packed, scale, zero, group_size, bias)
        x2, s, z, b, has_zero, xs = args
        out = np.empty((x2.shape[0], N), np.float32)
        xe, xo = _c(x2[:, 0::2]), _c(x2[:, 1::2])
        _linear_int4_kernel(xe, xo, _c(packed).view(np.int8), s, z, gs, has_zero, xs, b, out)
        return out.reshape(x.shape[:-1] + (N,))

    # ------------------------------------------------------------------ recurrent sequences
    # the loops over time live with their step kernels (_numba_rnn_kernels.py)
    def lstm_sequence(self, gx, h0, c0, w_hh, keep, reverse: bool):
        if not (gx.ndim == 3 and gx.size and _same_float(gx, h0, c0, w_hh)):
            return super().lstm_sequence(gx, h0, c0, w_hh, keep, reverse)
        return lstm_forward(gx, h0, c0, w_hh, keep, reverse)

    def lstm_sequence_backward(self, ghs, ghT, gcT, hs, cs, acts, h0, c0, w_hh, keep,
                               reverse: bool):
        if not _same_float(ghs, ghT, gcT, hs, cs, acts, h0, c0, w_hh):
            return super().lstm_sequence_backward(ghs, ghT, gcT, hs, cs, acts, h0, c0, w_hh,
                                                  keep, reverse)
        return lstm_backward(ghs, ghT, gcT, hs, cs, acts, h0, c0, w_hh, keep, reverse)

    def gru_sequence(self, gx, h0, w_hh, b_hh, keep, reverse: bool):
        arrays = (gx, h0, w_hh) + (() if b_hh is None else (b_hh,))
        if not (gx.ndim == 3 and gx.size and _same_float(*arrays)):
            return super().gru_sequence(gx, h0, w_hh, b_hh, keep, reverse)
        return gru_forward(gx, h0, w_hh, b_hh, keep, reverse)

    def gru_sequence_backward(self, ghs, ghT, hs, acts, h0, w_hh, keep, reverse: bool):
        if not _same_float(ghs, ghT, hs, acts, h0, w_hh):
            return super().gru_sequence_backward(ghs, ghT, hs, acts, h0, w_hh, keep, reverse)
        return gru_backward(ghs, ghT, hs, acts, h0, w_hh, keep, reverse)
