"""Megatron-style tensor parallelism: every weight matrix of the transformer split over
the ``tp`` ranks of a tensor-parallel communicator, with the collectives written as
autograd Functions.

The four collectives (``f``/``g`` in the Megatron paper), on raw arrays::

    copy_to_tp_region       forward: y = x                backward: dx = allreduce(g)
    reduce_from_tp_region   forward: y = allreduce(x)     backward: dx = g
    gather_from_tp_region   forward: y = concat_r x_r     backward: dx = g[my slice]
    scatter_to_tp_region    forward: y = x[my slice]      backward: dx = concat_r g_r
                            (gather/scatter along the last dim)

Who holds what (tp = 2; W of a Linear is (out, in), PyTorch layout)::

    ColumnParallelLinear   W rows (output features) split    y_r = x W_r^T + b_r
                           input via copy_to_tp_region       y = [y_0 | y_1] (kept split)
    RowParallelLinear      W columns (input features) split  y = sum_r x_r W_r^T  + b
                           output via reduce_from_tp_region  (b added once, after the sum)

    attention   qkv column-parallel by whole heads: rank r holds the q, k and v rows of
                heads [r H/tp, (r+1) H/tp) (the fused weight is [q; k; v], so r takes its
                slice of each of the three blocks); attention runs on its H/tp heads;
                out_proj row-parallel (its input columns are exactly r's heads).
    MLP         fc column-parallel -> GELU (elementwise, no communication) -> proj
                row-parallel.  One allreduce per sublayer forward, one per backward.
    embedding   VocabParallelEmbedding: rank r holds vocab rows [r V/tp, (r+1) V/tp);
                ids outside give zeros; the partial lookups are summed (reduce).
    LM head     logits_r = copy_to_tp_region(h) W_r^T with W_r the same vocab shard
                (tied) — the full logits are never formed: vocab_parallel_cross_entropy
                combines per-rank max, sum-exp and target logit with three small
                allreduces of N numbers each.

Replicated parameters (LayerNorms, the learned positional embedding, the row-parallel
biases) see identical inputs and identical output gradients on every tp rank (the
backward allreduce of copy_to_tp_region gives each rank the full gradient), so their
gradients are already equal: pure tensor parallelism needs no reduction for them.
(``replicated_divergence`` measures that they stayed equal.)

Dropout RNG: seed every tp rank of a group identically (``minilm.manual_seed(s)`` with
``s`` depending only on the data-parallel rank and pipeline stage, not on the tp rank).
All tp ranks then draw random numbers in the same order with the same shapes, so the
masks on replicated tensors (embedding output, residual-branch outputs) are identical, as
they must be. The masks inside the sharded region (attention probabilities of the local
heads) are drawn from the same stream too, so every rank uses the same mask *pattern* on
its own different heads — statistically harmless (heads are independent), but not the
masks a one-process run would draw; with dropout > 0 a tp run matches one process in
distribution, not bitwise. Tests compare with dropout 0.

Composition: every sharded layer is an ordinary Module whose Parameters are the local
shards (data-parallel gradient hooks and optimizers see plain Parameters);
``tensor_parallel_block`` converts one TransformerBlock in place (pipeline stages convert
their own blocks); embedding and head are separate modules and need not live in the same
process. ``full_state_dict`` / ``load_full_state_dict`` move between the sharded model and
the one-process GPT's state dict (same keys, same shapes).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import Function
from ..backends import backend_for_array
from ..nn.attention import KVCache, MultiHeadAttention, build_attention_mask
from ..nn.layers import Embedding, Linear
from ..nn.module import Module, Parameter
from ..nn.transformer import GPT, MLP, TransformerBlock
from ..tensor import Tensor
from .comm import Communicator

__all__ = [
    "ColumnParallelLinear", "RowParallelLinear", "TensorParallelAttention",
    "TensorParallelGPT", "TensorParallelMLP", "VocabParallelEmbedding",
    "check_tensor_parallel_sizes", "copy_to_tp_region", "full_state_dict",
    "gather_from_tp_region", "load_full_state_dict", "reduce_from_tp_region",
    "replicated_divergence", "scatter_to_tp_region", "shard_tensor", "merge_shards",
    "tensor_parallel_block", "tensor_parallel_gpt", "vocab_parallel_cross_entropy",
]


# ---------------------------------------------------------------------------- host collectives
# The communicator works on C-contiguous NumPy arrays; these helpers copy (never modify a
# gradient array that autograd may have handed to several inputs) and go through host
# memory for CuPy arrays.


def _host_copy(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return np.array(a, order="C", copy=True)
    return np.ascontiguousarray(a.get())  # cupy -> host (a fresh array)


def _like(h: np.ndarray, xp: Any) -> Any:
    return h if xp is np else xp.asarray(h)


def _allreduce(xp: Any, a: Any, comm: Communicator, op: str = "sum") -> Any:
    """A new array: op over the ranks of ``a``."""
    return _like(comm.allreduce(_host_copy(a), op), xp)


def _allgather(xp: Any, a: Any, comm: Communicator) -> Any:
    """A new array of shape (size, *a.shape): every rank's ``a`` in rank order."""
    send = _host_copy(a)
    recv = np.empty((comm.size,) + send.shape, dtype=send.dtype)
    comm.allgather(send, recv)
    return _like(recv, xp)


def _split_last(xp: Any, a: Any, comm: Communicator) -> Any:
    n = a.shape[-1]
    if n % comm.size:
        raise ValueError(f"scatter_to_tp_region: last dim {n} is not divisible by the "
                         f"tensor-parallel size {comm.size}")
    k = n // comm.size
    return xp.ascontiguousarray(a[..., comm.rank * k:(comm.rank + 1) * k])


def _gather_last(xp: Any, a: Any, comm: Communicator) -> Any:
    parts = _allgather(xp, a, comm)  # (size, ..., k)
    return xp.concatenate(list(parts), axis=-1)


# ---------------------------------------------------------------------------- collectives


class CopyToTPRegion(Function):
    """Entering the tensor-parallel region: y = x;  dx = allreduce_sum(g) (each rank's
    branch contributed a partial gradient of the replicated x)."""

    is_view = True

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return x

    @staticmethod
    def backward(ctx, g):
        if ctx.comm.is_single:
            return g, None
        return _allreduce(ctx.xp, g, ctx.comm), None


class ReduceFromTPRegion(Function):
    """Leaving the region with partial sums: y = allreduce_sum(x);  dx = g."""

    is_view = True

    @staticmethod
    def forward(ctx, x, comm):
        if comm.is_single:
            return x
        return _allreduce(ctx.xp, x, comm)

    @staticmethod
    def backward(ctx, g):
        return g, None


class GatherFromTPRegion(Function):
    """y = concat over ranks of x along the last dim;  dx = my slice of g."""

    is_view = True

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        if comm.is_single:
            return x
        return _gather_last(ctx.xp, x, comm)

    @staticmethod
    def backward(ctx, g):
        if ctx.comm.is_single:
            return g, None
        return _split_last(ctx.xp, g, ctx.comm), None


class ScatterToTPRegion(Function):
    """y = my slice of x along the last dim;  dx = concat over ranks of g."""

    is_view = True

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        if comm.is_single:
            return x
        return _split_last(ctx.xp, x, comm)

    @staticmethod
    def backward(ctx, g):
        if ctx.comm.is_single:
            return g, None
        return _gather_last(ctx.xp, g, ctx.comm), None


def copy_to_tp_region(x: Tensor, comm: Communicator) -> Tensor:
    """Identity forward, allreduce-sum backward."""
    return CopyToTPRegion.apply(x, comm)


def reduce_from_tp_region(x: Tensor, comm: Communicator) -> Tensor:
    """Allreduce-sum forward, identity backward."""
    return ReduceFromTPRegion.apply(x, comm)


def gather_from_tp_region(x: Tensor, comm: Communicator) -> Tensor:
    """Concatenate the ranks' x along the last dim; backward keeps this rank's slice."""
    return GatherFromTPRegion.apply(x, comm)


def scatter_to_tp_region(x: Tensor, comm: Communicator) -> Tensor:
    """This rank's slice of the last dim; backward concatenates the ranks' gradients."""
    return ScatterToTPRegion.apply(x, comm)


# ---------------------------------------------------------------------------- shard layout
# A sharded parameter is described by (dim, fused): the full tensor is cut along ``dim``
# into ``fused`` stacked blocks (3 for the [q; k; v] projection, else 1) and rank r holds
# the r-th of ``size`` equal slices of every block, concatenated.


def shard_tensor(full: Any, dim: int, rank: int, size: int, fused: int = 1) -> Any:
    """Rank ``rank``'s shard of ``full`` (a new contiguous array)."""
    n = full.shape[dim]
    if n % (fused * size):
        raise ValueError(f"shard_tensor: dim {dim} of shape {tuple(full.shape)} ({n}) is not "
                         f"divisible by {fused} block(s) x tp {size}")
    xp = _xp_of(full)
    a = xp.moveaxis(full, dim, 0)
    rest = a.shape[1:]
    a = a.reshape((fused, size, n // (fused * size)) + rest)[:, rank]
    return xp.ascontiguousarray(xp.moveaxis(a.reshape((n // size,) + rest), 0, dim))


def merge_shards(shards: Any, dim: int, fused: int = 1) -> Any:
    """Inverse of ``shard_tensor``: the full tensor from the stacked shards of every rank
    (an array of shape (size, *shard.shape) or a list in rank order)."""
    xp = _xp_of(shards[0])
    s = xp.stack(list(shards)) if isinstance(shards, (list, tuple)) else shards
    size, n_local = s.shape[0], s.shape[1 + dim]
    a = xp.moveaxis(s, 1 + dim, 1)  # (size, n_local, *rest)
    rest = a.shape[2:]
    a = a.reshape((size, fused, n_local // fused) + rest).swapaxes(0, 1)
    return xp.ascontiguousarray(xp.moveaxis(a.reshape((size * n_local,) + rest), 0, dim))


def _xp_of(a: Any) -> Any:
    return np if isinstance(a, np.ndarray) else backend_for_array(a).xp


def _gather_full(a: Any, dim: int, fused: int, comm: Communicator) -> Any:
    if comm.is_single:
        return a.copy()
    return merge_shards(_allgather(_xp_of(a), a, comm), dim, fused)


class _TPModule(Module):
    """Base of the sharded layers: ``tp_partition`` maps each sharded parameter name to
    its (dim, fused) layout; parameters not listed are replicated."""

    tp_partition: dict = {}

    def _setup_tp(self, comm: Communicator) -> None:
        if not isinstance(comm, Communicator):
            raise TypeError(f"{type(self).__name__}: comm must be a Communicator, got "
                            f"{type(comm).__name__}")
        self.comm = comm
        self.tp_size, self.tp_rank = comm.size, comm.rank

    def gather_weight(self, name: str = "weight") -> Tensor:
        """The full (unsharded) parameter ``name`` on every rank (a collective)."""
        t = getattr(self, name)
        if name not in self.tp_partition:
            return Tensor._make(t.data.copy())
        dim, fused = self.tp_partition[name]
        return Tensor._make(_gather_full(t.data, dim, fused, self.comm))


def _check_div(what: str, n: int, tp: int, op: str) -> None:
    if n % tp:
        raise ValueError(f"{op}: {what} ({n}) is not divisible by the tensor-parallel size "
                         f"tp ({tp})")


# ---------------------------------------------------------------------------- linear layers


class ColumnParallelLinear(_TPModule):
    """y = x W^T + b with W's rows (output features) split over the tp ranks: rank r
    holds W_r (out/tp, in) and b_r, and computes y_r = copy_to_tp_region(x) W_r^T + b_r.
    ``gather_output`` concatenates the y_r (else the output stays split, for a following
    RowParallelLinear). ``fused`` > 1 means the output is ``fused`` stacked blocks (the
    [q; k; v] projection) and each rank takes its slice of every block."""

    tp_partition = {"weight": (0, 1), "bias": (0, 1)}

    def __init__(self, in_features: int, out_features: int, comm: Communicator,
                 bias: bool = True, gather_output: bool = False, fused: int = 1,
                 dtype: Any = None) -> None:
        super().__init__()
        _check_div("out_features", out_features, fused * comm.size, "ColumnParallelLinear")
        # initialise the full layer (the same draws as a Linear) and keep this rank's rows
        self._build(Linear(in_features, out_features, bias=bias, dtype=dtype), comm,
                    gather_output, fused)

    def _build(self, linear: Any, comm: Communicator, gather_output: bool, fused: int,
               weight: Parameter | None = None) -> None:
        self._setup_tp(comm)
        _check_div("out_features", linear.out_features, fused * comm.size,
                   "ColumnParallelLinear")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.gather_output, self.fused = gather_output, fused
        self.tp_partition = {"weight": (0, fused), "bias": (0, fused)}
        r, p = comm.rank, comm.size
        self.weight = weight if weight is not None else \
            Parameter(shard_tensor(linear.weight.data, 0, r, p, fused))
        self.bias = (Parameter(shard_tensor(linear.bias.data, 0, r, p, fused))
                     if getattr(linear, "bias", None) is not None else None)

    @classmethod
    def from_linear(cls, linear: Linear, comm: Communicator, gather_output: bool = False,
                    fused: int = 1) -> ColumnParallelLinear:
        """The shard of an existing full ``Linear`` (same values as the 1-process layer)."""
        self = cls.__new__(cls)
        Module.__init__(self)
        self._build(linear, comm, gather_output, fused)
        return self

    @classmethod
    def tied_to(cls, embedding: VocabParallelEmbedding,
                gather_output: bool = False) -> ColumnParallelLinear:
        """The vocab-parallel LM head whose weight IS ``embedding``'s shard (tied
        weights: logits_r = copy_to_tp_region(h) E_r^T, gradients of both uses summed)."""
        self = cls.__new__(cls)
        Module.__init__(self)
        shape = _Shape(embedding.embedding_dim, embedding.num_embeddings)
        self._build(shape, embedding.comm, gather_output, 1, weight=embedding.weight)
        return self

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(copy_to_tp_region(x, self.comm), self.weight, self.bias)
        if not self.gather_output or self.comm.is_single:
            return y
        y = gather_from_tp_region(y, self.comm)
        if self.fused > 1:  # [b0 of r0, b1 of r0, .., b0 of r1, ..] -> [b0 of all, b1 ..]
            lead, k = y.shape[:-1], self.out_features // (self.fused * self.tp_size)
            y = y.reshape(*lead, self.tp_size, self.fused, k).transpose(-3, -2)
            y = y.reshape(*lead, self.out_features)
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features} "
                f"(local {self.weight.shape[0]}), bias={self.bias is not None}, "
                f"tp={self.tp_size}, gather_output={self.gather_output}, fused={self.fused}")


class _Shape:
    """in/out features of a layer without weights (for ``ColumnParallelLinear.tied_to``)."""

    bias = None

    def __init__(self, in_features: int, out_features: int) -> None:
        self.in_features, self.out_features = in_features, out_features


class RowParallelLinear(_TPModule):
    """y = x W^T + b with W's columns (input features) split: rank r holds W_r
    (out, in/tp) and computes reduce_from_tp_region(x_r W_r^T) + b; b is replicated and
    added once, after the sum. ``input_is_parallel=False`` first scatters a full x."""

    tp_partition = {"weight": (1, 1)}

    def __init__(self, in_features: int, out_features: int, comm: Communicator,
                 bias: bool = True, input_is_parallel: bool = True, dtype: Any = None) -> None:
        super().__init__()
        self._setup_tp(comm)
        _check_div("in_features", in_features, comm.size, "RowParallelLinear")
        self.in_features, self.out_features = in_features, out_features
        self.input_is_parallel = input_is_parallel
        self._take(Linear(in_features, out_features, bias=bias, dtype=dtype))

    def _take(self, linear: Linear) -> None:
        self.weight = Parameter(shard_tensor(linear.weight.data, 1, self.tp_rank, self.tp_size))
        self.bias = Parameter(linear.bias.data.copy()) if linear.bias is not None else None

    @classmethod
    def from_linear(cls, linear: Linear, comm: Communicator,
                    input_is_parallel: bool = True) -> RowParallelLinear:
        self = cls.__new__(cls)
        Module.__init__(self)
        self._setup_tp(comm)
        _check_div("in_features", linear.in_features, comm.size, "RowParallelLinear")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.input_is_parallel = input_is_parallel
        self._take(linear)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if not self.input_is_parallel:
            x = scatter_to_tp_region(x, self.comm)
        y = reduce_from_tp_region(F.linear(x, self.weight), self.comm)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features} (local {self.weight.shape[1]}), "
                f"out_features={self.out_features}, bias={self.bias is not None}, "
                f"tp={self.tp_size}, input_is_parallel={self.input_is_parallel}")


# ---------------------------------------------------------------------------- vocab parallel


class _VocabShardLookup(Function):
    """y[p] = W_r[ids[p] - start] if this rank owns ids[p], else 0;
    dW_r[v] = sum of g over the owned positions with ids - start == v."""

    @staticmethod
    def forward(ctx, ids, weight, *, start, padding_idx):
        xp = ctx.xp
        local = ids - start
        own = (local >= 0) & (local < weight.shape[0])
        local = xp.where(own, local, 0)
        ctx.save_for_backward(local, own)
        ctx.rows, ctx.padding_idx = weight.shape[0], padding_idx
        y = xp.take(weight, local, axis=0)
        y *= own[..., None]
        return y

    @staticmethod
    def backward(ctx, g):
        local, own = ctx.saved
        dw = ctx.backend.embedding_backward(local, g * own[..., None], ctx.rows)
        if ctx.padding_idx is not None:
            dw[ctx.padding_idx] = 0
        return None, dw


class VocabParallelEmbedding(_TPModule):
    """Embedding whose vocab rows are split: rank r holds rows [r V/tp, (r+1) V/tp),
    looks up the ids it owns (zeros elsewhere), and the partial results are summed
    with reduce_from_tp_region. Also the weight of a tied, vocab-parallel LM head."""

    tp_partition = {"weight": (0, 1)}

    def __init__(self, num_embeddings: int, embedding_dim: int, comm: Communicator,
                 padding_idx: int | None = None, dtype: Any = None) -> None:
        super().__init__()
        self._take(Embedding(num_embeddings, embedding_dim, padding_idx, dtype=dtype), comm)

    def _take(self, emb: Embedding, comm: Communicator) -> None:
        self._setup_tp(comm)
        _check_div("num_embeddings (vocab size)", emb.num_embeddings, comm.size,
                   "VocabParallelEmbedding")
        self.num_embeddings, self.embedding_dim = emb.num_embeddings, emb.embedding_dim
        self.padding_idx = emb.padding_idx
        per = emb.num_embeddings // comm.size
        self.vocab_start, self.vocab_end = comm.rank * per, (comm.rank + 1) * per
        self.weight = Parameter(shard_tensor(emb.weight.data, 0, comm.rank, comm.size))

    @classmethod
    def from_embedding(cls, emb: Embedding, comm: Communicator) -> VocabParallelEmbedding:
        self = cls.__new__(cls)
        Module.__init__(self)
        self._take(emb, comm)
        return self

    def forward(self, ids: Tensor) -> Tensor:
        if not isinstance(ids, Tensor) or ids.dtype.kind not in "iu":
            raise TypeError("VocabParallelEmbedding: ids must be an integer Tensor")
        raw = ids.data
        if raw.size and (int(raw.min()) < 0 or int(raw.max()) >= self.num_embeddings):
            raise ValueError(f"VocabParallelEmbedding: ids must be in [0, "
                             f"{self.num_embeddings}), got [{int(raw.min())}, "
                             f"{int(raw.max())}]")
        pad = None
        if self.padding_idx is not None and self.vocab_start <= self.padding_idx < self.vocab_end:
            pad = self.padding_idx - self.vocab_start
        y = _VocabShardLookup.apply(ids, self.weight, start=self.vocab_start, padding_idx=pad)
        return reduce_from_tp_region(y, self.comm)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, rows [{self.vocab_start}, "
                f"{self.vocab_end}), tp={self.tp_size}")


class VocabParallelCrossEntropy(Function):
    """Cross-entropy of logits split over the vocab (rank r holds columns
    [start, start + V_r)), without gathering them:
    m = allreduce_max(max_local z);  s = allreduce_sum(sum_local e^(z - m));
    z_y = allreduce_sum(z[y] on the owning rank, 0 elsewhere);
    loss_i = log s + m - z_y  (0 where y = ignore_index);
    dz_local = (softmax_local - onehot_local(y)) * g / n_valid ('mean')."""

    @staticmethod
    def forward(ctx, logits, target, comm, *, start, ignore_index, reduction):
        xp = ctx.xp
        n, v_local = logits.shape
        m = _allreduce(xp, logits.max(axis=1), comm, "max") if n else logits.sum(axis=1)
        z = logits - m[:, None]
        e = xp.exp(z)
        s = _allreduce(xp, e.sum(axis=1), comm)
        valid = target != ignore_index
        local = target - start
        own = valid & (local >= 0) & (local < v_local)
        idx = xp.where(own, local, 0)
        rows = xp.arange(n)
        z_y = _allreduce(xp, xp.where(own, z[rows, idx], 0.0), comm)
        loss = xp.where(valid, xp.log(s) - z_y, 0.0)
        ctx.save_for_backward(e / s[:, None], idx, own, valid)
        ctx.reduction = reduction
        if reduction == "none":
            return loss
        if reduction == "sum":
            return loss.sum()
        ctx.count = valid.sum()
        return loss.sum() / ctx.count

    @staticmethod
    def backward(ctx, g):
        p, idx, own, valid = ctx.saved
        d = p * valid[:, None]
        rows = ctx.xp.arange(p.shape[0])
        d[rows[own], idx[own]] -= 1.0
        if ctx.reduction == "none":
            d *= g[:, None]
        elif ctx.reduction == "sum":
            d *= g
        else:
            d *= g / ctx.count
        return d, None, None


def vocab_parallel_cross_entropy(local_logits: Tensor, target: Tensor, comm: Communicator,
                                 ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Mean cross-entropy (PyTorch semantics: targets equal to ``ignore_index`` skipped)
    of vocab-split logits: ``local_logits`` (N, V/tp) or (..., V/tp) holds this rank's
    slice [rank V/tp, (rank+1) V/tp) of the vocab; ``target`` (N,) or (...) full vocab
    ids, the same on every rank. Every rank gets the same loss."""
    op = "vocab_parallel_cross_entropy"
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target), backend=local_logits.backend)
    if local_logits.dtype.kind != "f":
        raise TypeError(f"{op}: logits must be floating point, got {local_logits.dtype}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold class indices (integer), got {target.dtype}")
    if local_logits.ndim < 1 or local_logits.shape[:-1] != target.shape:
        raise ValueError(f"{op}: logits of shape {local_logits.shape} need a target of shape "
                         f"{local_logits.shape[:-1]}, got {target.shape}")
    v_local = local_logits.shape[-1]
    vocab = v_local * comm.size
    t = target.data.reshape(-1)
    bad = ((t < 0) | (t >= vocab)) & (t != ignore_index)
    if t.size and bool(bad.any()):
        raise ValueError(f"{op}: target id {int(t[bad][0])} is out of range for {vocab} "
                         f"classes (ids must be in [0, {vocab}) or equal ignore_index="
                         f"{ignore_index})")
    z = local_logits.reshape(-1, v_local)
    loss = VocabParallelCrossEntropy.apply(z, target.reshape(-1), comm, start=comm.rank * v_local,
                                           ignore_index=int(ignore_index), reduction=reduction)
    return loss.reshape(target.shape) if reduction == "none" else loss


# ---------------------------------------------------------------------------- transformer parts


class TensorParallelAttention(Module):
    """Causal self-attention on this rank's n_heads/tp heads: qkv column-parallel with
    q, k, v of each head kept together, out_proj row-parallel (one allreduce forward,
    one backward). Same arguments as MultiHeadAttention.forward (cross-attention is not
    supported)."""

    def __init__(self, mha: MultiHeadAttention, comm: Communicator) -> None:
        super().__init__()
        if mha.cross:
            raise ValueError("TensorParallelAttention: cross-attention is not supported")
        _check_div("n_heads", mha.n_heads, comm.size, "TensorParallelAttention")
        self.comm = comm
        self.d_model, self.n_heads, self.head_dim = mha.d_model, mha.n_heads, mha.head_dim
        self.local_heads = mha.n_heads // comm.size
        self.local_dim = self.local_heads * self.head_dim
        self.causal, self.window, self.cross = mha.causal, mha.window, False
        self.dropout_p, self.layer_index = mha.dropout_p, mha.layer_index
        self.qkv = ColumnParallelLinear.from_linear(mha.qkv, comm, fused=3)
        self.out_proj = RowParallelLinear.from_linear(mha.out_proj, comm)
        self.resid_dropout = mha.resid_dropout
        self.rope = mha.rope

    def _heads(self, t: Tensor) -> Tensor:
        B, T, _ = t.shape
        return t.reshape(B, T, self.local_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None, key_padding_mask: Any = None,
                cache: KVCache | None = None, context_length: int | None = None) -> Tensor:
        if context is not None:
            raise ValueError("TensorParallelAttention: cross-attention is not supported")
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.local_dim, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        offset = cache.length if cache is not None else 0
        if self.rope is not None:
            q, k = self.rope(q, offset), self.rope(k, offset)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v, context_length or (offset + T))
        S = k.shape[-2]
        kpm = key_padding_mask.data if isinstance(key_padding_mask, Tensor) else key_padding_mask
        simple = offset == 0 and self.window is None and kpm is None
        mask = None if simple else Tensor._make(build_attention_mask(
            x.backend.xp, T, S, causal=self.causal, offset=offset, window=self.window,
            key_padding_mask=kpm))
        drop = self.dropout_p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop,
                                           is_causal=self.causal and simple)
        y = y.transpose(1, 2).reshape(B, T, self.local_dim)
        return self.resid_dropout(self.out_proj(y))

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads} (local {self.local_heads}), "
                f"tp={self.comm.size}")


class TensorParallelMLP(Module):
    """fc column-parallel -> activation (elementwise, local) -> proj row-parallel."""

    def __init__(self, mlp: MLP, comm: Communicator) -> None:
        super().__init__()
        _check_div("d_ff", mlp.fc.out_features, comm.size, "TensorParallelMLP")
        self.fc = ColumnParallelLinear.from_linear(mlp.fc, comm)
        self.act = mlp.act
        self.proj = RowParallelLinear.from_linear(mlp.proj, comm)
        self.dropout = mlp.dropout

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


def tensor_parallel_block(block: TransformerBlock, comm: Communicator) -> TransformerBlock:
    """Shard one TransformerBlock in place (attention by heads, MLP column-then-row;
    the LayerNorms stay replicated) and return it. Parameter names are unchanged."""
    if isinstance(block.attn, TensorParallelAttention):
        raise ValueError("tensor_parallel_block: this block is already tensor-parallel")
    _check_div("n_heads", block.attn.n_heads, comm.size, "tensor_parallel_block")
    _check_div("d_ff", block.mlp.fc.out_features, comm.size, "tensor_parallel_block")
    attn, mlp = TensorParallelAttention(block.attn, comm), TensorParallelMLP(block.mlp, comm)
    block._modules["attn"] = attn  # replaced in place: names and order are kept
    block._modules["mlp"] = mlp
    return block


def check_tensor_parallel_sizes(config: Any, tp: int) -> None:
    """ValueError (naming the numbers) unless n_heads, d_ff and vocab_size of a
    GPTConfig are divisible by ``tp``."""
    problems = [f"{name} ({getattr(config, name)})" for name in ("n_heads", "d_ff", "vocab_size")
                if getattr(config, name) % tp]
    if problems:
        raise ValueError(f"tensor parallelism over tp={tp} ranks needs n_heads, d_ff and "
                         f"vocab_size divisible by {tp}; not divisible: {', '.join(problems)}")


class TensorParallelGPT(GPT):
    """A GPT sharded over a tensor-parallel communicator. Built from a full GPT (the same
    on every rank), whose modules it takes over — the blocks are converted in place, so
    use this module, not the GPT, afterwards. Parameter names and the order of
    ``named_parameters()`` are those of the GPT.

    ``forward(ids, targets)`` returns (logits_local, loss): logits_local (B, T, V/tp) are
    this rank's vocab slice (``gather_logits`` assembles them), the loss is the same
    number on every rank."""

    def __init__(self, model: GPT, comm: Communicator) -> None:
        Module.__init__(self)  # not GPT.__init__: the modules are taken from ``model``
        if not isinstance(model, GPT):
            raise TypeError(f"TensorParallelGPT: expected a minilm.nn.GPT, got "
                            f"{type(model).__name__}")
        c = model.config
        check_tensor_parallel_sizes(c, comm.size)  # before anything is changed
        self.config, self.comm = c, comm
        self.tok_emb = VocabParallelEmbedding.from_embedding(model.tok_emb, comm)
        if c.positional == "learned":
            self.pos_emb = model.pos_emb
        elif c.positional == "sinusoidal":
            self.register_buffer("pos_table", model.pos_table, persistent=False)
        else:
            self.rope = model.rope
        self.drop = model.drop
        for block in model.blocks:
            tensor_parallel_block(block, comm)
        self.blocks = model.blocks
        self.ln_f = model.ln_f
        if c.tie_weights:  # the head is the vocab-parallel embedding's own shard
            self.head = ColumnParallelLinear.tied_to(self.tok_emb)
        else:
            self.head = ColumnParallelLinear.from_linear(model.head, comm)
        self.train(model.training)

    # GPT.forward runs embed (inherited), the blocks, then these two overrides
    def logits(self, h: Tensor) -> Tensor:
        """This rank's vocab slice of the logits of the final hidden states."""
        return self.head(self.ln_f(h))

    def loss(self, logits_local: Tensor, targets: Tensor) -> Tensor:
        return vocab_parallel_cross_entropy(logits_local, targets, self.comm)

    def gather_logits(self, logits_local: Tensor) -> Tensor:
        """The full (..., vocab) logits on every rank (for sampling or checks)."""
        return gather_from_tp_region(logits_local, self.comm)

    def extra_repr(self) -> str:
        return f"tp={self.comm.size}, {self.num_parameters():,} local parameters"


def tensor_parallel_gpt(model: GPT, comm: Communicator) -> TensorParallelGPT:
    """Shard a full GPT (built identically on every rank) over ``comm``'s ranks."""
    return TensorParallelGPT(model, comm)


# ---------------------------------------------------------------------------- state dicts


def _layouts(model: Module) -> dict:
    """{state-dict key: (dim, fused)} of every sharded parameter of ``model``."""
    out = {}
    for prefix, mod in model.named_modules():
        for name, spec in getattr(mod, "tp_partition", {}).items():
            if mod._parameters.get(name) is not None:
                out[f"{prefix}.{name}" if prefix else name] = spec
    return out


def _check_comm(model: Module, comm: Communicator, op: str) -> None:
    for _, mod in model.named_modules():
        if isinstance(mod, _TPModule) and mod.tp_size != comm.size:
            raise ValueError(f"{op}: the model is sharded over {mod.tp_size} ranks but the "
                             f"communicator has {comm.size}")


def full_state_dict(model: Module, comm: Communicator) -> OrderedDict:
    """The one-process state dict of a tensor-parallel model (same keys and shapes as
    the unsharded model's ``state_dict()``), assembled on every rank. A collective:
    every tp rank must call it."""
    _check_comm(model, comm, "full_state_dict")
    layouts = _layouts(model)
    out: OrderedDict = OrderedDict()
    done: dict = {}
    for key, t in model.state_dict(keep_vars=True).items():
        if id(t) not in done:  # tied parameters are gathered once
            if key in layouts:
                done[id(t)] = _gather_full(t.data, *layouts[key], comm)
            else:
                done[id(t)] = t.data.copy()
        out[key] = Tensor._make(done[id(t)])
    return out


def load_full_state_dict(model: Module, state_dict: dict, comm: Communicator,
                         strict: bool = True) -> Any:
    """Load a one-process state dict into a tensor-parallel model, each rank keeping
    its shards (checkpoints move between parallel and single-process runs). Shapes
    are checked before anything is written."""
    _check_comm(model, comm, "load_full_state_dict")
    layouts = _layouts(model)
    own = model.state_dict(keep_vars=True)
    local = {}
    for key, src in state_dict.items():
        arr = src.data if isinstance(src, Tensor) else src
        if key in layouts and key in own:
            dim, fused = layouts[key]
            want = list(own[key].shape)
            want[dim] *= comm.size
            if tuple(arr.shape) != tuple(want):
                raise ValueError(f"load_full_state_dict: {key}: checkpoint {tuple(arr.shape)} "
                                 f"vs full model {tuple(want)}")
            arr = shard_tensor(arr, dim, comm.rank, comm.size, fused)
        local[key] = arr
    return model.load_state_dict(local, strict=strict)


def replicated_divergence(model: Module, comm: Communicator) -> float:
    """Largest difference across tp ranks of any replicated (unsharded) parameter: 0.0
    when the ranks stayed consistent. A collective."""
    layouts = _layouts(model)
    worst = 0.0
    for name, p in model.named_parameters():
        if name in layouts:
            continue
        a = _host_copy(p.data)
        hi, lo = comm.allreduce(a.copy(), "max"), comm.allreduce(a.copy(), "min")
        if a.size:
            worst = max(worst, float(np.max(hi - lo)))
    return worst


