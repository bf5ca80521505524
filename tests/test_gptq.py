"""GPTQ (minilm/quant/gptq.py): the blocked, lazy-update, Cholesky form against a slow
direct Optimal-Brain-Surgeon implementation; GPTQ's output error against
round-to-nearest; act-order, dead inputs, bit widths, bad inputs; the sequential
whole-model pass on a tiny GPT. All in float64."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

import minilm as ml
from minilm.nn import GPT, GPTConfig
from minilm.quant.affine import dequantize, qparams_from_range, quantize, quantize_weight
from minilm.quant.gptq import (
    HessianAccumulator,
    gptq_quantize_layer,
    gptq_quantize_model,
    rtn_quantize_model,
)


def correlated_inputs(rng, n, d, rank=None):
    """n inputs of dimension d with strongly correlated features (a low-rank mix plus
    noise, and uneven feature scales) — the case where error feedback pays."""
    rank = rank or max(1, d // 4)
    mix = rng.standard_normal((rank, d))
    X = rng.standard_normal((n, rank)) @ mix + 0.1 * rng.standard_normal((n, d))
    return X * rng.uniform(0.2, 3.0, size=d)


def hessian(X):
    acc = HessianAccumulator(X.shape[1])
    acc.add(X)
    return acc.H


def out_err(X, W, Wq):
    return float(np.sum((X @ W.T - X @ Wq.T) ** 2))


def slow_gptq(W, H, bits, group_size, symmetric, damp, perm=None):
    """One column at a time, H⁻¹ kept explicitly and reduced by the Schur complement:
    w −= (w_i − q_i)/[H⁻¹]_ii · H⁻¹[i, :], then H⁻¹ ← H⁻¹ − H⁻¹[:, i] H⁻¹[i, :] / [H⁻¹]_ii.
    Group scales at each group's first column from its current weights."""
    W = W.astype(np.float64).copy()
    H = H.astype(np.float64).copy()
    out, n = W.shape
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    G = group_size or n
    order = np.arange(n) if perm is None else perm
    scales, zeros = {}, {}
    if group_size is None or perm is not None:
        for g in range(n // G):
            blk = W[:, g * G:(g + 1) * G]
            scales[g], zeros[g] = qparams_from_range(blk.min(1), blk.max(1), bits, symmetric)
    H[np.diag_indices(n)] += damp * np.mean(np.diag(H))
    Hinv = np.linalg.inv(H)
    Q = np.zeros_like(W)
    for i in order:
        g = i // G
        if group_size is not None and perm is None and i % G == 0:
            blk = W[:, i:i + G]
            scales[g], zeros[g] = qparams_from_range(blk.min(1), blk.max(1), bits, symmetric)
        s, z = scales[g], zeros[g]
        Q[:, i] = dequantize(quantize(W[:, i], s, z, bits, symmetric), s, z)
        d = Hinv[i, i]
        W -= np.outer((W[:, i] - Q[:, i]) / d, Hinv[i, :])
        Hinv = Hinv - np.outer(Hinv[:, i], Hinv[i, :]) / d
    return Q


@pytest.mark.parametrize("bits,group_size,symmetric,block", [
    (4, None, True, 5), (4, 8, True, 5), (4, 8, False, 16), (8, 4, True, 3), (3, None, False, 64),
])
def test_blocked_equals_direct(bits, group_size, symmetric, block):
    rng = np.random.default_rng(bits * 10 + (group_size or 0))
    out, d = 6, 24
    X = correlated_inputs(rng, 200, d)
    W = rng.standard_normal((out, d))
    H = hessian(X)
    qt, _ = gptq_quantize_layer(W, H, bits=bits, group_size=group_size, symmetric=symmetric,
                                block_size=block, damp=0.01)
    np.testing.assert_allclose(qt.dequantize(), slow_gptq(W, H, bits, group_size, symmetric, 0.01),
                               rtol=0, atol=1e-12)


@examples(0.5)
@given(out=st.integers(1, 5), n_groups=st.integers(1, 4), G=st.sampled_from([1, 2, 3, 4, 8]),
       per_group=st.booleans(), block=st.integers(1, 40), bits=st.sampled_from([2, 3, 4, 8]),
       symmetric=st.booleans(), act_order=st.booleans(), seed=st.integers(0, 2**16))
def test_blocked_equals_direct_drawn(out, n_groups, G, per_group, block, bits, symmetric,
                                     act_order, seed):
    """Any shape, group size, block size (dividing the groups or not), bits, act-order."""
    rng = np.random.default_rng(seed)
    n = n_groups * G
    X = correlated_inputs(rng, 4 * n + 8, n)
    W = rng.standard_normal((out, n))
    H = hessian(X)
    group_size = G if per_group else None
    qt, _ = gptq_quantize_layer(W, H, bits=bits, group_size=group_size, symmetric=symmetric,
                                block_size=block, act_order=act_order)
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else None
    np.testing.assert_allclose(qt.dequantize(), slow_gptq(W, H, bits, group_size, symmetric,
                                                          0.01, perm), rtol=0, atol=1e-10)


@pytest.mark.parametrize("group_size", [None, 8])
def test_act_order_equals_direct_in_permuted_order(group_size):
    rng = np.random.default_rng(3)
    X = correlated_inputs(rng, 300, 16)
    W = rng.standard_normal((5, 16))
    H = hessian(X)
    qt, _ = gptq_quantize_layer(W, H, bits=4, group_size=group_size, block_size=4,
                                act_order=True)
    perm = np.argsort(-np.diag(H), kind="stable")
    np.testing.assert_allclose(qt.dequantize(), slow_gptq(W, H, 4, group_size, True, 0.01, perm),
                               rtol=0, atol=1e-12)


def test_act_order_permutation_round_trips():
    """With no inputs correlation (H diagonal) the columns do not interact: act-order
    must give exactly the identity-order result, columns back in place."""
    rng = np.random.default_rng(4)
    W = rng.standard_normal((7, 12))
    H = np.diag(rng.uniform(0.5, 5.0, 12))
    a, _ = gptq_quantize_layer(W, H, bits=4, act_order=False)
    b, _ = gptq_quantize_layer(W, H, bits=4, act_order=True)
    np.testing.assert_array_equal(a.q, b.q)
    np.testing.assert_allclose(a.dequantize(), b.dequantize(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("bits,group_size,symmetric", [
    (4, None, True), (4, 16, True), (4, 16, False), (8, None, True), (3, 8, False),
])
def test_gptq_output_error_not_above_rtn(bits, group_size, symmetric):
    rng = np.random.default_rng(bits + (group_size or 1))
    X = correlated_inputs(rng, 512, 64)
    W = rng.standard_normal((16, 64)) * 0.1
    H = hessian(X)
    qt, info = gptq_quantize_layer(W, H, bits=bits, group_size=group_size, symmetric=symmetric,
                                   damp=0.01)
    gran = "channel" if group_size is None else "group"
    rtn = quantize_weight(W, bits=bits, symmetric=symmetric, granularity=gran,
                          group_size=group_size).dequantize()
    e_gptq, e_rtn = out_err(X, W, qt.dequantize()), out_err(X, W, rtn)
    assert e_gptq <= e_rtn
    assert e_gptq < 0.7 * e_rtn  # with correlated inputs the error feedback clearly pays
    np.testing.assert_allclose(info["error"], e_gptq / len(X), rtol=1e-9)
    np.testing.assert_allclose(info["rtn_error"], e_rtn / len(X), rtol=1e-9)


def test_eight_bits_much_better_than_four():
    rng = np.random.default_rng(8)
    X = correlated_inputs(rng, 256, 32)
    W = rng.standard_normal((8, 32))
    H = hessian(X)
    _, i4 = gptq_quantize_layer(W, H, bits=4)
    _, i8 = gptq_quantize_layer(W, H, bits=8)
    assert i8["error"] < i4["error"] / 100


def test_dead_columns():
    rng = np.random.default_rng(5)
    X = correlated_inputs(rng, 100, 16)
    X[:, [2, 9]] = 0.0  # inputs that never fire
    W = rng.standard_normal((4, 16))
    qt, info = gptq_quantize_layer(W, hessian(X), bits=4, group_size=8)
    Wq = qt.dequantize()
    assert info["dead"] == 2
    assert np.all(Wq[:, [2, 9]] == 0) and np.all(np.isfinite(Wq))
    assert info["error"] <= info["rtn_error"]


def test_quantized_tensor_layout():
    rng = np.random.default_rng(6)
    W = rng.standard_normal((4, 16))
    H = hessian(correlated_inputs(rng, 64, 16))
    qt, _ = gptq_quantize_layer(W, H, bits=4, group_size=4, symmetric=False)
    assert qt.bits == 4 and qt.granularity == "group" and qt.group_size == 4
    assert tuple(qt.shape) == (4, 16) and qt.q.dtype == np.uint8  # int4: packed
    assert qt.scale.shape == (4, 4) and qt.zero.dtype == np.int32
    assert qt.int_values().min() >= -8 and qt.int_values().max() <= 7
    qt, _ = gptq_quantize_layer(W.astype(np.float32), H, bits=8)
    assert qt.granularity == "channel" and qt.scale.shape == (4,) and qt.q.dtype == np.int8
    assert qt.scale.dtype == np.float32 and qt.dequantize().dtype == np.float32
    assert np.abs(qt.q).max() <= 127


def test_hessian_accumulator_running_mean():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((3, 5, 6))
    acc = HessianAccumulator(6)
    acc.add(X[0])
    acc.add(ml.tensor(X[1:]))
    flat = X.reshape(-1, 6)
    np.testing.assert_allclose(acc.H, 2 * flat.T @ flat / len(flat), rtol=1e-12)
    assert acc.n == 15
    with pytest.raises(ValueError, match="in_features = 6"):
        acc.add(np.zeros((2, 5)))


def test_bad_inputs_name_them():
    W, H = np.zeros((4, 8)), np.eye(8)
    with pytest.raises(ValueError, match=r"H has shape \(7, 7\).*\(8, 8\)"):
        gptq_quantize_layer(W, np.eye(7))
    with pytest.raises(ValueError, match="group_size 3 does not divide in_features 8"):
        gptq_quantize_layer(W, H, group_size=3)
    with pytest.raises(ValueError, match="bits = 1"):
        gptq_quantize_layer(W, H, bits=1)
    with pytest.raises(ValueError, match="block_size"):
        gptq_quantize_layer(W, H, block_size=0)
    with pytest.raises(ValueError, match="2-D"):
        gptq_quantize_layer(np.zeros(8), H)
    with pytest.raises(ValueError, match="NaN"):
        gptq_quantize_layer(W, H * np.nan)


def tiny_gpt_and_data(seed=0):
    ml.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=20, context_length=16, n_layers=2, n_heads=2, d_model=16))
    rng = np.random.default_rng(seed)
    # a learnable pattern so the quantized weights matter: ids repeat with period 5
    base = rng.integers(0, 20, size=5)
    ids = np.stack([np.roll(np.tile(base, 4)[:17], k) for k in range(8)])
    return model, ids[:, :16], ids[:, 1:]


def test_model_gptq_beats_rtn_and_keeps_layers_order():
    model, x, y = tiny_gpt_and_data()
    ref = model(ml.tensor(x)).data.copy()
    state = {k: v.data.copy() for k, v in model.state_dict().items()}
    infos = gptq_quantize_model(model, [x[:4], x[4:]], bits=3, group_size=8)
    names = list(infos)
    assert names == ["blocks.0.attn.qkv", "blocks.0.attn.out_proj", "blocks.0.mlp.fc",
                     "blocks.0.mlp.proj", "blocks.1.attn.qkv", "blocks.1.attn.out_proj",
                     "blocks.1.mlp.fc", "blocks.1.mlp.proj"]
    assert model.training  # the mode it had before calibration (eval inside)
    out_gptq = model(ml.tensor(x)).data
    w = model.blocks[0].attn.qkv.weight.data
    assert len(np.unique(w.reshape(-1, 8)[0])) <= 8  # 3 bits: at most 8 levels per group

    model.load_state_dict(state)
    rtn_quantize_model(model, bits=3, group_size=8)
    out_rtn = model(ml.tensor(x)).data
    assert np.sum((out_gptq - ref) ** 2) < np.sum((out_rtn - ref) ** 2)


def test_model_bad_group_size_changes_nothing():
    model, x, _ = tiny_gpt_and_data()
    before = model.blocks[0].mlp.fc.weight.data.copy()
    with pytest.raises(ValueError, match="group_size 48 does not divide in_features 16"):
        gptq_quantize_model(model, [x], bits=4, group_size=48)
    with pytest.raises(ValueError, match="calib_batches is empty"):
        gptq_quantize_model(model, [], bits=4)
    np.testing.assert_array_equal(model.blocks[0].mlp.fc.weight.data, before)


def test_example_runs_reduced():
    """examples/quantize_gptq.py end to end, reduced (CI form of the example)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "examples/quantize_gptq.py", "--steps", "2",
                        "--calib-batches", "1", "--eval-batches", "1"],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "RTN  int4 g64" in p.stdout and "GPTQ int4 g64" in p.stdout
