"""The Numba kernels of :mod:`minilm.backends.numba_backend` that write into arrays
they are given: the embedding scatter-add and the optimizer updates (in place on the
parameter and its state). Conventions: see :mod:`minilm.backends.numba_backend`."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_kernels import _JIT


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
    """The reference ``sgd_step`` (optim/sgd.py), one element at a time, same operations in the same order;
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
    """The reference ``adam_step`` (optim/adam.py), one element at a time, same operations in the same order;
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
