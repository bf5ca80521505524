"""Gradient clipping: rescale (by global norm) or clamp (by value) gradients in place.

Call between ``loss.backward()`` and ``optimizer.step()``::

    total = clip_grad_norm_(model.parameters(), max_norm=1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..backends import backend_for_array, to_host
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm"]


def _grads(parameters: Any) -> list:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def get_total_norm(grads: Iterable[Any], norm_type: float = 2.0) -> float:
    """The norm of all ``grads`` (tensors or arrays) seen as one long vector:
    (sum_i ||g_i||_p^p)^(1/p), or max_i max |g_i| for ``norm_type=inf``.
    Per-tensor norms are taken in their dtype, then combined in float64."""
    p = float(norm_type)
    if not (p > 0):
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 or inf, got {norm_type!r}")
    per_module: dict = {}  # xp -> the per-tensor norms (0-d arrays, where they live)
    for g in grads:
        a = g.data if isinstance(g, Tensor) else g
        if a.size == 0:
            continue
        if a.dtype.itemsize < 4:  # float16: squares overflow past 65504; sum in float32
            a = a.astype("float32")
        xp = backend_for_array(a).xp
        per_module.setdefault(id(xp), (xp, []))[1].append(xp.linalg.norm(a.reshape(-1), ord=p))
    # one device-to-host read per array module, not one per tensor (each waits for a GPU)
    norms = [float(n) for xp, ns in per_module.values() for n in to_host(xp.stack(ns))]
    if not norms:
        return 0.0
    if math.isinf(p):
        return max(norms)
    if any(math.isnan(n) for n in norms):
        return math.nan
    if any(math.isinf(n) for n in norms):
        return math.inf
    if p == 2.0:
        return math.sqrt(math.fsum(n * n for n in norms))
    return math.fsum(n ** p for n in norms) ** (1.0 / p)


def clip_grad_norm_(parameters: Any, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale all gradients together so that their global norm is at most ``max_norm``:

        total = || concat(g_1, ..., g_n) ||_p          (p = norm_type, may be inf)
        g_i  <- g_i * max_norm / (total + 1e-6)       only if that factor is < 1

    Clipping the global norm keeps the update's direction and only shortens it, so a
    rare exploding batch cannot throw the weights far away. Returns the norm *before*
    clipping (a float; log it, spikes are an early warning). A NaN/inf norm raises
    RuntimeError when ``error_if_nonfinite``; otherwise the gradients are scaled by
    NaN/0 as in PyTorch, and the step is best skipped."""
    if not (float(max_norm) >= 0):
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm!r}")
    grads = _grads(parameters)
    total = get_total_norm(grads, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
            f"{total}, so they cannot be clipped; set error_if_nonfinite=False to allow it"
        )
    coef = float(max_norm) / (total + 1e-6)
    if coef < 1.0 or math.isnan(coef):
        for g in grads:
            g.data *= coef
            g._version.value += 1
    return total


def clip_grad_value_(parameters: Any, clip_value: float) -> None:
    """Clamp every gradient entry into [-clip_value, clip_value], in place. Unlike norm
    clipping this changes the update's direction; it is a blunt guard."""
    c = float(clip_value)
    if not c >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value!r}")
    for g in _grads(parameters):
        g.backend.xp.clip(g.data, -c, c, out=g.data)
        g._version.value += 1
