"""Helpers shared by the loss functions (losses.py, elementwise_losses.py): reduction,
shape and dtype checks, the class-dim layout."""

from __future__ import annotations

import math
from typing import Any

from ..autograd import is_grad_enabled
from ..tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------- helpers


def _check_reduction(op: str, reduction: str, allowed: tuple = _REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ValueError(f"{op}: reduction must be one of {allowed}, got {reduction!r}")


def _as_tensor(x: Any, like: Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x, backend=like.backend, dtype=like.dtype)


def _reduce(loss: Any, reduction: str) -> Any:
    """Elementwise losses -> the reduced result."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def _expand_grad(xp: Any, g: Any, shape: tuple, reduction: str) -> Any:
    """The gradient of each elementwise loss, given the gradient ``g`` of the result."""
    if reduction == "none":
        return g
    if reduction == "mean":
        g = g / max(math.prod(shape), 1)
    return xp.broadcast_to(g, shape)


def _same_shape(op: str, a: Tensor, b: Tensor, what: str = "target") -> None:
    if a.shape != b.shape:
        raise ValueError(f"{op}: input shape {a.shape} and {what} shape {b.shape} differ; "
                         "reshape one of them (losses do not broadcast)")


def _check_float(op: str, t: Tensor, what: str) -> None:
    if t.dtype.kind != "f":
        raise TypeError(f"{op}: {what} must be a floating-point tensor, got {t.dtype}")


def _constant_weight(op: str, weight: Tensor | None) -> None:
    if weight is not None and weight.requires_grad and is_grad_enabled():
        raise ValueError(f"{op}: gradients with respect to the class weights are not "
                         "supported; pass weight.detach()")


# ---------------------------------------------------------------------------- class dim helpers


def _classes_last(x: Any) -> Any:
    """(C,) -> (1, C);  (N, C) -> (N, C);  (N, C, d1, ...) -> (N*d1*..., C)."""
    if x.ndim == 1:
        return x[None, :]
    if x.ndim == 2:
        return x
    n, c, rest = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    return x.reshape(n, c, rest).swapaxes(1, 2).reshape(n * rest, c)


def _classes_back(dz: Any, shape: tuple) -> Any:
    """Inverse of ``_classes_last`` (for gradients)."""
    if len(shape) <= 2:
        return dz.reshape(shape)
    n, c, rest = shape[0], shape[1], math.prod(shape[2:])
    return dz.reshape(n, rest, c).swapaxes(1, 2).reshape(shape)


def _index_target_shape(op: str, input: Tensor, target: Tensor) -> None:
    if input.ndim == 0:
        raise ValueError(f"{op}: input must be (C,), (N, C) or (N, C, d1, ...), got a 0-d "
                         "tensor")
    want = () if input.ndim == 1 else (input.shape[0],) + input.shape[2:]
    if target.shape != want:
        raise ValueError(f"{op}: input of shape {input.shape} needs class-index target of "
                         f"shape {want}, got {target.shape}")


def _check_targets(op: str, target_t: Tensor, num_classes: int,
                   ignore_index: int | None) -> None:
    """ValueError if a target id is outside [0, C) and is not ``ignore_index``."""
    target, xp = target_t.data, target_t.backend.xp
    if target.size == 0:
        return
    bad = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bool(bad.any()):
        first = int(target.reshape(-1)[int(xp.argmax(bad.reshape(-1)))])
        also = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
        raise ValueError(f"{op}: target id {first} is out of range for {num_classes} classes "
                         f"(ids must be in [0, {num_classes}){also})")


def _check_class_weight(op: str, weight: Tensor | None, num_classes: int) -> None:
    if weight is not None and weight.shape != (num_classes,):
        raise ValueError(f"{op}: weight must have shape ({num_classes},) (one per class), "
                         f"got {weight.shape}")
