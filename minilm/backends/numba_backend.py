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
from numba import njit, prange, types
from numba.extending import overload

from .numpy_backend import NumpyBackend

__all__ = ["NumbaBackend"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_JIT = dict(parallel=True, cache=True, fastmath=False, error_model="numpy")
_INLINE = dict(cache=True, inline="always", error_model="numpy")  # inlined by Numba
_FUNC = dict(cache=True, error_model="numpy")  # compiled once, inlined (or not) by LLVM
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_K = math.sqrt(2.0 / math.pi)

# SplitMix64 constants (Steele, Lea & Flood 2014)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


# ============================================================================ scalar math
# Loops vectorise only if their body makes no library call and carries no strict-order
# floating-point reduction (fastmath stays off). Hence: exp for float32 written in
# arithmetic (libm's exp is a call), and row reductions in 8 independent partial sums.
# float64 keeps libm's functions, the reference's, so that float64 results agree with
# the reference to ~1e-15.

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # ln 2 split so that n * _LN2_HI is exact for |n| < 2^11
_LN2_LO = 1.428606820309417e-06


@njit(**_FUNC)
def _exp32(y):
    """exp of a float32 by range reduction, exp(y) = 2^n exp(r) with n = round(y/ln2),
    |r| <= ln2/2, and the degree-7 Taylor polynomial of exp(r) (truncation < 6e-9
    relative): within 2 ulp of libm's expf, and vectorisable."""
    f = np.float32
    c = min(max(y, f(-87.0)), f(88.0))
    n = np.floor(c * f(_LOG2E) + f(0.5))
    r = (c - n * f(_LN2_HI)) - n * f(_LN2_LO)
    p = f(1.0 / 5040.0)
    p = p * r + f(1.0 / 720.0)
    p = p * r + f(1.0 / 120.0)
    p = p * r + f(1.0 / 24.0)
    p = p * r + f(1.0 / 6.0)
    p = p * r + f(0.5)
    p = p * r + f(1.0)
    p = p * r + f(1.0)
    two_n = np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    e = p * two_n
    e = f(0.0) if y < f(-87.0) else e  # underflow (flushes the subnormal range to 0)
    e = f(np.inf) if y > f(88.0) else e
    return y if y != y else e  # NaN stays NaN


def _exp(y):
    """exp in the dtype of ``y``: _exp32 for float32, libm's for float64."""
    return math.exp(y)


@overload(_exp, jit_options={"cache": True, "error_model": "numpy"})
def _exp_overload(y):
    if isinstance(y, types.Float) and y.bitwidth == 32:
        return lambda y: _exp32(y)
    return lambda y: math.exp(y)


@njit(**_FUNC)
def _max(a):
    """max of a 1-D array in 8 interleaved partial maxima."""
    n = a.size
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = a[0]
    i = 0
    while i + 8 <= n:
        m0 = a[i] if a[i] > m0 else m0
        m1 = a[i + 1] if a[i + 1] > m1 else m1
        m2 = a[i + 2] if a[i + 2] > m2 else m2
        m3 = a[i + 3] if a[i + 3] > m3 else m3
        m4 = a[i + 4] if a[i + 4] > m4 else m4
        m5 = a[i + 5] if a[i + 5] > m5 else m5
        m6 = a[i + 6] if a[i + 6] > m6 else m6
        m7 = a[i + 7] if a[i + 7] > m7 else m7
        i += 8
    while i < n:
        m0 = a[i] if a[i] > m0 else m0
        i += 1
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    m4 = m5 if m5 > m4 else m4
    m6 = m7 if m7 > m6 else m6
    m0 = m2 if m2 > m0 else m0
    m4 = m6 if m6 > m4 else m4
    return m4 if m4 > m0 else m0


@njit(**_FUNC)
def _sum(a):
    """float64 sum of a 1-D array in 8 interleaved partial sums."""
    n = a.size
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = 0
    while i + 8 <= n:
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        s4 += a[i + 4]
        s5 += a[i + 5]
        s6 += a[i + 6]
        s7 += a[i + 7]
        i += 8
    while i < n:
        s0 += a[i]
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(**_FUNC)
def _dot(a, b):
    """float64 sum of a * b (1-D arrays) in 8 interleaved partial sums."""
    n = a.size
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = 0
    while i + 8 <= n:
        s0 += np.float64(a[i]) * b[i]
        s1 += np.float64(a[i + 1]) * b[i + 1]
        s2 += np.float64(a[i + 2]) * b[i + 2]
        s3 += np.float64(a[i + 3]) * b[i + 3]
        s4 += np.float64(a[i + 4]) * b[i + 4]
        s5 += np.float64(a[i + 5]) * b[i + 5]
        s6 += np.float64(a[i + 6]) * b[i + 6]
        s7 += np.float64(a[i + 7]) * b[i + 7]
        i += 8
    while i < n:
        s0 += np.float64(a[i]) * b[i]
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(**_FUNC)
def _dotc(a, b, mu):
    """float64 sum of a * (b - mu) (1-D arrays) in 8 interleaved partial sums."""
    n = a.size
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = 0
    while i + 8 <= n:
        s0 += a[i] * (b[i] - mu)
        s1 += a[i + 1] * (b[i + 1] - mu)
        s2 += a[i + 2] * (b[i + 2] - mu)
        s3 += a[i + 3] * (b[i + 3] - mu)
        s4 += a[i + 4] * (b[i + 4] - mu)
        s5 += a[i + 5] * (b[i + 5] - mu)
        s6 += a[i + 6] * (b[i + 6] - mu)
        s7 += a[i + 7] * (b[i + 7] - mu)
        i += 8
    while i < n:
        s0 += a[i] * (b[i] - mu)
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(**_FUNC)
def _sqdev(a, mu):
    """float64 sum of (a - mu)^2 in 8 interleaved partial sums."""
    n = a.size
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = 0
    while i + 8 <= n:
        d0 = a[i] - mu
        d1 = a[i + 1] - mu
        d2 = a[i + 2] - mu
        d3 = a[i + 3] - mu
        d4 = a[i + 4] - mu
        d5 = a[i + 5] - mu
        d6 = a[i + 6] - mu
        d7 = a[i + 7] - mu
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        s4 += d4 * d4
        s5 += d5 * d5
        s6 += d6 * d6
        s7 += d7 * d7
        i += 8
    while i < n:
        d0 = a[i] - mu
        s0 += d0 * d0
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


# GELU, one element: float32 in float32 arithmetic with the reference's float32 erf
# (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7) on _exp32; float64 with libm's erf.


@njit(**_INLINE)
def _gelu32(v, tanh, grad):
    f = np.float32
    if tanh:
        u = f(_TANH_K) * (v + f(0.044715) * v * v * v)
        t = f(1.0) - f(2.0) / (_exp32(f(2.0) * u) + f(1.0))
        if grad:
            return f(0.5) * (f(1.0) + t) + f(0.5) * v * (f(1.0) - t * t) * f(_TANH_K) * (
                f(1.0) + f(3 * 0.044715) * v * v)
        return f(0.5) * v * (f(1.0) + t)
    a = abs(v) * f(_SQRT1_2)
    t = f(1.0) / (f(1.0) + f(0.3275911) * a)
    poly = t * (f(0.254829592) + t * (f(-0.284496736) + t * (f(1.421413741) + t * (
        f(-1.453152027) + t * f(1.061405429)))))
    erf = f(1.0) - poly * _exp32(-a * a)
    erf = -erf if v < f(0.0) else erf
    cdf = f(0.5) * (f(1.0) + erf)
    if grad:
        return cdf + v * (_exp32(f(-0.5) * v * v) * f(_INV_SQRT_2PI))
    return v * cdf


@njit(**_FUNC)
def _gelu64(v, tanh, grad):
    if tanh:
        t = math.tanh(_TANH_K * (v + 0.044715 * v * v * v))
        if grad:
            return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * _TANH_K * (1.0 + 3 * 0.044715 * v * v)
        return 0.5 * v * (1.0 + t)
    cdf = 0.5 * (1.0 + math.erf(v * _SQRT1_2))
    if grad:
        return cdf + v * (math.exp(-0.5 * v * v) * _INV_SQRT_2PI)
    return v * cdf


@njit(**_FUNC)
def _uniform(seed, i):
    """U[0, 1) with 53 random bits: SplitMix64's output number i for ``seed``."""
    z = seed + (np.uint64(i) + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


# ============================================================================ kernels


@njit(**_JIT)
def _softmax_kernel(x, y, log):
    """Row-wise softmax (or log-softmax) of x (R, C) into y."""
    R, C = x.shape
    for r in prange(R):
        xr, yr = x[r], y[r]
        m = _max(xr)
        for j in range(C):
            yr[j] = _exp(xr[j] - m)
        s = _sum(yr)
        if log:
            lse = np.log(s)
            for j in range(C):
                yr[j] = (xr[j] - m) - lse
        else:
            inv = 1.0 / s
            for j in range(C):
                yr[j] = yr[j] * inv


@njit(**_JIT)
def _softmax_backward_kernel(y, gy, dx, log, drop, has_drop):
    """softmax:  dx = y (g - sum(g y)) with g = gy * drop (attention dropout) or gy;
    log-softmax:  dx = gy - exp(y) sum(gy). ``dx`` may be ``gy`` (in place)."""
    R, C = y.shape
    for r in prange(R):
        yr, gr, dr = y[r], gy[r], dx[r]
        if log:
            s = _sum(gr)
            for j in range(C):
                dr[j] = gr[j] - _exp(yr[j]) * s
        elif has_drop:
            kr = drop[r]
            for j in range(C):
                dr[j] = gr[j] * kr[j]
            s = _dot(dr, yr)
            for j in range(C):
                dr[j] = yr[j] * (dr[j] - s)
        else:
            s = _dot(gr, yr)
            for j in range(C):
                dr[j] = yr[j] * (gr[j] - s)


@njit(**_JIT)
def _masked_softmax_kernel(s, lq, scale, neg_inf, bias, bidx, has_bias, keep, kidx, has_keep,
                           drop, pd, has_drop, seed, p, keep_scale):
    """In place on the score rows s (B*lq, lk): z = s * scale + bias, masked entries set
    to -inf, softmax (a row with nothing left gives zeros), then, with dropout,
    drop = [u >= p] * keep_scale and pd = P * drop. bias / keep are (M, lq, lk) slabs;
    row r = b*lq + i reads slab bidx[b] / kidx[b]. ``scale``, ``neg_inf`` and
    ``keep_scale`` come in the dtype of s."""
    R, C = s.shape
    for r in prange(R):
        b = r // lq
        i = r - b * lq
        sr = s[r]
        if has_bias and has_keep:
            br, kr = bias[bidx[b], i], keep[kidx[b], i]
            for j in range(C):
                z = sr[j] * scale + br[j]
                sr[j] = z if kr[j] else neg_inf
        elif has_bias:
            br = bias[bidx[b], i]
            for j in range(C):
                sr[j] = sr[j] * scale + br[j]
        elif has_keep:
            kr = keep[kidx[b], i]
            for j in range(C):
                z = sr[j] * scale
                sr[j] = z if kr[j] else neg_inf
        else:
            for j in range(C):
                sr[j] = sr[j] * scale
        m = _max(sr)
        if m == neg_inf:  # nothing to attend to: zeros, not NaN
            for j in range(C):
                sr[j] = 0.0
        else:
            for j in range(C):
                sr[j] = _exp(sr[j] - m)
            inv = 1.0 / _sum(sr)
            for j in range(C):
                sr[j] = sr[j] * inv
        if has_drop:
            dr, pr = drop[r], pd[r]
            for j in range(C):
                d = keep_scale if _uniform(seed, r * C + j) >= p else 0.0
                dr[j] = d
                pr[j] = sr[j] * d


@njit(**_JIT)
def _dropout_kernel(out, seed, p, keep_scale):
    """out[i] = keep_scale if u_i >= p else 0, u_i = U[0,1) of (seed, i)."""
    for i in prange(out.size):
        out[i] = keep_scale if _uniform(seed, i) >= p else 0.0


@njit(**_JIT)
def _cross_entropy_kernel(z, t, w, has_w, ignore_index, eps, logp, loss, row_w):
    """Fused log-softmax + NLL with ignore_index, label smoothing and class weights (see
    NumpyBackend.cross_entropy). Returns the number of out-of-range targets."""
    N, C = z.shape
    nbad = 0
    for r in prange(N):
        zr, lr = z[r], logp[r]
        m = _max(zr)
        for j in range(C):
            lr[j] = _exp(zr[j] - m)
        lse = np.log(_sum(lr))
        for j in range(C):
            lr[j] = (zr[j] - m) - lse
        ti = t[r]
        valid = ti != ignore_index
        st = ti if valid else 0
        if st < 0 or st >= C:
            nbad += 1
            st = 0
        wy = w[st] if has_w else 1.0
        lo = (1.0 - eps) * (-np.float64(lr[st]) * wy)
        if eps > 0.0:
            smooth = _dot(lr, w) if has_w else _sum(lr)
            lo += eps * (-smooth / C)
        loss[r] = lo if valid else 0.0
        row_w[r] = wy if valid else 0.0
    return nbad


@njit(**_JIT)
def _cross_entropy_backward_kernel(logp, t, g_row, w, has_w, wsum, ignore_index, eps, dz):
    """dz = (a softmax - (1-eps) w[y] onehot(y) - eps/C w) * g_row, row by row.
    Returns the number of out-of-range targets."""
    N, C = logp.shape
    nbad = 0
    for r in prange(N):
        lr, dr = logp[r], dz[r]
        ti = t[r]
        valid = ti != ignore_index
        st = ti if valid else 0
        if st < 0 or st >= C:
            nbad += 1
            st = 0
        wy = w[st] if has_w else 1.0
        a = (1.0 - eps) * wy + eps / C * wsum
        gr = g_row[r] if valid else 0.0
        if eps > 0.0 and has_w:
            for j in range(C):
                dr[j] = (_exp(lr[j]) * a - eps / C * w[j]) * gr
        else:
            e = eps / C
            for j in range(C):
                dr[j] = (_exp(lr[j]) * a - e) * gr
        e = eps / C * (w[st] if has_w else 1.0)
        dr[st] = (_exp(lr[st]) * a - (1.0 - eps) * wy - e) * gr
    return nbad


@njit(**_JIT)
def _norm_kernel(x, w, b, eps, rms, y, mean, rstd):
    """Layer norm (rms=False) or RMS norm of the rows of x (R, C); w and b are always
    given (ones / zeros stand for a missing one)."""
    R, C = x.shape
    for r in prange(R):
        xr, yr = x[r], y[r]
        mu = 0.0 if rms else _sum(xr) / C
        rs = 1.0 / np.sqrt(_sqdev(xr, mu) / C + eps)
        mean[r] = mu
        rstd[r] = rs
        for j in range(C):
            yr[j] = (xr[j] - mu) * rs * w[j] + b[j]


@njit(**_JIT)
def _norm_backward_kernel(gy, x, w, mean, rstd, rms, need_wb, dx, dw_part, db_part):
    """dx = rstd (g - mean(g) - xh mean(g xh)) (layer norm; RMS norm drops mean(g)),
    g = gy * w (w always given: ones for none). The rows are split into len(dw_part)
    chunks, each adding its sum(gy xh) and sum(gy) into its own row of dw_part /
    db_part (no races)."""
    R, C = x.shape
    nchunks = dw_part.shape[0]
    for c in prange(nchunks):
        dwc, dbc = dw_part[c], db_part[c]
        for r in range(c * R // nchunks, (c + 1) * R // nchunks):
            xr, gr, dr = x[r], gy[r], dx[r]
            mu = 0.0 if rms else np.float64(mean[r])
            rs = np.float64(rstd[r])
            # dr holds g = gy * w for a moment
            for j in range(C):
                dr[j] = gr[j] * w[j]
            sg = 0.0 if rms else _sum(dr) / C
            sgx = _dotc(dr, xr, mu) * rs / C
            for j in range(C):
                dr[j] = rs * (dr[j] - sg - ((xr[j] - mu) * rs) * sgx)
            if need_wb:
                for j in range(C):
                    dwc[j] += np.float64(gr[j]) * ((xr[j] - mu) * rs)
                    dbc[j] += gr[j]


@njit(**_JIT)
def _gelu32_kernel(x, b, gy, out, tanh, backward):
    """float32: out = gelu(x + b) or, backward, gy * gelu'(x + b), over the rows of
    x (R, C) (b has C entries: zeros when there is no bias; gy is a dummy in the
    forward). One loop per case, with constant flags, so that each one vectorises."""
    R, C = x.shape
    for r in prange(R):
        xr, outr = x[r], out[r]
        if backward and tanh:
            gr = gy[r]
            for j in range(C):
                outr[j] = gr[j] * _gelu32(xr[j] + b[j], True, True)
        elif backward:
            gr = gy[r]
            for j in range(C):
                outr[j] = gr[j] * _gelu32(xr[j] + b[j], False, True)
        elif tanh:
            for j in range(C):
                outr[j] = _gelu32(xr[j] + b[j], True, False)
        else:
            for j in range(C):
                outr[j] = _gelu32(xr[j] + b[j], False, False)


@njit(**_JIT)
def _gelu64_kernel(x, b, gy, out, tanh, backward):
    """float64 (libm's erf and tanh, the reference's formulas): as _gelu32_kernel."""
    R, C = x.shape
    for r in prange(R):
        xr, outr = x[r], out[r]
        gr = gy[r] if backward else gy[0]
        for j in range(C):
            d = _gelu64(xr[j] + b[j], tanh, backward)
            outr[j] = gr[j] * d if backward else d


@njit(**_JIT)
def _erf_kernel(x, out):
    for i in prange(x.size):
        out[i] = math.erf(np.float64(x[i]))


@njit(**_JIT)
def _embedding_backward_kernel(ids, g, dE, block):
    """dE[ids[p]] += g[p] without races: each parallel task owns ``block`` columns of
    dE and adds every position into them, in position order (so the sums are those
    of ``np.add.at``, bit for bit)."""
    N, D = g.shape
    for k in prange((D + block - 1) // block):
        c0 = k * block
        c1 = min(D, c0 + block)
        for p in range(N):
            v = ids[p]
            for c in range(c0, c1):
                dE[v, c] += g[p, c]


@njit(**_JIT)
def _sgd_kernel(param, grad, buf, lr, momentum, dampening, one_minus_damp, weight_decay,
                nesterov, maximize, init_buf):
    """NumpyBackend.sgd_step, one element at a time, same operations in the same order;
    the float scalars come in the arrays' dtype."""
    for i in prange(param.size):
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0.0:
            g = param[i] * weight_decay + g
        d = g
        if momentum != 0.0:
            if init_buf:
                bi = g
            elif dampening == 0.0:
                bi = buf[i] * momentum + g
            else:
                bi = buf[i] * momentum + g * one_minus_damp
            buf[i] = bi
            d = bi * momentum + g if nesterov else bi
        param[i] = param[i] - d * lr


@njit(**_JIT)
def _adam_kernel(param, grad, m, v, vmax, amsgrad, lr, decay, one_minus_b1, beta1,
                 one_minus_b2, beta2, sqrt_bc2, eps, step_size, weight_decay, decoupled,
                 maximize):
    """NumpyBackend.adam_step, one element at a time, same operations in the same order;
    the float scalars come in the arrays' dtype."""
    for i in prange(param.size):
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0.0:
            if decoupled:
                param[i] = param[i] * decay
            else:
                g = param[i] * weight_decay + g
        mi = m[i] * beta1 + g * one_minus_b1
        vi = v[i] * beta2 + (g * g) * one_minus_b2
        m[i] = mi
        v[i] = vi
        if amsgrad:
            if vi > vmax[i] or vi != vi or vmax[i] != vmax[i]:
                vmax[i] = vi
            vi = vmax[i]
        denom = np.sqrt(vi) / sqrt_bc2 + eps
        param[i] = param[i] - (mi / denom) * step_size


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


class NumbaBackend(NumpyBackend):
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

    def softmax_backward(self, y, gy, dim: int):
        dx = self._softmax_bwd(y, gy, dim, False)
        return super().softmax_backward(y, gy, dim) if dx is None else dx

    def log_softmax_backward(self, y, gy, dim: int):
        dx = self._softmax_bwd(y, gy, dim, True)
        return super().log_softmax_backward(y, gy, dim) if dx is None else dx

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

    def masked_softmax(self, x, keep, dim: int = -1):
        if not _is_last(dim, x.ndim) or (keep is not None and keep.dtype != np.bool_):
            return super().masked_softmax(x, keep, dim)
        out = self._fused_masked_softmax(np.array(x, order="C"), keep, None, 1.0, 0.0)
        return super().masked_softmax(x, keep, dim) if out is None else out[0]

    # ------------------------------------------------------------------ attention
    def attention(self, q, k, v, keep, bias, scale: float, dropout_p: float = 0.0):
        """NumpyBackend.attention with the two products on BLAS and scale + bias + mask +
        softmax + dropout fused into one pass over the scores."""
        if keep is not None and keep.dtype != np.bool_:
            keep = keep.astype(bool)
        s = np.matmul(q, np.swapaxes(k, -1, -2))
        fused = self._fused_masked_softmax(s, keep, bias, scale, dropout_p)
        if fused is None:
            return super().attention(q, k, v, keep, bias, scale, dropout_p)
        p, drop, pd = fused
        return np.matmul(p if pd is None else pd, v), p, drop

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

    def layer_norm(self, x, weight, bias, eps: float):
        out = self._norm_forward(x, weight, bias, eps, False)
        return super().layer_norm(x, weight, bias, eps) if out is None else out

    def rms_norm(self, x, weight, eps: float):
        out = self._norm_forward(x, weight, None, eps, True)
        return super().rms_norm(x, weight, eps) if out is None else (out[0], out[2])

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

    def layer_norm_backward(self, gy, x, weight, mean, rstd, need_wb: bool = True):
        out = self._norm_backward(gy, x, weight, mean, rstd, need_wb, False)
        if out is None:
            return super().layer_norm_backward(gy, x, weight, mean, rstd, need_wb)
        return out

    def rms_norm_backward(self, gy, x, weight, rstd, need_w: bool = True):
        out = self._norm_backward(gy, x, weight, None, rstd, need_w, True)
        if out is None:
            return super().rms_norm_backward(gy, x, weight, rstd, need_w)
        return out[0], out[1]

    # ------------------------------------------------------------------ activations
    def _gelu(self, x, b, gy, approximate: str):
        """The GELU kernel on (rows, last dim) views; None when it does not apply."""
        arrays = [x] + ([] if b is None else [b]) + ([] if gy is None else [gy])
        if not (_same_float(*arrays) and x.size and approximate in ("none", "tanh")
                and (gy is None or gy.shape == x.shape)
                and (b is None or (x.ndim >= 1 and b.shape == (x.shape[-1],)))):
            return None
        C = x.shape[-1] if x.ndim else 1
        x2 = _c(x).reshape(-1, C)
        b2 = np.zeros(C, x.dtype) if b is None else _c(b)
        g2 = _dummy(x.dtype, 2) if gy is None else _c(gy).reshape(-1, C)
        out = np.empty_like(x2)
        kernel = _gelu32_kernel if x.dtype == np.float32 else _gelu64_kernel
        kernel(x2, b2, g2, out, approximate == "tanh", gy is not None)
        return out.reshape(x.shape)

    def gelu(self, x, approximate: str = "none"):
        y = self._gelu(x, None, None, approximate)
        return super().gelu(x, approximate) if y is None else y

    def gelu_backward(self, x, gy, approximate: str = "none"):
        dx = self._gelu(x, None, gy, approximate)
        return super().gelu_backward(x, gy, approximate) if dx is None else dx

    def bias_gelu(self, x, b, approximate: str = "none"):
        y = self._gelu(x, b, None, approximate)
        return super().bias_gelu(x, b, approximate) if y is None else y

    def bias_gelu_backward(self, x, b, gy, approximate: str = "none"):
        dx = self._gelu(x, b, gy, approximate)
        if dx is None:
            return super().bias_gelu_backward(x, b, gy, approximate)
        return dx, dx.reshape(-1, dx.shape[-1]).sum(axis=0)

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
