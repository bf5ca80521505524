"""Ensembles of classifiers, on their predicted probabilities.

M base models give, for n examples and C classes, probability arrays P_m (n, C).
Three ways to combine them:

Weighted averaging (soft voting)::

    p_i = sum_m w_m P_m[i],   w_m >= 0,  sum_m w_m = 1,   y_hat_i = argmax_c p_i[c]

The weights are fitted on held-out predictions (never on the data the base models
were trained on). :func:`fit_simplex_weights` minimises the log loss over the simplex,
parameterising w = softmax(a) so that every step stays on it::

    L(w)     = -1/n sum_i log( sum_m w_m P_m[i, y_i] )
    dL/dw_m  = -1/n sum_i P_m[i, y_i] / p_i[y_i]
    dL/da_m  = w_m (dL/dw_m - sum_k w_k dL/dw_k)          (softmax Jacobian)

L is convex in w (minus the log of a linear function), so gradient descent on a finds
the best mixture. :func:`accuracy_weights` is the simple alternative,
w_m = acc_m / sum_k acc_k.

Majority (hard) voting::

    votes_i[c] = sum_m v_m [argmax P_m[i] == c],   y_hat_i = argmax_c votes_i[c]

Tie-breaking rule: among the classes with the most votes, the one with the highest
mean probability sum_m P_m[i, c] / M wins; if that ties too (or only labels were
given), the lowest class index wins.

Stacking: a meta-learner learns how to combine the base models. Its features are the
base models' log-probabilities, z_i = [log P_1[i], ..., log P_M[i]] (M C values),
and it is a multinomial logistic regression::

    s_i = W z_i + b,   q_i = softmax(s_i),
    L = -1/n sum_i log q_i[y_i] + lambda/2 ||W||^2         (full batch, Adam)

Its training features must be out-of-fold: each example's P_m from a base model
that did not see it (:func:`out_of_fold_probs`, or a held-out split). Trained on
in-sample probabilities it would learn to trust the most overfitted model. With
log-probability features, W = [I, I, ...] gives sum_m log P_m, the product of experts,
so stacking can combine models that are each right about a different part of the
label (see tests/test_ensembles.py), which averaging a few models does less well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..backends import manual_seed
from ..data import kfold_splits
from ..nn.module import model_backend
from ..tensor import Tensor

__all__ = [
    "StackingClassifier", "accuracy_weights", "average_probs", "fit_simplex_weights",
    "log_loss", "majority_vote", "out_of_fold_probs",
]

EPS = 1e-12


def _stack(probs: Sequence[Any]) -> np.ndarray:
    P = np.stack([np.asarray(p, dtype=np.float64) for p in probs])  # (M, n, C)
    if P.ndim != 3:
        raise ValueError(f"ensembles: each probability array must be (n, C), got {P.shape[1:]}")
    return P


def log_loss(p: np.ndarray, y: Any) -> float:
    """-1/n sum_i log p[i, y_i] (probabilities clipped at 1e-12)."""
    y = np.asarray(y, dtype=np.int64)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], EPS, None)).mean())


def average_probs(probs: Sequence[Any], weights: Any = None) -> np.ndarray:
    """sum_m w_m P_m with the weights normalised to sum 1 (None: equal weights)."""
    P = _stack(probs)
    w = np.ones(len(P)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(P),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"average_probs: need {len(P)} weights >= 0 with a positive sum, got {w}")
    return np.tensordot(w / w.sum(), P, axes=1)


def accuracy_weights(probs: Sequence[Any], y: Any) -> np.ndarray:
    """w_m = acc_m / sum_k acc_k, accuracies measured on held-out (probs, y)."""
    P = _stack(probs)
    acc = (P.argmax(2) == np.asarray(y)[None, :]).mean(1)
    return acc / acc.sum() if acc.sum() > 0 else np.full(len(P), 1 / len(P))


def fit_simplex_weights(probs: Sequence[Any], y: Any, steps: int = 2000, lr: float = 2.0
                        ) -> np.ndarray:
    """The weights on the simplex minimising the log loss of the averaged held-out
    probabilities (gradient descent on w = softmax(a), from equal weights; module
    docstring for the gradient)."""
    P = _stack(probs)
    y = np.asarray(y, dtype=np.int64)
    Py = P[:, np.arange(len(y)), y]  # (M, n): P_m[i, y_i]
    a = np.zeros(len(P))
    for _ in range(steps):
        w = np.exp(a - a.max())
        w /= w.sum()
        p_y = np.clip(w @ Py, EPS, None)
        g_w = -(Py / p_y).mean(1)
        a -= lr * w * (g_w - w @ g_w)
    w = np.exp(a - a.max())
    return w / w.sum()


def majority_vote(predictions: Sequence[Any], n_classes: int | None = None,
                  weights: Any = None) -> np.ndarray:
    """Hard voting over the models' argmax labels (optionally weighted by ``weights``).
    ``predictions``: probability arrays (n, C) or label arrays (n,) (then give
    ``n_classes``). Ties: highest mean probability, then lowest class index."""
    arrs = [np.asarray(p) for p in predictions]
    if arrs[0].ndim == 2:
        P = _stack(arrs)
        labels, C, mean_p = P.argmax(2), P.shape[2], P.mean(0)
    else:
        labels = np.stack([a.astype(np.int64) for a in arrs])
        C = int(n_classes) if n_classes is not None else int(labels.max()) + 1
        mean_p = None
    M, n = labels.shape
    v = np.ones(M) if weights is None else np.asarray(weights, dtype=np.float64)
    votes = np.zeros((n, C))
    for m in range(M):
        np.add.at(votes, (np.arange(n), labels[m]), v[m])
    top = votes == votes.max(1, keepdims=True)
    if mean_p is None:
        return top.argmax(1)  # first True: the lowest index among the tied classes
    score = np.where(top, mean_p, -np.inf)
    return score.argmax(1)  # argmax returns the first maximum: lowest index on a tie


def out_of_fold_probs(fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
                      y: Any, k: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities (n, C): for each of ``k`` stratified folds,
    ``fit_predict(train_idx, held_idx)`` trains a fresh base model on ``train_idx`` and
    returns its probabilities on ``held_idx``; every row comes from a model that did
    not see it."""
    y = np.asarray(y)
    out: np.ndarray | None = None
    for train_idx, held_idx in kfold_splits(y, k=k, seed=seed):
        p = np.asarray(fit_predict(train_idx, held_idx), dtype=np.float64)
        if out is None:
            out = np.zeros((len(y), p.shape[1]))
        out[held_idx] = p
    assert out is not None
    return out


class StackingClassifier:
    """A multinomial logistic-regression meta-learner on the base models' held-out
    log-probabilities (module docstring). ``fit(probs, y)`` then
    ``predict_proba(probs)`` with the same base models in the same order."""

    def __init__(self, l2: float = 1e-3, steps: int = 300, lr: float = 0.05, seed: int = 0) -> None:
        self.l2, self.steps, self.lr, self.seed = float(l2), int(steps), float(lr), int(seed)
        self.model: nn.Linear | None = None

    @staticmethod
    def features(probs: Sequence[Any]) -> np.ndarray:
        """z_i = [log P_1[i], ..., log P_M[i]], shape (n, M C), float32."""
        P = _stack(probs)
        return np.concatenate(list(np.log(np.clip(P, EPS, None))), axis=1).astype(np.float32)

    def fit(self, probs: Sequence[Any], y: Any) -> StackingClassifier:
        feats = self.features(probs)
        C = _stack(probs).shape[2]
        manual_seed(self.seed)
        self.model = m = nn.Linear(feats.shape[1], C)  # on the current backend
        be = model_backend(m)  # the features and labels go where the model is
        z = Tensor(feats, backend=be)
        y_t = Tensor(np.asarray(y, dtype=np.int64), backend=be)
        opt = optim.Adam(m.parameters(), lr=self.lr)
        for _ in range(self.steps):
            loss = F.cross_entropy(m(z), y_t) + (self.l2 / 2) * (m.weight * m.weight).sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
        return self

    def predict_proba(self, probs: Sequence[Any]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("StackingClassifier: call fit first")
        z = Tensor(self.features(probs), backend=model_backend(self.model))
        s = self.model(z).numpy().astype(np.float64)
        e = np.exp(s - s.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def predict(self, probs: Sequence[Any]) -> np.ndarray:
        return self.predict_proba(probs).argmax(1)
