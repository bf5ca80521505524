"""LLM.int8(): W8A8 with a float path for outlier features (Dettmers et al., 2022,
"LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale").

Large transformers have a few hidden features (columns of x) whose magnitude is
10-100x the rest. One such column sets the per-token scale s_x = max|x[m]| / 127 of
every row it touches, and the ordinary features of that row are then rounded to a few
levels. The mixed decomposition takes the outlier columns O out of the int8 product::

    O        = { k : max_m |x[m, k]| > threshold }            (default 6.0)
    y[m, n]  = Σ_{k∈O} x[m, k] Ŵ[n, k]                          float activations
             + s_x[m] s_w[n] Σ_{k∉O} qx[m, k] qw[n, k]          vector-wise int8
             + b[n]

with s_x[m] = max_{k∉O} |x[m, k]| / 127 per token (row of x) and s_w[n] =
max_k |W[n, k]| / 127 per output channel, as in W8A8Linear. O is chosen afresh for
every input; ``outlier_fraction`` is |O| / K of the last call and
``outlier_fraction_running`` the fraction over all calls so far.

Ŵ, the weight the outlier columns meet, is by default the dequantized int8 weight
s_w[n] qw[n, k] (as in inference with int8-only weights: the layer stores one byte per
weight; the outlier *activations* are what must not be rounded). With
``keep_float_weight=True`` the float weight is kept beside the int8 copy (the paper's
fp16 weights) and Ŵ = W: no memory saved, the outlier part exact. With
``threshold=inf`` it computes exactly W8A8Linear(act="token"); with ``threshold=0``
every non-zero column is an outlier and it is x Ŵᵀ + b (the float linear when
``keep_float_weight``).
"""

from __future__ import annotations

import math

import numpy as np

from ..nn.layers import Linear
from ..tensor import Tensor
from .linear import W8A8Linear, per_token_scales, w8a8_product

__all__ = ["LLMInt8Linear"]


class LLMInt8Linear(W8A8Linear):
    """W8A8 (per-token activations, per-channel weights) plus a float matmul over the
    input columns whose max |x| exceeds ``threshold``; see the module docstring."""

    def __init__(self, linear: Linear, threshold: float = 6.0,
                 keep_float_weight: bool = False) -> None:
        super().__init__(linear, act="token")
        threshold = float(threshold)
        if math.isnan(threshold) or threshold < 0:
            raise ValueError(f"LLMInt8Linear: threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.keep_float_weight = bool(keep_float_weight)
        self.register_buffer("weight", Tensor(linear.weight.data.copy())  # on its backend
                             if self.keep_float_weight else None)
        self.outlier_fraction = 0.0
        self._outlier_cols = 0
        self._cols_seen = 0

    @classmethod
    def from_linear(cls, linear: Linear, threshold: float = 6.0,  # type: ignore[override]
                    keep_float_weight: bool = False) -> LLMInt8Linear:
        return cls(linear, threshold, keep_float_weight)

    @property
    def outlier_fraction_running(self) -> float:
        """Outlier columns / columns over every call so far (0 before the first)."""
        return self._outlier_cols / self._cols_seen if self._cols_seen else 0.0

    def _compute(self, be, x):
        xp = be.xp
        x2 = x.reshape(-1, self.in_features)
        outliers = xp.abs(x2).max(axis=0) > self.threshold if x2.shape[0] else \
            xp.zeros(self.in_features, bool)
        n_out = int(outliers.sum())
        self.outlier_fraction = n_out / self.in_features
        self._outlier_cols += n_out
        self._cols_seen += self.in_features
        regular = xp.where(outliers, x2.dtype.type(0), x2) if n_out else x2
        y = w8a8_product(be, regular, per_token_scales(regular), self.qweight.data,
                         self.w_scale.data, self._bias())
        if n_out:
            w_out = (self.weight.data[:, outliers] if self.keep_float_weight else
                     self.w_scale.data[:, None] * self.qweight.data[:, outliers])
            w_out = w_out.astype(x2.dtype, copy=False)
            y = y + x2[:, outliers] @ w_out.T
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def dequantized_weight(self) -> np.ndarray:
        return self.weight.data if self.keep_float_weight else super().dequantized_weight()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"threshold={self.threshold}, keep_float_weight={self.keep_float_weight}, "
                f"bias={self.bias is not None}")
