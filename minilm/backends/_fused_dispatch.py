"""The kernels that the fused backends (Numba on the CPU, CuPy on the GPU) answer the
same way: through the backend's own hook, with the NumPy reference (``super()``) for
the cases the hook declines by returning None.

A backend mixing this in (before ``NumpyBackend``) provides the hooks:

- ``_softmax_bwd(y, gy, dim, log)``: the softmax / log-softmax backward, or None;
- ``_fused_masked_softmax(s, keep, bias, scale, dropout_p)``: (P, drop, P*drop) or None;
- ``_norm_forward(x, weight, bias, eps, rms)``: (y, mean, rstd) or None;
- ``_norm_backward(gy, x, weight, mean, rstd, need_wb, rms)``: (dx, dw, db) or None.
"""

from __future__ import annotations

from typing import Any

import numpy

__all__ = ["FusedRowKernels"]


def _is_last(dim: int, ndim: int) -> bool:
    return ndim >= 1 and dim in (-1, ndim - 1)


class FusedRowKernels:
    """softmax / log-softmax backward, masked softmax, attention, layer norm and RMS
    norm (forward and backward) dispatched to the backend's fused hooks (see the module
    docstring)."""

    def softmax_backward(self, y: Any, gy: Any, dim: int) -> Any:
        dx = self._softmax_bwd(y, gy, dim, False)
        return super().softmax_backward(y, gy, dim) if dx is None else dx

    def log_softmax_backward(self, y: Any, gy: Any, dim: int) -> Any:
        dx = self._softmax_bwd(y, gy, dim, True)
        return super().log_softmax_backward(y, gy, dim) if dx is None else dx

    def masked_softmax(self, x: Any, keep: Any, dim: int = -1) -> Any:
        if not _is_last(dim, x.ndim) or (keep is not None and keep.dtype != numpy.bool_):
            return super().masked_softmax(x, keep, dim)
        out = self._fused_masked_softmax(self.xp.array(x, order="C"), keep, None, 1.0, 0.0)
        return super().masked_softmax(x, keep, dim) if out is None else out[0]

    def attention(self, q: Any, k: Any, v: Any, keep: Any, bias: Any, scale: float,
                  dropout_p: float = 0.0) -> tuple:
        """The reference with the two products left to ``xp.matmul`` (BLAS, cuBLAS) and
        scale + bias + mask + softmax + dropout fused into one pass over the scores."""
        xp = self.xp
        if keep is not None and keep.dtype != numpy.bool_:
            keep = keep.astype(bool)
        s = xp.matmul(q, xp.swapaxes(k, -1, -2))
        fused = self._fused_masked_softmax(s, keep, bias, scale, dropout_p)
        if fused is None:
            return super().attention(q, k, v, keep, bias, scale, dropout_p)
        p, drop, pd = fused
        return xp.matmul(p if pd is None else pd, v), p, drop

    def layer_norm(self, x: Any, weight: Any, bias: Any, eps: float) -> tuple:
        out = self._norm_forward(x, weight, bias, eps, False)
        return super().layer_norm(x, weight, bias, eps) if out is None else out

    def rms_norm(self, x: Any, weight: Any, eps: float) -> tuple:
        out = self._norm_forward(x, weight, None, eps, True)
        return super().rms_norm(x, weight, eps) if out is None else (out[0], out[2])

    def layer_norm_backward(self, gy: Any, x: Any, weight: Any, mean: Any, rstd: Any,
                            need_wb: bool = True) -> tuple:
        out = self._norm_backward(gy, x, weight, mean, rstd, need_wb, False)
        if out is None:
            return super().layer_norm_backward(gy, x, weight, mean, rstd, need_wb)
        return out

    def rms_norm_backward(self, gy: Any, x: Any, weight: Any, rstd: Any,
                          need_w: bool = True) -> tuple:
        out = self._norm_backward(gy, x, weight, None, rstd, need_w, True)
        if out is None:
            return super().rms_norm_backward(gy, x, weight, rstd, need_w)
        return out[0], out[1]
