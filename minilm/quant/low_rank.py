"""Low-rank factorisation of Linear layers by the truncated SVD.

A Linear y = x W^T + b with W of shape (out, in) and SVD W = U Sigma V^T (singular
values sigma_1 >= sigma_2 >= ... >= 0) is replaced by two Linears through a rank-r
bottleneck::

    down: in -> r, no bias,        weight A = sqrt(Sigma_r) V_r^T        (r, in)
    up:   r -> out, the old bias,  weight B = U_r sqrt(Sigma_r)          (out, r)
    y = (x A^T) B^T + b = x (B A)^T + b,   B A = U_r Sigma_r V_r^T = W_r

Sigma_r is split as sqrt(Sigma_r) on both sides so that both factors have the same
scale (their rows/columns have norms sqrt(sigma_i) * unit vector): neither factor is tiny
while the other is huge, which keeps float32 products and later fine-tuning balanced.

Eckart-Young: W_r is the best rank-r approximation of W in the Frobenius norm, with error
||W - W_r||_F = sqrt(sum_{i>r} sigma_i^2). The energy rule picks the smallest r with
sum_{i<=r} sigma_i^2 / sum_i sigma_i^2 >= energy, i.e. a relative Frobenius error of at
most sqrt(1 - energy).

Cost per input row: in*out multiply-adds (2*in*out FLOPs) become r*(in + out)
(2*r*(in + out) FLOPs); parameters in*out (+ out bias) become r*(in + out) (+ out). It
saves only when r*(in + out) < in*out, i.e. r < in*out / (in + out);
:func:`low_rank_model` keeps a layer unchanged (and says so) otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import to_host
from ..nn.layers import Linear
from ..nn.module import Module, Parameter
from ..tensor import Tensor
from .prune import select_linears

__all__ = ["LowRankLinear", "choose_rank", "factorize_linear", "format_low_rank",
           "low_rank_model"]


class LowRankLinear(Module):
    """y = up(down(x)): Linear(in, rank, bias=False) then Linear(rank, out, bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 dtype: Any = None) -> None:
        super().__init__()
        _check_rank(rank, in_features, out_features)
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = Linear(in_features, rank, bias=False, dtype=dtype)
        self.up = Linear(rank, out_features, bias=bias, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))

    def merged_weight(self) -> np.ndarray:
        """B A, the (out, in) weight this pair computes (host array)."""
        return to_host(self.up.weight.data) @ to_host(self.down.weight.data)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, bias={self.up.bias is not None}")


def _check_rank(rank: Any, n_in: int, n_out: int) -> int:
    if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) \
            or not 1 <= rank <= min(n_in, n_out):
        raise ValueError(f"low-rank: rank must be an integer in [1, min(in, out) = "
                         f"{min(n_in, n_out)}] for a ({n_out}, {n_in}) weight, got {rank!r}")
    return int(rank)


def _check_energy(energy: Any) -> float:
    ok = isinstance(energy, (int, float, np.floating, np.integer)) and not isinstance(energy, bool)
    if not ok or not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"low-rank: energy must be a number in (0, 1], got {energy!r}")
    return float(energy)


def choose_rank(singular_values: Any, energy: float) -> int:
    """Smallest r with sum_{i<=r} sigma_i^2 / sum_i sigma_i^2 >= energy (1 for a zero
    matrix). A relative slack of 1e-12 absorbs rounding in the cumulative sum."""
    energy = _check_energy(energy)
    s2 = np.asarray(singular_values, dtype=np.float64) ** 2
    total = s2.sum()
    if total == 0.0:
        return 1
    ratio = np.cumsum(s2) / total
    return int(np.argmax(ratio >= energy - 1e-12)) + 1


def _svd(linear: Linear) -> tuple:
    w = to_host(linear.weight.data).astype(np.float64)
    return np.linalg.svd(w, full_matrices=False)


def factorize_linear(linear: Linear, rank: int | None = None,
                     energy: float | None = None) -> LowRankLinear:
    """The :class:`LowRankLinear` of ``linear``'s truncated SVD at ``rank``, or at the
    smallest rank keeping ``energy`` of sum sigma_i^2 (give exactly one). The SVD runs in
    float64 on the host; the factors get the weight's dtype and backend."""
    if not isinstance(linear, Linear):
        raise TypeError(f"factorize_linear: expected a Linear, got {type(linear).__name__}")
    if (rank is None) == (energy is None):
        raise ValueError("factorize_linear: give exactly one of rank and energy")
    n_out, n_in = linear.weight.shape
    if rank is not None:
        rank = _check_rank(rank, n_in, n_out)
    else:
        energy = _check_energy(energy)
    u, s, vt = _svd(linear)
    r = rank if rank is not None else choose_rank(s, energy)
    root = np.sqrt(s[:r])
    a = root[:, None] * vt[:r]          # (r, in)  = sqrt(Sigma_r) V_r^T
    b = u[:, :r] * root[None, :]        # (out, r) = U_r sqrt(Sigma_r)
    w = linear.weight
    xp, dtype = w.backend.xp, w.dtype
    out = LowRankLinear(n_in, n_out, r, bias=linear.bias is not None)
    out.down.weight = Parameter(xp.asarray(a.astype(dtype)))
    out.up.weight = Parameter(xp.asarray(b.astype(dtype)))
    if linear.bias is not None:
        out.up.bias = Parameter(linear.bias.data.copy())
    return out


def low_rank_model(model: Module, rank: int | None = None, energy: float | None = None,
                   include: Any = None) -> list[dict]:
    """Replace the selected Linear layers of ``model`` (see
    :func:`~minilm.quant.prune.select_linears`) in place by their :class:`LowRankLinear`
    at ``rank`` or ``energy``, each only when it saves parameters (r (in + out) <
    in out); others are kept, with the reason in the report. Returns one row per layer:
    name, in, out, rank, replaced, reason, params and FLOPs (per input row) before and
    after. Build the optimizer after this call (the replaced layers have new
    Parameters)."""
    if (rank is None) == (energy is None):
        raise ValueError("low_rank_model: give exactly one of rank and energy")
    if rank is not None and (not isinstance(rank, (int, np.integer)) or isinstance(rank, bool)
                             or rank < 1):
        raise ValueError(f"low_rank_model: rank must be an integer >= 1, got {rank!r}")
    if energy is not None:
        energy = _check_energy(energy)
    modules = dict(model.named_modules())
    rows = []
    for name, lin in select_linears(model, include):
        n_out, n_in = lin.weight.shape
        bias = 0 if lin.bias is None else n_out
        if rank is not None:
            r = int(rank)
        else:
            r = choose_rank(_svd(lin)[1], energy)
        row = {"name": name, "in": n_in, "out": n_out, "rank": r,
               "params_before": n_in * n_out + bias, "flops_before": 2 * n_in * n_out}
        if r * (n_in + n_out) >= n_in * n_out:
            row.update(replaced=False, params_after=row["params_before"],
                       flops_after=row["flops_before"],
                       reason=f"kept: rank {r} saves nothing (r(in+out) = {r * (n_in + n_out)}"
                              f" >= in*out = {n_in * n_out})")
        else:
            new = factorize_linear(lin, rank=r)
            parent_name, _, child = name.rpartition(".")
            if not name:
                raise ValueError("low_rank_model: the model is itself a Linear; use "
                                 "factorize_linear")
            setattr(modules[parent_name], child, new)
            row.update(replaced=True, params_after=r * (n_in + n_out) + bias,
                       flops_after=2 * r * (n_in + n_out), reason="")
        rows.append(row)
    return rows


def format_low_rank(rows: list[dict]) -> str:
    """The report of :func:`low_rank_model` as a table with totals."""
    width = max([len(r["name"]) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'shape':>11}  {'rank':>5}  {'params':>17}  "
             f"{'FLOPs/row':>17}  note"]
    for r in rows:
        shape = f"{r['out']}x{r['in']}"
        lines.append(f"{r['name']:<{width}}  {shape:>11}  {r['rank']:>5}  "
                     f"{r['params_before']:>8}->{r['params_after']:<8}  "
                     f"{r['flops_before']:>8}->{r['flops_after']:<8}  {r['reason']}")
    pb = sum(r["params_before"] for r in rows)
    pa = sum(r["params_after"] for r in rows)
    fb = sum(r["flops_before"] for r in rows)
    fa = sum(r["flops_after"] for r in rows)
    lines.append(f"{'total':<{width}}  {'':>11}  {'':>5}  {pb:>8}->{pa:<8}  {fb:>8}->{fa:<8}  "
                 f"params x{pa / max(pb, 1):.3f}, FLOPs x{fa / max(fb, 1):.3f}")
    return "\n".join(lines)
