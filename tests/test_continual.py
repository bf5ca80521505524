"""minilm.train.continual: the EWC penalty and its gradient, the Fisher diagonal on a
tiny model against the formula, reservoir sampling's uniform inclusion, and a short
run where rehearsal or EWC forgets less than naive fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest

import minilm as ml
from minilm import functional as F
from minilm import nn
from minilm.tensor import Tensor
from minilm.train import continual as C


def test_ewc_penalty_and_gradient_equal_the_formula():
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,)]
    theta = [rng.standard_normal(s) for s in shapes]
    star = [rng.standard_normal(s) for s in shapes]
    fisher = [rng.uniform(0, 2, s) for s in shapes]
    lam = 3.5
    params = [Tensor(t.copy(), requires_grad=True) for t in theta]
    pen = C.ewc_penalty(params, fisher, star, lam)
    expect = lam / 2 * sum((f * (t - s) ** 2).sum() for f, t, s in zip(fisher, theta, star))
    assert np.isclose(pen.item(), expect, rtol=1e-12)
    pen.backward()
    for p, f, t, s in zip(params, fisher, theta, star):
        np.testing.assert_allclose(p.grad.numpy(), lam * f * (t - s), rtol=1e-12)
    ml.gradcheck(lambda a, b: C.ewc_penalty([a, b], fisher, star, lam),
                 [Tensor(t.copy(), requires_grad=True) for t in theta])


def test_fisher_diagonal_on_a_tiny_model_equals_the_direct_computation():
    ml.manual_seed(0)
    rng = np.random.default_rng(1)
    lin = nn.Linear(3, 4)
    xs = rng.standard_normal((6, 3)).astype(np.float32)
    ys = rng.integers(0, 4, 6)

    def loss_of(s):
        x, y = s
        return F.cross_entropy(lin(Tensor(x[None])), Tensor(np.array([y])))

    fw, fb = C.fisher_diagonal([lin.weight, lin.bias], loss_of, zip(xs, ys))
    W = lin.weight.numpy().astype(np.float64)
    b = lin.bias.numpy().astype(np.float64)
    gw2 = np.zeros_like(W)
    gb2 = np.zeros_like(b)
    for x, y in zip(xs.astype(np.float64), ys):
        z = W @ x + b
        p = np.exp(z - z.max())
        p /= p.sum()
        d = p - np.eye(4)[y]  # d(-log p_y)/dz
        gw2 += np.outer(d, x) ** 2
        gb2 += d ** 2
    np.testing.assert_allclose(fw, gw2 / 6, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(fb, gb2 / 6, rtol=1e-5, atol=1e-8)
    assert lin.weight.grad is None and lin.bias.grad is None


def test_replay_buffer_fixed_size_and_uniform_inclusion():
    rng = np.random.default_rng(0)
    n, k, trials = 20, 5, 4000
    counts = np.zeros(n)
    for _ in range(trials):
        buf = C.ReplayBuffer(k, rng)
        for i in range(n):
            buf.add(i)
            assert len(buf) == min(i + 1, k)
        assert buf.seen == n and len(set(buf.items)) == k
        counts[buf.items] += 1
    freq = counts / trials
    # each item kept with probability k / n = 0.25 (std ~ 0.007 over 4000 trials)
    np.testing.assert_allclose(freq, k / n, atol=0.03)
    assert len(buf.sample(7)) == 7


def test_short_run_rehearsal_or_ewc_forgets_less_than_naive():
    shards = C.text_shards()
    cfg = C.ContinualConfig(d_model=32, n_layers=1, context=24, steps_a=80, steps_b=60, n_eval=32,
                            fisher_samples=24, replay_capacity=64, seed=2)
    r = C.continual_experiment(shards["docs"], shards["code"], cfg)
    m = r["methods"]
    assert set(m) == {"naive", "rehearsal", "ewc"}
    assert m["naive"]["forgetting"] > 0  # fine-tuning on code raises the loss on the docs
    assert min(m["rehearsal"]["forgetting"], m["ewc"]["forgetting"]) < m["naive"]["forgetting"]
    for v in m.values():
        assert v["loss_b"] < r["loss_b_after_a"]  # every method still learns shard B


def test_bad_methods_and_rehearsal_batches_are_refused_before_training():
    from minilm.train.continual import ContinualConfig, continual_experiment

    with pytest.raises(ValueError, match=r"unknown method\(s\) \['replay'\]; known"):
        continual_experiment("abc " * 100, "def " * 100, methods=("naive", "replay"))
    with pytest.raises(ValueError, match="batch_size must be >= 2, got 1"):
        continual_experiment("abc " * 100, "def " * 100, ContinualConfig(batch_size=1),
                             methods=("rehearsal",))
