"""Multi-task learning (minilm/train/multitask.py): the uncertainty-weighted loss and its
gradient against the formula (gradcheck, float64), gradient flow (each head only from
its own task, the trunk from both), and a short run that lowers both tasks' losses."""

import numpy as np
import pytest

import minilm as ml
from minilm.finite_diff import gradcheck
from minilm.train.multitask import (
    MultiTaskConfig,
    MultiTaskLoss,
    MultiTaskModel,
    code_prose_data,
    sample_batch,
    task_losses,
    train_multitask,
    uncertainty_weighted,
)


def test_uncertainty_loss_value_and_gradient_match_the_formula():
    L = np.array([2.3, 0.4, 1.1])
    s0 = np.array([0.3, -0.7, 0.0])
    s = ml.tensor(s0.copy(), requires_grad=True)
    losses = [ml.tensor(v, requires_grad=True) for v in L]
    total = uncertainty_weighted(losses, s)
    assert total.item() == pytest.approx(float(np.sum(0.5 * np.exp(-s0) * L + 0.5 * s0)), rel=1e-14)
    # = Σ L_k / (2σ_k²) + log σ_k with σ_k² = exp(s_k)
    sigma = np.sqrt(np.exp(s0))
    assert total.item() == pytest.approx(float(np.sum(L / (2 * sigma ** 2) + np.log(sigma))), rel=1e-14)
    total.backward()
    np.testing.assert_allclose(s.grad.numpy(), 0.5 - 0.5 * np.exp(-s0) * L, rtol=1e-13)
    np.testing.assert_allclose([lk.grad.item() for lk in losses], 0.5 * np.exp(-s0), rtol=1e-13)
    gradcheck(lambda s_, a, b, c: uncertainty_weighted([a, b, c], s_),
              [ml.tensor(s0.copy(), requires_grad=True)]
              + [ml.tensor(v, requires_grad=True) for v in L])


def test_fixed_weights_and_module():
    a, b = ml.tensor(2.0), ml.tensor(3.0)
    assert MultiTaskLoss(2, "fixed", weights=(0.5, 2.0))([a, b]).item() == pytest.approx(7.0)
    m = MultiTaskLoss(2, "uncertainty")
    assert m([a, b]).item() == pytest.approx(2.5)  # s = 0: ½ Σ L_k
    assert m.task_weights() == [0.5, 0.5]
    with pytest.raises(ValueError):
        MultiTaskLoss(2, "nope")


@pytest.fixture(scope="module")
def data():
    return code_prose_data(context=16, n_eval=64)


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: (None if p.grad is None else p.grad.numpy().copy())
            for n, p in model.named_parameters()}


def _nonzero(g):
    return g is not None and bool(np.any(g != 0))


def test_heads_get_gradient_only_from_their_task(data):
    ml.manual_seed(0)
    model = MultiTaskModel(data["vocab_size"], d_embed=8, hidden=16).double()
    x, y, c = sample_batch(data["train"], 8, 16, np.random.default_rng(0))
    g_lm = _grads(model, task_losses(model, x, y, c)["lm"])
    g_cls = _grads(model, task_losses(model, x, y, c)["cls"])
    out = task_losses(model, x, y, c)
    g_both = _grads(model, MultiTaskLoss(2, "fixed", (0.7, 1.3))([out["lm"], out["cls"]]))
    for n in g_lm:
        if n.startswith("lm_head"):
            assert _nonzero(g_lm[n]) and not _nonzero(g_cls[n]), n
        elif n.startswith("cls_head"):
            assert _nonzero(g_cls[n]) and not _nonzero(g_lm[n]), n
        else:  # trunk: from both tasks
            assert n.startswith(("embed", "lstm")), n
            assert _nonzero(g_lm[n]) and _nonzero(g_cls[n]), n
        want = sum(w * (g if g is not None else 0.0) for w, g in ((0.7, g_lm[n]), (1.3, g_cls[n])))
        np.testing.assert_allclose(g_both[n], want, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("mode", ["fixed", "uncertainty"])
def test_short_run_lowers_both_losses(data, mode):
    cfg = MultiTaskConfig(context=16, batch=16, steps=40, lr=1e-2, d_embed=16, hidden=32)
    r = train_multitask(mode, cfg, data)
    for task, hist in r["train_losses"].items():
        assert np.mean(hist[-8:]) < np.mean(hist[:8]), (task, hist[:8], hist[-8:])
    if mode == "uncertainty":
        assert r["weights"] != [0.5, 0.5]
