"""Quantized linear layers (minilm/quant/linear.py, llm_int8.py) and their kernels.

Kernels run on every backend (``backend`` fixture); on Numba the fused kernels are
checked against the registered NumPy references:

- ``int8_matmul`` must equal an int64 NumPy product exactly. Each product of two int8
  is at most 128^2 = 2^14 in magnitude, so int32 sums cannot overflow for
  K <= 2^31 / 2^14 = 131072 (the kernel refuses larger K).
- the weight-only kernels sum the same products as the reference in another order
  (per group, then scaled). Both are float32 sums of at most K + 4 rounded terms, so
  each is within gamma_{K+4} A of the exact value (Higham, "Accuracy and Stability of
  Numerical Algorithms", 3.1), with u = 2^-24, gamma_n = n u / (1 - n u) and
  A = sum_k |x_k| s (|q_k| + |z|), which bounds every partial sum, the zero-point
  correction included. The two results then differ by at most 2 gamma_{K+4} A, plus
  one rounding of the output (u |y|) each.
"""

from __future__ import annotations

import numpy as np
import pytest

import minilm
from minilm import nn
from minilm.backends import to_host
from minilm.backends.interface import REFERENCES
from minilm.nn.transformer import GPT, GPTConfig
from minilm.quant.affine import pack_int4, quantize_weight
from minilm.quant.linear import QuantizedLinear, W8A8Linear, calibrate, quantize_model
from minilm.quant.llm_int8 import LLMInt8Linear
from minilm.tensor import Tensor

U = 2.0 ** -24


def _rng(seed=0):
    return np.random.default_rng(seed)


# ============================================================================ int8 GEMM


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 17, 5), (1, 4096, 40), (9, 2049, 33)])
def test_int8_matmul_equals_int64_reference_exactly(backend, M, K, N):
    rng = _rng(K)
    a = rng.integers(-128, 128, (M, K), dtype=np.int8)
    b = rng.integers(-128, 128, (N, K), dtype=np.int8)
    a[0, : K // 2] = -128  # extremes: the largest products, both signs
    b[0, : K // 3] = -128
    b[-1, : K // 2] = 127
    got = backend.int8_matmul(a, b)
    assert got.dtype == np.int32 and got.shape == (M, N)
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b.astype(np.int64).T)


def test_int8_matmul_all_extremes_and_refusals(backend):
    K = 8192
    a = np.full((2, K), -128, np.int8)
    b = np.stack([np.full(K, -128, np.int8), np.full(K, 127, np.int8)])
    np.testing.assert_array_equal(backend.int8_matmul(a, b),
                                  [[K * 16384, -K * 16256]] * 2)
    with pytest.raises(ValueError, match="overflow"):
        backend.int8_matmul(np.zeros((1, 131073), np.int8), np.zeros((1, 131073), np.int8))
    with pytest.raises(TypeError, match="int8"):
        backend.int8_matmul(np.zeros((1, 4), np.int16), np.zeros((1, 4), np.int8))


# ============================================================================ weight-only kernels


def _qweight(rng, N, K, bits, group_size, symmetric):
    w = rng.standard_normal((N, K)).astype(np.float32)
    gran = "channel" if group_size is None else "group"
    qt = quantize_weight(w, bits, symmetric, gran, group_size)
    gs = group_size or K
    return qt, gs, qt.scale.reshape(N, K // gs), qt.zero.reshape(N, K // gs)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("xshape,N,group_size,symmetric", [
    ((1, 64), 48, None, True),        # decode: batch 1
    ((5, 33), 7, None, True),         # odd K (int4: the reference path)
    ((2, 3, 96), 50, 32, False),      # 3-D x, groups, zero points
    ((4, 128), 130, 64, True),
    ((3, 70), 17, 14, False),
])
def test_weight_only_kernel_matches_reference(backend, bits, xshape, N, group_size, symmetric):
    rng = _rng(N)
    K = xshape[-1]
    qt, gs, scale, zero = _qweight(rng, N, K, bits, group_size, symmetric)
    x = rng.standard_normal(xshape).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    name = f"linear_int{bits}_weight"
    args = [backend.asarray(a) for a in (x, qt.q, scale, zero)]  # on the backend under test
    got = to_host(getattr(backend, name)(*args, gs, backend.asarray(bias)))
    want = to_host(REFERENCES[name](backend, *args, gs, backend.asarray(bias)))
    assert got.shape == xshape[:-1] + (N,) and got.dtype == np.float32
    q = qt.int_values().astype(np.float64)
    s = np.repeat(scale, gs, axis=1).astype(np.float64)
    z = np.repeat(zero, gs, axis=1).astype(np.float64)
    A = np.abs(x.astype(np.float64)) @ (s * (np.abs(q) + np.abs(z))).T
    gamma = (K + 4) * U / (1 - (K + 4) * U)
    bound = 2 * gamma * A + 2 * U * np.abs(want) + 1e-30
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)
    exact = x.astype(np.float64) @ (s * (q - z)).T + bias  # and both near the exact value
    assert np.all(np.abs(got - exact) <= gamma * A + 2 * U * np.abs(exact) + 1e-30)


# ============================================================================ QuantizedLinear


@pytest.mark.parametrize("bits,group_size,symmetric", [
    (8, None, True), (8, 32, False), (4, None, True), (4, 32, True), (4, 16, False)])
def test_quantized_linear_is_the_dequantized_layer(backend, bits, group_size, symmetric):
    minilm.manual_seed(1)
    lin = nn.Linear(64, 24)
    ql = QuantizedLinear.from_linear(lin, bits, group_size, symmetric)
    assert list(ql.parameters()) == []
    assert ql.qweight.dtype == (np.uint8 if bits == 4 else np.int8)
    x = minilm.randn(2, 5, 64, requires_grad=True)
    y = ql(x)
    w_hat = to_host(ql.dequantized_weight())
    ref = x.numpy() @ w_hat.T + lin.bias.numpy()
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)
    y_float = lin(x).numpy()
    rel = np.linalg.norm(y.numpy() - y_float) / np.linalg.norm(y_float)
    assert rel < (0.01 if bits == 8 else 0.15), rel
    gy = _rng().standard_normal(y.shape).astype(np.float32)
    y.backward(Tensor(gy, backend=backend))  # the input's gradient: the dequantized weight
    np.testing.assert_allclose(x.grad.numpy(), gy @ w_hat, rtol=1e-5, atol=1e-5)


def test_quantized_linear_bad_arguments():
    lin = nn.Linear(30, 4)
    with pytest.raises(ValueError, match="bits"):
        QuantizedLinear.from_linear(lin, bits=3)
    with pytest.raises(ValueError, match="group_size"):
        QuantizedLinear.from_linear(lin, bits=4, group_size=8)  # 8 does not divide 30
    with pytest.raises(TypeError, match="Linear"):
        QuantizedLinear.from_linear(nn.Embedding(4, 4))
    with pytest.raises(ValueError, match="in_features"):
        QuantizedLinear.from_linear(lin)(minilm.randn(2, 31))


def _tiny_gpt(seed=0, **kw):
    minilm.manual_seed(seed)
    cfg = GPTConfig(vocab_size=50, context_length=16, n_layers=2, n_heads=2, d_model=32, **kw)
    model = GPT(cfg)
    model.eval()
    return model


def test_quantize_model_replaces_linears_and_skips_the_tied_head(backend):
    model = _tiny_gpt()
    ids = Tensor(_rng().integers(0, 50, (2, 10)), backend=backend)
    with minilm.no_grad():
        ref = model(ids).numpy()
    report = quantize_model(model, bits=8)
    assert report["skipped"] == ["head"]
    assert set(report["layers"]) == {f"blocks.{i}.{n}" for i in range(2) for n in
                                     ("attn.qkv", "attn.out_proj", "mlp.fc", "mlp.proj")}
    assert isinstance(model.blocks[0].mlp.fc, QuantizedLinear)
    assert report["linear_bytes_after"] < report["linear_bytes_before"] / 3
    assert report["bytes_after"] < report["bytes_before"]
    with minilm.no_grad():
        got = model(ids).numpy()
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.01
    out = minilm.train.generate(model, ids.numpy()[0, :4], 5, temperature=0.0)
    assert out.shape == (1, 9)
    report = quantize_model(model, bits=4, group_size=16, skip=())  # the head now
    assert report["layers"] == ["head"] and isinstance(model.head, QuantizedLinear)


def test_quantize_model_children_keep_their_order():
    seq = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    x = minilm.randn(2, 4)
    ref = seq(x).numpy()
    quantize_model(seq, skip=())
    assert [type(m).__name__ for m in seq] == ["QuantizedLinear", "GELU", "QuantizedLinear"]
    np.testing.assert_allclose(seq(x).numpy(), ref, rtol=0.05, atol=0.02)


# ============================================================================ W8A8


def _layer(K=64, N=40, seed=0):
    minilm.manual_seed(seed)
    return nn.Linear(K, N)


def test_w8a8_within_the_rounding_bound(backend):
    """|y - ŷ| <= Σ_k (|x_k| s_w/2 + |w_k| s_x/2 + s_x s_w/4): each factor moved by at most
    half its step (round to nearest, no clipping with absmax scales); float slack 1e-4
    relative."""
    lin = _layer()
    layer = W8A8Linear.from_linear(lin)
    x = _rng().standard_normal((3, 7, 64)).astype(np.float32) * \
        np.geomspace(0.01, 10, 7)[None, :, None].astype(np.float32)
    y = layer(Tensor(x, backend=backend)).numpy()
    yf = lin(Tensor(x, backend=backend)).numpy()
    x2, w = np.abs(x.reshape(-1, 64)), np.abs(lin.weight.numpy())
    s_x = x2.max(axis=1, keepdims=True) / 127
    s_w = w.max(axis=1) / 127
    bound = x2 @ (s_w[:, None] / 2 * np.ones_like(w)).T + s_x / 2 * w.sum(1) + 64 * s_x * s_w / 4
    err = np.abs(y - yf).reshape(-1, 40)
    assert np.all(err <= bound * (1 + 1e-4) + 1e-6)
    assert np.linalg.norm(y - yf) / np.linalg.norm(yf) < 0.02


def test_w8a8_per_token_beats_per_tensor_on_rows_of_different_scales(backend):
    from minilm.quant.observers import MinMaxObserver

    lin = _layer()
    x = (_rng(1).standard_normal((32, 64)) *
         np.geomspace(0.01, 1, 32)[:, None]).astype(np.float32)
    dyn, static = W8A8Linear.from_linear(lin, "token"), W8A8Linear.from_linear(lin, "tensor")
    with pytest.raises(RuntimeError, match="calibrate"):
        static(Tensor(x, backend=backend))
    seq = nn.Sequential(static)
    scales = calibrate(seq, [x[:16], x[16:]], observer=MinMaxObserver)
    assert scales["0"] == pytest.approx(np.abs(x).max() / 127, rel=1e-6)
    xt = Tensor(x, backend=backend)
    yf = lin(xt).numpy()
    e_dyn = np.linalg.norm(dyn(xt).numpy() - yf)
    e_static = np.linalg.norm(static(xt).numpy() - yf)
    assert e_dyn <= e_static and e_dyn < 0.5 * e_static, (e_dyn, e_static)


def test_w8a8_gpt_static_and_dynamic_close_to_float(backend):
    model = _tiny_gpt(3)
    ids = Tensor(_rng().integers(0, 50, (2, 12)), backend=backend)
    with minilm.no_grad():
        ref = model(ids).numpy()
    for act in ("token", "tensor"):
        m = _tiny_gpt(3)
        quantize_model(m, factory=lambda lin, act=act: W8A8Linear.from_linear(lin, act))
        if act == "tensor":
            batches = [_rng(i).integers(0, 50, (2, 12)) for i in range(3)]
            assert len(calibrate(m, batches, n=2)) == 8
        with minilm.no_grad():
            got = m(ids).numpy()
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.03, act


# ============================================================================ LLM.int8


def _outlier_input(M=16, K=64, cols=(3, 17, 40), seed=2):
    rng = _rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[:, list(cols)] = rng.uniform(20, 60, (M, len(cols))) * rng.choice([-1, 1], (M, len(cols)))
    return x


def test_llm_int8_outlier_columns_go_through_float(backend):
    lin = _layer()
    x = Tensor(_outlier_input(), backend=backend)
    yf = lin(x).numpy()
    w8 = W8A8Linear.from_linear(lin)
    e_w8 = np.linalg.norm(w8(x).numpy() - yf)
    # the float weight kept beside: only the regular columns' activations are rounded;
    # int8-only weights: the outlier columns also meet the weight's rounding (s_w / 2
    # per entry, times activations of 20-60), still far below rounding the activations
    for keep, bar in ((True, 0.1), (False, 0.5)):
        e_llm = np.linalg.norm(LLMInt8Linear.from_linear(lin, keep_float_weight=keep)(
            x).numpy() - yf)
        assert e_llm < bar * e_w8, (keep, e_llm, e_w8)
    llm = LLMInt8Linear.from_linear(lin)
    llm(x)
    assert llm.weight is None and llm.nbytes < W8A8Linear.from_linear(lin).nbytes + 1
    assert llm.outlier_fraction == 3 / 64
    no_outliers = _rng().standard_normal((4, 64)).astype(np.float32)
    llm(Tensor(no_outliers, backend=backend))
    assert llm.outlier_fraction == 0.0 and llm.outlier_fraction_running == 3 / 128


def test_llm_int8_limits_threshold_inf_and_zero(backend):
    lin = _layer()
    x = Tensor(_outlier_input().reshape(2, 8, 64), backend=backend)
    w8 = W8A8Linear.from_linear(lin)(x).numpy()
    np.testing.assert_array_equal(LLMInt8Linear.from_linear(lin, np.inf)(x).numpy(), w8)
    llm0 = LLMInt8Linear.from_linear(lin, 0.0, keep_float_weight=True)
    yf = lin(x).numpy()
    # float32 products in another order: |Δ| <= 2 γ_K Σ|x||w| + rounding of y
    A = np.abs(x.numpy()) @ np.abs(lin.weight.numpy()).T
    np.testing.assert_array_less(np.abs(llm0(x).numpy() - yf),
                                 2 * 70 * U * A + 4 * U * np.abs(yf) + 1e-6)
    assert llm0.outlier_fraction == 1.0
    with pytest.raises(ValueError, match="threshold"):
        LLMInt8Linear.from_linear(lin, -1.0)


def test_int4_pack_layout_is_affine_pack_int4():
    """The kernels read ``affine.pack_int4``'s layout: q[n, 2j] low nibble, 2j+1 high."""
    q = np.array([[-8, 7, -1, 0]], np.int8)
    np.testing.assert_array_equal(pack_int4(q), [[0x78, 0x0F]])
