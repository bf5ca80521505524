"""Pruning (minilm/quant/prune.py): exact magnitude-pruning counts with deterministic
ties, layer vs global scope, structured neuron and head pruning, masks kept through
AdamW steps (weight decay and moments included) and through checkpoints, the
Zhu-Gupta cubic schedule, and prune -> fine-tune lowering the loss."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minilm as ml
from minilm import optim
from minilm.data import CharTokenizer, DataLoader, RandomWindowBatches, split_tokens
from minilm.nn import GPT, GPTConfig, Linear, Sequential
from minilm.quant.prune import (
    GradualPruner,
    PruningMasks,
    format_sparsity,
    magnitude_prune,
    prune_attention_heads,
    prune_mlp_neurons,
    select_linears,
    sparsity_report,
    zhu_gupta_sparsity,
)
from minilm.train.config import TrainConfig
from minilm.train.trainer import Trainer
from minilm.train.training_state import (
    load_model_weights,
    load_training_state,
    save_training_state,
)


def tiny_gpt(seed: int = 0, **kw) -> GPT:
    ml.manual_seed(seed)
    cfg = dict(vocab_size=12, context_length=8, n_layers=2, n_heads=2, d_model=16)
    cfg.update(kw)
    model = GPT(GPTConfig(**cfg))
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():  # GPT starts with zero biases: make them count
        if name.endswith("bias"):
            p.data[...] = rng.normal(0, 0.1, p.shape)
    return model


def batch(seed: int = 0, b: int = 4, t: int = 8, v: int = 12):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, v, (b, t))
    return ml.tensor(x), ml.tensor((x + 1) % v)  # a learnable rule: next = id + 1


def set_weight(lin: Linear, w) -> None:
    lin.weight.data[...] = np.asarray(w, dtype=lin.weight.dtype)


# --------------------------------------------------------------------- magnitude


def test_layer_scope_exact_counts_and_deterministic_ties():
    model = Sequential(Linear(4, 3), Linear(3, 5))
    set_weight(model[0], np.ones((3, 4)))            # all tied
    set_weight(model[1], np.arange(15).reshape(5, 3) - 7.0)
    masks = magnitude_prune(model, 0.5)
    w0 = model[0].weight.data
    assert (w0 == 0).sum() == 6                      # round(0.5 * 12)
    # ties: the first 6 in row-major order go
    np.testing.assert_array_equal(w0.ravel() == 0, np.arange(12) < 6)
    w1 = model[1].weight.data
    assert (w1 == 0).sum() == 8                      # round(0.5 * 15) = 7.5 -> 8
    kept = np.abs(np.arange(15) - 7.0)[w1.ravel() != 0]
    assert kept.min() >= 4                           # |w| in {0..3} and one 4 pruned
    assert set(masks.names()) == {"0.weight", "1.weight"}
    assert masks.mask("0.weight").dtype == bool


def test_global_scope_differs_from_layer_scope():
    def model():
        m = Sequential(Linear(4, 4, bias=False), Linear(4, 4, bias=False))
        set_weight(m[0], np.full((4, 4), 0.01) + np.arange(16).reshape(4, 4) * 1e-4)
        set_weight(m[1], np.full((4, 4), 1.0) + np.arange(16).reshape(4, 4) * 1e-2)
        return m

    a, b = model(), model()
    magnitude_prune(a, 0.5, scope="layer")
    magnitude_prune(b, 0.5, scope="global")
    assert [(a[i].weight.data == 0).sum() for i in range(2)] == [8, 8]
    # one threshold: every small weight of layer 0 goes, layer 1 keeps all
    assert [(b[i].weight.data == 0).sum() for i in range(2)] == [16, 0]
    rep = sparsity_report(b)
    assert rep["zeros"] == 16 and rep["total"] == 32 and rep["sparsity"] == 0.5
    assert "total" in format_sparsity(rep)


def test_default_selection_skips_the_tied_head_and_include_filters():
    model = tiny_gpt()
    names = [n for n, _ in select_linears(model)]
    assert "head" not in names and len(names) == 8
    mlp = [n for n, _ in select_linears(model, "blocks.*.mlp.*")]
    assert mlp == ["blocks.0.mlp.fc", "blocks.0.mlp.proj", "blocks.1.mlp.fc",
                   "blocks.1.mlp.proj"]
    magnitude_prune(model, 0.25, include="blocks.*.mlp.*")
    assert model.blocks[0].attn.qkv.weight.data.all()
    assert (model.blocks[0].mlp.fc.weight.data == 0).sum() == 16 * 64 // 4


@pytest.mark.parametrize("bad", [-0.1, 1.5, "half", True])
def test_bad_sparsity_is_refused(bad):
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_prune(Sequential(Linear(2, 2)), bad)
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune(Sequential(Linear(2, 2)), 0.5, scope="row")


# --------------------------------------------------------------------- keep masked


def test_masks_survive_adamw_steps_with_weight_decay():
    model = tiny_gpt()
    x, y = batch()
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):  # moments first: a pruned weight then has m, v != 0
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    masks = magnitude_prune(model, 0.5)
    masks.attach(opt)
    for name in masks.names():
        st = opt.state[masks.param(name)]
        assert (st["exp_avg"][~masks.mask(name)] == 0).all()  # attach cleared the moments
    for _ in range(5):
        _, loss = model(x, y)
        loss.backward()
        for name in masks.names():  # the grad hook already zeroed the pruned entries
            assert (masks.param(name).grad.data[~masks.mask(name)] == 0).all()
        opt.step()
        opt.zero_grad()
    for name in masks.names():
        w, m = masks.param(name).data, masks.mask(name)
        assert (w[~m] == 0).all() and (w[m] != 0).mean() > 0.99
        st = opt.state[masks.param(name)]
        assert (st["exp_avg"][~m] == 0).all() and (st["exp_avg_sq"][~m] == 0).all()
    assert sparsity_report(model)["sparsity"] == pytest.approx(0.5, abs=1e-3)
    masks.detach()
    assert "step" not in opt.__dict__


def test_without_attach_adam_moments_revive_pruned_weights():
    """The control of the test above: masking the gradient alone is not enough."""
    model = tiny_gpt()
    x, y = batch()
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    masks = magnitude_prune(model, 0.5)  # grads are masked by the hook, moments are not
    _, loss = model(x, y)
    loss.backward()
    opt.step()
    name = "blocks.0.mlp.fc.weight"
    assert (masks.param(name).data[~masks.mask(name)] != 0).any()


def test_masks_survive_a_checkpoint_round_trip(tmp_path):
    model = tiny_gpt()
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    masks = magnitude_prune(model, 0.6, scope="global")
    masks.attach(opt)
    x, y = batch()
    _, loss = model(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    path = tmp_path / "ckpt.safetensors"
    save_training_state(path, model, opt)

    fresh = tiny_gpt(seed=1)
    restored = PruningMasks.from_state_dict(fresh, load_model_weights(path))
    opt2 = optim.AdamW(fresh.parameters(), lr=1e-2)
    load_training_state(path, fresh, opt2)
    restored.attach(opt2)
    assert restored.names() == masks.names()
    for name in masks.names():
        np.testing.assert_array_equal(restored.mask(name), masks.mask(name))
    for a, b in zip(model.parameters(), fresh.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    _, loss = fresh(x, y)  # and keeps them through further steps
    loss.backward()
    opt2.step()
    for name in restored.names():
        assert (restored.param(name).data[~restored.mask(name)] == 0).all()
    # the plain masks dict round-trips too
    again = PruningMasks(tiny_gpt(seed=2))
    again.load_state_dict(masks.state_dict())
    assert sparsity_report(again.model)["zeros"] == sparsity_report(model)["zeros"]


# --------------------------------------------------------------------- structured


def test_mlp_neurons_zero_whole_units_and_the_model_runs():
    model = tiny_gpt()
    w = model.blocks[0].mlp.fc.weight.data
    w[5] *= 1e-3  # unit 5 of block 0 is the least important
    masks = prune_mlp_neurons(model, 0.25)
    for blk in model.blocks:
        fc, proj = blk.mlp.fc, blk.mlp.proj
        dead_rows = (fc.weight.data == 0).all(axis=1)
        dead_cols = (proj.weight.data == 0).all(axis=0)
        assert dead_rows.sum() == 16 and (dead_rows == dead_cols).all()
        assert (fc.bias.data[dead_rows] == 0).all()
        assert (fc.weight.data[~dead_rows] != 0).all()
    assert (model.blocks[0].mlp.fc.weight.data[5] == 0).all()
    assert "blocks.0.mlp.fc.bias" in masks
    x, y = batch()
    _, loss = model(x, y)
    assert np.isfinite(loss.item())


def test_mlp_taylor_score_needs_gradients_and_uses_them():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="taylor"):
        prune_mlp_neurons(model, 0.5, score="taylor")
    x, y = batch()
    _, loss = model(x, y)
    loss.backward()
    fc, proj = model.blocks[1].mlp.fc, model.blocks[1].mlp.proj
    imp = (np.abs(fc.weight.data * fc.weight.grad.data).sum(1)
           + np.abs(proj.weight.data * proj.weight.grad.data).sum(0))
    prune_mlp_neurons(model, 0.5, score="taylor")
    dead = (fc.weight.data == 0).all(axis=1)
    np.testing.assert_array_equal(np.sort(np.nonzero(dead)[0]),
                                  np.sort(np.argsort(imp, kind="stable")[:32]))


def test_attention_heads_zero_their_slices_and_the_model_runs():
    model = tiny_gpt(n_heads=4)
    scores = np.array([[3.0, 0.1, 2.0, 1.0], [0.5, 4.0, 0.2, 9.0]])
    prune_attention_heads(model, 0.5, scores=scores)
    hd, d = 4, 16
    for blk, dead in zip(model.blocks, ([1, 3], [0, 2])):
        qkv, out = blk.attn.qkv.weight.data, blk.attn.out_proj.weight.data
        for h in range(4):
            rows = np.concatenate([np.arange(i * d + h * hd, i * d + (h + 1) * hd)
                                   for i in range(3)])
            zero = h in dead
            assert (qkv[rows] == 0).all() == zero
            assert (out[:, h * hd:(h + 1) * hd] == 0).all() == zero
            assert (blk.attn.qkv.bias.data[rows] == 0).all() == zero
    x, y = batch()
    _, loss = model(x, y)
    assert np.isfinite(loss.item())
    # a zeroed head contributes nothing: its output columns of out_proj are 0, so
    # changing its q/k/v weights changes nothing
    logits = model(x).data.copy()
    model.blocks[0].attn.qkv.weight.data[4:8] = 0.3  # q rows of head 1 (pruned)
    np.testing.assert_allclose(model(x).data, logits, rtol=0, atol=0)


def test_head_norm_scores_pick_the_weakest_head():
    model = tiny_gpt(n_heads=4)
    attn = model.blocks[1].attn
    attn.qkv.weight.data[[8, 9, 10, 11, 24, 25, 26, 27, 40, 41, 42, 43]] *= 1e-3
    attn.out_proj.weight.data[:, 8:12] *= 1e-3
    prune_attention_heads(model, 0.25)
    assert (attn.out_proj.weight.data[:, 8:12] == 0).all()
    assert (attn.out_proj.weight.data == 0).sum() == 16 * 4


# --------------------------------------------------------------------- schedule


def test_zhu_gupta_cubic_schedule_values():
    s = lambda t: zhu_gupta_sparsity(t, 0.8, 100, 500, 0.1)  # noqa: E731
    assert s(0) == 0.1 and s(100) == pytest.approx(0.1)
    assert s(500) == pytest.approx(0.8) and s(900) == 0.8
    assert s(300) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5 ** 3)  # midpoint: 0.7125
    vals = [s(t) for t in range(100, 501, 50)]
    assert all(b > a for a, b in zip(vals, vals[1:]))
    steps = np.diff(vals)
    assert all(b < a for a, b in zip(steps, steps[1:]))  # fast first, slow at the end


def test_gradual_pruner_prunes_on_schedule():
    model = tiny_gpt()
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    pruner = GradualPruner(model, 0.75, start=2, end=10, every=4)
    pruner.masks.attach(opt)
    x, y = batch()
    applied = {}
    for t in range(13):
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        s = pruner.step(t)
        if s is not None:
            applied[t] = s
            assert sparsity_report(model)["sparsity"] == pytest.approx(s, abs=1e-3)
    assert list(applied) == [2, 6, 10]
    assert applied[6] == pytest.approx(0.75 * (1 - 0.5 ** 3))
    assert sparsity_report(model)["sparsity"] == pytest.approx(0.75, abs=1e-3)
    with pytest.raises(ValueError, match="multiple"):
        GradualPruner(model, 0.5, start=0, end=10, every=3)


def test_prune_then_finetune_lowers_the_loss():
    model = tiny_gpt()
    x, y = batch(b=8)
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    for _ in range(30):
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    magnitude_prune(model, 0.7).attach(opt)
    _, after_prune = model(x, y)
    for _ in range(15):
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    _, tuned = model(x, y)
    assert tuned.item() < after_prune.item()
    assert sparsity_report(model)["sparsity"] == pytest.approx(0.7, abs=1e-3)


def _trainer(tmp_path, max_steps):
    text = "the quick brown fox jumps over the lazy dog. " * 30
    tok = CharTokenizer.train(text)
    train, val = split_tokens(np.asarray(tok.encode(text), dtype=np.uint16), 0.1)
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layers=1, n_heads=2,
                          d_model=16))
    cfg = TrainConfig(out_dir=str(tmp_path), batch_size=4, max_steps=max_steps, warmup_steps=1,
                      eval_interval=100, eval_batches=1, ckpt_interval=100, log_interval=100,
                      progress=False, plot=False, lr=1e-2, grad_clip=1.0, weight_decay=0.1)
    loader = DataLoader(RandomWindowBatches(train, 4, 16, rng=7), prefetch=0)
    return Trainer(model, loader, val, cfg, tokenizer=tok)


def test_trainer_keeps_masks_through_fit_save_and_resume(tmp_path):
    t = _trainer(tmp_path, max_steps=6)
    masks = magnitude_prune(t.model, 0.5, scope="global")
    masks.attach(t.optimizer)
    t.fit()
    assert t.step == 6
    assert sparsity_report(t.model)["sparsity"] == pytest.approx(0.5, abs=1e-3)
    path = tmp_path / "pruned.safetensors"
    t.save(path)

    t2 = _trainer(tmp_path / "again", max_steps=9)
    restored = PruningMasks.from_state_dict(t2.model, load_model_weights(path))
    t2.resume(path)
    restored.attach(t2.optimizer)
    for name in masks.names():
        np.testing.assert_array_equal(restored.mask(name), masks.mask(name))
    t2.fit()
    assert t2.step == 9
    for name in restored.names():
        assert (restored.param(name).data[~restored.mask(name)] == 0).all()


def test_example_runs_in_reduced_form():
    root = Path(__file__).resolve().parents[1]
    for extra in ([], ["--gradual", "--sparsity", "0.6"]):
        out = subprocess.run([sys.executable, str(root / "examples" / "prune.py"), "--steps", "2",
                              "--finetune-steps", "5", "--eval-batches", "1", *extra],
                             capture_output=True, text=True, timeout=120, cwd=root)
        assert out.returncode == 0, out.stderr
        assert "fine-tuned 5 steps" in out.stdout and "total" in out.stdout
