"""Knowledge distillation: the loss (minilm.functional.distillation_loss,
hidden_state_mse) against its formula and its gradient, and the training helper
(minilm/train/distill.py) bringing a student closer to a trained teacher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minilm as ml
import minilm.functional as F
from minilm import optim
from minilm.data import CharTokenizer, random_windows
from minilm.nn import GPT, GPTConfig, Linear
from minilm.train.distill import distill, teacher_kl


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_loss(zs, zt, y, T, alpha, ignore=-100):
    c = zs.shape[-1]
    zs, zt, y = zs.reshape(-1, c), zt.reshape(-1, c), y.reshape(-1)
    valid = y != ignore
    p, q = _softmax(zt / T), _softmax(zs / T)
    kl = (p * (np.log(p) - np.log(q))).sum(-1)[valid].mean()
    logp = np.log(_softmax(zs))
    ce = -logp[np.nonzero(valid)[0], y[valid]].mean()
    return alpha * T * T * kl + (1 - alpha) * ce, kl, ce


def _data(seed=0, shape=(2, 3, 5)):
    rng = np.random.default_rng(seed)
    zs, zt = rng.normal(size=shape) * 2, rng.normal(size=shape) * 2
    y = rng.integers(0, shape[-1], shape[:-1])
    y.reshape(-1)[1] = -100
    return zs, zt, y


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (2.0, 0.3), (4.0, 1.0), (0.5, 0.0)])
def test_value_matches_the_formula(T, alpha):
    zs, zt, y = _data()
    got = F.distillation_loss(ml.tensor(zs), ml.tensor(zt), ml.tensor(y), T=T, alpha=alpha)
    want, _, _ = _numpy_loss(zs, zt, y, T, alpha)
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_alpha_zero_is_exactly_cross_entropy_and_one_is_t2_kl():
    zs, zt, y = _data(1)
    s, t = ml.tensor(zs), ml.tensor(zt)
    ce = F.cross_entropy(s.reshape(-1, 5), ml.tensor(y.reshape(-1)))
    assert F.distillation_loss(s, t, ml.tensor(y), T=3.0, alpha=0.0).item() == ce.item()
    T = 3.0
    c = 5
    kl_rows = F.kl_div(F.log_softmax(s.reshape(-1, c) / T, dim=-1),
                       F.log_softmax(t.reshape(-1, c) / T, dim=-1), reduction="none",
                       log_target=True).sum(dim=-1).data
    valid = y.reshape(-1) != -100
    got = F.distillation_loss(s, t, ml.tensor(y), T=T, alpha=1.0).item()
    assert got == pytest.approx(T * T * kl_rows[valid].mean(), rel=1e-14)
    # alpha = 1 needs no targets (every position counts)
    assert F.distillation_loss(s, t, None, T=T, alpha=1.0).item() == pytest.approx(
        T * T * kl_rows.mean(), rel=1e-14)


@pytest.mark.parametrize("T,alpha", [(2.0, 0.5), (1.0, 1.0), (3.0, 0.2)])
def test_gradcheck_wrt_student_logits(T, alpha):
    zs, zt, y = _data(2)
    s = ml.tensor(zs, requires_grad=True)
    t, yt = ml.tensor(zt), ml.tensor(y)
    assert ml.gradcheck(lambda s: F.distillation_loss(s, t, yt, T=T, alpha=alpha), [s])


def test_soft_gradient_is_t_times_q_minus_p_and_the_teacher_gets_none():
    zs, zt, _ = _data(3, shape=(4, 6))
    T = 2.5
    s = ml.tensor(zs, requires_grad=True)
    t = ml.tensor(zt, requires_grad=True)
    F.distillation_loss(s, t, None, T=T, alpha=1.0).backward()
    want = T * (_softmax(zs / T) - _softmax(zt / T)) / 4  # T^2 * (q - p) / T, mean of 4 rows
    np.testing.assert_allclose(s.grad.data, want, rtol=1e-10, atol=1e-14)
    assert t.grad is None  # teacher logits are constants


def test_bad_arguments_are_refused_by_name():
    zs, zt, y = _data()
    s, t, yt = ml.tensor(zs), ml.tensor(zt), ml.tensor(y)
    for kw, name in (({"T": 0}, "T"), ({"T": float("inf")}, "T"), ({"alpha": 1.5}, "alpha"),
                     ({"alpha": -0.1}, "alpha")):
        with pytest.raises(ValueError, match=name):
            F.distillation_loss(s, t, yt, **kw)
    with pytest.raises(ValueError, match="targets"):
        F.distillation_loss(s, t, None, alpha=0.5)
    with pytest.raises(ValueError, match="shape"):
        F.distillation_loss(s, ml.tensor(zt[:, :2]), yt)


def test_hidden_state_mse_with_and_without_projection():
    rng = np.random.default_rng(4)
    hs, ht = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    got = F.hidden_state_mse(ml.tensor(hs), ml.tensor(ht)).item()
    assert got == pytest.approx(((hs - ht) ** 2).mean(), rel=1e-12)
    proj = Linear(4, 6, dtype=np.float64)
    h = ml.tensor(hs, requires_grad=True)
    t6 = ml.tensor(rng.normal(size=(2, 3, 6)))
    loss = F.hidden_state_mse(h, t6, proj=proj)
    loss.backward()
    assert h.grad is not None and proj.weight.grad is not None
    with pytest.raises(ValueError, match="proj"):
        F.hidden_state_mse(ml.tensor(hs), t6)


TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog met. " * 20


def test_a_distilled_student_gets_closer_to_the_teacher():
    tok = CharTokenizer.train(TEXT)
    ids = np.asarray(tok.encode(TEXT), dtype=np.int64)
    rng = np.random.default_rng(0)
    ml.manual_seed(0)
    teacher = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layers=2,
                            n_heads=2, d_model=32))
    opt = optim.AdamW(teacher.parameters(), lr=1e-2)
    for _ in range(40):
        x, y = random_windows(ids, 8, 16, rng)
        _, loss = teacher(ml.tensor(x), ml.tensor(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
    student = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layers=1,
                            n_heads=2, d_model=16))
    eval_batches = [random_windows(ids, 8, 16, np.random.default_rng(99))]
    before = teacher_kl(teacher, student, eval_batches)
    train = (random_windows(ids, 8, 16, rng) for _ in range(30))
    s_opt = optim.AdamW(student.parameters(), lr=1e-2)
    losses = distill(teacher, student, train, s_opt, steps=30, T=2.0, alpha=0.5)
    after = teacher_kl(teacher, student, eval_batches)
    assert len(losses) == 30 and losses[-1] < losses[0]
    assert after < 0.7 * before
    assert teacher.training and student.training  # modes restored


def test_example_runs_in_reduced_form():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "examples" / "distill.py"), "--steps", "2",
                          "--eval-batches", "1"],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "distilled" in out.stdout and "hard labels only" in out.stdout
