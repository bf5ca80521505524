"""Fused causal attention for the Numba backend, flash-style (Dao et al., 2022).

q, k, v, out: (B, T, H, E) views with a contiguous last axis, one dtype (the heads of a
fused qkv projection are read in place, rows 3 H E apart). Nothing of size
T x T is ever stored: the forward walks the keys in blocks of ``BK`` for a block of
``BQ`` queries, keeping per query row a running max m, a running sum l and an
unnormalised output acc, rescaled whenever the max grows:

    S     = Q_b K_j^T * scale                 (BQ x BK; above the diagonal: -inf)
    m'    = max(m, rowmax S)
    acc   = acc * e^(m - m') + e^(S - m') V_j
    l     = l   * e^(m - m') + rowsum e^(S - m')
    out   = acc / l,   lse = m + log l        (after the last key block)

Key blocks after the query block are never visited (causal: half the products of a
dense implementation). The backward recomputes each block's probabilities from lse,
P = e^(S - lse), and with D = rowsum(dO * O):

    dV_j += P^T dO_b     dP = dO_b V_j^T     dS = P (dP - D)
    dQ_b += scale dS K_j                     dK_j += scale dS^T Q_b

The block products are single-threaded BLAS calls made from inside the compiled loop
(OpenBLAS's cblas_?gemm, found in the library NumPy loaded; 60-70 GFLOP/s on 64 x 64
blocks, against about 10 for a hand-written Numba loop), and the softmax parts are
vectorised loops. The kernels are serial: the parallelism is outside, one kernel per
batch-thread worker (backends/threads.py). ``parallel=True`` versions compiled in 5 s
instead of 2 and their forward did not reliably scale to 2 threads.
Where that BLAS symbol cannot be found,
``AVAILABLE`` is False and the backend keeps the unfused path. The BLAS function comes
in as an argument (``gemm_for(dtype)``): a C pointer held in a global would stop Numba
from caching the compiled kernels.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
from numba import njit

from ._numba_kernels import _exp

BQ = 64  # query rows per block
BK = 64  # keys per block
_ROW, _NO, _TRANS = 101, 111, 112  # CBLAS enums: row-major, no transpose, transpose


def _find_gemm() -> tuple:
    """(sgemm, dgemm) ctypes functions of the BLAS NumPy uses, or (None, None)."""
    try:
        from threadpoolctl import threadpool_info

        paths = [i["filepath"] for i in threadpool_info() if i["user_api"] == "blas"]
    except Exception:  # no threadpoolctl, or it cannot read the libraries
        return None, None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix, index in (("64_", ctypes.c_int64), ("", ctypes.c_int)):
            names = [f"scipy_cblas_sgemm{suffix}", f"cblas_sgemm{suffix}"]
            for name in names:
                if not hasattr(lib, name):
                    continue
                found = []
                for real, prefix in ((ctypes.c_float, "s"), (ctypes.c_double, "d")):
                    proto = ctypes.CFUNCTYPE(
                        None, ctypes.c_int, ctypes.c_int, ctypes.c_int, index, index, index,
                        real, ctypes.c_void_p, index, ctypes.c_void_p, index, real,
                        ctypes.c_void_p, index)
                    found.append(proto((name.replace("sgemm", prefix + "gemm"), lib)))
                return tuple(found)
    return None, None


_SGEMM, _DGEMM = _find_gemm()
AVAILABLE = _SGEMM is not None


def gemm_for(dtype: np.dtype) -> object:
    """The ctypes BLAS function for arrays of ``dtype`` (float32 or float64). The
    kernels take it as an argument, not as a global, so that they can be cached."""
    return _SGEMM if np.dtype(dtype) == np.float32 else _DGEMM


# serial: they run inside a batch-thread worker (one thread each), and compile in 2 s
# instead of 5 s with parallel=True (docs/performance.md §9)
_JIT = dict(cache=True, fastmath=False, error_model="numpy", nogil=True)


@njit(**_JIT)
def _flash_forward_kernel(gemm, q, k, v, scale, out, lse):
    """q, k, v, out: (B, T, H, E) views whose last axis is contiguous (rows of one
    head are ``ld`` elements apart: E for separate arrays, 3 H E inside a fused qkv
    projection); lse: (B, H, T)."""
    B, T, H, E = q.shape
    ldq, ldk, ldv = q.strides[1] // q.itemsize, k.strides[1] // k.itemsize, \
        v.strides[1] // v.itemsize
    one, zero = np.ones(1, q.dtype)[0], np.zeros(1, q.dtype)[0]
    s = np.empty((BQ, BK), dtype=q.dtype)
    acc = np.empty((BQ, E), dtype=q.dtype)
    m = np.empty(BQ)
    l = np.empty(BQ)
    for b in range(B):
        for h in range(H):
            for i0 in range(0, T, BQ):
                rows = min(BQ, T - i0)
                acc[:] = 0.0
                m[:] = -np.inf
                l[:] = 0.0
                qb_ = q[b, i0:i0 + rows, h]
                for j0 in range(0, i0 + rows, BK):  # key blocks up to the last query
                    cols = min(BK, i0 + rows - j0)
                    gemm(_ROW, _NO, _TRANS, rows, cols, E, scale, qb_.ctypes.data, ldq,
                         k[b, j0:j0 + cols, h].ctypes.data, ldk, zero, s.ctypes.data, BK)
                    for r in range(rows):
                        sr, ar = s[r], acc[r]
                        last = min(cols, i0 + r - j0 + 1)  # keys j0 .. i (causal)
                        if last <= 0:
                            for j in range(cols):
                                sr[j] = 0.0
                            continue
                        mx = m[r]
                        for j in range(last):
                            mx = max(mx, np.float64(sr[j]))
                        alpha = math.exp(m[r] - mx)
                        mt = sr.dtype.type(mx)
                        for j in range(last):
                            sr[j] = _exp(sr[j] - mt)
                        tot = 0.0
                        for j in range(last):
                            tot += sr[j]
                        for j in range(last, cols):
                            sr[j] = 0.0
                        l[r] = l[r] * alpha + tot
                        m[r] = mx
                        a = ar.dtype.type(alpha)
                        for e in range(E):
                            ar[e] *= a
                    gemm(_ROW, _NO, _NO, rows, E, cols, one, s.ctypes.data, BK,
                         v[b, j0:j0 + cols, h].ctypes.data, ldv, one, acc.ctypes.data, E)
                for r in range(rows):
                    inv = acc.dtype.type(1.0 / l[r])
                    orow, ar = out[b, i0 + r, h], acc[r]
                    for e in range(E):
                        orow[e] = ar[e] * inv
                    lse[b, h, i0 + r] = m[r] + math.log(l[r])


@njit(**_JIT)
def _flash_backward_kernel(gemm, g, q, k, v, out, lse, scale, dq, dk, dv):
    """All (B, T, H, E) views as in the forward (dq, dk, dv may be views into one
    fused gradient); lse (B, H, T)."""
    B, T, H, E = q.shape
    ld = q.strides[1] // q.itemsize  # q, k, v and dq, dk, dv: one row stride
    ldg = g.strides[1] // g.itemsize
    one, zero = np.ones(1, q.dtype)[0], np.zeros(1, q.dtype)[0]
    d = np.empty(T)  # D_i = dO_i . O_i
    p = np.empty((BQ, BK), dtype=q.dtype)
    dp = np.empty((BQ, BK), dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                acc = 0.0
                gi, oi = g[b, i, h], out[b, i, h]
                dq[b, i, h] = 0.0
                dk[b, i, h] = 0.0
                dv[b, i, h] = 0.0
                for e in range(E):
                    acc += np.float64(gi[e]) * oi[e]
                d[i] = acc
            for i0 in range(0, T, BQ):
                rows = min(BQ, T - i0)
                qb_, gb = q[b, i0:i0 + rows, h], g[b, i0:i0 + rows, h]
                for j0 in range(0, i0 + rows, BK):
                    cols = min(BK, i0 + rows - j0)
                    kb, vb = k[b, j0:j0 + cols, h], v[b, j0:j0 + cols, h]
                    gemm(_ROW, _NO, _TRANS, rows, cols, E, scale, qb_.ctypes.data, ld,
                         kb.ctypes.data, ld, zero, p.ctypes.data, BK)
                    gemm(_ROW, _NO, _TRANS, rows, cols, E, one, gb.ctypes.data, ldg,
                         vb.ctypes.data, ld, zero, dp.ctypes.data, BK)
                    for r in range(rows):  # P = e^(S - lse) (0 above the diagonal); dS
                        i = i0 + r
                        pr, dr = p[r], dp[r]
                        last = min(cols, i - j0 + 1)
                        lt = pr.dtype.type(lse[b, h, i])
                        for j in range(max(last, 0)):
                            pr[j] = _exp(pr[j] - lt)
                        for j in range(max(last, 0), cols):
                            pr[j] = 0.0
                        di = dr.dtype.type(d[i])
                        for j in range(cols):
                            dr[j] = pr[j] * (dr[j] - di)
                    gemm(_ROW, _TRANS, _NO, cols, E, rows, one, p.ctypes.data, BK,
                         gb.ctypes.data, ldg, one, dv[b, j0:j0 + cols, h].ctypes.data, ld)
                    gemm(_ROW, _NO, _NO, rows, E, cols, scale, dp.ctypes.data, BK,
                         kb.ctypes.data, ld, one, dq[b, i0:i0 + rows, h].ctypes.data, ld)
                    gemm(_ROW, _TRANS, _NO, cols, E, rows, scale, dp.ctypes.data, BK,
                         qb_.ctypes.data, ld, one, dk[b, j0:j0 + cols, h].ctypes.data, ld)
