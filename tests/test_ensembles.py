"""minilm.train.ensembles: averaging, simplex weights, hard voting (with its tie rule),
out-of-fold predictions and stacking, on hand-made probability arrays."""

from __future__ import annotations

import numpy as np
import pytest

from minilm.train import ensembles as E

P1 = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
P2 = np.array([[0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.1, 0.4]])
P3 = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]])


def test_average_probs_known_values():
    np.testing.assert_allclose(E.average_probs([P1, P2]), (P1 + P2) / 2)
    np.testing.assert_allclose(E.average_probs([P1, P2], [3, 1]), 0.75 * P1 + 0.25 * P2)
    with pytest.raises(ValueError):
        E.average_probs([P1, P2], [-1, 2])


def test_accuracy_weights():
    y = np.array([0, 1, 2])
    w = E.accuracy_weights([P1, P3], y)  # P1 acc 1, P3 acc 2/3 (row 1 says 2)
    np.testing.assert_allclose(w, [1 / (1 + 2 / 3), (2 / 3) / (1 + 2 / 3)])


def test_simplex_weights_pick_the_better_model_and_lower_the_loss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    good = np.full((200, 3), 0.1)
    good[np.arange(200), y] = 0.8
    bad = rng.dirichlet(np.ones(3), 200)
    w = E.fit_simplex_weights([good, bad], y)
    assert np.isclose(w.sum(), 1) and (w >= 0).all() and w[0] > 0.9
    assert E.log_loss(E.average_probs([good, bad], w), y) <= E.log_loss(
        E.average_probs([good, bad]), y)
    # no point of a fine grid on the simplex does better (up to the optimiser's slack)
    fitted = E.log_loss(E.average_probs([good, bad], w), y)
    grid = [E.log_loss(E.average_probs([good, bad], [t, 1 - t]), y) for t in np.linspace(0, 1, 101)]
    assert fitted <= min(grid) + 1e-3


def test_majority_vote_and_tie_rule():
    # row 0: votes 0, 1, 0 -> 0; row 1: 1, 2, 2 -> 2; row 2: 2, 0, 2 -> 2
    np.testing.assert_array_equal(E.majority_vote([P1, P2, P3]), [0, 2, 2])
    # two models, one vote each: the tie goes to the higher mean probability
    a = np.array([[0.6, 0.4, 0.0]])
    b = np.array([[0.1, 0.9, 0.0]])
    assert E.majority_vote([a, b])[0] == 1  # mean p: 0.35 vs 0.65
    # equal mean probability too: the lowest class index
    c = np.array([[0.5, 0.4, 0.1]])
    d = np.array([[0.4, 0.5, 0.1]])
    assert E.majority_vote([c, d])[0] == 0
    # labels only: the lowest index among the tied classes
    assert list(E.majority_vote([np.array([2, 1]), np.array([1, 1])], n_classes=3)) == [1, 1]
    # weighted votes
    assert E.majority_vote([a, b], weights=[2, 1])[0] == 0


def test_out_of_fold_probs_never_uses_the_row():
    y = np.array([0, 1] * 10)

    def fit_predict(train_idx, held_idx):
        assert not set(train_idx) & set(held_idx)
        p = np.zeros((len(held_idx), 2))
        p[:, 0] = held_idx  # remember which row was predicted
        return p

    oof = E.out_of_fold_probs(fit_predict, y, k=5)
    np.testing.assert_array_equal(oof[:, 0], np.arange(20))


def _complementary(n, rng):
    """4 classes; model A knows the pair ({0,1} or {2,3}), model B the parity
    ({0,2} or {1,3}); each alone is right about half the time."""
    y = rng.integers(0, 4, n)
    pa = np.full((n, 4), 0.02)
    pb = np.full((n, 4), 0.02)
    for i, c in enumerate(y):
        pair = [0, 1] if c < 2 else [2, 3]
        par = [0, 2] if c % 2 == 0 else [1, 3]
        pa[i, pair] = 0.48 + rng.uniform(-0.05, 0.05) * np.array([1, -1])
        pb[i, par] = 0.48 + rng.uniform(-0.05, 0.05) * np.array([1, -1])
    noise = rng.dirichlet(np.ones(4), n)  # a third, uninformative model
    return y, [pa, pb, noise]


def test_stacking_beats_the_best_base_model_on_complementary_models():
    rng = np.random.default_rng(0)
    y_tr, p_tr = _complementary(300, rng)
    y_te, p_te = _complementary(300, rng)
    best = max((p.argmax(1) == y_te).mean() for p in p_te)
    assert best < 0.65
    stack = E.StackingClassifier().fit(p_tr, y_tr)
    acc = (stack.predict(p_te) == y_te).mean()
    assert acc > 0.95 > best + 0.3
    q = stack.predict_proba(p_te)
    np.testing.assert_allclose(q.sum(1), 1, rtol=1e-6)
