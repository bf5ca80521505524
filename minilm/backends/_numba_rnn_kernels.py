"""The Numba kernels of the fused LSTM and GRU sequences (functional/recurrent.py has
the equations and the NumPy reference).

Each time step is one BLAS product, made by the caller with NumPy (``h @ W_hh^T``
forward, ``da @ W_hh`` backward; Numba's own ``np.dot`` would need SciPy), and one call
of a kernel below that does all the gate arithmetic of the step in one pass over the
(B, H) values, where the NumPy reference makes ~25 temporaries of (B, H) per step.
Measured on the classifier's shape (B 32, T 200, H 64, float32) in docs/recurrent.md.
``W_hh``'s gradient is one product over all steps, done by the caller. The kernels are
sequential: at these sizes a step is microseconds of work, less than what handing rows
to threads would cost.

Padded steps (``keep[t, b]`` False) copy the state through and zero the saved gates,
as the reference does. Arithmetic is in the array's dtype; results equal the reference
to rounding (tests/test_recurrent.py, every backend).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._numba_kernels import _exp32

_JIT = dict(cache=True, error_model="numpy", nogil=True)


def _tanh(y):
    """tanh in the dtype of ``y``: for float32 1 - 2 / (exp(2y) + 1) with the
    vectorisable _exp32 (absolute error ~1e-7), libm's tanh for float64."""
    return math.tanh(y)


@overload(_tanh, jit_options={"cache": True, "error_model": "numpy"})
def _tanh_overload(y):
    if isinstance(y, types.Float) and y.bitwidth == 32:
        one, two = np.float32(1.0), np.float32(2.0)
        return lambda y: one - two / (_exp32(two * y) + one)
    return lambda y: math.tanh(y)


def _sig(y):
    """The logistic sigmoid 1 / (1 + exp(-y)) in the dtype of ``y``."""
    return 1.0 / (1.0 + math.exp(-y))


@overload(_sig, jit_options={"cache": True, "error_model": "numpy"})
def _sig_overload(y):
    if isinstance(y, types.Float) and y.bitwidth == 32:
        one = np.float32(1.0)
        return lambda y: one / (one + _exp32(-y))
    return lambda y: 1.0 / (1.0 + math.exp(-y))


@njit(**_JIT)
def _lstm_step(gx, a, h, c, keep, has_keep, hs, cs, acts):
    """One step: a = h @ W_hh^T (B, 4H) made by the caller. Writes the new states to
    hs, cs (B, H) and h, c (in place), the activated gates to acts (B, 4H)."""
    B, G = gx.shape
    H = G // 4
    for b in range(B):
        hb, cb, hsb, csb = h[b], c[b], hs[b], cs[b]
        if has_keep and not keep[b]:  # padding: the state passes through
            acts[b, :] = 0.0
            hsb[:] = hb
            csb[:] = cb
            continue
        # 1-d row views: with them LLVM vectorises the loop (2-d indexing it did not)
        xb, ab = gx[b], a[b]
        ai, af, ag, ao = acts[b, :H], acts[b, H:2 * H], acts[b, 2 * H:3 * H], acts[b, 3 * H:]
        for j in range(H):
            i = _sig(xb[j] + ab[j])
            f = _sig(xb[H + j] + ab[H + j])
            g = _tanh(xb[2 * H + j] + ab[2 * H + j])
            o = _sig(xb[3 * H + j] + ab[3 * H + j])
            cn = f * cb[j] + i * g
            ai[j], af[j], ag[j], ao[j] = i, f, g, o
            csb[j] = cn
            hsb[j] = o * _tanh(cn)
        hb[:] = hsb
        cb[:] = csb


@njit(**_JIT)
def _take_rows(dh, m, keep, has_keep):
    """dh[b] = m[b] for the real rows b of the step m came from (dh_{t-1} = da W_hh);
    a padded step passed its dh through unchanged."""
    for b in range(dh.shape[0]):
        if not has_keep or keep[b]:
            dh[b, :] = m[b]


@njit(**_JIT)
def _lstm_step_backward(ghs, dh, dc, c, cp, acts, keep, has_keep, dgx):
    """One step back: dh += ghs (the output's gradient), then the gate gradients into
    dgx (B, 4H) and dc <- dc_t f (in place); c the cell after the step, cp before it."""
    B, G = acts.shape
    H = G // 4
    for b in range(B):
        dhb, dcb = dh[b], dc[b]
        dhb += ghs[b]
        if has_keep and not keep[b]:
            dgx[b, :] = 0.0
            continue
        cb, cpb, actb = c[b], cp[b], acts[b]
        di, df, dg, do = dgx[b, :H], dgx[b, H:2 * H], dgx[b, 2 * H:3 * H], dgx[b, 3 * H:]
        for j in range(H):
            i, f, g, o = actb[j], actb[H + j], actb[2 * H + j], actb[3 * H + j]
            tc = _tanh(cb[j])
            dct = dcb[j] + dhb[j] * o * (1 - tc * tc)
            di[j] = dct * g * i * (1 - i)
            df[j] = dct * cpb[j] * f * (1 - f)
            dg[j] = dct * i * (1 - g * g)
            do[j] = dhb[j] * tc * o * (1 - o)
            dcb[j] = dct * f


@njit(**_JIT)
def _gru_step(gx, gh, bhh, h, keep, has_keep, hs, acts):
    """One step: gh = h @ W_hh^T (B, 3H) made by the caller (b_hh added here). Writes
    the new state to hs (B, H) and h (in place), r, z, n, hn to acts (B, 4H)."""
    B, G = gx.shape
    H = G // 3
    for b in range(B):
        hb, hsb = h[b], hs[b]
        if has_keep and not keep[b]:
            acts[b, :] = 0.0
            hsb[:] = hb
            continue
        xb, ghb = gx[b], gh[b]
        ar, az, an, ahn = acts[b, :H], acts[b, H:2 * H], acts[b, 2 * H:3 * H], acts[b, 3 * H:]
        for j in range(H):
            r = _sig(xb[j] + ghb[j] + bhh[j])
            z = _sig(xb[H + j] + ghb[H + j] + bhh[H + j])
            hn = ghb[2 * H + j] + bhh[2 * H + j]
            n = _tanh(xb[2 * H + j] + r * hn)
            ar[j], az[j], an[j], ahn[j] = r, z, n, hn
            hsb[j] = n + z * (hb[j] - n)
        hb[:] = hsb


@njit(**_JIT)
def _gru_step_backward(ghs, dh, hp, acts, keep, has_keep, dgx, dgh):
    """One step back: dh += ghs, then dgx (B, 3H), dgh (B, 3H) (the gradient of
    h W_hh^T + b_hh) and dh <- dh z (in place; the caller adds dgh @ W_hh); hp the state
    before the step."""
    B, G4 = acts.shape
    H = G4 // 4
    for b in range(B):
        dhb = dh[b]
        dhb += ghs[b]
        if has_keep and not keep[b]:
            dgx[b, :] = 0.0
            dgh[b, :] = 0.0
            continue
        hpb, actb = hp[b], acts[b]
        xr, xz, xn = dgx[b, :H], dgx[b, H:2 * H], dgx[b, 2 * H:]
        hr, hz, hh = dgh[b, :H], dgh[b, H:2 * H], dgh[b, 2 * H:]
        for j in range(H):
            r, z, n, hn = actb[j], actb[H + j], actb[2 * H + j], actb[3 * H + j]
            dan = dhb[j] * (1 - z) * (1 - n * n)
            dar = dan * hn * r * (1 - r)
            daz = dhb[j] * (hpb[j] - n) * z * (1 - z)
            xr[j], xz[j], xn[j] = dar, daz, dan
            hr[j], hz[j], hh[j] = dar, daz, dan * r
            dhb[j] = dhb[j] * z


@njit(**_JIT)
def _add_rows(dh, m, keep, has_keep):
    """dh[b] += m[b] for the real rows b (the GRU's dh_{t-1} = dh z + dgh W_hh)."""
    for b in range(dh.shape[0]):
        if not has_keep or keep[b]:
            dh[b, :] += m[b]


# ============================================================================ drivers
# The loops over time, called by NumbaBackend.lstm_sequence & co. once the arrays are
# known to be float32/float64 of one dtype.

def _c(a):
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()


def _keep_arg(keep, T: int):
    if keep is None:  # every step real: rows of a dummy that the kernels never read
        return np.ones((T, 1), dtype=np.bool_), False
    return np.ascontiguousarray(keep, dtype=np.bool_), True


def _steps(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def _prev_states(hs, h0, reverse: bool):
    """(T, B, H): the state each recurrent step started from."""
    if reverse:
        return np.concatenate([hs[1:], h0[None]], axis=0)
    return np.concatenate([h0[None], hs[:-1]], axis=0)


def lstm_forward(gx, h0, c0, w_hh, keep, reverse: bool):
    """(hs, cs, acts) as the ``lstm_sequence`` kernel: per step one BLAS product and
    one compiled pass over the gates."""
    T, B, G = gx.shape
    gx = _c(gx)
    hs, cs = np.empty((T, B, G // 4), gx.dtype), np.empty((T, B, G // 4), gx.dtype)
    acts = np.empty_like(gx)
    k, has_keep = _keep_arg(keep, T)
    h, c, wt = np.array(h0, order="C"), np.array(c0, order="C"), _c(w_hh.T)
    a = np.empty((B, G), gx.dtype)
    for t in _steps(T, reverse):
        np.dot(h, wt, out=a)
        _lstm_step(gx[t], a, h, c, k[t], has_keep, hs[t], cs[t], acts[t])
    return hs, cs, acts


def lstm_backward(ghs, ghT, gcT, hs, cs, acts, h0, c0, w_hh, keep, reverse: bool):
    """(dgx, dh0, dc0, dw_hh) as the ``lstm_sequence_backward`` kernel."""
    T, B, G = acts.shape
    ghs, cs, acts, w = _c(ghs), _c(cs), _c(acts), _c(w_hh)
    dgx = np.empty_like(acts)
    dh, dc = np.array(ghT, order="C"), np.array(gcT, order="C")
    c_prev = _prev_states(cs, _c(c0), reverse)
    k, has_keep = _keep_arg(keep, T)
    m = np.empty_like(dh)
    last = -1
    for t in _steps(T, not reverse):
        if last >= 0:
            _take_rows(dh, m, k[last], has_keep)
        _lstm_step_backward(ghs[t], dh, dc, cs[t], c_prev[t], acts[t], k[t], has_keep,
                            dgx[t])
        np.dot(dgx[t], w, out=m)
        last = t
    _take_rows(dh, m, k[last], has_keep)
    h_prev = _prev_states(hs, h0, reverse)
    dw = dgx.reshape(T * B, G).T @ h_prev.reshape(T * B, G // 4)
    return dgx, dh, dc, dw


def gru_forward(gx, h0, w_hh, b_hh, keep, reverse: bool):
    """(hs, acts) as the ``gru_sequence`` kernel."""
    T, B, G = gx.shape
    H = G // 3
    gx = _c(gx)
    hs, acts = np.empty((T, B, H), gx.dtype), np.empty((T, B, 4 * H), gx.dtype)
    bhh = np.zeros(G, gx.dtype) if b_hh is None else _c(b_hh)
    k, has_keep = _keep_arg(keep, T)
    h, wt = np.array(h0, order="C"), _c(w_hh.T)
    gh = np.empty((B, G), gx.dtype)
    for t in _steps(T, reverse):
        np.dot(h, wt, out=gh)
        _gru_step(gx[t], gh, bhh, h, k[t], has_keep, hs[t], acts[t])
    return hs, acts


def gru_backward(ghs, ghT, hs, acts, h0, w_hh, keep, reverse: bool):
    """(dgx, dh0, dw_hh, db_hh) as the ``gru_sequence_backward`` kernel."""
    T, B, G4 = acts.shape
    H = G4 // 4
    ghs, acts, w = _c(ghs), _c(acts), _c(w_hh)
    dgx, dgh = np.empty((T, B, 3 * H), hs.dtype), np.empty((T, B, 3 * H), hs.dtype)
    dh = np.array(ghT, order="C")
    h_prev = _prev_states(hs, h0, reverse)
    k, has_keep = _keep_arg(keep, T)
    m = np.empty_like(dh)
    for t in _steps(T, not reverse):
        _gru_step_backward(ghs[t], dh, h_prev[t], acts[t], k[t], has_keep, dgx[t], dgh[t])
        np.dot(dgh[t], w, out=m)
        _add_rows(dh, m, k[t], has_keep)
    flat = dgh.reshape(T * B, 3 * H)
    return dgx, dh, flat.T @ h_prev.reshape(T * B, H), flat.sum(axis=0)
