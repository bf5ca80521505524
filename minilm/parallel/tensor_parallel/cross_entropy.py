"""Cross-entropy of vocab-split logits, without ever forming the full logits.

The LM head is column-parallel over the vocab: rank r computes
logits_r = copy_to_tp_region(h) W_r^T with W_r its vocab shard (with tied weights, the
same shard as ``VocabParallelEmbedding``'s). ``vocab_parallel_cross_entropy`` combines
per-rank max, sum-exp and target logit with three small allreduces of N numbers each.
"""

from __future__ import annotations

import numpy as np

from ...autograd import Function
from ...backends import is_device_array
from ...tensor import Tensor
from ..comm import Communicator
from .mappings import _allreduce

__all__ = ["VocabParallelCrossEntropy", "vocab_parallel_cross_entropy"]


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
        target = Tensor(target if is_device_array(target) else np.asarray(target),
                        backend=local_logits.backend)
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
