"""GPTQ: post-training weight quantization with second-order error feedback
(Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training Quantization
for Generative Pre-trained Transformers").

For one Linear layer y = x Wᵀ, W of shape (out, in), and n calibration inputs X
(n × in) to that layer, GPTQ looks for the quantized Ŵ minimising the output error
||X Wᵀ − X Ŵᵀ||²_F. Each row of W is an independent least-squares problem with the
same Hessian

    H = 2 Xᵀ X / n            (+ λ · mean(diag H) · I, the dampening, λ = ``damp``)

An input feature that never fires (H_ii = 0, a "dead" column) gets H_ii = 1 and
W[:, i] = 0: it cannot change the output.

The Optimal Brain Surgeon step quantizes one column i at a time (all rows at once) and
moves its rounding error onto the columns not yet quantized:

    q_i = quant(w_i)                        round-to-nearest with the row's (group's) scale
    w_j −= (w_i − q_i) / [H⁻¹]_ii · [H⁻¹]_ij          for every j not yet quantized
    H⁻¹ ← H⁻¹ − H⁻¹[:, i] H⁻¹[i, :] / [H⁻¹]_ii        (Schur complement: drop i)

In a fixed column order the successive Schur complements of H⁻¹ are rows of one
Cholesky factor: with H⁻¹ = Uᵀ U, U upper triangular, row i of the reduced inverse
divided by its diagonal is U[i, i:] / U_ii, so the update becomes

    err = (w_i − q_i) / U_ii,        w_j −= err · U_ij          (j > i)

and U is computed once. Lazy batch updates: columns are processed in blocks of B
(``block_size``); inside a block only the block's columns are updated, and the block's
accumulated errors E (out × B) reach the later columns in one matrix product
W[:, after] −= E · U[block, after] when the block is done. The result equals the
column-by-column algorithm up to floating-point rounding (tests/test_gptq.py checks
it against a direct implementation that keeps H⁻¹ and removes rows by Schur complement).

Scales. Per channel (``group_size=None``): one scale (and zero point) per output row,
from the row's min/max before any update. Per group of G input columns: the scales of
a group are computed when the algorithm reaches the group's first column, from the
*current* (error-updated) weights of that group. Act-order (``act_order=True``)
quantizes the columns in order of decreasing H_ii (the most active inputs first, while
there is the most freedom left to compensate) and un-permutes at the end; with groups
it uses static groups (scales of each original group from the weights before any
update) so that the result stays an ordinary group-quantized tensor.

:func:`gptq_quantize_model` runs the paper's sequential scheme on a whole model: the
Linear layers are taken in execution order (blocks.N.attn.qkv, attn.out_proj, mlp.fc,
mlp.proj, …); the Hessian of each is collected from its inputs *with the layers before
it already quantized*, so each layer also corrects the error of the earlier ones. The
weights are replaced by their dequantized values (fake-quantized floats), so every code
path evaluates the quantized model unchanged. :func:`rtn_quantize_model` is plain
round-to-nearest with the same scheme, for comparison.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..autograd import no_grad
from ..backends import to_host
from ..nn.layers import Linear
from ..nn.module import Module, model_backend
from ..tensor import Tensor
from .affine import (
    BITS,
    QuantizedTensor,
    dequantize,
    pack_int4,
    qparams_from_range,
    quantize,
    quantize_weight,
)

__all__ = [
    "HessianAccumulator", "gptq_quantize_layer", "gptq_quantize_model", "quantizable_linears",
    "rtn_quantize_model",
]


class HessianAccumulator:
    """Running H = 2 Xᵀ X / n over the rows of every ``add(x)``, x of shape (..., in)."""

    def __init__(self, in_features: int) -> None:
        if not isinstance(in_features, (int, np.integer)) or in_features < 1:
            raise ValueError(f"HessianAccumulator: in_features must be an integer >= 1, "
                             f"got {in_features!r}")
        self.in_features = int(in_features)
        self.H = np.zeros((self.in_features, self.in_features), dtype=np.float64)
        self.n = 0

    def add(self, x: Any) -> None:
        """Fold the rows of ``x`` (a Tensor or array, last dim ``in_features``) into H:
        H ← H · n/(n+m) + 2 XᵀX/(n+m), a running mean that never holds all inputs."""
        a = to_host(x).astype(np.float64, copy=False)
        if a.ndim < 1 or a.shape[-1] != self.in_features:
            raise ValueError(f"HessianAccumulator.add: input of shape {a.shape} does not end "
                             f"in in_features = {self.in_features}")
        a = a.reshape(-1, self.in_features)
        m = a.shape[0]
        if m == 0:
            return
        self.H *= self.n / (self.n + m)
        self.n += m
        self.H += (2.0 / self.n) * (a.T @ a)


def _check_layer_args(w: np.ndarray, H: np.ndarray, bits: Any, group_size: Any,
                      block_size: Any, damp: Any) -> None:
    if w.ndim != 2:
        raise ValueError(f"gptq_quantize_layer: weight must be 2-D (out, in), got shape {w.shape}")
    n = w.shape[1]
    if H.shape != (n, n):
        raise ValueError(f"gptq_quantize_layer: H has shape {H.shape}, but the weight {w.shape} "
                         f"needs ({n}, {n}) (in_features squared)")
    if not np.all(np.isfinite(w)) or not np.all(np.isfinite(H)):
        raise ValueError("gptq_quantize_layer: weight or H contains NaN or inf")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits not in BITS:
        raise ValueError(f"gptq_quantize_layer: bits = {bits!r} is unsupported; use one of "
                         f"{BITS} (4 and 8 are the usual)")
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) \
                or group_size < 1:
            raise ValueError(f"gptq_quantize_layer: group_size = {group_size!r} must be an "
                             f"integer >= 1 or None (per channel)")
        if n % group_size:
            raise ValueError(f"gptq_quantize_layer: group_size {group_size} does not divide "
                             f"in_features {n}")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
            or block_size < 1:
        raise ValueError(f"gptq_quantize_layer: block_size = {block_size!r} must be an "
                         f"integer >= 1")
    if not isinstance(damp, (int, float)) or not 0 <= damp < np.inf:
        raise ValueError(f"gptq_quantize_layer: damp = {damp!r} must be a finite number >= 0")


def _row_qparams(cols: np.ndarray, bits: int, symmetric: bool, dtype: np.dtype
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero of each row of ``cols`` (out, k) from the row's min and max; the
    scale rounded to ``dtype`` (the affine module's scale dtype for the weight: float32,
    or float64 for a float64 weight) so that the stored scales are the ones used."""
    s, z = qparams_from_range(cols.min(axis=1).astype(dtype), cols.max(axis=1).astype(dtype),
                              bits, symmetric)
    return np.asarray(s, dtype).astype(np.float64), np.asarray(z, np.float64)


def _upper_cholesky_of_inverse(H: np.ndarray) -> np.ndarray:
    """U upper triangular with H⁻¹ = Uᵀ U."""
    try:
        L = np.linalg.cholesky(H)
        Linv = np.linalg.solve(L, np.eye(H.shape[0]))
        Hinv = Linv.T @ Linv  # (L Lᵀ)⁻¹ = L⁻ᵀ L⁻¹
        return np.linalg.cholesky(Hinv).T
    except np.linalg.LinAlgError:
        raise ValueError("gptq_quantize_layer: the dampened H is not positive definite; "
                         "increase damp") from None


def gptq_quantize_layer(w: Any, H: Any, bits: int = 4, group_size: int | None = None,
                        symmetric: bool = True, block_size: int = 128, damp: float = 0.01,
                        act_order: bool = False) -> tuple[QuantizedTensor, dict]:
    """GPTQ of one weight ``w`` (out, in) with the Hessian ``H`` (in, in) of its inputs
    (:class:`HessianAccumulator`). Returns the :class:`QuantizedTensor` (per channel,
    or per group of ``group_size`` input columns) and an info dict: ``error`` =
    ½ tr(ΔW H ΔWᵀ) = ||X ΔWᵀ||²/n (the mean squared output error per input row, H the
    undampened Hessian), ``rtn_error`` the same for round-to-nearest with the same
    scheme, ``dead`` (number of dead input columns), ``seconds``."""
    t0 = time.perf_counter()
    w_arr = to_host(w)  # GPTQ runs on the host
    if not np.issubdtype(w_arr.dtype, np.floating):
        raise TypeError(f"gptq_quantize_layer: weight must be a float array, got {w_arr.dtype}")
    sdtype = np.dtype(np.float64 if w_arr.dtype == np.float64 else np.float32)
    W = np.array(w_arr, dtype=np.float64)
    H = np.array(to_host(H), dtype=np.float64)
    _check_layer_args(W, H, bits, group_size, block_size, damp)
    W_in = W.copy()
    H_in = H.copy()
    out, n = W.shape
    G = int(group_size) if group_size is not None else n
    n_groups = n // G

    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    scale = np.empty((out, n_groups))
    zero = np.empty((out, n_groups))
    dynamic_groups = group_size is not None and not act_order
    if not dynamic_groups:  # per channel, or act-order's static groups: from W up front
        for g in range(n_groups):
            scale[:, g], zero[:, g] = _row_qparams(W[:, g * G:(g + 1) * G], bits, symmetric,
                                                      sdtype)

    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(n)
    W = W[:, perm]
    H = H[perm][:, perm]
    H[np.diag_indices(n)] += damp * np.mean(np.diag(H))
    U = _upper_cholesky_of_inverse(H)

    Q = np.zeros_like(W)  # dequantized, permuted column order
    qint = np.zeros((out, n), dtype=np.int8)
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        W1 = W[:, i1:i2].copy()
        E1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for k in range(i2 - i1):
            j = i1 + k
            if dynamic_groups and j % G == 0:
                # the group's current weights: those in this block are up to date in
                # W1; those after it still wait for this block's errors E1[:, :k]
                inside = W1[:, k:min(k + G, i2 - i1)]
                if j + G > i2:
                    after = W[:, i2:j + G] - E1[:, :k] @ U[i1:j, i2:j + G]
                    inside = np.concatenate([inside, after], axis=1)
                scale[:, j // G], zero[:, j // G] = _row_qparams(inside, bits, symmetric,
                                                                     sdtype)
            g = perm[j] // G
            col = W1[:, k]
            q = quantize(col, scale[:, g], zero[:, g], bits, symmetric)
            deq = np.asarray(dequantize(q, scale[:, g], zero[:, g]), dtype=np.float64)
            qint[:, j] = q
            Q[:, j] = deq
            err = (col - deq) / U1[k, k]
            W1[:, k + 1:] -= np.outer(err, U1[k, k + 1:])
            E1[:, k] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]

    inv = np.argsort(perm)
    Q, qint = Q[:, inv], qint[:, inv]
    qt = _quantized_tensor(qint, scale.astype(sdtype), zero.astype(np.int32), bits, symmetric,
                           group_size, w_arr.dtype)
    rtn = quantize_weight(W_in, bits=bits, symmetric=symmetric,
                          granularity="channel" if group_size is None else "group",
                          group_size=group_size).dequantize()
    info = {"error": _output_error(W_in - Q, H_in), "rtn_error": _output_error(W_in - rtn, H_in),
            "dead": int(dead.sum()), "seconds": time.perf_counter() - t0}
    return qt, info


def _output_error(dW: np.ndarray, H: np.ndarray) -> float:
    """½ tr(ΔW H ΔWᵀ) = ||X ΔWᵀ||²_F / n for H = 2XᵀX/n."""
    return float(0.5 * np.sum((dW @ H) * dW))


def _quantized_tensor(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int,
                      symmetric: bool, group_size: int | None, dtype: np.dtype
                      ) -> QuantizedTensor:
    """The affine module's container (minilm/quant/affine.py): scale and zero of shape
    (out,) per channel, (out, in / group_size) per group; 4-bit integers packed."""
    per_channel = group_size is None
    return QuantizedTensor(
        q=pack_int4(q) if bits == 4 else q,
        scale=scale[:, 0].copy() if per_channel else scale,
        zero=zero[:, 0].copy() if per_channel else zero,
        bits=int(bits), symmetric=bool(symmetric),
        granularity="channel" if per_channel else "group",
        group_size=None if per_channel else int(group_size),
        shape=tuple(int(d) for d in q.shape), dtype=np.dtype(dtype).name)


# ---------------------------------------------------------------------- whole models

def _skipped(name: str, skip: Any) -> bool:
    return any(name == s or name.endswith("." + s) for s in skip)


def quantizable_linears(model: Module, skip: Any = ("head",)) -> list[tuple[str, Linear]]:
    """The model's Linear layers in definition (= execution, for GPT) order, without
    those named in ``skip`` (a name or its last dotted parts). The GPT ``head`` is
    skipped by default: tied to the token embedding, it is not a plain Linear weight."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, Linear) and not _skipped(name, skip)]


class _Collected(Exception):
    """Raised by the calibration hook once the layer's input is recorded: the rest of
    the forward pass is not needed."""


def _calibration_ids(calib_batches: Any, backend: Any) -> list[Tensor]:
    """The calibration inputs as Tensors; arrays go to ``backend`` (the model's)."""
    batches = []
    for b in calib_batches:
        if isinstance(b, (tuple, list)):  # (x, y) pairs: the inputs are x
            b = b[0]
        batches.append(b if isinstance(b, Tensor) else Tensor(b, backend=backend))
    if not batches:
        raise ValueError("gptq_quantize_model: calib_batches is empty; give at least one "
                         "batch of token ids")
    return batches


def gptq_quantize_model(model: Module, calib_batches: Any, bits: int = 4,
                        group_size: int | None = None, symmetric: bool = True,
                        block_size: int = 128, damp: float = 0.01, act_order: bool = False,
                        skip: Any = ("head",)) -> dict[str, dict]:
    """Quantize every Linear of ``model`` (but ``skip``) with GPTQ, sequentially: layer
    by layer in order, each one's Hessian from the calibration inputs it receives with
    the earlier layers already quantized. ``calib_batches``: token-id arrays (B, T) or
    (x, y) pairs. Weights are replaced in place by their dequantized values. Returns
    {layer name: info} (see :func:`gptq_quantize_layer`; plus ``qweight``, the layer's
    :class:`~minilm.quant.affine.QuantizedTensor`, to build a QuantizedLinear from)."""
    batches = _calibration_ids(calib_batches, model_backend(model))
    layers = quantizable_linears(model, skip)
    for name, lin in layers:  # check every layer's arguments before changing any
        if group_size is not None and lin.in_features % group_size:
            raise ValueError(f"gptq_quantize_model: group_size {group_size} does not divide "
                             f"in_features {lin.in_features} of layer {name}")
    was_training = model.training
    model.eval()
    results: dict[str, dict] = {}
    try:
        with no_grad():
            for name, lin in layers:
                acc = HessianAccumulator(lin.in_features)

                def record(module: Module, args: tuple, output: Any,
                           acc: HessianAccumulator = acc) -> None:
                    acc.add(args[0])
                    raise _Collected

                handle = lin.register_forward_hook(record)
                try:
                    for ids in batches:
                        try:
                            model(ids)
                        except _Collected:
                            pass
                finally:
                    handle.remove()
                if acc.n == 0:
                    raise ValueError(f"gptq_quantize_model: layer {name} received no input "
                                     f"during calibration")
                qt, info = gptq_quantize_layer(lin.weight.data, acc.H, bits, group_size,
                                               symmetric, block_size, damp, act_order)
                lin.weight.data[...] = lin.weight.backend.asarray(qt.dequantize(),
                                                                  lin.weight.dtype)
                results[name] = dict(info, qweight=qt)  # the integers, for QuantizedLinear
    finally:
        model.train(was_training)
    return results


def rtn_quantize_model(model: Module, bits: int = 4, group_size: int | None = None,
                       symmetric: bool = True, skip: Any = ("head",)) -> dict[str, dict]:
    """Round-to-nearest of every Linear weight (but ``skip``) with the same scheme as
    :func:`gptq_quantize_model` (per channel, or per group), in place, weights replaced
    by their dequantized values. Returns {layer name: {"weight_error": ||W − Ŵ||²_F}}."""
    layers = quantizable_linears(model, skip)
    for name, lin in layers:
        if group_size is not None and lin.in_features % group_size:
            raise ValueError(f"rtn_quantize_model: group_size {group_size} does not divide "
                             f"in_features {lin.in_features} of layer {name}")
    results = {}
    for name, lin in layers:
        w = to_host(lin.weight.data).astype(np.float64)  # quantized on the host
        deq = quantize_weight(w, bits=bits, symmetric=symmetric,
                              granularity="channel" if group_size is None else "group",
                              group_size=group_size).dequantize()
        lin.weight.data[...] = lin.weight.backend.asarray(deq, lin.weight.dtype)
        results[name] = {"weight_error": float(np.sum((w - deq) ** 2))}
    return results
