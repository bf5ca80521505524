"""L1 / L2 penalties (exact values, gradcheck, the weight-decay relation), DropConnect
(expectation, eval identity, gradient), the L1 proximal step, and what plain L1
subgradient descent does to a small logistic regression."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import check_op, on_backend, shapes, tensors

import minilm
import minilm.functional as F
import minilm.nn as nn
from minilm import optim

pytestmark = pytest.mark.usefixtures("backend")



@given(st.data(), st.floats(0.0, 2.0))
def test_l1_penalty_value_and_gradcheck(data, lam):
    ws = [data.draw(tensors(shapes(0, 3, max_size=12)).filter(
        lambda t: (np.abs(t.numpy()) > 1e-3).all())) for _ in range(data.draw(st.integers(1, 3)))]
    check_op(lambda *a: F.l1_penalty(a, lam), ws,
             lambda *a: lam * sum(np.abs(w).sum() for w in a))


@given(st.data(), st.floats(0.0, 2.0))
def test_l2_penalty_value_and_gradcheck(data, lam):
    ws = [data.draw(tensors(shapes(0, 3, max_size=12))) for _ in range(data.draw(st.integers(1, 3)))]
    check_op(lambda *a: F.l2_penalty(a, lam), ws,
             lambda *a: lam * sum((w * w).sum() for w in a))


def test_exact_values_and_gradients():
    w = on_backend(np.array([[1.0, -2.0], [0.0, 3.0]]), requires_grad=True)
    b = on_backend(np.array([-0.5]), requires_grad=True)
    assert F.l1_penalty([w, b], 0.1).item() == pytest.approx(0.1 * 6.5, abs=1e-15)
    assert F.l2_penalty([w, b], 0.1).item() == pytest.approx(0.1 * 14.25, abs=1e-15)
    F.l1_penalty(w, 0.1).backward()  # a single tensor is accepted too
    np.testing.assert_array_equal(w.grad.numpy(), 0.1 * np.array([[1, -1], [0, 1]]))
    w.grad = None
    F.l2_penalty([w, b], 0.1).backward()
    np.testing.assert_allclose(w.grad.numpy(), 0.2 * w.numpy())  # 2 lam w: no 1/2
    np.testing.assert_allclose(b.grad.numpy(), 0.2 * b.numpy())
    assert F.l2_penalty(on_backend(np.ones(3, np.float32)), 1.0).dtype == np.float32


def test_sgd_on_l2_penalty_is_weight_decay_2lam():
    rng = np.random.default_rng(0)
    w0, g = rng.standard_normal(5), rng.standard_normal(5)
    lam, lr = 0.3, 0.1
    a = nn.Parameter(on_backend(w0.copy()))
    loss = (a * on_backend(g)).sum() + F.l2_penalty([a], lam)
    loss.backward()
    optim.SGD([a], lr=lr).step()
    b = nn.Parameter(on_backend(w0.copy()))
    (b * on_backend(g)).sum().backward()
    optim.SGD([b], lr=lr, weight_decay=2 * lam).step()
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-14)


def test_penalty_bad_input():
    with pytest.raises(ValueError, match="l1_penalty: lam must be a number >= 0"):
        F.l1_penalty([on_backend(np.ones(2))], -1.0)
    with pytest.raises(ValueError, match="no parameters"):
        F.l2_penalty([], 0.1)
    with pytest.raises(TypeError, match=r"params\[1\] is a ndarray"):
        F.l2_penalty([on_backend(np.ones(2)), np.ones(2)], 0.1)


# ---------------------------------------------------------------------------- DropConnect


def test_drop_connect_expectation_and_eval():
    w = on_backend(np.random.default_rng(0).uniform(0.5, 1.5, (8, 8)))
    p = 0.3
    draws = np.stack([F.drop_connect(w, p, True).numpy() for _ in range(2000)])
    kept = draws != 0
    assert abs(kept.mean() - (1 - p)) < 0.01
    np.testing.assert_allclose(draws[kept], np.broadcast_to(w.numpy() / (1 - p),
                                                            draws.shape)[kept])
    np.testing.assert_allclose(draws.mean(0), w.numpy(), rtol=0.1)  # E = w
    assert F.drop_connect(w, p, training=False) is w
    with pytest.raises(ValueError, match="p"):
        F.drop_connect(w, 1.5)


def test_drop_connect_gradient_uses_the_same_mask():
    w = on_backend(np.ones((4, 5)), requires_grad=True)
    y = F.drop_connect(w, 0.5)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), y.numpy())  # 2 where kept, else 0


def test_drop_connect_linear():
    minilm.manual_seed(0)
    m = nn.DropConnectLinear(6, 3, p=0.4).double()
    x = on_backend(np.random.default_rng(1).standard_normal((10, 6)))
    m.eval()
    np.testing.assert_allclose(m(x).numpy(), x.numpy() @ m.weight.numpy().T + m.bias.numpy())
    m.train()
    y1 = m(x).numpy()
    y2 = m(x).numpy()
    assert not np.allclose(y1, y2)  # a fresh mask per forward
    m(x).sum().backward()
    g = m.weight.grad.numpy()
    assert ((g == 0).mean() > 0.2) and m.bias.grad is not None
    assert "p=0.4" in repr(m)


# ---------------------------------------------------------------------------- L1 and sparsity


def _logreg_data(seed=0):
    """Binary labels that depend on features 0 and 1 only, out of 8."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, 8))
    y = (x[:, 0] - 2 * x[:, 1] + 0.3 * rng.standard_normal(200) > 0).astype(np.int64)
    return on_backend(x), on_backend(y)


def _train_logreg(lam, steps=300, lr=0.1, proximal=False):
    x, y = _logreg_data()
    minilm.manual_seed(0)
    lin = nn.Linear(8, 2).double()
    opt = optim.SGD(lin.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(lin(x), y)
        if lam and not proximal:
            loss = loss + F.l1_penalty([lin.weight], lam)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if lam and proximal:
            F.l1_proximal_([lin.weight], lr * lam)
    return lin.weight.numpy()


def test_l1_subgradient_shrinks_but_proximal_gives_exact_zeros():
    plain = _train_logreg(0.0)
    sub = _train_logreg(0.05)
    prox = _train_logreg(0.05, proximal=True)
    noise = np.abs(plain[:, 2:]).sum()
    # the subgradient penalty shrinks the irrelevant weights (features 2..7) ...
    assert np.abs(sub[:, 2:]).sum() < 0.5 * noise
    # ... but leaves them oscillating around 0, not at 0
    assert (sub[:, 2:] != 0).all()
    # soft thresholding (ISTA) zeroes them exactly and keeps the informative ones
    assert (prox[:, 2:] == 0).mean() > 0.8
    assert (np.abs(prox[:, :2]) > 0.1).all()


def test_l1_proximal_exact():
    w = on_backend(np.array([-1.0, -0.05, 0.0, 0.02, 0.7]))
    F.l1_proximal_(w, 0.1)
    np.testing.assert_allclose(w.numpy(), [-0.9, 0.0, 0.0, 0.0, 0.6])
