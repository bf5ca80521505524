"""Converting a GPT to its tensor-parallel form: ``tensor_parallel_block`` shards one
TransformerBlock in place (attention by heads, MLP column-then-row, LayerNorms
replicated), ``TensorParallelGPT`` takes over a full GPT's modules (vocab-parallel
embedding and head, converted blocks) and reuses GPT.forward, overriding only the logits
(this rank's vocab slice) and the loss (``vocab_parallel_cross_entropy``).
"""

from __future__ import annotations

from typing import Any

from ...nn.module import Module
from ...nn.transformer import GPT, TransformerBlock
from ...tensor import Tensor
from ..comm import Communicator
from .cross_entropy import vocab_parallel_cross_entropy
from .layers import (
    ColumnParallelLinear,
    TensorParallelAttention,
    TensorParallelMLP,
    VocabParallelEmbedding,
    _check_div,
)
from .mappings import gather_from_tp_region

__all__ = ["TensorParallelGPT", "check_tensor_parallel_sizes", "tensor_parallel_block",
           "tensor_parallel_gpt"]


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
