"""Scaled dot-product attention, the op of every attention layer.

The reference arithmetic is the two kernels below, written against ``xp`` as the
formulas read and registered by name (``@kernel("attention")``); the op calls
``ctx.backend.attention(...)``, that function on the NumPy backend and an override that
fuses scale, mask, softmax and dropout on the Numba backend
(minilm/backends/interface.py). Name and semantics follow
``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from typing import Any

from ..autograd import Function
from ..backends.interface import kernel
from ..tensor import Tensor
from ._util import broadcast_shapes, unbroadcast

__all__ = ["causal_qkv_attention", "scaled_dot_product_attention"]


def _check_p(op: str, p: float) -> float:
    """``p`` as a float, a ValueError unless it is a probability (dropout, attention)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability must be in [0, 1], got {p}")
    return float(p)


@kernel("attention")
def attention_kernel(be, q, k, v, keep, bias, scale, dropout_p=0.0):
    """S = q k^T * scale + bias;  P = masked_softmax(S, keep);  out = (P * drop) v
    over the last two dims (leading dims broadcast), with drop = dropout_mask(P.shape,
    dropout_p). ``keep`` (bool) and ``bias`` may be None. Returns (out, P, drop);
    drop is None when dropout_p == 0."""
    xp = be.xp
    s = xp.matmul(q, xp.swapaxes(k, -1, -2)) * scale
    if bias is not None:
        s = s + bias
    p = be.masked_softmax(s, keep, -1)
    drop = be.dropout_mask(p.shape, dropout_p, p.dtype) if dropout_p > 0.0 else None
    pd = p if drop is None else p * drop
    return xp.matmul(pd, v), p, drop


@kernel("attention_backward")
def attention_backward_kernel(be, g, q, k, v, p, drop, scale):
    """With Pd = P * drop:  dV = Pd^T g;  dP = (g V^T) * drop;
    dS = softmax_backward(P, dP);  dQ = dS K * scale;  dK = dS^T Q * scale.
    Returns (dQ, dK, dV, dS); dS is also the gradient of an additive mask."""
    xp = be.xp
    pd = p if drop is None else p * drop
    dv = xp.matmul(xp.swapaxes(pd, -1, -2), g)
    dp = xp.matmul(g, xp.swapaxes(v, -1, -2))
    if drop is not None:
        dp = dp * drop
    ds = be.softmax_backward(p, dp, -1)
    dq = xp.matmul(ds, k) * scale
    dk = xp.matmul(xp.swapaxes(ds, -1, -2), q) * scale
    return dq, dk, dv, ds


def _causal_scores(be, q, k, scale):
    """S = q k^T * scale with -inf above the diagonal (j > i)."""
    xp = be.xp
    s = xp.matmul(q, xp.swapaxes(k, -1, -2)) * scale
    T = q.shape[-2]
    return xp.where(xp.tril(xp.ones((T, T), dtype=bool)), s, -xp.inf)


@kernel("causal_attention")
def causal_attention_kernel(be, q, k, v, scale):
    """S = q k^T * scale (j <= i only);  m = max_j S;  l = sum_j e^(S - m);
    out = (e^(S - m) / l) v;  lse = m + log l. Returns (out, lse); the fused backends
    compute the same without storing S (backends/_numba_attention_kernels.py)."""
    xp = be.xp
    s = _causal_scores(be, q, k, scale)
    m = s.max(axis=-1, keepdims=True)
    e = xp.exp(s - m)
    l = e.sum(axis=-1, keepdims=True)
    return xp.matmul(e / l, v), (m + xp.log(l))[..., 0].astype(xp.float64)


@kernel("causal_attention_backward")
def causal_attention_backward_kernel(be, g, q, k, v, out, lse, scale):
    """P = e^(S - lse) (recomputed);  dV = P^T g;  dP = g V^T;  D = rowsum(g * out);
    dS = P (dP - D);  dQ = dS K * scale;  dK = dS^T Q * scale. (D = rowsum(dP P), since
    out = P V: the softmax backward without P kept.)"""
    xp = be.xp
    p = xp.exp(_causal_scores(be, q, k, scale) - lse[..., None]).astype(q.dtype, copy=False)
    dv = xp.matmul(xp.swapaxes(p, -1, -2), g)
    d = (g * out).sum(axis=-1, keepdims=True)
    ds = p * (xp.matmul(g, xp.swapaxes(v, -1, -2)) - d)
    return xp.matmul(ds, k) * scale, xp.matmul(xp.swapaxes(ds, -1, -2), q) * scale, dv


def _heads(be, qkv, n_heads):
    """q, k, v (B, H, T, E) views of a fused projection's output (B, T, 3 H E)."""
    B, T, three_d = qkv.shape
    parts = qkv.reshape(B, T, 3, n_heads, three_d // (3 * n_heads))
    return tuple(be.xp.swapaxes(parts[:, :, i], 1, 2) for i in range(3))


@kernel("causal_attention_qkv")
def causal_attention_qkv_kernel(be, qkv, n_heads, scale):
    """causal_attention of the heads of qkv, the output heads joined: (B, T, H E), lse."""
    q, k, v = _heads(be, qkv, n_heads)
    out, lse = be.causal_attention(q, k, v, scale)
    B, H, T, E = out.shape
    return be.xp.swapaxes(out, 1, 2).reshape(B, T, H * E), lse


@kernel("causal_attention_qkv_backward")
def causal_attention_qkv_backward_kernel(be, g, qkv, out, lse, n_heads, scale):
    """causal_attention_backward per head, the three gradients joined like qkv."""
    xp = be.xp
    q, k, v = _heads(be, qkv, n_heads)
    B, H, T, E = q.shape
    g4, out4 = (xp.swapaxes(a.reshape(B, T, H, E), 1, 2) for a in (g, out))
    grads = be.causal_attention_backward(g4, q, k, v, out4, lse, scale)
    d = xp.empty((B, T, 3, H, E), dtype=qkv.dtype)
    for i, gi in enumerate(grads):
        d[:, :, i] = xp.swapaxes(gi, 1, 2)
    return d.reshape(qkv.shape)


class CausalQKVAttentionFunction(Function):
    """Causal self-attention straight from a fused projection: qkv (B, T, 3 H E) ->
    (B, T, H E), heads split and joined inside the kernels (no copies), lse kept for
    the backward. MultiHeadAttention takes it when nothing else (a cache, RoPE, a
    window, padding, dropout) stands between the projection and the attention."""

    @staticmethod
    def forward(ctx, qkv, *, n_heads, scale):
        out, lse = ctx.backend.causal_attention_qkv(qkv, n_heads, scale)
        ctx.save_for_backward(qkv, out, lse)
        ctx.n_heads, ctx.scale = n_heads, scale
        return out

    @staticmethod
    def backward(ctx, g):
        qkv, out, lse = ctx.saved
        return ctx.backend.causal_attention_qkv_backward(g, qkv, out, lse, ctx.n_heads,
                                                         ctx.scale)


def causal_qkv_attention(qkv: Tensor, n_heads: int, scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale, j <= i) v for each of the ``n_heads`` heads of a fused
    projection ``qkv`` (B, T, 3 H E), the heads' outputs side by side: (B, T, H E).
    Equals splitting the heads, ``scaled_dot_product_attention(is_causal=True)`` and
    joining them."""
    op = "causal_qkv_attention"
    if not isinstance(qkv, Tensor) or qkv.ndim != 3:
        raise ValueError(f"{op}: qkv must be a (B, T, 3 H E) Tensor, got "
                         f"{getattr(qkv, 'shape', type(qkv).__name__)}")
    if n_heads < 1 or qkv.shape[-1] % (3 * n_heads):
        raise ValueError(f"{op}: last dim {qkv.shape[-1]} is not 3 x n_heads ({n_heads}) x "
                         "a head size")
    E = qkv.shape[-1] // (3 * n_heads)
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)
    return CausalQKVAttentionFunction.apply(qkv, n_heads=int(n_heads), scale=scale)


class CausalAttentionFunction(Function):
    """softmax(q k^T * scale, j <= i) v through the ``causal_attention`` kernels, which
    keep the row log-sum-exp instead of P for the backward (flash-style on the Numba
    backend). Chosen by scaled_dot_product_attention for is_causal without a mask or
    dropout, q, k, v of one shape."""

    @staticmethod
    def forward(ctx, q, k, v, *, scale):
        out, lse = ctx.backend.causal_attention(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, out, lse = ctx.saved
        return ctx.backend.causal_attention_backward(g, q, k, v, out, lse, ctx.scale)


class ScaledDotProductAttentionFunction(Function):
    """S = q k^T * scale + M,  P = softmax(S) (masked entries 0; fully masked rows 0),
    out = dropout(P) v.  Backward (Pd = P * drop):  dV = Pd^T g,  dP = g V^T * drop,
    dS = P (dP - sum(dP P)),  dQ = dS K scale,  dK = dS^T Q scale,  dM = dS."""

    @staticmethod
    def forward(ctx, q, k, v, mask, *, is_causal, dropout_p, scale):
        xp = ctx.xp
        keep = bias = None
        if mask is not None:
            if mask.dtype == bool:
                keep = mask
            else:
                bias = mask.astype(q.dtype, copy=False)
        if is_causal:
            keep = xp.tril(xp.ones((q.shape[-2], k.shape[-2]), dtype=bool))
        out, p, drop = ctx.backend.attention(q, k, v, keep, bias, scale, dropout_p)
        ctx.save_for_backward(q, k, v, p, drop)
        ctx.scale = scale
        ctx.mask_shape = None if bias is None else bias.shape
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, p, drop = ctx.saved
        dq, dk, dv, ds = ctx.backend.attention_backward(g, q, k, v, p, drop, ctx.scale)
        need = ctx.needs_input_grad
        dq = unbroadcast(dq, q.shape) if need[0] else None
        dk = unbroadcast(dk, k.shape) if need[1] else None
        dv = unbroadcast(dv, v.shape) if need[2] else None
        dm = unbroadcast(ds, ctx.mask_shape) if len(need) > 3 and need[3] else None
        return dq, dk, dv, dm


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Any = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale + M) v over the last two dims; q (..., Lq, E),
    k (..., Lk, E), v (..., Lk, Ev), leading (batch, head) dims broadcast.

    ``attn_mask``: bool (True = take part, as in PyTorch) or an additive float mask,
    broadcastable to (..., Lq, Lk). ``is_causal`` keeps j <= i (top-left aligned:
    ``ones(Lq, Lk).tril()``). Rows with nothing to attend to give zeros. ``scale``
    defaults to 1/sqrt(E); ``dropout_p`` drops attention probabilities (always, as in
    PyTorch: pass 0 at evaluation)."""
    op = "scaled_dot_product_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ValueError(f"{op}: {name} needs at least 2 dims (..., L, E), got shape "
                             f"{t.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{op}: q {q.shape} and k {k.shape} have different embedding sizes")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{op}: k {k.shape} and v {v.shape} have different lengths")
    s_shape = broadcast_shapes(op, q.shape[:-1] + (k.shape[-2],), k.shape[:-2] + (1, 1),
                               v.shape[:-2] + (1, 1))
    if attn_mask is not None:
        if is_causal:
            raise ValueError(f"{op}: pass either attn_mask or is_causal=True, not both "
                             "(as in PyTorch); combine them into one mask instead")
        if not isinstance(attn_mask, Tensor):
            attn_mask = Tensor(attn_mask, backend=q.backend)
        if attn_mask.dtype.kind not in "bf":
            raise TypeError(f"{op}: attn_mask must be bool (True = take part) or float "
                            f"(added to the scores), got {attn_mask.dtype}")
        broadcast_shapes(op, s_shape, attn_mask.shape)
    dropout_p = _check_p(op, dropout_p)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] else 1.0
    if (is_causal and dropout_p == 0.0 and q.shape == k.shape == v.shape
            and q.dtype == k.dtype == v.dtype and q.dtype.kind == "f"
            and q.backend.flash_min_len is not None and q.shape[-2] >= q.backend.flash_min_len):
        return CausalAttentionFunction.apply(q, k, v, scale=float(scale))
    return ScaledDotProductAttentionFunction.apply(q, k, v, attn_mask, is_causal=bool(is_causal),
                                           dropout_p=dropout_p, scale=float(scale))
