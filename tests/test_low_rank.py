"""Low-rank factorisation (minilm/quant/low_rank.py): full rank reproduces the layer,
the rank-r error is the Eckart-Young tail, the energy rule picks the right rank,
gradients through LowRankLinear, bad ranks and energies refused, model replacement only
where it saves parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minilm as ml
from minilm.nn import GPT, GPTConfig, Linear
from minilm.quant.low_rank import (
    LowRankLinear,
    choose_rank,
    factorize_linear,
    format_low_rank,
    low_rank_model,
)


def linear64(n_in: int = 7, n_out: int = 5, seed: int = 0, bias: bool = True) -> Linear:
    rng = np.random.default_rng(seed)
    lin = Linear(n_in, n_out, bias=bias, dtype=np.float64)
    lin.weight.data[...] = rng.normal(size=(n_out, n_in))
    if bias:
        lin.bias.data[...] = rng.normal(size=n_out)
    return lin


@pytest.mark.parametrize("shape", [(7, 5), (5, 7), (6, 6)])
def test_full_rank_reproduces_the_layer(shape):
    lin = linear64(*shape)
    lr = factorize_linear(lin, rank=min(shape))
    x = ml.tensor(np.random.default_rng(1).normal(size=(3, shape[0])))
    want, got = lin(x).data, lr(x).data
    assert np.linalg.norm(got - want) <= 1e-10 * np.linalg.norm(want)
    w = lin.weight.data
    assert np.linalg.norm(lr.merged_weight() - w) <= 1e-10 * np.linalg.norm(w)
    assert lr.up.bias is not lin.bias and np.array_equal(lr.up.bias.data, lin.bias.data)
    assert lr.down.bias is None


@pytest.mark.parametrize("r", [1, 2, 3, 4])
def test_rank_r_error_is_the_eckart_young_tail(r):
    lin = linear64(9, 6, seed=r)
    s = np.linalg.svd(lin.weight.data, compute_uv=False)
    lr = factorize_linear(lin, rank=r)
    err = np.linalg.norm(lin.weight.data - lr.merged_weight())  # Frobenius
    assert err == pytest.approx(np.sqrt((s[r:] ** 2).sum()), rel=1e-10)
    # the factors share sqrt(Sigma): row norms of A equal column norms of B
    np.testing.assert_allclose(np.linalg.norm(lr.down.weight.data, axis=1),
                               np.linalg.norm(lr.up.weight.data, axis=0), rtol=1e-10)


def test_energy_picks_the_smallest_sufficient_rank():
    s = np.array([3.0, 2.0, 1.0, 1.0])  # squares 9, 4, 1, 1 of 15
    assert choose_rank(s, 9 / 15) == 1
    assert choose_rank(s, 9 / 15 + 1e-6) == 2
    assert choose_rank(s, 13 / 15) == 2
    assert choose_rank(s, 14 / 15) == 3
    assert choose_rank(s, 1.0) == 4
    assert choose_rank(np.zeros(3), 0.5) == 1
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    v, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    lin = Linear(8, 6, dtype=np.float64)
    lin.weight.data[...] = u[:, :4] @ np.diag(s) @ v[:, :4].T
    assert factorize_linear(lin, energy=13 / 15).rank == 2
    assert factorize_linear(lin, energy=0.99).rank == 4


def test_gradcheck_through_low_rank_linear():
    lr = factorize_linear(linear64(4, 3), rank=2)
    x = ml.tensor(np.random.default_rng(2).normal(size=(2, 4)), requires_grad=True)
    params = [lr.down.weight, lr.up.weight, lr.up.bias]

    def run(x, a, b, c):  # the module's forward with (perturbed) tensors as its weights
        lr.down._parameters["weight"] = a
        lr.up._parameters["weight"], lr.up._parameters["bias"] = b, c
        return lr(x)

    assert ml.gradcheck(run, [x, *params])


@pytest.mark.parametrize("rank", [0, -1, 6, 2.5, True])
def test_bad_rank_is_refused_by_name(rank):
    with pytest.raises(ValueError, match="rank"):
        factorize_linear(linear64(7, 5), rank=rank)


@pytest.mark.parametrize("energy", [0.0, -0.5, 1.01, float("nan"), "all"])
def test_bad_energy_is_refused_by_name(energy):
    with pytest.raises(ValueError, match="energy"):
        factorize_linear(linear64(), energy=energy)


def test_exactly_one_of_rank_and_energy():
    with pytest.raises(ValueError, match="exactly one"):
        factorize_linear(linear64())
    with pytest.raises(ValueError, match="exactly one"):
        factorize_linear(linear64(), rank=1, energy=0.5)
    with pytest.raises(ValueError, match="rank"):
        LowRankLinear(4, 3, rank=4)


def test_low_rank_model_replaces_only_where_it_saves():
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, context_length=8, n_layers=1, n_heads=2, d_model=16))
    x = ml.tensor(np.random.default_rng(0).integers(0, 12, (2, 8)))
    before = model.num_parameters()
    rows = low_rank_model(model, rank=4)
    by = {r["name"]: r for r in rows}
    # qkv 48x16: 4*(16+48)=256 < 768 replaced; out_proj 16x16: 128 < 256 replaced
    assert by["blocks.0.attn.qkv"]["replaced"] and by["blocks.0.mlp.fc"]["replaced"]
    assert isinstance(model.blocks[0].attn.qkv, LowRankLinear)
    assert by["blocks.0.attn.qkv"]["params_after"] == 4 * (16 + 48) + 48
    assert by["blocks.0.attn.qkv"]["flops_after"] == 2 * 4 * (16 + 48)
    saved = sum(r["params_before"] - r["params_after"] for r in rows)
    assert model.num_parameters() == before - saved
    assert np.isfinite(model(x).data).all()
    assert "params x" in format_low_rank(rows)
    # rank 9 on a 16x16 layer: 9*32 = 288 >= 256, kept and said so
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, context_length=8, n_layers=1, n_heads=2, d_model=16))
    rows = low_rank_model(model, rank=9)
    by = {r["name"]: r for r in rows}
    assert not by["blocks.0.attn.out_proj"]["replaced"]
    assert "saves nothing" in by["blocks.0.attn.out_proj"]["reason"]
    assert isinstance(model.blocks[0].attn.out_proj, Linear)
    assert by["blocks.0.mlp.fc"]["replaced"]  # 64x16: 9*80 = 720 < 1024


def test_low_rank_model_at_full_energy_keeps_the_function():
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, context_length=8, n_layers=1, n_heads=2,
                          d_model=16)).double()
    x = ml.tensor(np.random.default_rng(0).integers(0, 12, (2, 8)))
    rng = np.random.default_rng(1)  # fc of exact rank 8: 8 (16 + 64) < 16 * 64 saves
    model.blocks[0].mlp.fc.weight.data[...] = rng.normal(size=(64, 8)) @ rng.normal(size=(8, 16))
    want = model(x).data.copy()
    rows = low_rank_model(model, energy=1.0, include="blocks.*.mlp.*")
    assert [r["rank"] for r in rows] == [8, 16] and [r["replaced"] for r in rows] == [True, False]
    assert isinstance(model.blocks[0].mlp.fc, LowRankLinear)
    np.testing.assert_allclose(model(x).data, want, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="energy"):
        low_rank_model(model, energy=0)


def test_example_runs_in_reduced_form():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "examples" / "low_rank.py"), "--steps", "2",
                          "--energies", "0.9,0.5", "--finetune-steps", "1", "--table",
                          "--eval-batches", "1"],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "0.50" in out.stdout and "params x" in out.stdout
