"""1-D convolution and pooling over time, as ``torch.nn.functional`` names them.

Shapes: x (B, C_in, L) (or unbatched (C_in, L)), weight (C_out, C_in / groups, K).
With stride s, padding p (zeros on both ends), dilation d, the output length is

    L_out = floor((L + 2p - d (K - 1) - 1) / s) + 1

and the convolution (a cross-correlation, as in every DL framework) reads

    y[b, o, t] = bias[o] + sum_{c, k} w[o, c, k] x_pad[b, g(o) C_g + c, t s + k d]

where group g(o) = o // (C_out / groups) sees only its C_g = C_in / groups input
channels. It is computed by unfolding (im2col): ``cols[b, c, k, t] = x_pad[b, c, t s + k d]``
gathered with one strided slice per tap k, then one matmul per group. Backward:

    dw[o, c, k] = sum_{b, t} g[b, o, t] cols[b, c, k, t]        db[o] = sum_{b, t} g[b, o, t]
    dcols[b, c, k, t] = sum_o w[o, c, k] g[b, o, t],   folded back (col2im): each tap k
    adds dcols[:, :, k, :] into x_pad at t s + k d, then the padding is cropped off.

Pooling uses the same unfolding: max_pool1d takes the window max (the gradient goes
to the first maximal entry, as PyTorch); avg_pool1d the window mean. Global pooling
over time (``global_max_pool1d`` / ``global_avg_pool1d``) takes an optional bool mask
(B, L), True on real positions, so that padding never wins the max nor counts in the
mean.
"""

from __future__ import annotations

import numbers
from typing import Any

from ..autograd import Function
from ..tensor import Tensor
from .extrema import amax
from .math import masked_fill

__all__ = [
    "avg_pool1d", "conv1d", "conv1d_output_length", "global_avg_pool1d", "global_max_pool1d",
    "max_pool1d",
]


def conv1d_output_length(length: int, kernel_size: int, stride: int = 1, padding: int = 0,
                         dilation: int = 1) -> int:
    """L_out = floor((L + 2p - d (K - 1) - 1) / s) + 1 (symmetric padding p)."""
    return (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _taps(xp: Any, x: Any, K: int, L_out: int, stride: int, dilation: int) -> Any:
    """im2col: cols[..., k, t] = x[..., t s + k d], shape x.shape[:-1] + (K, L_out)."""
    span = stride * (L_out - 1) + 1
    return xp.stack([x[..., k * dilation:k * dilation + span:stride] for k in range(K)],
                    axis=-2)


def _fold(xp: Any, dcols: Any, L_pad: int, stride: int, dilation: int) -> Any:
    """col2im, the adjoint of :func:`_taps`: dx[..., t s + k d] += dcols[..., k, t]."""
    K, L_out = dcols.shape[-2:]
    span = stride * (L_out - 1) + 1
    dx = xp.zeros(dcols.shape[:-2] + (L_pad,), dtype=dcols.dtype)
    for k in range(K):
        dx[..., k * dilation:k * dilation + span:stride] += dcols[..., k, :]
    return dx


def _zero_pad(xp: Any, x: Any, left: int, right: int, value: float = 0.0) -> Any:
    if left == 0 and right == 0:
        return x
    widths = [(0, 0)] * (x.ndim - 1) + [(left, right)]
    return xp.pad(x, widths, mode="constant", constant_values=value)


# ---------------------------------------------------------------------------- conv1d


class Conv1dFunction(Function):
    """y[b, o, t] = bias[o] + sum_{c,k} w[o, c, k] x_pad[b, g C_g + c, t s + k d];
    dw = sum_{b,t} g cols, db = sum_{b,t} g, dx = crop(col2im(w^T g)) (module docstring)."""

    @staticmethod
    def forward(ctx, x, w, b, *, stride, pad, dilation, groups):
        xp = ctx.xp
        B, C_in, L = x.shape
        C_out, C_g, K = w.shape
        G = groups
        xpad = _zero_pad(xp, x, pad[0], pad[1])
        L_pad = xpad.shape[-1]
        L_out = (L_pad - dilation * (K - 1) - 1) // stride + 1
        cols = _taps(xp, xpad, K, L_out, stride, dilation)        # (B, C_in, K, L_out)
        cols = cols.reshape(B, G, C_g * K, L_out)                   # (B, G, C_g K, L_out)
        wg = w.reshape(G, C_out // G, C_g * K)                      # (G, O_g, C_g K)
        y = xp.matmul(wg[None], cols).reshape(B, C_out, L_out)
        if b is not None:
            y = y + b[:, None]
        ctx.save_for_backward(cols, w)
        ctx.geom = (B, C_in, L, L_pad, pad[0], stride, dilation, G)
        return y

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        cols, w = ctx.saved
        B, C_in, L, L_pad, left, stride, dilation, G = ctx.geom
        C_out, C_g, K = w.shape
        L_out = g.shape[-1]
        gg = g.reshape(B, G, C_out // G, L_out)                     # (B, G, O_g, L_out)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            wg = w.reshape(G, C_out // G, C_g * K)
            dcols = xp.matmul(xp.swapaxes(wg, -1, -2)[None], gg)   # (B, G, C_g K, L_out)
            dcols = dcols.reshape(B, C_in, K, L_out)
            dx = _fold(xp, dcols, L_pad, stride, dilation)[..., left:left + L]
        if ctx.needs_input_grad[1]:
            dw = xp.matmul(gg, xp.swapaxes(cols, -1, -2)).sum(axis=0)  # (G, O_g, C_g K)
            dw = dw.reshape(C_out, C_g, K)
        if ctx.needs_input_grad[2]:
            db = g.sum(axis=(0, 2))
        return dx, dw, db


def _pair(op: str, name: str, v: Any, least: int) -> int:
    if isinstance(v, (tuple, list)) and len(v) == 1:
        v = v[0]
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < least:
        raise ValueError(f"{op}: {name} must be an integer >= {least}, got {v!r}")
    return int(v)


def _check_conv1d(x: Tensor, w: Tensor, b: Any, stride: int, padding: Any, dilation: int,
                  groups: int) -> tuple:
    """(stride, (left, right) padding, dilation, groups), or ValueError naming the shapes."""
    op = "conv1d"
    if x.ndim != 3:
        raise ValueError(f"{op}: input must be (B, C_in, L), got shape {x.shape}")
    if w.ndim != 3:
        raise ValueError(f"{op}: weight must be (C_out, C_in/groups, K), got shape {w.shape}")
    stride = _pair(op, "stride", stride, 1)
    dilation = _pair(op, "dilation", dilation, 1)
    groups = _pair(op, "groups", groups, 1)
    C_in, (C_out, C_g, K) = x.shape[1], w.shape
    if C_in % groups or C_out % groups:
        raise ValueError(f"{op}: in_channels {C_in} and out_channels {C_out} (weight shape "
                         f"{w.shape}) must both be divisible by groups {groups}")
    if C_g * groups != C_in:
        raise ValueError(f"{op}: input shape {x.shape} has {C_in} channels but weight shape "
                         f"{w.shape} with groups {groups} expects {C_g * groups}")
    if K < 1:
        raise ValueError(f"{op}: kernel size must be >= 1, weight shape {w.shape}")
    if b is not None and tuple(b.shape) != (C_out,):
        raise ValueError(f"{op}: bias must have shape ({C_out},) for weight shape {w.shape}, "
                         f"got {b.shape}")
    if padding == "valid":
        pad = (0, 0)
    elif padding == "same":
        if stride != 1:
            raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
        total = dilation * (K - 1)
        pad = (total // 2, total - total // 2)  # the odd extra zero on the right, as PyTorch
    else:
        p = _pair(op, "padding", padding, 0)
        pad = (p, p)
    L_eff = x.shape[2] + pad[0] + pad[1]
    if L_eff < dilation * (K - 1) + 1:
        raise ValueError(f"{op}: input shape {x.shape} padded to length {L_eff} is shorter "
                         f"than the dilated kernel {dilation * (K - 1) + 1} (weight shape "
                         f"{w.shape}, dilation {dilation})")
    if x.dtype != w.dtype or (b is not None and b.dtype != x.dtype):
        raise TypeError(f"{op}: input {x.dtype}, weight {w.dtype}"
                        f"{'' if b is None else f', bias {b.dtype}'} must share one dtype")
    return stride, pad, dilation, groups


def conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1,
           padding: Any = 0, dilation: int = 1, groups: int = 1) -> Tensor:
    """1-D cross-correlation of x (B, C_in, L) (or (C_in, L)) with weight
    (C_out, C_in / groups, K), plus bias (C_out,). ``padding``: an int (zeros on both
    ends), "valid" (0) or "same" (stride 1 only: output length L). Output
    (B, C_out, L_out), L_out = floor((L + 2p - d (K - 1) - 1) / s) + 1."""
    unbatched = x.ndim == 2
    if unbatched:
        x = x.reshape(1, *x.shape)
    s, pad, d, g = _check_conv1d(x, weight, bias, stride, padding, dilation, groups)
    y = Conv1dFunction.apply(x, weight, bias, stride=s, pad=pad, dilation=d, groups=g)
    return y.reshape(*y.shape[1:]) if unbatched else y


# ---------------------------------------------------------------------------- pooling


class MaxPool1dFunction(Function):
    """y[b, c, t] = max_k x_pad[b, c, t s + k] (padding is -inf);
    dx[t s + k*] += g[t] at the first k* reaching the max."""

    @staticmethod
    def forward(ctx, x, *, kernel_size, stride, padding):
        xp = ctx.xp
        L = x.shape[-1]
        xpad = _zero_pad(xp, x, padding, padding, value=-xp.inf)
        L_out = (xpad.shape[-1] - kernel_size) // stride + 1
        cols = _taps(xp, xpad, kernel_size, L_out, stride, 1)       # (B, C, K, L_out)
        arg = cols.argmax(axis=-2)                                   # (B, C, L_out)
        ctx.save_for_backward(arg)
        ctx.geom = (L, xpad.shape[-1], padding, stride, kernel_size)
        return xp.take_along_axis(cols, arg[..., None, :], axis=-2)[..., 0, :]

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (arg,) = ctx.saved
        L, L_pad, padding, stride, K = ctx.geom
        dcols = xp.stack([xp.where(arg == k, g, 0) for k in range(K)], axis=-2)
        return _fold(xp, dcols.astype(g.dtype), L_pad, stride, 1)[..., padding:padding + L]


class AvgPool1dFunction(Function):
    """y[b, c, t] = (1 / n_t) sum_k x_pad[b, c, t s + k] (zero padding), with n_t = K
    (count_include_pad) or the number of real entries of the window;
    dx[t s + k] += g[t] / n_t."""

    @staticmethod
    def forward(ctx, x, *, kernel_size, stride, padding, count_include_pad):
        xp = ctx.xp
        L = x.shape[-1]
        xpad = _zero_pad(xp, x, padding, padding)
        L_pad = xpad.shape[-1]
        L_out = (L_pad - kernel_size) // stride + 1
        if count_include_pad:
            n = xp.full(L_out, float(kernel_size), dtype=x.dtype)
        else:
            real = _zero_pad(xp, xp.ones(L, dtype=x.dtype), padding, padding)
            n = _taps(xp, real, kernel_size, L_out, stride, 1).sum(axis=0)
        ctx.n = n
        ctx.geom = (L, L_pad, padding, stride, kernel_size)
        return _taps(xp, xpad, kernel_size, L_out, stride, 1).sum(axis=-2) / n

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        L, L_pad, padding, stride, K = ctx.geom
        share = g / ctx.n
        dcols = xp.broadcast_to(share[..., None, :], g.shape[:-1] + (K, g.shape[-1]))
        return _fold(xp, dcols, L_pad, stride, 1)[..., padding:padding + L]


def _check_pool(op: str, x: Tensor, kernel_size: Any, stride: Any, padding: Any) -> tuple:
    if x.ndim not in (2, 3):
        raise ValueError(f"{op}: input must be (B, C, L) or (C, L), got shape {x.shape}")
    k = _pair(op, "kernel_size", kernel_size, 1)
    s = k if stride is None else _pair(op, "stride", stride, 1)
    p = _pair(op, "padding", padding, 0)
    if 2 * p > k:
        raise ValueError(f"{op}: padding {p} must be at most half the kernel size {k}")
    if x.shape[-1] + 2 * p < k:
        raise ValueError(f"{op}: input shape {x.shape} padded by {p} on each side is shorter "
                         f"than kernel_size {k}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: needs a floating-point tensor, got {x.dtype}")
    return k, s, p


def max_pool1d(x: Tensor, kernel_size: int, stride: int | None = None,
               padding: int = 0) -> Tensor:
    """Max over windows of ``kernel_size`` every ``stride`` (default kernel_size) steps
    of the last dim, padded with -inf by ``padding`` (<= kernel_size / 2) on each end.
    Output length floor((L + 2p - K) / s) + 1."""
    k, s, p = _check_pool("max_pool1d", x, kernel_size, stride, padding)
    return MaxPool1dFunction.apply(x, kernel_size=k, stride=s, padding=p)


def avg_pool1d(x: Tensor, kernel_size: int, stride: int | None = None, padding: int = 0,
               count_include_pad: bool = True) -> Tensor:
    """Mean over windows of ``kernel_size`` every ``stride`` (default kernel_size) steps
    of the last dim, zero-padded by ``padding`` on each end; the padded zeros count in
    the divisor unless ``count_include_pad=False`` (as PyTorch)."""
    k, s, p = _check_pool("avg_pool1d", x, kernel_size, stride, padding)
    return AvgPool1dFunction.apply(x, kernel_size=k, stride=s, padding=p,
                                   count_include_pad=bool(count_include_pad))


def _time_mask(op: str, x: Tensor, mask: Any) -> Any:
    """The mask as a raw bool array broadcastable to x (B, C, L): (B, 1, L)."""
    raw = mask.data if isinstance(mask, Tensor) else x.backend.asarray(mask)
    if raw.dtype != bool or x.ndim != 3 or tuple(raw.shape) != (x.shape[0], x.shape[2]):
        raise ValueError(f"{op}: mask must be bool of shape (B, L) = ({x.shape[0]}, "
                         f"{x.shape[-1]}) for input shape {x.shape}, got {raw.dtype} "
                         f"{tuple(raw.shape)}")
    if not bool(raw.any(axis=1).all()):
        raise ValueError(f"{op}: mask has no real position in rows "
                         f"{[int(i) for i in (~raw.any(axis=1)).nonzero()[0]]}")
    return raw[:, None, :]


def global_max_pool1d(x: Tensor, mask: Any = None) -> Tensor:
    """y[b, c] = max over real t of x[b, c, t] (max over time, Kim 2014). ``mask``
    (B, L) bool, True on real positions: padding is filled with -inf before the max,
    so it never wins and gets no gradient. Ties share the gradient (``amax``)."""
    if x.ndim != 3:
        raise ValueError(f"global_max_pool1d: input must be (B, C, L), got shape {x.shape}")
    if mask is not None:
        x = masked_fill(x, ~_time_mask("global_max_pool1d", x, mask), float("-inf"))
    return amax(x, dim=-1)


def global_avg_pool1d(x: Tensor, mask: Any = None) -> Tensor:
    """y[b, c] = sum_t m[b, t] x[b, c, t] / sum_t m[b, t]: the mean over real positions
    (all positions when ``mask`` is None)."""
    if x.ndim != 3:
        raise ValueError(f"global_avg_pool1d: input must be (B, C, L), got shape {x.shape}")
    if mask is None:
        return x.mean(dim=-1)
    m = _time_mask("global_avg_pool1d", x, mask).astype(x.dtype)
    keep = Tensor._make(m)
    return (x * keep).sum(dim=-1) / Tensor._make(m.sum(axis=-1))
