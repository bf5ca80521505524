"""Megatron-style tensor parallelism: every weight matrix of the transformer split over
the ``tp`` ranks of a tensor-parallel communicator, with the collectives written as
autograd Functions.

Where things are::

    mappings.py       copy / reduce / gather / scatter: the collectives as autograd
                      Functions (their forward/backward table is there)
    layers.py         ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding,
                      TensorParallelAttention, TensorParallelMLP; shard_tensor /
                      merge_shards (who holds which rows or columns)
    cross_entropy.py  vocab_parallel_cross_entropy: the loss of vocab-split logits
    gpt.py            tensor_parallel_block, TensorParallelGPT: converting a GPT
    state_dict.py     full_state_dict / load_full_state_dict: to and from the
                      one-process GPT's state dict; replicated_divergence

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

from .cross_entropy import VocabParallelCrossEntropy, vocab_parallel_cross_entropy
from .gpt import (
    TensorParallelGPT,
    check_tensor_parallel_sizes,
    tensor_parallel_block,
    tensor_parallel_gpt,
)
from .layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    TensorParallelAttention,
    TensorParallelMLP,
    VocabParallelEmbedding,
    _gather_full,
    merge_shards,
    shard_tensor,
)
from .mappings import (
    CopyToTPRegion,
    GatherFromTPRegion,
    ReduceFromTPRegion,
    ScatterToTPRegion,
    copy_to_tp_region,
    gather_from_tp_region,
    reduce_from_tp_region,
    scatter_to_tp_region,
)
from .state_dict import _layouts, full_state_dict, load_full_state_dict, replicated_divergence

# _gather_full and _layouts: used by the parallel engine and its tests (shard layouts)
__all__ = [
    "ColumnParallelLinear", "CopyToTPRegion", "GatherFromTPRegion", "ReduceFromTPRegion",
    "RowParallelLinear", "ScatterToTPRegion", "TensorParallelAttention",
    "TensorParallelGPT", "TensorParallelMLP", "VocabParallelCrossEntropy",
    "VocabParallelEmbedding", "check_tensor_parallel_sizes", "copy_to_tp_region",
    "full_state_dict", "gather_from_tp_region", "load_full_state_dict", "merge_shards",
    "reduce_from_tp_region", "replicated_divergence", "scatter_to_tp_region",
    "shard_tensor", "tensor_parallel_block", "tensor_parallel_gpt",
    "vocab_parallel_cross_entropy",
]
