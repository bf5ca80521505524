"""Neural-network ops: the softmax family, dropout, embedding, one_hot.

Each class is one differentiable op on raw backend arrays. The arithmetic of the hot
paths is written here, against ``xp``, as a kernel function registered by name
(``@kernel("softmax")``); the op calls it as ``ctx.backend.softmax(...)``, which is that
function on the NumPy backend and a fused override on the Numba backend (see
minilm/backends/interface.py). Layer / RMS norm are in normalization.py, attention in
attention.py, GELU's formula in activations.py. Names and semantics follow
``torch.nn.functional``.
"""

from __future__ import annotations

from typing import Any

from ..autograd import Function
from ..backends import backend_for_array, is_device_array, to_host
from ..backends.interface import kernel
from ..tensor import Tensor, dtype_of
from . import gelu_kernel  # noqa: F401  (registers the gelu / erf kernels of F.gelu)
from ._util import norm_dim
from .attention import _check_p, scaled_dot_product_attention
from .math import cast
from .normalization import layer_norm, rms_norm

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


@kernel("softmax")
def softmax_kernel(be, x, dim):
    """y = exp(x - max x) / sum exp(x - max x) along ``dim``."""
    e = be.xp.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


@kernel("softmax_backward")
def softmax_backward_kernel(be, y, gy, dim):
    """dx = y * (gy - sum(gy * y)) along ``dim``."""
    return y * (gy - (gy * y).sum(axis=dim, keepdims=True))


@kernel("log_softmax")
def log_softmax_kernel(be, x, dim):
    """y = x - logsumexp(x) along ``dim``, with the row max taken out first."""
    s = x - x.max(axis=dim, keepdims=True)
    return s - be.xp.log(be.xp.exp(s).sum(axis=dim, keepdims=True))


@kernel("log_softmax_backward")
def log_softmax_backward_kernel(be, y, gy, dim):
    """dx = gy - softmax(x) * sum(gy), with softmax(x) = exp(y)."""
    return gy - be.xp.exp(y) * gy.sum(axis=dim, keepdims=True)


@kernel("masked_softmax")
def masked_softmax_kernel(be, x, keep, dim=-1):
    """y = keep * exp(x - max x) / sum(keep * exp(x - max x)) along ``dim``, the max
    taken over kept entries. ``keep`` is a bool array broadcastable to ``x`` (True =
    take part) or None. Rows with nothing kept (or all ``-inf``) give zeros, not NaN.
    Its gradient is ``softmax_backward`` (zeros stay zeros)."""
    xp = be.xp
    z = x if keep is None else xp.where(keep, x, -xp.inf)
    m = z.max(axis=dim, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)  # a fully masked row: exp(-inf - 0) = 0
    e = xp.exp(z - m)
    denom = e.sum(axis=dim, keepdims=True)
    return e / xp.where(denom > 0, denom, 1)  # nothing kept: 0 / 1


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


class SoftmaxFunction(Function):
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


def softmax(x: Tensor, dim: int = -1, dtype: Any = None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim`` (stable: the row max is subtracted first)."""
    return _softmax_like("softmax", SoftmaxFunction, x, dim, dtype)


class LogSoftmaxFunction(Function):
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


def log_softmax(x: Tensor, dim: int = -1, dtype: Any = None) -> Tensor:
    """log(softmax(x)) along ``dim``, computed as x - logsumexp(x)."""
    return _softmax_like("log_softmax", LogSoftmaxFunction, x, dim, dtype)


# ---------------------------------------------------------------------------- dropout


@kernel("dropout_mask")
def dropout_mask_kernel(be, shape, p, dtype):
    """m = [u >= p] / (1 - p) with u ~ U[0, 1) from ``be.rng``: each entry is kept
    with probability 1 - p and E[m] = 1 (inverted dropout). p == 1 gives zeros."""
    if p >= 1.0:
        return be.xp.zeros(shape, dtype=dtype)
    return (be.rng.random(shape) >= p).astype(dtype) * (1.0 / (1.0 - p))


class DropoutFunction(Function):
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


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each entry with probability ``p`` and scale the rest by 1/(1-p), so that
    the expectation is unchanged; the identity when ``training`` is False or p == 0.
    The mask comes from the backend's seeded generator (``minilm.manual_seed``)."""
    p = _check_p("dropout", p)
    if not training or p == 0.0:
        return x
    return DropoutFunction.apply(x, p=p)


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
    if is_device_array(ids):  # one device-to-host read, not two
        lo, hi = (int(v) for v in to_host(backend_for_array(ids).xp.stack([ids.min(),
                                                                            ids.max()])))
    else:
        lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= n:
        bad = hi if hi >= n else lo
        raise ValueError(
            f"{op}: id {bad} is out of range for {what} {n} (ids must be in [0, {n}); "
            f"min id {lo}, max id {hi})"
        )


@kernel("embedding_backward")
def embedding_backward_kernel(be, ids, gy, num_embeddings):
    """dE[v] = sum over positions p with ids[p] == v of gy[p] (a scatter-add:
    repeated ids add up)."""
    flat_ids = ids.reshape(-1)
    dE = be.xp.zeros((num_embeddings, gy.shape[-1]), dtype=gy.dtype)
    be.xp.add.at(dE, flat_ids, gy.reshape(flat_ids.shape[0], gy.shape[-1]))
    return dE


class EmbeddingFunction(Function):
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
    return EmbeddingFunction.apply(ids, weight, padding_idx=padding_idx)


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
