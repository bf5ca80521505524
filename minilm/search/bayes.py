"""Bayesian optimisation: a Gaussian-process surrogate of the loss on the
``[0, 1]^d``-encoded points and the expected-improvement acquisition.

Kernels, with ``r^2 = sum_j ((x_j - x'_j) / l_j)^2`` (one length scale per dimension)::

    RBF:          k(x, x') = s^2 exp(-r^2 / 2)
    Matérn-5/2:   k(x, x') = s^2 (1 + sqrt(5) r + 5 r^2 / 3) exp(-sqrt(5) r)

The GP models standardised losses ``y = (loss - mean) / std`` with
``K = k(X, X) + noise I``; the posterior at ``x*`` is::

    mu(x*)      = k*^T K^-1 y
    sigma^2(x*) = k(x*, x*) - k*^T K^-1 k*

The hyperparameters (log length scales, log s^2, log noise) maximise the log marginal
likelihood, computed through the Cholesky factor ``K = L L^T``::

    log p(y | X) = -1/2 y^T K^-1 y - 1/2 log|K| - n/2 log 2 pi
                 = -1/2 |L^-1 y|^2 - sum_i log L_ii - n/2 log 2 pi

The optimiser (no gradients needed): ``restarts`` random starts (log-uniform length
scales in [0.05, 2], s^2 in [0.3, 3], noise in [1e-6, 1e-1]) plus the start (l = 0.3,
s^2 = 1, noise = 1e-4); the best start is refined by coordinate search in log space:
each coordinate is moved by +-step while that raises the likelihood, and the step is
halved (from 1.0 down to 1/32) when no move helps.

Expected improvement over the best loss so far f* (minimisation), with margin xi::

    z     = (f* - mu - xi) / sigma
    EI(x) = (f* - mu - xi) Phi(z) + sigma phi(z)          (sigma > 0)
    EI(x) = max(f* - mu - xi, 0)                          (sigma = 0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .space import Space
from .strategies import Strategy, _loss_key

__all__ = ["BayesianOptimization", "GaussianProcess", "expected_improvement", "kernel",
           "log_marginal_likelihood", "normal_cdf", "normal_pdf"]

_LOG_2PI = math.log(2.0 * math.pi)
_erf = np.vectorize(math.erf, otypes=[float])


def normal_cdf(z: Any) -> np.ndarray:
    """Phi(z) = (1 + erf(z / sqrt 2)) / 2."""
    return 0.5 * (1.0 + _erf(np.asarray(z, dtype=float) / math.sqrt(2.0)))


def normal_pdf(z: Any) -> np.ndarray:
    """phi(z) = exp(-z^2 / 2) / sqrt(2 pi)."""
    z = np.asarray(z, dtype=float)
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def kernel(X1: Any, X2: Any, length_scale: Any = 1.0, variance: float = 1.0,
           kind: str = "matern52") -> np.ndarray:
    """The kernel matrix ``k(X1[i], X2[j])`` (``kind``: ``rbf`` or ``matern52``)."""
    X1, X2 = np.atleast_2d(np.asarray(X1, float)), np.atleast_2d(np.asarray(X2, float))
    ls = np.broadcast_to(np.asarray(length_scale, float), (X1.shape[1],))
    A, B = X1 / ls, X2 / ls
    r2 = np.maximum((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T, 0.0)
    if kind == "rbf":
        return variance * np.exp(-0.5 * r2)
    if kind == "matern52":
        r = np.sqrt(r2)
        return variance * (1.0 + math.sqrt(5.0) * r + 5.0 / 3.0 * r2) * np.exp(-math.sqrt(5.0) * r)
    raise ValueError(f"kernel: kind must be 'rbf' or 'matern52', got {kind!r}")


def log_marginal_likelihood(K: Any, y: Any) -> float:
    """log p(y | X) = -1/2 y^T K^-1 y - 1/2 log|K| - n/2 log 2 pi, via Cholesky
    (-inf if K is not positive definite)."""
    y = np.asarray(y, float).reshape(-1)
    try:
        L = np.linalg.cholesky(np.asarray(K, float))
    except np.linalg.LinAlgError:
        return -math.inf
    a = np.linalg.solve(L, y)
    return float(-0.5 * a @ a - np.log(np.diag(L)).sum() - 0.5 * y.size * _LOG_2PI)


class GaussianProcess:
    """A GP regressor on ``[0, 1]^d`` (see the module docstring). ``fit(X, y)`` fits the
    hyperparameters (unless ``optimize=False``: then ``length_scale``, ``variance`` and
    ``noise`` are used as given) and ``predict(X)`` gives the posterior (mean, std) in
    the units of ``y``."""

    def __init__(self, kind: str = "matern52", length_scale: Any = 0.3, variance: float = 1.0,
                 noise: float = 1e-4, optimize: bool = True, restarts: int = 8,
                 normalize: bool = True, seed: int = 0) -> None:
        if kind not in ("rbf", "matern52"):
            raise ValueError(f"GaussianProcess: kind must be 'rbf' or 'matern52', got {kind!r}")
        self.kind, self.optimize, self.restarts, self.normalize = kind, optimize, restarts, normalize
        self.length_scale, self.variance, self.noise = length_scale, float(variance), float(noise)
        self.rng = np.random.default_rng(seed)

    def _lml(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
        d = X.shape[1]
        ls, var, noise = np.exp(theta[:d]), math.exp(theta[d]), math.exp(theta[d + 1])
        K = kernel(X, X, ls, var, self.kind) + (noise + 1e-10) * np.eye(len(X))
        return log_marginal_likelihood(K, y)

    def _fit_hyperparameters(self, X: np.ndarray, y: np.ndarray) -> None:
        d = X.shape[1]
        lo = np.array([math.log(0.05)] * d + [math.log(0.3), math.log(1e-6)])
        hi = np.array([math.log(2.0)] * d + [math.log(3.0), math.log(1e-1)])
        starts = [np.array([math.log(0.3)] * d + [0.0, math.log(1e-4)])]
        starts += [lo + self.rng.random(d + 2) * (hi - lo) for _ in range(self.restarts)]
        scored = [(self._lml(t, X, y), i) for i, t in enumerate(starts)]
        best_f, i = max(scored)
        theta = starts[i].copy()
        lo_b, hi_b = lo - 2.0, hi + 1.0  # the search may leave the start box a little
        step = 1.0
        while step >= 1.0 / 32:
            moved = False
            for j in range(d + 2):
                for sign in (1.0, -1.0):
                    t = theta.copy()
                    t[j] = np.clip(t[j] + sign * step, lo_b[j], hi_b[j])
                    f = self._lml(t, X, y)
                    if f > best_f + 1e-12:
                        theta, best_f, moved = t, f, True
                        break
            if not moved:
                step /= 2
        self.length_scale = np.exp(theta[:d])
        self.variance, self.noise = math.exp(theta[d]), math.exp(theta[d + 1])
        self.log_likelihood = best_f

    def fit(self, X: Any, y: Any) -> GaussianProcess:
        X = np.atleast_2d(np.asarray(X, float))
        y = np.asarray(y, float).reshape(-1)
        if len(X) != len(y) or len(y) == 0:
            raise ValueError(f"GaussianProcess.fit: X has {len(X)} rows and y {len(y)} values; "
                             "need the same number, at least one")
        if not np.all(np.isfinite(y)):
            raise ValueError("GaussianProcess.fit: y holds NaN or inf")
        self.y_mean = float(y.mean()) if self.normalize else 0.0
        self.y_std = float(y.std()) if self.normalize and y.std() > 0 else 1.0
        ys = (y - self.y_mean) / self.y_std
        if self.optimize and len(y) >= 2:
            self._fit_hyperparameters(X, ys)
        K = kernel(X, X, self.length_scale, self.variance, self.kind) \
            + (self.noise + 1e-10) * np.eye(len(X))
        self.X, self.L = X, np.linalg.cholesky(K)
        self.alpha = np.linalg.solve(self.L.T, np.linalg.solve(self.L, ys))
        return self

    def predict(self, Xs: Any) -> tuple[np.ndarray, np.ndarray]:
        """(mean, standard deviation) of the posterior of the latent loss at ``Xs``."""
        Xs = np.atleast_2d(np.asarray(Xs, float))
        Ks = kernel(self.X, Xs, self.length_scale, self.variance, self.kind)
        mu = Ks.T @ self.alpha
        v = np.linalg.solve(self.L, Ks)
        var = np.maximum(self.variance - (v * v).sum(0), 0.0)
        return mu * self.y_std + self.y_mean, np.sqrt(var) * self.y_std


def expected_improvement(mu: Any, sigma: Any, best: float, xi: float = 0.0) -> np.ndarray:
    """EI(x) = (f* - mu - xi) Phi(z) + sigma phi(z), z = (f* - mu - xi) / sigma, for
    minimisation; where sigma = 0 it is max(f* - mu - xi, 0)."""
    mu, sigma = np.asarray(mu, float), np.asarray(sigma, float)
    imp = best - mu - xi
    safe = np.where(sigma > 0, sigma, 1.0)
    z = imp / safe
    ei = imp * normal_cdf(z) + safe * normal_pdf(z)
    return np.where(sigma > 0, np.maximum(ei, 0.0), np.maximum(imp, 0.0))


class BayesianOptimization(Strategy):
    """GP-based Bayesian optimisation (Snoek et al. 2012): the first ``n_initial`` trials
    are random; after that each trial maximises expected improvement over ``candidates``
    points (uniform in [0, 1]^d, plus a quarter of them drawn around the best point with
    standard deviation 0.1), under a GP (``kernel``: ``matern52`` or ``rbf``) fitted to
    every result told so far. A failed trial counts as the worst loss seen, so the
    search moves away from it. Trials asked while others run see only the results told."""

    def __init__(self, space: Space, n_trials: int, seed: int = 0, budget: Any = None,
                 n_initial: int | None = None, kernel: str = "matern52", xi: float = 0.01,
                 candidates: int = 2000) -> None:
        super().__init__(space)
        if n_trials < 1:
            raise ValueError(f"BayesianOptimization: n_trials must be >= 1, got {n_trials}")
        self.n_trials, self.budget, self.xi, self.candidates = int(n_trials), budget, xi, candidates
        self.n_initial = n_initial if n_initial is not None else min(max(3, len(space) + 1),
                                                                     n_trials)
        self.rng = np.random.default_rng(seed)
        self.gp = GaussianProcess(kind=kernel, seed=seed)

    def ask(self) -> dict | None:
        if self.next_id >= self.n_trials:
            return None
        done = [self.told[i] for i in sorted(self.told)]  # trial order, not arrival order
        ok = [r for r in done if math.isfinite(_loss_key(r))]
        if self.next_id < self.n_initial or len(ok) < 2:
            return self._spec(self.space.sample(self.rng), self.budget)
        worst = max(_loss_key(r) for r in ok)
        X = np.array([self.space.encode(r["params"]) for r in done])
        y = np.array([min(_loss_key(r), worst) for r in done])
        self.gp.fit(X, y)
        d = len(self.space)
        best_u = self.space.encode(min(ok, key=_loss_key)["params"])
        n_local = self.candidates // 4
        C = np.vstack([self.rng.random((self.candidates - n_local, d)),
                       np.clip(best_u + 0.1 * self.rng.standard_normal((n_local, d)), 0, 1)])
        mu, sigma = self.gp.predict(C)
        ei = expected_improvement(mu, sigma, float(y.min()), self.xi * self.gp.y_std)
        return self._spec(self.space.decode(C[int(np.argmax(ei))]), self.budget)

    @property
    def finished(self) -> bool:
        return self.next_id >= self.n_trials and not self.pending
