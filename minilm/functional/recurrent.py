"""Fused recurrent sequences: one autograd node for a whole layer-direction of an RNN,
LSTM or GRU, instead of a dozen per time step.

``nn.LSTM`` & co. first compute the input part of every gate for all steps at once
(``gx = x W_ih^T + b``, one matrix product); what is left is the loop over time, which
only multiplies by ``W_hh`` and applies the gate arithmetic. Composed from autograd ops
(the modules' ``_cell`` methods, kept as the readable reference), that loop records
~15 graph nodes per step, and at classifier sizes (B 32, H 64) the bookkeeping costs
more than the arithmetic. Here the loop is one :class:`Function` per layer and
direction, whose backward is backpropagation through time written out by hand.

Shapes: ``gx`` (T, B, G·H) with G = 4 (LSTM, rows i, f, g, o), 3 (GRU, rows r, z, n)
or 1 (RNN); states (B, H); ``w_hh`` (G·H, H); ``keep`` (T, B) bool, False at padded
steps (the state passes through unchanged), or None. ``reverse`` walks t = T-1 .. 0.
The output ``hs`` (T, B, H) is the state after step t (for a padded step: the state
kept), as the composed loop returns it.

Backward, with ``dh``/``dc`` the gradient reaching the state after step t (from the
output at t plus the step after it), for a real step of the LSTM:

    dc_t = dc + dh o (1 - tanh^2 c_t)          do = dh tanh c_t
    di = dc_t g   df = dc_t c_{t-1}   dg = dc_t i   dc_{t-1} = dc_t f
    da = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]      (pre-activation grads)
    dgx_t = da    dh_{t-1} = da W_hh    dW_hh = sum_t da_t^T h_{t-1}

and of the GRU (h' = n + z (h - n), n = tanh(xn + r hn), hn = h W_hn^T + b_hn):

    dn = dh (1 - z)   dz = dh (h - n)   dan = dn (1 - n^2)
    dar = dan hn r(1-r)   daz = dz z(1-z)   dhn = dan r
    dgx_t = [dar, daz, dan]   dgh_t = [dar, daz, dhn]
    dh_{t-1} = dh z + dgh_t W_hh   dW_hh = sum_t dgh_t^T h_{t-1}   db_hh = sum_t dgh_t

A padded step passes dh (and dc) straight to the step before and contributes nothing
else. ``W_hh``'s gradient is one product over all steps at the end.

The reference kernels below are NumPy loops over time (registered as backend kernels);
the Numba backend runs the same recursions as compiled loops (_numba_rnn_kernels.py).
"""

from __future__ import annotations

from typing import Any

from ..autograd import Function
from ..backends.interface import kernel
from ..tensor import Tensor

__all__ = ["gru_sequence", "lstm_sequence", "rnn_sequence"]


def _order(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def _sigmoid(xp: Any, a: Any) -> Any:
    """1 / (1 + e^-a) without overflow: e^-|a| never exceeds 1."""
    e = xp.exp(-xp.abs(a))
    return xp.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _prev_states(xp: Any, hs: Any, h0: Any, reverse: bool) -> Any:
    """(T, B, H): the state each step started from."""
    if reverse:
        return xp.concatenate([hs[1:], h0[None]], axis=0)
    return xp.concatenate([h0[None], hs[:-1]], axis=0)


# ---------------------------------------------------------------------------- LSTM
@kernel("lstm_sequence")
def lstm_sequence_kernel(be, gx, h0, c0, w_hh, keep, reverse):
    """Returns (hs, cs, acts): hs, cs (T, B, H) the states after each step, acts
    (T, B, 4H) the activated gates i, f, g, o (zero at padded steps)."""
    xp = be.xp
    T, B, G = gx.shape
    H = G // 4
    hs, cs = xp.empty((T, B, H), gx.dtype), xp.empty((T, B, H), gx.dtype)
    acts = xp.zeros((T, B, G), gx.dtype)
    h, c, wt = h0, c0, w_hh.T
    for t in _order(T, reverse):
        a = gx[t] + h @ wt
        i, f = _sigmoid(xp, a[:, :H]), _sigmoid(xp, a[:, H:2 * H])
        g, o = xp.tanh(a[:, 2 * H:3 * H]), _sigmoid(xp, a[:, 3 * H:])
        c_new = f * c + i * g
        h_new = o * xp.tanh(c_new)
        if keep is not None:
            k = keep[t][:, None]
            c_new, h_new = xp.where(k, c_new, c), xp.where(k, h_new, h)
            i, f, g, o = (xp.where(k, v, 0) for v in (i, f, g, o))
        acts[t] = xp.concatenate([i, f, g, o], axis=1)
        hs[t], cs[t] = h, c = h_new, c_new
    return hs, cs, acts


@kernel("lstm_sequence_backward")
def lstm_sequence_backward_kernel(be, ghs, ghT, gcT, hs, cs, acts, h0, c0, w_hh, keep,
                                  reverse):
    """Returns (dgx (T, B, 4H), dh0, dc0, dw_hh); see the module docstring."""
    xp = be.xp
    T, B, G = acts.shape
    H = G // 4
    dgx = xp.zeros((T, B, G), ghs.dtype)
    c_prev_all = _prev_states(xp, cs, c0, reverse)
    dh, dc = ghT.copy(), gcT.copy()
    for t in _order(T, not reverse):
        dh = dh + ghs[t]
        i, f, g, o = (acts[t][:, k * H:(k + 1) * H] for k in range(4))
        tc = xp.tanh(cs[t])
        dct = dc + dh * o * (1 - tc * tc)
        da = xp.concatenate([dct * g * i * (1 - i), dct * c_prev_all[t] * f * (1 - f),
                             dct * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
        if keep is not None:  # padded rows: zero gates, so da is 0 there already
            k = keep[t][:, None]
            dh_new = xp.where(k, da @ w_hh, dh)
            dc = xp.where(k, dct * f, dc)
        else:
            dh_new, dc = da @ w_hh, dct * f
        dgx[t] = da
        dh = dh_new
    h_prev = _prev_states(xp, hs, h0, reverse)
    dw = dgx.reshape(T * B, G).T @ h_prev.reshape(T * B, H)
    return dgx, dh, dc, dw


class LSTMSequence(Function):
    """(gx, h0, c0, w_hh) -> (hs, hT, cT) for one LSTM layer-direction."""

    @staticmethod
    def forward(ctx, gx, h0, c0, w_hh, *, keep, reverse):
        hs, cs, acts = ctx.backend.lstm_sequence(gx, h0, c0, w_hh, keep, reverse)
        ctx.save_for_backward(hs, cs, acts, h0, c0, w_hh)
        ctx.keep, ctx.reverse = keep, reverse
        last = 0 if reverse else -1
        return hs, hs[last].copy(), cs[last].copy()

    @staticmethod
    def backward(ctx, ghs, ghT, gcT):
        hs, cs, acts, h0, c0, w_hh = ctx.saved  # autograd passes zeros for unused outputs
        return ctx.backend.lstm_sequence_backward(ghs, ghT, gcT, hs, cs, acts, h0, c0, w_hh,
                                                  ctx.keep, ctx.reverse)


def lstm_sequence(gx: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, keep: Any = None,
                  reverse: bool = False) -> tuple:
    """One LSTM layer-direction over a whole sequence: ``(hs, h_T, c_T)``.
    ``gx`` = x W_ih^T + b_ih + b_hh for every step (T, B, 4H); see the module docstring."""
    return LSTMSequence.apply(gx, h0, c0, w_hh, keep=keep, reverse=bool(reverse))


# ---------------------------------------------------------------------------- GRU
@kernel("gru_sequence")
def gru_sequence_kernel(be, gx, h0, w_hh, b_hh, keep, reverse):
    """Returns (hs, acts): hs (T, B, H), acts (T, B, 4H) = r, z, n, hn per step (zero at
    padded steps). ``gx`` holds x W_ih^T + b_ih; ``b_hh`` (3H,) or None."""
    xp = be.xp
    T, B, G = gx.shape
    H = G // 3
    hs = xp.empty((T, B, H), gx.dtype)
    acts = xp.zeros((T, B, 4 * H), gx.dtype)
    h, wt = h0, w_hh.T
    for t in _order(T, reverse):
        gh = h @ wt
        if b_hh is not None:
            gh = gh + b_hh
        r = _sigmoid(xp, gx[t][:, :H] + gh[:, :H])
        z = _sigmoid(xp, gx[t][:, H:2 * H] + gh[:, H:2 * H])
        hn = gh[:, 2 * H:]
        n = xp.tanh(gx[t][:, 2 * H:] + r * hn)
        h_new = n + z * (h - n)
        if keep is not None:
            k = keep[t][:, None]
            h_new = xp.where(k, h_new, h)
            r, z, n, hn = (xp.where(k, v, 0) for v in (r, z, n, hn))
        acts[t] = xp.concatenate([r, z, n, hn], axis=1)
        hs[t] = h = h_new
    return hs, acts


@kernel("gru_sequence_backward")
def gru_sequence_backward_kernel(be, ghs, ghT, hs, acts, h0, w_hh, keep, reverse):
    """Returns (dgx (T, B, 3H), dh0, dw_hh, db_hh); see the module docstring."""
    xp = be.xp
    T, B, G4 = acts.shape
    H = G4 // 4
    dgx = xp.zeros((T, B, 3 * H), ghs.dtype)
    dgh = xp.zeros((T, B, 3 * H), ghs.dtype)
    h_prev = _prev_states(xp, hs, h0, reverse)
    dh = ghT.copy()
    for t in _order(T, not reverse):
        dh = dh + ghs[t]
        r, z, n, hn = (acts[t][:, k * H:(k + 1) * H] for k in range(4))
        dn = dh * (1 - z)
        dz = dh * (h_prev[t] - n)
        dan = dn * (1 - n * n)
        dar = dan * hn * r * (1 - r)
        daz = dz * z * (1 - z)
        gh_t = xp.concatenate([dar, daz, dan * r], axis=1)
        if keep is not None:  # padded rows: r = z = n = hn = 0, but dz = dh h is not
            k = keep[t][:, None]
            gh_t = xp.where(k, gh_t, 0)
            dgx[t] = xp.where(k, xp.concatenate([dar, daz, dan], axis=1), 0)
            dh = xp.where(k, dh * z + gh_t @ w_hh, dh)
        else:
            dgx[t] = xp.concatenate([dar, daz, dan], axis=1)
            dh = dh * z + gh_t @ w_hh
        dgh[t] = gh_t
    flat = dgh.reshape(T * B, 3 * H)
    return dgx, dh, flat.T @ h_prev.reshape(T * B, H), flat.sum(axis=0)


class GRUSequence(Function):
    """(gx, h0, w_hh, b_hh) -> (hs, hT) for one GRU layer-direction."""

    @staticmethod
    def forward(ctx, gx, h0, w_hh, b_hh, *, keep, reverse):
        hs, acts = ctx.backend.gru_sequence(gx, h0, w_hh, b_hh, keep, reverse)
        ctx.save_for_backward(hs, acts, h0, w_hh)
        ctx.keep, ctx.reverse = keep, reverse
        return hs, hs[0 if reverse else -1].copy()

    @staticmethod
    def backward(ctx, ghs, ghT):
        hs, acts, h0, w_hh = ctx.saved
        dgx, dh0, dw, db = ctx.backend.gru_sequence_backward(ghs, ghT, hs, acts, h0, w_hh,
                                                             ctx.keep, ctx.reverse)
        return dgx, dh0, dw, (db if ctx.needs_input_grad[3] else None)


def gru_sequence(gx: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None = None,
                 keep: Any = None, reverse: bool = False) -> tuple:
    """One GRU layer-direction over a whole sequence: ``(hs, h_T)``. ``gx`` = x W_ih^T +
    b_ih (T, B, 3H); ``b_hh`` stays inside the step (b_hn is multiplied by r)."""
    return GRUSequence.apply(gx, h0, w_hh, b_hh, keep=keep, reverse=bool(reverse))


# ---------------------------------------------------------------------------- RNN
@kernel("rnn_sequence")
def rnn_sequence_kernel(be, gx, h0, w_hh, keep, reverse, relu):
    """Returns hs (T, B, H): h_t = act(gx_t + h_{t-1} W_hh^T), act = tanh or relu."""
    xp = be.xp
    T, B, H = gx.shape
    hs = xp.empty((T, B, H), gx.dtype)
    h, wt = h0, w_hh.T
    for t in _order(T, reverse):
        a = gx[t] + h @ wt
        h_new = xp.maximum(a, 0) if relu else xp.tanh(a)
        hs[t] = h = h_new if keep is None else xp.where(keep[t][:, None], h_new, h)
    return hs


@kernel("rnn_sequence_backward")
def rnn_sequence_backward_kernel(be, ghs, ghT, hs, h0, w_hh, keep, reverse, relu):
    """Returns (dgx, dh0, dw_hh): da = dh act'(a) with act' = 1 - h^2 (tanh) or
    [h > 0] (relu); dh_{t-1} = da W_hh."""
    xp = be.xp
    T = hs.shape[0]
    dgx = xp.zeros_like(hs)
    dh = ghT.copy()
    for t in _order(T, not reverse):
        dh = dh + ghs[t]
        da = dh * ((hs[t] > 0) if relu else (1 - hs[t] * hs[t]))
        if keep is not None:
            k = keep[t][:, None]
            da = xp.where(k, da, 0)
            dh = xp.where(k, da @ w_hh, dh)
        else:
            dh = da @ w_hh
        dgx[t] = da
    h_prev = _prev_states(xp, hs, h0, reverse)
    B, H = h0.shape
    return dgx, dh, dgx.reshape(T * B, H).T @ h_prev.reshape(T * B, H)


class RNNSequence(Function):
    """(gx, h0, w_hh) -> (hs, hT) for one Elman RNN layer-direction."""

    @staticmethod
    def forward(ctx, gx, h0, w_hh, *, keep, reverse, relu):
        hs = ctx.backend.rnn_sequence(gx, h0, w_hh, keep, reverse, relu)
        ctx.save_for_backward(hs, h0, w_hh)
        ctx.keep, ctx.reverse, ctx.relu = keep, reverse, relu
        return hs, hs[0 if reverse else -1].copy()

    @staticmethod
    def backward(ctx, ghs, ghT):
        hs, h0, w_hh = ctx.saved
        return ctx.backend.rnn_sequence_backward(ghs, ghT, hs, h0, w_hh, ctx.keep,
                                                 ctx.reverse, ctx.relu)


def rnn_sequence(gx: Tensor, h0: Tensor, w_hh: Tensor, keep: Any = None,
                 reverse: bool = False, nonlinearity: str = "tanh") -> tuple:
    """One Elman RNN layer-direction over a whole sequence: ``(hs, h_T)``; ``gx`` =
    x W_ih^T + b_ih + b_hh (T, B, H)."""
    return RNNSequence.apply(gx, h0, w_hh, keep=keep, reverse=bool(reverse),
                             relu=nonlinearity == "relu")
