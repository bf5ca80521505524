"""The Numba backend's causal attention kernels, flash-style: the wrappers that shape
the arrays for backends/_numba_attention_kernels.py (which has the algorithm and its
formulas), kept apart from numba_backend.py to keep each file readable."""

from __future__ import annotations

import numba
import numpy as np

from ._numba_attention_kernels import AVAILABLE as FLASH_AVAILABLE
from ._numba_attention_kernels import _flash_backward_kernel, _flash_forward_kernel, gemm_for
from .threads import _BlasLimitOne

__all__ = ["FLASH_AVAILABLE", "FlashAttention"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _same_float(*arrays) -> bool:
    """True when every array is float32 or float64, all of one dtype."""
    dt = arrays[0].dtype
    return dt in _FLOATS and all(a.dtype == dt for a in arrays[1:])


def _c(a, dtype=None):
    """``a`` as a C-contiguous, writeable array (no copy when it is one already).
    Numba compiles read-only arrays (e.g. broadcast views) as a separate signature; a
    copy of such an input is cheaper than a compilation."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


class FlashAttention:
    """Mixin of NumbaBackend: ``causal_attention(_backward)`` and
    ``causal_attention_qkv(_backward)`` on the flash kernels, the NumPy reference
    (``super()``) for what they do not take."""

    @property
    def flash_min_len(self) -> int | None:
        """Causal attention without mask or dropout runs the flash kernels from this
        sequence length on (None: never, when the BLAS they call was not found). They
        are serial: where the calling thread runs Numba on one thread (every
        batch-thread worker, decoding) they are as fast or faster than the unfused
        path at every length; where it runs several, the unfused path splits each op
        over the threads and is faster at T = 128, about even at 512, slower at 1024
        (bench/attention.py; docs/performance.md §9)."""
        if not FLASH_AVAILABLE:
            return None
        return 1 if numba.get_num_threads() == 1 else 512

    def causal_attention(self, q, k, v, scale: float):
        """Flash-style fused causal attention (_numba_attention_kernels.py): the keys in
        blocks with an online softmax, no T x T array; (out, lse)."""
        if not (q.shape == k.shape == v.shape and q.ndim >= 2 and q.size
                and _same_float(q, k, v)):
            return super().causal_attention(q, k, v, scale)
        T, E = q.shape[-2:]
        q4, k4, v4 = (_c(a).reshape(-1, T, 1, E) for a in (q, k, v))
        out = np.empty_like(q4)
        lse = np.empty((q4.shape[0], 1, T))
        # BLAS at one thread while a kernel calls it from inside Numba's threads (it would
        # otherwise split each small block product over threads already busy)
        with _BlasLimitOne():
            _flash_forward_kernel(gemm_for(q.dtype), q4, k4, v4, q.dtype.type(scale), out, lse)
        return out.reshape(q.shape), lse.reshape(q.shape[:-1])

    def causal_attention_backward(self, g, q, k, v, out, lse, scale: float):
        if not (q.shape == k.shape == v.shape == g.shape == out.shape and q.ndim >= 2
                and q.size and _same_float(g, q, k, v, out)):
            return super().causal_attention_backward(g, q, k, v, out, lse, scale)
        T, E = q.shape[-2:]
        g4, q4, k4, v4, o4 = (_c(a).reshape(-1, T, 1, E) for a in (g, q, k, v, out))
        dq, dk, dv = (np.empty_like(q4) for _ in range(3))
        with _BlasLimitOne():
            _flash_backward_kernel(gemm_for(q.dtype), g4, q4, k4, v4, o4,
                                   _c(lse, np.float64).reshape(-1, 1, T),
                                   q.dtype.type(scale), dq, dk, dv)
        return dq.reshape(q.shape), dk.reshape(q.shape), dv.reshape(q.shape)

    def causal_attention_qkv(self, qkv, n_heads: int, scale: float):
        """The flash kernels reading q, k, v in place in the (B, T, 3 H E) output of a
        fused projection, writing (B, T, H E) with the heads side by side: no copy to
        split the heads or to join them."""
        if qkv.ndim != 3 or not qkv.size or not _same_float(qkv):
            return super().causal_attention_qkv(qkv, n_heads, scale)
        B, T, three_d = qkv.shape
        q5 = _c(qkv).reshape(B, T, 3, n_heads, three_d // (3 * n_heads))
        out = np.empty((B, T, n_heads, q5.shape[-1]), dtype=qkv.dtype)
        lse = np.empty((B, n_heads, T))
        with _BlasLimitOne():
            _flash_forward_kernel(gemm_for(qkv.dtype), q5[:, :, 0], q5[:, :, 1], q5[:, :, 2],
                                  qkv.dtype.type(scale), out, lse)
        return out.reshape(B, T, -1), lse

    def causal_attention_qkv_backward(self, g, qkv, out, lse, n_heads: int, scale: float):
        if not (qkv.ndim == 3 and qkv.size and _same_float(g, qkv, out)):
            return super().causal_attention_qkv_backward(g, qkv, out, lse, n_heads, scale)
        B, T, three_d = qkv.shape
        E = three_d // (3 * n_heads)
        q5 = _c(qkv).reshape(B, T, 3, n_heads, E)
        g4, o4 = _c(g).reshape(B, T, n_heads, E), _c(out).reshape(B, T, n_heads, E)
        dqkv = np.empty_like(q5)
        with _BlasLimitOne():
            _flash_backward_kernel(gemm_for(qkv.dtype), g4, q5[:, :, 0], q5[:, :, 1],
                                   q5[:, :, 2], o4, _c(lse, np.float64), qkv.dtype.type(scale),
                                   dqkv[:, :, 0], dqkv[:, :, 1], dqkv[:, :, 2])
        return dqkv.reshape(B, T, three_d)

