"""Attention maps of a minilm GPT, captured without touching the model's code.

Each block's :class:`~minilm.nn.attention.MultiHeadAttention` gets a forward hook
(``register_forward_hook``). The hook sees the module's input ``x`` (the ln1 output)
and its output; from ``x`` it recomputes the attention probabilities exactly as the
module does: the fused ``qkv`` projection split into heads, RoPE on q and k when the
model uses it, then ``P = softmax(q k^T / sqrt(d) + M)`` with M the causal (and local
window) mask. As a check, ``P v`` with heads concatenated and put through ``out_proj``
must give back the module's own output (dropout is off: the model is put in eval mode
for the pass and restored after); a mismatch is an error, not a silently wrong picture.

The probabilities are computed in float64 NumPy from the module's float32 q, k, v.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..autograd import no_grad
from ..backends import to_host
from ..nn.attention import MultiHeadAttention, build_attention_mask
from ..nn.module import model_backend
from ..tensor import Tensor

__all__ = ["attention_maps", "attention_probs", "attend", "plot_attention"]


def _qkv_heads(module: MultiHeadAttention, x: Tensor) -> tuple:
    """q, k, v (B, H, T, d) of the module for input x, RoPE applied as in forward."""
    qkv = module.qkv(x)
    B, T, _ = qkv.shape
    H, d = module.n_local_heads, module.head_dim
    parts = qkv.reshape(B, T, 3, H, d)
    q, k, v = (parts[:, :, i].transpose(1, 2) for i in range(3))
    if module.rope is not None:
        q, k = module.rope(q, 0), module.rope(k, 0)
    return to_host(q), to_host(k), to_host(v)


def attention_probs(module: MultiHeadAttention, x: Tensor) -> np.ndarray:
    """softmax(q k^T / sqrt(d) + M) of a self-attention module for its input ``x``
    (B, T, d_model), no cache: an array (B, H, T, T) whose rows sum to 1, zero where
    the mask forbids (above the diagonal for a causal module)."""
    if not isinstance(module, MultiHeadAttention) or module.cross:
        raise ValueError("attention_probs: needs a self-attention MultiHeadAttention module")
    with no_grad():
        q, k, _ = _qkv_heads(module, x)
    T = q.shape[-2]
    scores = q.astype(np.float64) @ np.swapaxes(k.astype(np.float64), -1, -2)
    scores /= math.sqrt(module.head_dim)
    mask = build_attention_mask(np, T, T, causal=module.causal, window=module.window)
    if getattr(module, "top_k", None):  # top-k attention: the module's own selection
        mask = to_host(module._top_k_mask(Tensor(q), Tensor(k), Tensor(mask), False))
    scores = np.where(mask, scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    return p / p.sum(axis=-1, keepdims=True)


def attend(module: MultiHeadAttention, x: Tensor, probs: np.ndarray) -> np.ndarray:
    """The module's output rebuilt from ``probs``: out_proj(concat_h(P_h v_h))."""
    with no_grad():
        _, _, v = _qkv_heads(module, x)
        y = probs @ v.astype(np.float64)                       # (B, H, T, d)
        B, H, T, d = y.shape
        y = np.swapaxes(y, 1, 2).reshape(B, T, H * d).astype(v.dtype)
        xp = x.backend.xp
        out = module.out_proj(Tensor._make(xp.asarray(y)))
    return to_host(out)


def attention_maps(model: Any, ids: Any, check: bool = True, atol: float = 1e-4) -> list[np.ndarray]:
    """The attention probabilities of every layer of a minilm GPT for one prompt.

    ``ids``: token ids, shape (T,) or (1, T). Returns a list with one array per batch
    row (a single array for one prompt is ``maps[0]``), each (layers, heads, T, T).
    With ``check``, each layer's probabilities are put back through v and out_proj and
    must reproduce the attention module's output within ``atol`` (a RuntimeError
    otherwise)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not len(blocks):
        raise ValueError("attention_maps: the model has no transformer blocks (model.blocks)")
    ids_arr = np.asarray(to_host(ids))
    if ids_arr.ndim == 1:
        ids_arr = ids_arr[None]
    if ids_arr.ndim != 2 or ids_arr.shape[1] < 1:
        raise ValueError(f"attention_maps: ids must have shape (T,) or (B, T), got {ids_arr.shape}")
    ctx = getattr(getattr(model, "config", None), "context_length", None)
    if ctx is not None and ids_arr.shape[1] > ctx:
        raise ValueError(f"attention_maps: prompt of {ids_arr.shape[1]} tokens exceeds the "
                         f"context length {ctx}")
    captured: list = []  # in call order: a block shared across depth runs n_layers times
    handles = []
    layers = model.layer_blocks() if hasattr(model, "layer_blocks") else list(blocks)

    def make_hook() -> Any:
        def hook(module: Any, args: tuple, out: Tensor) -> None:
            layer = len(captured)
            probs = attention_probs(module, args[0])
            if check:
                rebuilt = attend(module, args[0], probs)
                err = float(np.max(np.abs(rebuilt - to_host(out))))
                if not err <= atol * max(1.0, float(np.max(np.abs(to_host(out))))):
                    raise RuntimeError(f"attention_maps: layer {layer}: recomputed attention "
                                       f"does not reproduce the module output (max error {err:.3g})")
            captured.append(probs)
        return hook

    for block in blocks:
        handles.append(block.attn.register_forward_hook(make_hook()))
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            model(Tensor(ids_arr, backend=model_backend(model)))  # ids where the model is
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if len(captured) != len(layers):
        raise RuntimeError(f"attention_maps: captured {len(captured)} attention calls for "
                           f"{len(layers)} layers")
    stacked = np.stack(captured, axis=1)  # (B, L, H, T, T)
    return list(stacked)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("this figure needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Any) -> Path:
    """Write ``fig`` to ``path`` (its folder made if needed) atomically: a temporary file
    in the same folder, renamed over ``path``, so an interrupted write never leaves a
    truncated picture; the figure is closed. Returns ``path`` as a Path."""
    import os

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_attention(maps: Any, tokens: Sequence[str], path: str | Path,
                   layer: int | None = None) -> Path:
    """Heatmaps of attention probabilities: a grid layers x heads (or one row, the heads
    of ``layer``), query tokens down the y axis, key tokens along x. ``maps`` is one
    prompt's (layers, heads, T, T) array (or attention_maps' list: its first entry)."""
    if isinstance(maps, list):
        if not maps:
            raise ValueError("plot_attention: maps is empty")
        maps = maps[0]
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"plot_attention: maps must be (layers, heads, T, T), got {maps.shape}")
    L, H, T, _ = maps.shape
    tokens = [str(t) for t in tokens]
    if len(tokens) != T:
        raise ValueError(f"plot_attention: {len(tokens)} tokens for maps of length {T}")
    if layer is not None:
        if not -L <= layer < L:
            raise ValueError(f"plot_attention: layer {layer} outside 0..{L - 1}")
        maps, rows = maps[layer:layer + 1 if layer != -1 else None], [layer % L]
    else:
        rows = list(range(L))
    plt = _pyplot()
    cell = max(1.6, 0.28 * T + 0.8)
    fig, axes = plt.subplots(len(rows), H, figsize=(cell * H, cell * len(rows)), squeeze=False)
    show_labels = T <= 48
    for r, li in enumerate(rows):
        for h in range(H):
            ax = axes[r][h]
            im = ax.imshow(maps[r, h], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"layer {li} head {h}", fontsize=8)
            if show_labels:
                ax.set_xticks(range(T))
                ax.set_xticklabels(tokens, rotation=90, fontsize=6)
                ax.set_yticks(range(T))
                ax.set_yticklabels(tokens, fontsize=6)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention probability")
    fig.suptitle("attention: query (rows) -> key (columns)")
    return save_figure(fig, path)
