"""The Numba kernels of :mod:`minilm.backends.numba_backend`: the ``@njit`` fused loops
of the softmax family, attention, cross-entropy, norms, GELU and dropout, and the
scalar helpers they inline (the scatter-add and optimizer updates are in
_numba_update_kernels.py).

They live apart from the backend class, as module-level functions of an importable
module, so that ``cache=True`` can store their compiled code; the conventions they
share (dtypes and signatures, vectorisation, float64 accumulation, counter-based
dropout) are set out in the docstring of :mod:`minilm.backends.numba_backend`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

_JIT = dict(parallel=True, cache=True, fastmath=False, error_model="numpy", nogil=True)
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
def _gelu32_kernel(x, gy, out, tanh, backward):
    """float32: out = gelu(x) or, backward, gy * gelu'(x), over the rows of x (R, C)
    (gy is a dummy in the forward). One loop per case, with constant flags, so that
    each one vectorises."""
    R, C = x.shape
    for r in prange(R):
        xr, outr = x[r], out[r]
        if backward and tanh:
            gr = gy[r]
            for j in range(C):
                outr[j] = gr[j] * _gelu32(xr[j], True, True)
        elif backward:
            gr = gy[r]
            for j in range(C):
                outr[j] = gr[j] * _gelu32(xr[j], False, True)
        elif tanh:
            for j in range(C):
                outr[j] = _gelu32(xr[j], True, False)
        else:
            for j in range(C):
                outr[j] = _gelu32(xr[j], False, False)


@njit(**_JIT)
def _gelu64_kernel(x, gy, out, tanh, backward):
    """float64 (libm's erf and tanh, the reference's formulas): as _gelu32_kernel."""
    R, C = x.shape
    for r in prange(R):
        xr, outr = x[r], out[r]
        gr = gy[r] if backward else gy[0]
        for j in range(C):
            d = _gelu64(xr[j], tanh, backward)
            outr[j] = gr[j] * d if backward else d


@njit(**_JIT)
def _erf_kernel(x, out):
    for i in prange(x.size):
        out[i] = math.erf(np.float64(x[i]))
