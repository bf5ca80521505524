"""Moving between a tensor-parallel model and the one-process GPT's state dict.

``full_state_dict`` gathers every shard (same keys and shapes as the unsharded model's
``state_dict()``), ``load_full_state_dict`` cuts a full state dict into this rank's
shards: checkpoints move between parallel and single-process runs. A sharded parameter's
layout is its module's ``tp_partition`` entry (dim, fused), see ``shard_tensor``.
``replicated_divergence`` checks that the replicated parameters stayed equal.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from ...nn.module import Module
from ...tensor import Tensor
from ..comm import Communicator
from .layers import _gather_full, _TPModule, shard_tensor
from .mappings import _host_copy

__all__ = ["full_state_dict", "load_full_state_dict", "replicated_divergence"]


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
