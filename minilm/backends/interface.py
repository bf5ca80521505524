"""The backend interface: the named kernels a backend may override, and their contracts.

The reference arithmetic of every kernel lives with its algorithm, written against
``xp`` as the formula reads, and is registered under the kernel's name with
``@kernel``::

    # minilm/functional/nn.py
    @kernel("softmax")
    def softmax_kernel(be, x, dim):
        e = be.xp.exp(x - x.max(axis=dim, keepdims=True))
        return e / e.sum(axis=dim, keepdims=True)

Ops call ``ctx.backend.softmax(x, dim)``. On the NumPy backend that method is the
registered reference (``NumpyBackend`` has one generated method per name below, one
dict lookup on top of the reference); a faster backend subclasses it and overrides the
method of the same name, calling ``super().<name>(...)`` for the cases it does not
handle, so an override costs nothing extra per call. An override must return what
the reference returns, to floating-point tolerance (tests/test_numba_backend.py and the
op tests, run on every backend, check each one).

A reference takes the backend ``be`` first (for ``be.xp``, ``be.rng`` and the other
kernels it builds on, so that a backend's overrides of those apply), then the kernel's
arguments. Arrays are of ``be.xp``; "new" results are fresh arrays the caller owns;
inputs are never written unless the contract says "in place".

| kernel | where its reference is |
|---|---|
| softmax, softmax_backward, log_softmax, log_softmax_backward, masked_softmax | functional/nn.py |
| dropout_mask, embedding_backward | functional/nn.py |
| layer_norm, layer_norm_backward, rms_norm, rms_norm_backward | functional/normalization.py |
| attention, causal_attention, causal_attention_qkv (each with _backward) | functional/attention.py |
| gelu, gelu_backward, erf | functional/gelu_kernel.py |
| cross_entropy, cross_entropy_backward | functional/losses.py |
| sgd_step | optim/sgd.py |
| adam_step | optim/adam.py |
| int8_matmul, linear_int8_weight, linear_int4_weight | quant/linear.py |
| lstm_sequence(_backward), gru_sequence(_backward), rnn_sequence(_backward) | functional/recurrent.py |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["KERNELS", "REFERENCES", "Backend", "kernel"]

#: Reference implementation of each kernel, by name, registered with ``@kernel``.
REFERENCES: dict[str, Callable[..., Any]] = {}


def kernel(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function ``f(be, *args)`` as the reference of the kernel
    ``name`` (one of ``KERNELS``); the function itself is returned unchanged."""
    if name not in KERNELS:
        raise ValueError(f"kernel: {name!r} is not declared in minilm/backends/interface.py")

    def register(reference: Callable[..., Any]) -> Callable[..., Any]:
        REFERENCES[name] = reference
        return reference

    return register


class Backend(Protocol):
    """What ops and optimizers may ask of a backend. Shapes: ``...`` are any leading
    dims; C is the size of the last dim. Every kernel accepts float16/32/64 arrays of
    one dtype and returns arrays of that dtype unless noted."""

    name: str
    xp: Any  # the array module: numpy (cupy later)
    rng: Any  # the backend's seeded generator (``xp.random.Generator``)

    # ------------------------------------------------------------------ softmax family
    def softmax(self, x: Any, dim: int) -> Any:
        """New y, shape of x: exp(x - max x) / sum exp(x - max x) along ``dim``."""

    def softmax_backward(self, y: Any, gy: Any, dim: int) -> Any:
        """New dx, shape of y: y * (gy - sum(gy * y)) along ``dim``; y, gy unchanged."""

    def log_softmax(self, x: Any, dim: int) -> Any:
        """New y, shape of x: x - logsumexp(x) along ``dim``."""

    def log_softmax_backward(self, y: Any, gy: Any, dim: int) -> Any:
        """New dx: gy - exp(y) * sum(gy) along ``dim``."""

    def masked_softmax(self, x: Any, keep: Any, dim: int = -1) -> Any:
        """New y of the broadcast shape of x and keep: softmax over the entries where
        ``keep`` (bool, broadcastable, or None = all) is True, 0 elsewhere; rows with
        nothing kept (or all -inf) give zeros. Gradient: ``softmax_backward``."""

    # ------------------------------------------------------------------ normalisation
    def layer_norm(self, x: Any, weight: Any, bias: Any, eps: float) -> tuple:
        """x (..., C), weight and bias (C,) or None. Returns new (y, mean, rstd): y like
        x, mean and rstd (..., 1): y = (x - mean) * rstd * weight + bias."""

    def layer_norm_backward(self, gy: Any, x: Any, weight: Any, mean: Any, rstd: Any,
                            need_wb: bool = True) -> tuple:
        """New (dx, dw, db); dw, db (C,), None unless ``need_wb``."""

    def rms_norm(self, x: Any, weight: Any, eps: float) -> tuple:
        """x (..., C), weight (C,) or None. Returns new (y, rstd), rstd (..., 1):
        y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps)."""

    def rms_norm_backward(self, gy: Any, x: Any, weight: Any, rstd: Any,
                          need_w: bool = True) -> tuple:
        """New (dx, dw); dw (C,), None unless ``need_w``."""

    # ------------------------------------------------------------------ activations
    def gelu(self, x: Any, approximate: str = "none") -> Any:
        """New y like x: x Phi(x) ("none") or the tanh approximation ("tanh")."""

    def gelu_backward(self, x: Any, gy: Any, approximate: str = "none") -> Any:
        """New dx like x: gy * gelu'(x)."""

    def erf(self, x: Any) -> Any:
        """New erf(x), elementwise, in x's dtype."""

    # ------------------------------------------------------------------ dropout, embedding
    def dropout_mask(self, shape: tuple, p: float, dtype: Any) -> Any:
        """New mask of ``shape`` and ``dtype`` from ``self.rng``: 0 with probability p,
        else 1 / (1 - p) (all zeros when p == 1). Backends may draw different masks
        for the same seed; only the distribution is the contract."""

    def embedding_backward(self, ids: Any, gy: Any, num_embeddings: int) -> Any:
        """ids (...) integers in [0, num_embeddings), gy (..., D). New dE
        (num_embeddings, D): dE[v] = sum of gy over the positions where ids == v."""

    # ------------------------------------------------------------------ attention
    def attention(self, q: Any, k: Any, v: Any, keep: Any, bias: Any, scale: float,
                  dropout_p: float = 0.0) -> tuple:
        """q (..., Lq, E), k (..., Lk, E), v (..., Lk, Ev), leading dims broadcast;
        keep (bool) and bias (float) broadcastable to (..., Lq, Lk) or None. Returns new
        (out (..., Lq, Ev), P (..., Lq, Lk), drop or None)."""

    def attention_backward(self, g: Any, q: Any, k: Any, v: Any, p: Any, drop: Any,
                           scale: float) -> tuple:
        """New (dQ, dK, dV, dS) at the broadcast shapes (the caller unbroadcasts); dS is
        the gradient of the scores, hence of an additive mask."""

    def causal_attention(self, q: Any, k: Any, v: Any, scale: float) -> tuple:
        """q, k, v (..., T, E) of one shape and float dtype: causal softmax attention
        without a mask argument or dropout. Returns new (out (..., T, E), lse (..., T)
        float64), lse_i = log sum_{j <= i} exp(S_ij): all the backward needs besides
        the inputs and out (no T x T array is kept)."""

    def causal_attention_backward(self, g: Any, q: Any, k: Any, v: Any, out: Any, lse: Any,
                                  scale: float) -> tuple:
        """New (dQ, dK, dV) of ``causal_attention``, from its inputs, out and lse."""

    def causal_attention_qkv(self, qkv: Any, n_heads: int, scale: float) -> tuple:
        """``causal_attention`` of the heads of a fused projection: qkv (B, T, 3 H E),
        q = qkv[..., :HE] etc., each split into H heads of E. Returns new (out (B, T, H E)
        with the heads side by side, lse (B, H, T) float64)."""

    def causal_attention_qkv_backward(self, g: Any, qkv: Any, out: Any, lse: Any,
                                      n_heads: int, scale: float) -> Any:
        """New d(qkv) (B, T, 3 H E) of ``causal_attention_qkv`` from g (B, T, H E)."""

    # ------------------------------------------------------------------ cross-entropy
    def cross_entropy(self, logits: Any, target: Any, ignore_index: int,
                      label_smoothing: float, weight: Any) -> tuple:
        """logits (N, C), target (N,) integers, weight (C,) or None. Returns new
        (loss (N,), row_weight (N,), logp (N, C)); an ignored row has loss 0 and weight
        0; a target outside [0, C) raises IndexError."""

    def cross_entropy_backward(self, logp: Any, target: Any, g_row: Any, ignore_index: int,
                               label_smoothing: float, weight: Any) -> Any:
        """New dlogits (N, C) for the upstream per-row gradient g_row ((N,) or
        broadcastable to it)."""

    # ------------------------------------------------------------------ optimizer updates
    def sgd_step(self, param: Any, grad: Any, momentum_buf: Any, lr: float,
                 momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, maximize: bool = False,
                 init_buf: bool = False) -> None:
        """One SGD step IN PLACE on ``param`` and ``momentum_buf`` (None when momentum
        is 0); ``grad`` is only read. The param keeps its array object."""

    def adam_step(self, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, step: int,
                  lr: float, beta1: float, beta2: float, eps: float,
                  weight_decay: float = 0.0, decoupled: bool = False, amsgrad_max: Any = None,
                  maximize: bool = False) -> None:
        """One Adam/AdamW step (t = ``step`` from 1) IN PLACE on ``param``, ``exp_avg``,
        ``exp_avg_sq`` and ``amsgrad_max`` (if given); ``grad`` is only read."""


    # ------------------------------------------------------------------ recurrent sequences
    def lstm_sequence(self, gx: Any, h0: Any, c0: Any, w_hh: Any, keep: Any,
                      reverse: bool) -> tuple:
        """gx (T, B, 4H), h0/c0 (B, H), w_hh (4H, H), keep (T, B) bool or None. New
        (hs, cs, acts): the states after each step (T, B, H) and the activated gates
        i, f, g, o (T, B, 4H), zero at padded steps (functional/recurrent.py)."""

    def lstm_sequence_backward(self, ghs: Any, ghT: Any, gcT: Any, hs: Any, cs: Any,
                               acts: Any, h0: Any, c0: Any, w_hh: Any, keep: Any,
                               reverse: bool) -> tuple:
        """New (dgx, dh0, dc0, dw_hh): backpropagation through the whole sequence."""

    def gru_sequence(self, gx: Any, h0: Any, w_hh: Any, b_hh: Any, keep: Any,
                     reverse: bool) -> tuple:
        """gx (T, B, 3H) = x W_ih^T + b_ih, b_hh (3H,) or None. New (hs, acts): hs
        (T, B, H), acts (T, B, 4H) = r, z, n, h W_hn^T + b_hn, zero at padded steps."""

    def gru_sequence_backward(self, ghs: Any, ghT: Any, hs: Any, acts: Any, h0: Any,
                              w_hh: Any, keep: Any, reverse: bool) -> tuple:
        """New (dgx, dh0, dw_hh, db_hh)."""

    def rnn_sequence(self, gx: Any, h0: Any, w_hh: Any, keep: Any, reverse: bool,
                     relu: bool) -> Any:
        """New hs (T, B, H): h_t = tanh (or relu) of gx_t + h_{t-1} W_hh^T."""

    def rnn_sequence_backward(self, ghs: Any, ghT: Any, hs: Any, h0: Any, w_hh: Any,
                              keep: Any, reverse: bool, relu: bool) -> tuple:
        """New (dgx, dh0, dw_hh)."""

    # ------------------------------------------------------------------ quantized linear
    def int8_matmul(self, a: Any, b: Any) -> Any:
        """a (M, K) int8, b (N, K) int8. New (M, N) int32: a @ b^T, exactly (the int32
        sums cannot overflow for K <= 2^31 / 128^2 = 131072; larger K raises
        ValueError)."""

    def linear_int8_weight(self, x: Any, q: Any, scale: Any, zero: Any, group_size: int,
                           bias: Any) -> Any:
        """x (..., K) float; q (N, K) int8; scale, zero (N, K / group_size) float;
        bias (N,) or None. New y (..., N) in x's dtype: y = x W^T + b with
        W[n, k] = scale[n, g] (q[n, k] - zero[n, g]), g = k // group_size (zero
        integer valued). A fast
        backend must not build W: it reads q and scales on the fly."""

    def linear_int4_weight(self, x: Any, packed: Any, scale: Any, zero: Any,
                           group_size: int, bias: Any) -> Any:
        """As ``linear_int8_weight`` with q (N, K) stored as signed 4-bit codes in
        [-8, 7], two per byte of ``packed`` (N, ceil(K / 2)) uint8: q[n, 2j] in the low
        nibble of packed[n, j], q[n, 2j + 1] in the high one, each as its two's
        complement (quant/affine.py ``pack_int4``)."""

#: Every overridable kernel, in the order of ``Backend``.
KERNELS: tuple[str, ...] = tuple(
    name for name, value in vars(Backend).items()
    if callable(value) and not name.startswith("_")
)
