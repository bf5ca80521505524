"""One decoding step of a GPT on raw arrays: the arithmetic of ``GPT.forward`` for one
new token per row with a ``KVCache``, without building Tensors or graph nodes.

At batch 1 every op of a decoding step is tiny (a 256-wide LayerNorm, a 256 x 768
GEMV), so the per-op cost of the general path (a Tensor per result, a Node looked at
by grad mode, shape checks, a mask built for a single query) is most of the step. This
path keeps the model's own kernels (``backend.layer_norm`` / ``rms_norm`` / ``gelu``,
fused by the Numba backend) and BLAS products, and drops the rest. Per block, with x the
(B, d) hidden state of the new position p:

    h      = Norm1(x)
    q,k,v  = split(h W_qkv^T + b_qkv) into heads          (RoPE: rotate q, k by p)
    K, V   = the cache with k, v written at column p      (B, H, p + 1, d_h)
    a      = softmax(q K^T / sqrt(d_h) + M) V             M: -inf outside a local window
                                                          and, with attn_top_k = k, at
                                                          all but the k largest scores
    x      = x + a W_o^T + b_o
    x      = x + GELU(Norm2(x) W_fc^T + b_fc) W_proj^T + b_proj

and the logits of the new token only: Norm_f(x) W_head^T. ``tests/test_decode.py``
checks it against ``GPT.forward`` with a cache for every positional scheme, both norms,
both GELUs, a window, no biases, float64 and float32; ``tests/test_topk_attention.py``
and ``tests/test_layer_sharing.py`` check top-k attention and a shared block (one block
applied n_layers times, ``GPT.layer_blocks``; application i is cache layer i).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .attention import KVCache, top_k_keep
from .layers import LayerNorm

__all__ = ["decode_step", "supports_fast_decode"]


def supports_fast_decode(model: Any) -> bool:
    """Whether :func:`decode_step` computes ``model``'s step: a GPT made only of the
    stock modules (not a tensor- or pipeline-parallel one, not one whose Linears were
    swapped for quantized or low-rank ones), without forward hooks, in eval mode, on a
    backend whose arrays are NumPy's."""
    from .attention import MultiHeadAttention, RotaryEmbedding
    from .layers import GELU, Dropout, Embedding, Linear, RMSNorm
    from .module import ModuleList
    from .transformer import GPT, MLP, TransformerBlock

    stock = (GPT, ModuleList, TransformerBlock, MultiHeadAttention, MLP, Linear, LayerNorm,
             RMSNorm, GELU, Dropout, Embedding, RotaryEmbedding)
    return (type(model) is GPT and not model.training
            and model.tok_emb.weight.backend.xp is np
            and all(type(m) in stock and not m._forward_hooks for m in model.modules()))


def _linear(x: Any, w: Any, b: Any) -> Any:
    """x W^T + b for the (B, in) rows of a step: a GEMV with W as stored for one row,
    (W x^T)^T for a few (OpenBLAS is slow at A B^T with small M; functional/linalg.py)."""
    y = (w @ x[0])[None] if x.shape[0] == 1 else np.ascontiguousarray((w @ x.T).T)
    if b is not None:
        y += b
    return y


def _norm(be: Any, module: Any, x: Any) -> Any:
    w = module.weight.data if module.weight is not None else None
    if isinstance(module, LayerNorm):
        b = module.bias.data if module.bias is not None else None
        return be.layer_norm(x, w, b, module.eps)[0]
    return be.rms_norm(x, w, module.eps)[0]


def _rotate(x: Any, cos: Any, sin: Any) -> Any:
    """RoPE of (B, H, d_h) at one position: x cos + (-x2, x1) sin."""
    h = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., h:], x[..., :h]], axis=-1) * sin


def decode_step(model: Any, ids: Any, cache: KVCache) -> np.ndarray:
    """Logits (B, vocab) of the next token after ``ids`` (B,) — one new position per
    row at ``cache.length`` — with every layer's key and value appended to ``cache``
    (as ``model(ids[:, None], cache=cache)[:, -1]`` computes them)."""
    c = model.config
    be = model.tok_emb.weight.backend
    p = cache.length
    if p + 1 > c.context_length:
        raise ValueError(f"decode_step: position {p} is past the context length "
                         f"{c.context_length}")
    x = model.tok_emb.weight.data[np.asarray(ids, dtype=np.int64)]  # (B, d), a copy
    dtype = x.dtype
    if c.positional == "learned":
        x += model.pos_emb.weight.data[p]
    elif c.positional == "sinusoidal":
        x += model.pos_table.data[p].astype(dtype, copy=False)
    B, H = x.shape[0], c.n_heads
    dh = c.d_model // H
    scale = 1.0 / math.sqrt(dh)
    if c.positional == "rope":
        cos = model.rope.cos.data[p].astype(dtype, copy=False)
        sin = model.rope.sin.data[p].astype(dtype, copy=False)
    start = 0 if c.window is None else max(0, p + 1 - c.window)  # first key it may see
    top_k = getattr(c, "attn_top_k", None)
    for i, block in enumerate(model.layer_blocks()):
        attn, mlp = block.attn, block.mlp
        qkv = _linear(_norm(be, block.ln1, x), attn.qkv.weight.data,
                      attn.qkv.bias.data if attn.qkv.bias is not None else None)
        q, k, v = (qkv[:, j * c.d_model:(j + 1) * c.d_model].reshape(B, H, dh)
                   for j in range(3))
        if c.positional == "rope":
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        kc, vc = cache.buffers(i, np, (B, H, c.context_length, dh), dtype)
        kc[:, :, p] = k
        vc[:, :, p] = v
        keys, values = kc[:, :, start:p + 1], vc[:, :, start:p + 1]
        s = np.matmul(keys, q[..., None])[..., 0] * scale  # (B, H, S)
        S = s.shape[-1]
        if top_k is not None and top_k < S:  # keep the k largest (ties at the k-th all kept)
            s = np.where(top_k_keep(np, s, top_k), s, -np.inf)
        s = be.softmax(s, -1)
        a = np.matmul(s[:, :, None, :], values)[:, :, 0]  # (B, H, d_h)
        x = x + _linear(a.reshape(B, c.d_model), attn.out_proj.weight.data,
                        attn.out_proj.bias.data if attn.out_proj.bias is not None else None)
        f = _linear(_norm(be, block.ln2, x), mlp.fc.weight.data,
                    mlp.fc.bias.data if mlp.fc.bias is not None else None)
        f = be.gelu(f, mlp.act.approximate)
        x = x + _linear(f, mlp.proj.weight.data,
                        mlp.proj.bias.data if mlp.proj.bias is not None else None)
    cache.advance(1)
    return _linear(_norm(be, model.ln_f, x), model.head.weight.data, None)
