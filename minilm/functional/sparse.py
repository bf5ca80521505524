"""A sparse (CSR) matrix times a dense weight, differentiable in the weight.

The sparse operand is any object in compressed sparse row form with ``data``,
``indices``, ``indptr`` and ``shape`` attributes (``minilm.data.CSRMatrix``, which this
layer may not import, or a SciPy ``csr_matrix``): row i's non-zeros are
``data[indptr[i]:indptr[i+1]]`` in columns ``indices[indptr[i]:indptr[i+1]]``. It is a
constant (features), so only the dense operand gets a gradient.
"""

from __future__ import annotations

from typing import Any

from ..autograd import Function
from ..tensor import Tensor

__all__ = ["sparse_matmul"]


def _check_sparse_matmul(x: Any, w: Any) -> None:
    for attr in ("data", "indices", "indptr", "shape"):
        if not hasattr(x, attr):
            raise TypeError(f"sparse_matmul: the sparse operand must be a CSR matrix (data, "
                            f"indices, indptr, shape), got {type(x).__name__}")
    if w.ndim not in (1, 2) or w.shape[0] != x.shape[1]:
        raise ValueError(f"sparse_matmul: shapes {tuple(x.shape)} and {w.shape} are not aligned")


def _rows(xp: Any, indptr: Any) -> Any:
    """The row index of every stored entry: row i repeated indptr[i+1] - indptr[i] times."""
    return xp.repeat(xp.arange(len(indptr) - 1), xp.diff(indptr))


class SparseMatmul(Function):
    """y = X W for a CSR X (n, m) and a dense W (m, k) (or (m,)):
    y[i, :] = sum_p data[p] W[indices[p], :] over row i's entries p;
    dW = X^T G, i.e. dW[j, :] = sum over entries p in column j of data[p] G[row(p), :]."""

    @staticmethod
    def forward(ctx, data, indices, indptr, shape, w):
        xp = ctx.xp
        n, m = shape
        rows = _rows(xp, indptr)
        ctx.save_for_backward(data, indices, rows)
        ctx.m = m
        w2 = w[:, None] if w.ndim == 1 else w
        prod = data.astype(w.dtype)[:, None] * w2[indices]          # (nnz, k)
        out = xp.zeros((n, w2.shape[1]), dtype=w.dtype)
        # segment sum over each row's entries, one column at a time
        for c in range(w2.shape[1]):
            out[:, c] = xp.bincount(rows, weights=prod[:, c], minlength=n)
        return out[:, 0] if w.ndim == 1 else out

    @staticmethod
    def backward(ctx, g):
        data, indices, rows = ctx.saved
        xp = ctx.xp
        g2 = g[:, None] if g.ndim == 1 else g
        contrib = data.astype(g.dtype)[:, None] * g2[rows]          # (nnz, k)
        gw = xp.zeros((ctx.m, g2.shape[1]), dtype=g.dtype)
        for c in range(g2.shape[1]):
            gw[:, c] = xp.bincount(indices, weights=contrib[:, c], minlength=ctx.m)
        return None, None, None, None, (gw[:, 0] if g.ndim == 1 else gw)


def sparse_matmul(x: Any, w: Tensor) -> Tensor:
    """``X @ W`` for a CSR matrix ``x`` (a constant) and a dense Tensor ``w``; the
    gradient flows to ``w`` only (``dW = X^T G``)."""
    _check_sparse_matmul(x, w)
    xp = w.backend.xp
    data = xp.asarray(x.data, dtype=w.data.dtype)
    indices = xp.asarray(x.indices, dtype="int64")
    indptr = xp.asarray(x.indptr, dtype="int64")
    return SparseMatmul.apply(data, indices, indptr, (int(x.shape[0]), int(x.shape[1])), w)
