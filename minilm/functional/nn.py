"""Neural-network ops: softmax family, normalisation, dropout, embedding, attention.

Each class is one differentiable op on raw backend arrays; the hot paths (softmax,
layer/RMS norm, dropout masks, the embedding scatter-add, attention) go through
``ctx.backend.<kernel>`` so that the Numba and CuPy backends can replace them. Names and
semantics follow ``torch.nn.functional``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..autograd import Function
from ..tensor import Tensor, dtype_of
from ._util import broadcast_shapes, norm_dim, unbroadcast
from .math import cast

__all__ = [
    "dropout",
    "embedding",
    "layer_norm",
    "log_softmax",
    "one_hot",
    "rms_norm",
    "scaled_dot_product_attention",
    "softmax",
]


# ---------------------------------------------------------------------------- softmax family


class Softmax(Function):
    """y = exp(x - max x) / sum exp(x - max x) along ``dim``;  dx = y (g - sum(g y))."""

    @staticmethod
    def forward(ctx, x, *, dim):
        ctx.dim = dim
        y = ctx.backend.softmax(_as_row(x), dim).reshape(x.shape)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return ctx.backend.softmax_backward(_as_row(y), _as_row(g), ctx.dim).reshape(y.shape)


class LogSoftmax(Function):
    """y = x - logsumexp(x) along ``dim``;  dx = g - exp(y) sum(g)."""

    @staticmethod
    def forward(ctx, x, *, dim):
        ctx.dim = dim
        y = ctx.backend.log_softmax(_as_row(x), dim).reshape(x.shape)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return ctx.backend.log_softmax_backward(_as_row(y), _as_row(g), ctx.dim).reshape(y.shape)


def _as_row(x: Any) -> Any:
    """A 0-d array as a row of one element (softmax of a scalar is 1)."""
    return x.reshape(1) if x.ndim == 0 else x


def _softmax_like(op: str, fn: type, x: Tensor, dim: int, dtype: Any) -> Tensor:
    if dtype is not None:
        x = cast(x, dtype_of(dtype))
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: needs a floating-point tensor, got {x.dtype}; convert it "
                        "with .float() or pass dtype=")
    return fn.apply(x, dim=norm_dim(op, dim, x.ndim))


def softmax(x: Tensor, dim: int = -1, dtype: Any = None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim`` (stable: the row max is subtracted first)."""
    return _softmax_like("softmax", Softmax, x, dim, dtype)


def log_softmax(x: Tensor, dim: int = -1, dtype: Any = None) -> Tensor:
    """log(softmax(x)) along ``dim``, computed as x - logsumexp(x)."""
    return _softmax_like("log_softmax", LogSoftmax, x, dim, dtype)


# ---------------------------------------------------------------------------- normalisation


def _fold_trailing(x: Any, n: int) -> Any:
    """View ``x`` with its last ``n`` dims folded into one (layer norm over all of them)."""
    if n == 1:
        return x
    return x.reshape(x.shape[: x.ndim - n] + (-1,))


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the normalised (last) dims;
    with xh the normalised x and gw = g w:  dx = rstd (gw - mean(gw) - xh mean(gw xh)),
    dw = sum(g xh), db = sum(g) over the leading dims."""

    @staticmethod
    def forward(ctx, x, weight, bias, *, ndims, eps):
        x2 = _fold_trailing(x, ndims)
        w2 = None if weight is None else weight.reshape(-1)
        b2 = None if bias is None else bias.reshape(-1)
        y, mean, rstd = ctx.backend.layer_norm(x2, w2, b2, eps)
        ctx.save_for_backward(x2, w2, mean, rstd)
        ctx.shapes = x.shape, None if weight is None else weight.shape, \
            None if bias is None else bias.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        x2, w2, mean, rstd = ctx.saved
        x_shape, w_shape, b_shape = ctx.shapes
        need = ctx.needs_input_grad
        dx, dw, db = ctx.backend.layer_norm_backward(
            g.reshape(x2.shape), x2, w2, mean, rstd, bool(need[1] or need[2]))
        return (dx.reshape(x_shape) if need[0] else None,
                dw.reshape(w_shape) if need[1] else None,
                db.reshape(b_shape) if need[2] else None)


class RMSNorm(Function):
    """y = x / sqrt(mean(x^2) + eps) * w over the normalised (last) dims;
    with xh = x rstd and gw = g w:  dx = rstd (gw - xh mean(gw xh)), dw = sum(g xh)."""

    @staticmethod
    def forward(ctx, x, weight, *, ndims, eps):
        x2 = _fold_trailing(x, ndims)
        w2 = None if weight is None else weight.reshape(-1)
        y, rstd = ctx.backend.rms_norm(x2, w2, eps)
        ctx.save_for_backward(x2, w2, rstd)
        ctx.shapes = x.shape, None if weight is None else weight.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        x2, w2, rstd = ctx.saved
        x_shape, w_shape = ctx.shapes
        dx, dw = ctx.backend.rms_norm_backward(
            g.reshape(x2.shape), x2, w2, rstd, bool(ctx.needs_input_grad[1]))
        dx = dx.reshape(x_shape) if ctx.needs_input_grad[0] else None
        dw = dw.reshape(w_shape) if ctx.needs_input_grad[1] else None
        return dx, dw


def _normalized_shape(op: str, x: Tensor, normalized_shape: int | Sequence[int],
                      params: dict) -> tuple:
    """Check that ``normalized_shape`` is the tail of ``x.shape`` and that each
    parameter has exactly that shape; returns it as a tuple."""
    ns = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(int(n) for n in normalized_shape)
    if len(ns) == 0 or len(ns) > x.ndim or x.shape[x.ndim - len(ns):] != ns:
        raise ValueError(
            f"{op}: normalized_shape {ns} must be the last dims of the input, whose shape "
            f"is {x.shape}"
        )
    for name, p in params.items():
        if p is not None and p.shape != ns:
            raise ValueError(f"{op}: {name} has shape {p.shape}, expected normalized_shape {ns}")
    return ns


def layer_norm(x: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the last ``len(normalized_shape)`` dims to zero mean and unit
    variance (biased), then scale by ``weight`` and shift by ``bias``."""
    ns = _normalized_shape("layer_norm", x, normalized_shape, {"weight": weight, "bias": bias})
    return LayerNorm.apply(x, weight, bias, ndims=len(ns), eps=eps)


def rms_norm(x: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
             eps: float = 1e-6) -> Tensor:
    """Divide by the root mean square over the last ``len(normalized_shape)`` dims,
    then scale by ``weight`` (no centring, no bias)."""
    ns = _normalized_shape("rms_norm", x, normalized_shape, {"weight": weight})
    return RMSNorm.apply(x, weight, ndims=len(ns), eps=eps)


# ---------------------------------------------------------------------------- dropout


class Dropout(Function):
    """y = x * m with m = Bernoulli(1 - p) / (1 - p) (inverted dropout);  dx = g * m."""

    @staticmethod
    def forward(ctx, x, *, p):
        m = ctx.backend.dropout_mask(x.shape, p, x.dtype)
        ctx.save_for_backward(m)
        return x * m

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved
        return g * m


def _check_p(op: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability must be in [0, 1], got {p}")
    return float(p)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each entry with probability ``p`` and scale the rest by 1/(1-p), so that
    the expectation is unchanged; the identity when ``training`` is False or p == 0.
    The mask comes from the backend's seeded generator (``minilm.manual_seed``)."""
    p = _check_p("dropout", p)
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p=p)


# ---------------------------------------------------------------------------- embedding


def _check_ids(op: str, ids: Any, what: str = "ids") -> None:
    if not isinstance(ids, Tensor):
        raise TypeError(f"{op}: {what} must be an integer Tensor, got {type(ids).__name__}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: {what} must be an integer tensor, got {ids.dtype}")


def _check_id_range(op: str, ids: Any, n: int, what: str) -> None:
    """ValueError unless every id is in [0, n)."""
    if ids.size == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= n:
        bad = hi if hi >= n else lo
        raise ValueError(
            f"{op}: id {bad} is out of range for {what} {n} (ids must be in [0, {n}); "
            f"min id {lo}, max id {hi})"
        )


class Embedding(Function):
    """y = W[ids];  dW[v] = sum of g over the positions where ids == v (a scatter-add;
    the ``padding_idx`` row gets none)."""

    @staticmethod
    def forward(ctx, ids, weight, *, padding_idx):
        ctx.save_for_backward(ids)
        ctx.num_embeddings = weight.shape[0]
        ctx.padding_idx = padding_idx
        return ctx.xp.take(weight, ids, axis=0)

    @staticmethod
    def backward(ctx, g):
        (ids,) = ctx.saved
        dw = ctx.backend.embedding_backward(ids, g, ctx.num_embeddings)
        if ctx.padding_idx is not None:
            dw[ctx.padding_idx] = 0
        return None, dw


def embedding(ids: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) picked by the integer tensor ``ids``;
    the result has shape ``ids.shape + (dim,)``."""
    _check_ids("embedding", ids)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, dim), got shape "
                         f"{weight.shape}")
    vocab = weight.shape[0]
    if padding_idx is not None:
        if not -vocab <= padding_idx < vocab:
            raise ValueError(f"embedding: padding_idx {padding_idx} is out of range for "
                             f"vocab size {vocab}")
        padding_idx %= vocab
    _check_id_range("embedding", ids.data, vocab, "vocab size")
    return Embedding.apply(ids, weight, padding_idx=padding_idx)


def one_hot(ids: Tensor, num_classes: int = -1) -> Tensor:
    """int64 tensor of shape ``ids.shape + (num_classes,)`` with a 1 at each id
    (``num_classes=-1``: max id + 1). Not differentiable."""
    _check_ids("one_hot", ids)
    raw = ids.data
    if num_classes == -1:
        if raw.size == 0:
            raise ValueError("one_hot: cannot infer num_classes from an empty tensor; pass it")
        num_classes = int(raw.max()) + 1
    _check_id_range("one_hot", raw, num_classes, "num_classes")
    xp = ids.backend.xp
    return Tensor._make((raw[..., None] == xp.arange(num_classes)).astype(xp.int64))


# ---------------------------------------------------------------------------- attention


class ScaledDotProductAttention(Function):
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
    return ScaledDotProductAttention.apply(q, k, v, attn_mask, is_causal=bool(is_causal),
                                           dropout_p=dropout_p, scale=float(scale))
