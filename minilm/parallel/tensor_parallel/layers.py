"""The sharded layers: column- and row-parallel linears, the vocab-parallel embedding,
and the tensor-parallel attention and MLP built from them.

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

Every sharded layer is an ordinary Module whose Parameters are the local shards; its
``tp_partition`` names the layout of each (see ``shard_tensor``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import functional as F
from ...autograd import Function
from ...backends import backend_for_array, is_device_array
from ...nn.attention import KVCache, MultiHeadAttention
from ...nn.layers import Embedding, Linear
from ...nn.module import Module, Parameter
from ...nn.transformer import MLP
from ...tensor import Tensor
from ..comm import Communicator
from .mappings import (
    _allgather,
    copy_to_tp_region,
    gather_from_tp_region,
    reduce_from_tp_region,
    scatter_to_tp_region,
)

__all__ = [
    "ColumnParallelLinear", "RowParallelLinear", "TensorParallelAttention",
    "TensorParallelMLP", "VocabParallelEmbedding", "merge_shards", "shard_tensor",
]


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
    return backend_for_array(a).xp if is_device_array(a) else np


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


# ---------------------------------------------------------------------------- transformer parts


class TensorParallelAttention(MultiHeadAttention):
    """Causal self-attention on this rank's n_heads/tp heads: qkv column-parallel with
    q, k, v of each head kept together, out_proj row-parallel (one allreduce forward,
    one backward). Same arguments as MultiHeadAttention.forward (cross-attention is not
    supported).

    The forward pass is MultiHeadAttention.forward itself, through its hook:
    ``n_local_heads`` = n_heads / tp heads are split from the (local) qkv output and
    their concatenated outputs, n_local_heads * head_dim features, go to the
    row-parallel out_proj, whose reduce_from_tp_region sums the ranks' partial
    projections: out = sum_r y_r W_out,r^T + b."""

    def __init__(self, mha: MultiHeadAttention, comm: Communicator) -> None:
        Module.__init__(self)  # not MultiHeadAttention.__init__: the shards come from ``mha``
        if mha.cross:
            raise ValueError("TensorParallelAttention: cross-attention is not supported")
        _check_div("n_heads", mha.n_heads, comm.size, "TensorParallelAttention")
        self.comm = comm
        self.d_model, self.n_heads, self.head_dim = mha.d_model, mha.n_heads, mha.head_dim
        self.n_local_heads = mha.n_heads // comm.size
        self.causal, self.window, self.cross = mha.causal, mha.window, False
        self.dropout_p, self.layer_index = mha.dropout_p, mha.layer_index
        self.qkv = ColumnParallelLinear.from_linear(mha.qkv, comm, fused=3)
        self.out_proj = RowParallelLinear.from_linear(mha.out_proj, comm)
        self.resid_dropout = mha.resid_dropout
        self.rope = mha.rope
        self.top_k = getattr(mha, "top_k", None)

    def forward(self, x: Tensor, context: Tensor | None = None, key_padding_mask: Any = None,
                cache: KVCache | None = None, context_length: int | None = None) -> Tensor:
        if context is not None:
            raise ValueError("TensorParallelAttention: cross-attention is not supported")
        return super().forward(x, key_padding_mask=key_padding_mask, cache=cache,
                               context_length=context_length)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads} (local {self.n_local_heads}), "
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
