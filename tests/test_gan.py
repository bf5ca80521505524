"""minilm.train.gan: the loss gradients (by hand and gradcheck), no gradient leaking
between G's and D's steps, the coverage metric, and a short seeded run."""

from __future__ import annotations

import numpy as np

import minilm as ml
from minilm.tensor import Tensor
from minilm.train import gan


def _sigmoid(s):
    return 1 / (1 + np.exp(-s))


def _identity(x):
    return x


def test_non_saturating_generator_gradient_by_hand():
    s0 = np.array([[-4.0], [-1.0], [0.5], [3.0]])
    s = Tensor(s0.copy(), requires_grad=True)
    loss = gan.generator_loss(_identity, s)
    loss.backward()
    assert np.isclose(loss.item(), np.mean(-np.log(_sigmoid(s0))))
    g = s.grad.numpy()
    np.testing.assert_allclose(g, -(1 - _sigmoid(s0)) / len(s0), rtol=1e-10)
    assert (g < 0).all()  # descent raises every fake's logit: G moves towards "real"
    # the saturating loss pushes the same way but with -sigma(s)/n, tiny when D rejects
    s2 = Tensor(s0.copy(), requires_grad=True)
    gan.saturating_generator_loss(_identity, s2).backward()
    g2 = s2.grad.numpy()
    np.testing.assert_allclose(g2, -_sigmoid(s0) / len(s0), rtol=1e-10)
    assert abs(g[0, 0]) > 50 * abs(g2[0, 0])  # at s = -4 (D confident "fake")


def test_discriminator_gradient_direction_and_gradcheck():
    rng = np.random.default_rng(0)
    real = Tensor(rng.standard_normal((5, 1)), requires_grad=True)
    fake = Tensor(rng.standard_normal((5, 1)), requires_grad=True)
    gan.discriminator_loss(_identity, real, fake).backward()
    r = real.numpy()
    np.testing.assert_allclose(real.grad.numpy(), -(1 - _sigmoid(r)) / 5, rtol=1e-10)
    assert fake.grad is None  # detached: the D loss never reaches G
    # and the full L_D through a fake-side graph, against finite differences
    ml.gradcheck(lambda a, b: gan.discriminator_loss(_identity, a, Tensor(b.numpy())),
                 [Tensor(r, requires_grad=True), Tensor(fake.numpy())])
    ml.gradcheck(lambda a: gan.generator_loss(_identity, a),
                 [Tensor(rng.standard_normal((4, 1)), requires_grad=True)])


def _params(m):
    return [p.numpy().copy() for p in m.parameters()]


def test_steps_do_not_leak_between_the_nets():
    ml.manual_seed(0)
    rng = np.random.default_rng(0)
    G, D = gan.make_generator(2, 16), gan.make_discriminator(2, 16)
    opt_g = ml.optim.Adam(G.parameters(), lr=1e-2)
    opt_d = ml.optim.Adam(D.parameters(), lr=1e-2)
    real = gan.ring_of_gaussians(32, rng=rng)
    g0, d0 = _params(G), _params(D)
    gan.d_step(G, D, opt_d, real, rng)
    assert all(p.grad is None for p in G.parameters())
    assert all(np.array_equal(a, b) for a, b in zip(g0, _params(G)))
    d1 = _params(D)
    assert not all(np.array_equal(a, b) for a, b in zip(d0, d1))
    gan.g_step(G, D, opt_g, 32, rng)
    assert all(np.array_equal(a, b) for a, b in zip(d1, _params(D)))
    assert all(p.grad is None for p in D.parameters())  # nothing left for the next D step
    assert not all(np.array_equal(a, b) for a, b in zip(g0, _params(G)))


def test_mode_coverage_counts():
    c = gan.ring_centres(8, 2.0)
    rng = np.random.default_rng(0)
    all_modes = gan.ring_of_gaussians(800, std=0.1, rng=rng)
    cov = gan.mode_coverage(all_modes, c, 0.1)
    assert cov["covered"] == 8 and cov["quality"] > 0.98
    collapsed = c[3] + 0.1 * rng.standard_normal((800, 2))
    cov = gan.mode_coverage(collapsed, c, 0.1)
    assert cov["covered"] == 1 and cov["counts"][3] > 780 and cov["quality"] > 0.98
    assert gan.mode_coverage(np.zeros((10, 2)), c, 0.1)["covered"] == 0


def test_short_run_covers_modes():
    rng = np.random.default_rng(0)
    ml.manual_seed(0)
    untrained = gan.mode_coverage(gan.sample(gan.make_generator(2, 64), 1000, 2, rng),
                                  gan.ring_centres(), 0.1)["covered"]
    _, _, h = gan.train_gan(epochs=4, steps_per_epoch=100, batch_size=64, lr_g=5e-3,
                            lr_d=5e-3, seed=0)
    assert len(h.loss_d) == 4 and np.isfinite(h.loss_d + h.loss_g).all()
    assert h.covered[-1] >= 4 or h.covered[-1] > untrained
