"""Data parallelism inside one process: the rows of a batch split over threads.

On a CPU, splitting every op over the cores (BLAS's threads for each GEMM, Numba's for
each fused kernel) costs a hand-over between two thread pools at every op, and small
GEMMs scale badly; giving each core its own slice of the batch has neither problem
(docs/performance.md, "Who owns the cores"). This is data parallelism without MPI:

    slices  (x_k, y_k), k = 1..S        rows of each micro-batch, S = threads
    weight  w_k = c_k / C / M           c_k: loss terms (targets not ignored) of slice k,
                                        C: of its micro-batch, M: micro-batches per step
    L       = sum_k w_k L_k             = the mean over micro-batches of each one's
                                          mean loss, as without threads
    grad    = sum_k w_k dL_k/dθ         slice 1 straight into .grad, each later slice into
                                        a gradient sink of its own (autograd.collect_grads),
                                        added in slice order (autograd.add_collected_grads)

Each slice runs on a worker of ``backends.threads.thread_map`` (BLAS and Numba one
thread each) with a random generator of its own, seeded from the backend's generator
(``thread_rng``): the step is repeatable for a given number of slices, whichever thread
ends first. Against the unsplit step it differs by float summation order and by the
dropout stream. The model's forward must not write shared state (a GPT's does not).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import add_collected_grads, collect_grads
from ..backends import current_backend
from ..backends.threads import thread_map, thread_rng
from ..tensor import Tensor

__all__ = ["loss_terms", "split_rows", "threaded_backward"]

IGNORE_INDEX = -100


def _array(a: Any) -> np.ndarray:
    return np.asarray(a.numpy() if isinstance(a, Tensor) else a)


def _overflow_quiet(loss_scale: float) -> Any:
    """With loss scaling, a gradient overflowing to inf is expected now and then (the
    scaler then skips the step): no NumPy warning for it. (errstate is per thread.)"""
    import contextlib

    if loss_scale == 1.0:
        return contextlib.nullcontext()
    return np.errstate(over="ignore", invalid="ignore")


def loss_terms(y: Any) -> int:
    """How many terms the mean loss of targets ``y`` averages: the integer targets that
    are not ``IGNORE_INDEX`` (-100), or every entry of float targets."""
    y = _array(y)
    if np.issubdtype(y.dtype, np.integer):
        return int((y != IGNORE_INDEX).sum())
    return int(y.size)


def split_rows(x: Any, y: Any, parts: int) -> list:
    """``(x_k, y_k)`` for ``parts`` near-equal blocks of rows (fewer if there are fewer
    rows), in order."""
    x, y = _array(x), _array(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"split_rows: inputs have {x.shape[0]} rows but targets "
                         f"{y.shape[0]}")
    bounds = np.linspace(0, x.shape[0], min(parts, x.shape[0]) + 1).astype(int)
    return [(x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def threaded_backward(loss_fn: Any, micro_batches: list, threads: int,
                      loss_scale: float = 1.0) -> float:
    """Run ``loss_fn(x, y)`` (a scalar mean-loss Tensor) and its backward for the rows of
    each micro-batch split over ``threads`` threads; the gradients of the whole step
    (the mean of the micro-batches' mean losses) are added into ``.grad``, times
    ``loss_scale`` (mixed precision's loss scaling). Returns that loss as a float."""
    slices, weights = [], []
    for x, y in micro_batches:
        parts = split_rows(x, y, threads)
        total = sum(loss_terms(yk) for _, yk in parts)
        for xk, yk in parts:
            c = loss_terms(yk)
            if c:  # a slice whose targets are all ignored adds nothing
                slices.append((xk, yk))
                weights.append(c / total / len(micro_batches))
    seeds = current_backend().rng.integers(0, 2**63 - 1, size=len(slices))

    def run(k: int) -> tuple:
        # slice 0 adds straight into .grad (one gradient copy fewer); the others are
        # added after it, in order: the same sum whichever thread ends first
        with thread_rng(int(seeds[k])), collect_grads(into_grad=k == 0) as sink:
            loss = loss_fn(*slices[k])
            with _overflow_quiet(loss_scale):
                (loss * (weights[k] * loss_scale)).backward()
        return float(loss.item()), sink

    out = thread_map(run, range(len(slices)), threads)
    add_collected_grads([sink for _, sink in out])
    return float(sum(w * loss for w, (loss, _) in zip(weights, out)))
