"""The Numba kernels of the quantized linear layers (minilm/quant/linear.py): the
int8 x int8 -> int32 product of W8A8 and the weight-only int8 / int4 linears.

The weight-only kernels never build a float copy of the weight. Each output row n of
the weight is read once per block of input rows, as bytes; the products with x are
summed in float32 over one group of ``group_size`` inputs and then scaled:

    y[m, n] = b[n] + sum_g scale[n, g] * (sum_{k in g} x[m, k] q[n, k] - zero[n, g] xs[m, g])

with ``xs[m, g] = sum_{k in g} x[m, k]`` (computed once per row of x, and only used
when the zero points are not all zero). Work is split over blocks of ``_ROWS`` output
rows (``prange``); inside a block the loop runs over the rows of x, so a row of x is
reused for the ``_ROWS`` weight rows while it sits in L1 and the block of weight bytes
(``_ROWS * K``) stays in L2 for all rows of x. The float sums are allowed to be
reassociated (``fastmath={"reassoc", "contract"}``) so that LLVM vectorises them:
results differ from the NumPy reference by float32 rounding only (see
tests/test_quant_linear.py for the bound). An inner loop is written as
``for kk in range(gs): ... [base + kk]``: with ``range(g * gs, (g + 1) * gs)`` LLVM
did not vectorise it, and the kernel ran 20x slower (measured, Numba 0.68).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_FAST = {"reassoc", "contract"}  # reassociated float sums: vectorised; no nnan/ninf
_JIT = dict(parallel=True, cache=True, error_model="numpy", fastmath=_FAST, nogil=True)
_ROWS = 16  # output rows per parallel task


@njit(parallel=True, cache=True, error_model="numpy", nogil=True)
def _int8_matmul_kernel(a, b, out):
    """out (M, N) int32 = a (M, K) int8 @ b (N, K)^T, summed in int32 (exact: integer
    addition is associative, so the vectorised sum is the sum)."""
    M, K = a.shape
    N = b.shape[0]
    nblocks = (N + _ROWS - 1) // _ROWS
    for blk in prange(nblocks):
        n0 = blk * _ROWS
        n1 = min(n0 + _ROWS, N)
        for m in range(M):
            for n in range(n0, n1):
                acc = np.int32(0)
                for k in range(K):
                    acc += np.int32(a[m, k]) * np.int32(b[n, k])
                out[m, n] = acc


@njit(**_JIT)
def _group_sums(x, gs, G, out):
    """out[m, g] = sum of x[m, g gs : (g + 1) gs] (float32)."""
    M = x.shape[0]
    for m in prange(M):
        for g in range(G):
            base = g * gs
            s = np.float32(0.0)
            for kk in range(gs):
                s += x[m, base + kk]
            out[m, g] = s


@njit(**_JIT)
def _linear_int8_kernel(x, q, scale, zero, gs, has_zero, xs, bias, out):
    """out (M, N) = x (M, K) float32 times the int8 weight q (N, K) with group scales
    scale, zero (N, G), plus bias (N,) (zeros when the layer has none)."""
    M, K = x.shape
    N = q.shape[0]
    G = K // gs
    nblocks = (N + _ROWS - 1) // _ROWS
    for blk in prange(nblocks):
        n0 = blk * _ROWS
        n1 = min(n0 + _ROWS, N)
        for m in range(M):
            for n in range(n0, n1):
                acc = np.float32(0.0)
                for g in range(G):
                    base = g * gs
                    part = np.float32(0.0)
                    for kk in range(gs):
                        part += x[m, base + kk] * np.float32(q[n, base + kk])
                    if has_zero:
                        part -= zero[n, g] * xs[m, g]
                    acc += scale[n, g] * part
                out[m, n] = acc + bias[n]


@njit(**_JIT)
def _linear_int4_kernel(xe, xo, packed, scale, zero, gs, has_zero, xs, bias, out):
    """As _linear_int8_kernel with the signed 4-bit codes two per byte: ``packed``
    (N, K/2) is affine.pack_int4's uint8 array viewed as int8, q[n, 2j] in the low
    nibble of packed[n, j], q[n, 2j + 1] in the high one. The high nibble is the byte
    shifted right arithmetically (b >> 4, sign-extended); the low one is the byte moved
    up and back (int8(b << 4) >> 4). x comes split into its even and odd columns,
    xe = x[:, 0::2] and xo = x[:, 1::2] (contiguous), so that the inner loop reads
    everything at unit stride and vectorises."""
    M, half = xe.shape
    N = scale.shape[0]
    ghalf = gs // 2
    G = half // ghalf
    nblocks = (N + _ROWS - 1) // _ROWS
    for blk in prange(nblocks):
        n0 = blk * _ROWS
        n1 = min(n0 + _ROWS, N)
        for m in range(M):
            for n in range(n0, n1):
                acc = np.float32(0.0)
                for g in range(G):
                    base = g * ghalf
                    lo_sum = np.float32(0.0)
                    hi_sum = np.float32(0.0)
                    for jj in range(ghalf):
                        b = packed[n, base + jj]
                        lo = np.int8(b << np.int8(4)) >> np.int8(4)  # literal shifts:
                        hi = b >> np.int8(4)  # an int8 variable stopped vectorisation
                        lo_sum += xe[m, base + jj] * np.float32(lo)
                        hi_sum += xo[m, base + jj] * np.float32(hi)
                    part = lo_sum + hi_sum
                    if has_zero:
                        part -= zero[n, g] * xs[m, g]
                    acc += scale[n, g] * part
                out[m, n] = acc + bias[n]
