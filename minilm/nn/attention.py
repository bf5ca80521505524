"""Attention: multi-head (self and cross), masks (causal, padding, local window), rotary
and sinusoidal positions, and the KV cache for incremental decoding.

Scaled dot-product attention for one head::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V

with M = 0 where a query may attend to a key and -inf elsewhere. Multi-head attention
projects the input to h sets of (Q, K, V) of width d_k = d_model / h, attends in each
head independently, concatenates the h outputs and projects back to d_model.

Top-k (hard) attention (``top_k=k``): with S = Q K^T / sqrt(d_k) + M, each query row i
keeps only its k largest allowed scores,

    M_k[i, j] = 0 if S[i, j] >= s_i^(k) (and j is allowed), else -inf
    TopK-Attention(Q, K, V) = softmax(S + M_k) V

where s_i^(k) is the k-th largest allowed score of row i. Ties at s_i^(k) keep every
tied entry (a row may keep more than k keys); a row with at most k allowed keys is
ordinary attention. The selection is piecewise constant in Q and K, so it has no
gradient: the gradient flows through the kept scores only, as through any mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import Function
from ..backends import current_backend
from ..tensor import Tensor
from .layers import Dropout, Linear
from .module import Module

__all__ = [
    "KVCache", "MultiHeadAttention", "RotaryEmbedding", "build_attention_mask",
    "sinusoidal_positions",
]


def sinusoidal_positions(n_positions: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos(p / base^(2i/dim))."""
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    inv = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    pe = np.zeros((n_positions, dim))
    pe[:, 0::2] = np.sin(pos * inv)
    pe[:, 1::2] = np.cos(pos * inv)[:, : dim // 2]
    return pe


class _Rotate(Function):
    """Rotary position embedding on the last dim split in halves (x1, x2):
    y = x * cos + rot(x) * sin with rot(x) = (-x2, x1);
    dx = g * cos + rot^T(g * sin) with rot^T(u) = (u2, -u1)."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        h = x.shape[-1] // 2
        ctx.save_for_backward(cos, sin)
        ctx.h = h
        xp = ctx.xp
        rot = xp.concatenate([-x[..., h:], x[..., :h]], axis=-1)
        return x * cos + rot * sin

    @staticmethod
    def backward(ctx, g):
        cos, sin = ctx.saved
        h = ctx.h
        u = g * sin
        xp = ctx.xp
        return g * cos + xp.concatenate([u[..., h:], -u[..., :h]], axis=-1), None, None


class _SplitHeads(Function):
    """(q, k, v) = the (B, T, 3 h d) output of the fused qkv projection viewed as three
    (B, h, T, d) tensors, q = y[..., :hd] split into heads and moved before T (views:
    no copy). Backward: the three gradients moved back and written side by side into
    one (B, T, 3 h d) array. This is ``split`` then ``reshape`` and ``transpose`` of
    each piece, done as one op so that backward makes one copy instead of four (one
    per reshape of a transposed gradient, then the concatenation)."""

    is_view = True

    @staticmethod
    def forward(ctx, qkv, *, n_heads):
        B, T, three_d = qkv.shape
        parts = qkv.reshape(B, T, 3, n_heads, three_d // (3 * n_heads))
        return tuple(ctx.xp.swapaxes(parts[:, :, i], 1, 2) for i in range(3))

    @staticmethod
    def backward(ctx, gq, gk, gv):
        B, H, T, d = gq.shape
        g = ctx.xp.empty((B, T, 3, H, d), dtype=gq.dtype)
        for i, gi in enumerate((gq, gk, gv)):
            g[:, :, i] = ctx.xp.swapaxes(gi, 1, 2)
        return g.reshape(B, T, 3 * H * d)


class RotaryEmbedding(Module):
    """RoPE: rotate each (x_i, x_{i+d/2}) pair of a query/key at position p by the angle
    p * base^(-2i/d), so that q_m . k_n depends only on m - n."""

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even, got {head_dim}")
        inv = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
        ang = np.arange(max_positions, dtype=np.float64)[:, None] * inv[None, :]
        ang = np.concatenate([ang, ang], axis=1)  # (T, d): same angle for both halves
        self.head_dim, self.max_positions = head_dim, max_positions
        be = current_backend()  # where the parameters of a model built now are
        self.register_buffer("cos", Tensor(np.cos(ang).astype(np.float32), backend=be),
                             persistent=False)
        self.register_buffer("sin", Tensor(np.sin(ang).astype(np.float32), backend=be),
                             persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x: (B, H, T, d) at positions offset .. offset+T-1."""
        T = x.shape[-2]
        if offset + T > self.max_positions:
            raise ValueError(
                f"RotaryEmbedding: positions up to {offset + T} exceed max_positions "
                f"{self.max_positions}"
            )
        cos = self.cos.data[offset:offset + T].astype(x.dtype, copy=False)
        sin = self.sin.data[offset:offset + T].astype(x.dtype, copy=False)
        return _Rotate.apply(x, cos, sin)


class KVCache:
    """Keys and values of past positions for every layer, preallocated to the context
    length: decoding step t writes one column and attends over columns 0..t, instead of
    recomputing all past keys and values (O(T) per token instead of O(T^2)).

    Cross-attention (an encoder-decoder) keeps its own store, ``cross``: layer ->
    [K, V, key_padding_mask] of the encoder output (the context), computed once on the
    first decoding step and reused on every later one. They are never appended to (the
    context does not grow with the decoder), never rotated (no RoPE across two
    sequences), and do not count in ``length``, which is the decoder's position."""

    def __init__(self) -> None:
        self.layers: dict[int, list] = {}
        self.cross: dict[int, list] = {}
        self.length = 0  # positions already stored (same for every layer)

    def buffers(self, layer: int, xp: Any, shape: tuple, dtype: Any) -> list:
        """The preallocated key and value stores of ``layer``, each of ``shape``
        (B, H, max_len, d), made (zeros) on first use."""
        if layer not in self.layers:
            self.layers[layer] = [xp.zeros(shape, dtype=dtype), xp.zeros(shape, dtype=dtype)]
        return self.layers[layer]

    def update(self, layer: int, k: Tensor, v: Tensor, max_len: int) -> tuple:
        """Append k, v of shape (B, H, T, d) for ``layer``; return all keys and values so far."""
        xp = k.backend.xp
        B, H, T, d = k.shape
        start = self.length
        if start + T > max_len:
            raise ValueError(f"KVCache: {start + T} positions exceed the context length {max_len}")
        kc, vc = self.buffers(layer, xp, (B, H, max_len, d), k.dtype)
        kc[:, :, start:start + T] = k.data
        vc[:, :, start:start + T] = v.data
        return Tensor._make(kc[:, :, :start + T]), Tensor._make(vc[:, :, :start + T])

    def cross_kv(self, layer: int) -> tuple | None:
        """The stored context (K, V, key_padding_mask) of cross-attention ``layer``
        (K, V: (B, H, S, d) Tensors; the mask (B, S), True at padding, or None), or None
        before the first decoding step."""
        entry = self.cross.get(layer)
        if entry is None:
            return None
        return Tensor._make(entry[0]), Tensor._make(entry[1]), entry[2]

    def store_cross(self, layer: int, k: Tensor, v: Tensor, key_padding_mask: Any) -> None:
        """Keep the context's keys and values (B, H, S, d) of cross-attention ``layer``
        (and its padding mask) for every later decoding step."""
        self.cross[layer] = [k.data, v.data, key_padding_mask]

    def advance(self, n: int) -> None:
        """Called once per forward after every layer stored its ``n`` new positions."""
        self.length += n

    def reorder(self, index: Any) -> None:
        """Keep batch rows ``index`` (beam search reorders hypotheses), in the
        self-attention store and the cross-attention store alike."""
        for kv in self.layers.values():
            kv[0] = kv[0][index]
            kv[1] = kv[1][index]
        for entry in self.cross.values():
            entry[0] = entry[0][index]
            entry[1] = entry[1][index]
            if entry[2] is not None:
                entry[2] = entry[2][index]


def build_attention_mask(xp: Any, q_len: int, k_len: int, causal: bool = True,
                         offset: int = 0, window: int | None = None,
                         key_padding_mask: Any = None) -> Any:
    """Bool mask, True where query i (at position offset + i) may attend to key j.

    causal: j <= offset + i; window w: j > offset + i - w (each query sees its last w
    keys, itself included); key_padding_mask (B, k_len), True at padding: never attended
    (a host array or list is uploaded to ``xp``'s device).
    Returns shape (q_len, k_len), or (B, 1, q_len, k_len) with padding."""
    qpos = xp.arange(q_len)[:, None] + offset
    kpos = xp.arange(k_len)[None, :]
    mask = xp.ones((q_len, k_len), dtype=bool)
    if causal:
        mask &= kpos <= qpos
    if window is not None:
        mask &= kpos > qpos - window
        if not causal:
            mask &= kpos < qpos + window
    if key_padding_mask is not None:
        mask = mask[None, None] & ~xp.asarray(key_padding_mask)[:, None, None, :]
    return mask


def top_k_keep(xp: Any, scores: Any, k: int) -> Any:
    """Where ``scores`` (..., S) is among the k largest of its row (ties at the k-th all
    kept): ``scores >= kth``, the k-th largest being the (S - k)-th smallest. -inf entries
    (disallowed keys) sort first, so a row with fewer than k finite scores keeps them all."""
    S = scores.shape[-1]
    kth = xp.partition(scores, S - k, axis=-1)[..., S - k:S - k + 1]
    return scores >= kth


class MultiHeadAttention(Module):
    """Multi-head attention: split heads, attend, concatenate, project.

    Self-attention uses one fused (d_model -> 3 d_model) projection; cross-attention
    (``cross=True``) projects queries from ``x`` and keys/values from ``context``.
    ``causal`` masks the future, ``window`` restricts each query to its last
    ``window`` keys (local attention), ``rope`` rotates queries and keys (self-attention
    only: cross-attention never rotates, see KVCache for its cache).

    The hook for tensor parallelism: ``n_local_heads`` is the number of heads this
    process computes (``n_heads`` here). ``forward`` splits the qkv output into
    ``n_local_heads`` heads, concatenates their outputs to ``n_local_heads * head_dim``
    features and hands them to ``out_proj``. TensorParallelAttention keeps n_heads / tp
    heads and swaps in a column-parallel qkv (this rank's heads' q, k, v rows) and a
    row-parallel out_proj (whose allreduce sums the ranks' partial outputs), and reuses
    this forward unchanged.

    ``top_k``: each query attends to its k highest-scoring allowed keys only (see the
    module docstring; the fused causal kernels are then skipped)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = True, window: int | None = None, cross: bool = False,
                 rope: RotaryEmbedding | None = None, layer_index: int = 0,
                 top_k: int | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"MultiHeadAttention: d_model {d_model} is not divisible by "
                             f"n_heads {n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.n_local_heads = n_heads  # heads computed here (n_heads / tp when sharded)
        self.causal, self.window, self.cross = causal, window, cross
        self.dropout_p = dropout
        self.layer_index = layer_index
        if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
            raise ValueError(f"MultiHeadAttention: top_k must be an integer >= 1 or None, "
                             f"got {top_k!r}")
        self.top_k = None if top_k is None else int(top_k)
        if cross:
            self.q_proj = Linear(d_model, d_model, bias=bias)
            self.kv_proj = Linear(d_model, 2 * d_model, bias=bias)
        else:
            self.qkv = Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = Linear(d_model, d_model, bias=bias)
        self.resid_dropout = Dropout(dropout)
        self.rope = rope  # shared module, registered once by the model

    def _heads(self, t: Tensor) -> Tensor:
        B, T, _ = t.shape
        return t.reshape(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None, key_padding_mask: Any = None,
                cache: KVCache | None = None, context_length: int | None = None) -> Tensor:
        if self.cross:
            return self._cross_forward(x, context, key_padding_mask, cache)
        B, T, _ = x.shape
        qkv = self.qkv(x)
        if self._fused_causal(qkv, cache, key_padding_mask):
            # the kernels read the heads in place and write them side by side
            y = F.causal_qkv_attention(qkv, self.n_local_heads)
            return self.resid_dropout(self.out_proj(y))
        q, k, v = _SplitHeads.apply(qkv, n_heads=self.n_local_heads)
        offset = cache.length if cache is not None else 0
        if self.rope is not None:
            q = self.rope(q, offset)
            k = self.rope(k, offset)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v, context_length or (offset + T))
        S = k.shape[-2]
        causal = self.causal
        xp = x.backend.xp
        kpm = key_padding_mask.data if isinstance(key_padding_mask, Tensor) else key_padding_mask
        simple = offset == 0 and self.window is None and kpm is None
        if simple:
            mask = None
        else:
            mask = Tensor._make(build_attention_mask(
                xp, T, S, causal=causal, offset=offset, window=self.window, key_padding_mask=kpm))
        return self._attend(q, k, v, mask, causal and simple)

    def _fused_causal(self, qkv: Tensor, cache: Any, key_padding_mask: Any) -> bool:
        """Whether plain causal self-attention can go straight from the projection to
        the fused kernels: no cache, RoPE, window, padding or attention dropout, and a
        backend that takes this length (``flash_min_len``)."""
        n = qkv.backend.flash_min_len
        return (n is not None and qkv.shape[1] >= n and self.causal and cache is None
                and self.rope is None and self.window is None and key_padding_mask is None
                and (self.dropout_p == 0.0 or not self.training)
                and qkv.dtype.kind == "f" and getattr(self, "top_k", None) is None)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Any, is_causal: bool) -> Tensor:
        """softmax(q k^T / sqrt(d) + M) v per head, heads concatenated, out_proj."""
        B, _, T, _ = q.shape
        drop = self.dropout_p if self.training else 0.0
        if getattr(self, "top_k", None) is not None:
            mask, is_causal = self._top_k_mask(q, k, mask, is_causal), False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop,
                                           is_causal=is_causal)
        y = y.transpose(1, 2).reshape(B, T, self.n_local_heads * self.head_dim)
        return self.resid_dropout(self.out_proj(y))

    def _top_k_mask(self, q: Tensor, k: Tensor, mask: Any, is_causal: bool) -> Tensor:
        """Bool (B, H, T, S) mask, True where key j is allowed (``mask`` / ``is_causal``)
        and its score q_i . k_j is among row i's ``top_k`` largest allowed ones (ties at
        the k-th value all kept). Computed on the raw arrays: no gradient."""
        xp = q.backend.xp
        T, S = q.shape[-2], k.shape[-2]
        if is_causal:
            allowed = xp.tril(xp.ones((T, S), dtype=bool))
        elif mask is None:
            allowed = xp.ones((T, S), dtype=bool)
        else:
            allowed = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)
        scores = xp.matmul(q.data, xp.swapaxes(k.data, -1, -2))  # the scale keeps the order
        scores = xp.where(allowed, scores, -xp.inf)
        if self.top_k < S:
            keep = top_k_keep(xp, scores, self.top_k) & allowed
        else:
            keep = xp.broadcast_to(allowed, scores.shape)
        return Tensor._make(keep)

    def cross_keys_values(self, context: Tensor) -> tuple:
        """K, V (B, H, S, d) of the context for cross-attention: kv_proj(context) split
        in two and into heads. No RoPE: the decoder's positions and the encoder's are
        positions in two different sequences, their difference means nothing."""
        k, v = self.kv_proj(context).split(self.d_model, dim=-1)
        return self._heads(k), self._heads(v)

    def _cross_forward(self, x: Tensor, context: Tensor | None, key_padding_mask: Any,
                       cache: KVCache | None) -> Tensor:
        """Queries from ``x`` (B, T, d_model), keys and values from ``context`` (B, S,
        d_model); ``key_padding_mask`` (B, S) True at the context's padding. With a
        cache, the context's K, V (and mask) are computed on the first call and read
        back on every later one (``context`` may then be None); they never grow."""
        stored = cache.cross_kv(self.layer_index) if cache is not None else None
        if stored is not None:
            k, v, kpm = stored
        else:
            if context is None:
                raise ValueError("MultiHeadAttention(cross=True) needs a context tensor")
            k, v = self.cross_keys_values(context)
            kpm = key_padding_mask.data if isinstance(key_padding_mask, Tensor) else key_padding_mask
            if cache is not None:
                cache.store_cross(self.layer_index, k, v, kpm)
        q = self._heads(self.q_proj(x))
        T, S = q.shape[-2], k.shape[-2]
        mask = None
        if kpm is not None:
            mask = Tensor._make(build_attention_mask(x.backend.xp, T, S, causal=False,
                                                     key_padding_mask=kpm))
        return self._attend(q, k, v, mask, False)

    def extra_repr(self) -> str:
        extra = f", window={self.window}" if self.window else ""
        if getattr(self, "top_k", None) is not None:
            extra += f", top_k={self.top_k}"
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, causal={self.causal}"
                f"{', cross=True' if self.cross else ''}{extra}")


