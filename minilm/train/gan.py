"""A generative adversarial network (Goodfellow et al. 2014) on 2-D points.

Two networks play a game. The generator G maps noise z ~ N(0, I) to a point
x' = G(z) in R^2. The discriminator D maps a point to a logit s = D(x); its
probability "x is real" is sigma(s). One training step alternates::

    z ~ N(0, I),  x ~ data
    D step:  L_D = BCE(D(x), 1) + BCE(D(G(z)), 0)
                 = -log sigma(D(x)) - log(1 - sigma(D(G(z))))      (G(z) detached)
    G step:  L_G = BCE(D(G(z)), 1) = -log sigma(D(G(z)))            (non-saturating)

Each step updates only its own network. The D step computes G(z) without a graph,
so no gradient reaches G. The G step backpropagates through D to reach G; D's
parameters receive gradients there too, but only G's optimizer steps, and both
nets' gradients are zeroed afterwards, so nothing leaks into D's next step.

Why the non-saturating loss. The minimax game has G minimise log(1 - D(G(z))).
Early in training D rejects fakes easily: p = sigma(s) ~ 0. With s the logit::

    d/ds log(1 - sigma(s)) = -sigma(s)        -> 0 when p -> 0   (saturates)
    d/ds -log sigma(s)     = -(1 - sigma(s))  -> -1 when p -> 0  (strong)

Both losses push s up (the same fixed point), but -log D(G(z)) gives G a gradient
of size ~1 exactly when G is worst, where log(1 - D(G(z))) gives almost none.

Mode collapse. G can fool D by putting all its mass on one or a few modes of the
data: each fake looks real, yet the distribution is wrong. D then learns to reject
that mode, G jumps to another, and the pair may cycle without ever covering the
data. :func:`mode_coverage` shows it on a mixture of K Gaussians (centres mu_k,
std sigma): a generated point belongs to mode k if it lies within 3 sigma of mu_k;
mode k is covered if at least ``min_fraction`` (default a quarter of the uniform
share, 0.25 / K) of the samples belong to it::

    n_k      = #{ i : ||x'_i - mu_k|| <= 3 sigma }
    covered  = #{ k : n_k / n >= min_fraction }
    quality  = sum_k n_k / n            (fraction of samples near some mode)

A collapsed G has high quality but covers few modes; an untrained G covers none
(its samples sit near the origin, off the ring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..autograd import no_grad
from ..backends import to_host
from ..nn.module import model_backend
from ..tensor import Tensor

__all__ = [
    "GANHistory", "d_step", "discriminator_loss", "g_step", "gan_step", "generator_loss",
    "make_discriminator", "make_generator", "mode_coverage", "ring_centres", "ring_of_gaussians", "sample",
    "saturating_generator_loss", "train_gan",
]


# ---------------------------------------------------------------------------- data


def ring_centres(k: int = 8, radius: float = 2.0) -> np.ndarray:
    """The K centres mu_k = radius (cos 2 pi k / K, sin 2 pi k / K), shape (K, 2)."""
    a = 2 * np.pi * np.arange(k) / k
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def ring_of_gaussians(n: int, k: int = 8, radius: float = 2.0, std: float = 0.1,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """n points from the equal-weight mixture of K Gaussians N(mu_k, std^2 I) on a
    ring (float32, shape (n, 2))."""
    rng = rng if rng is not None else np.random.default_rng()
    c = ring_centres(k, radius)
    idx = rng.integers(0, k, size=n)
    return (c[idx] + std * rng.standard_normal((n, 2))).astype(np.float32)


# ---------------------------------------------------------------------------- nets


def _mlp(sizes: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def make_generator(z_dim: int = 2, hidden: int = 64, depth: int = 2, out_dim: int = 2
                   ) -> nn.Module:
    """G: an MLP z (z_dim) -> [Linear, ReLU] x depth -> Linear -> a point (out_dim)."""
    return _mlp([z_dim] + [hidden] * depth + [out_dim])


def make_discriminator(in_dim: int = 2, hidden: int = 64, depth: int = 2) -> nn.Module:
    """D: an MLP x (in_dim) -> [Linear, ReLU] x depth -> Linear -> one logit."""
    return _mlp([in_dim] + [hidden] * depth + [1])


def sample(G: nn.Module, n: int, z_dim: int, rng: np.random.Generator) -> np.ndarray:
    """n generated points G(z), z ~ N(0, I), as a NumPy array (no graph)."""
    z = Tensor(rng.standard_normal((n, z_dim)).astype(np.float32), backend=model_backend(G))
    with no_grad():
        return G(z).numpy()


# ---------------------------------------------------------------------------- losses


def discriminator_loss(D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """L_D = BCE(D(x), 1) + BCE(D(x'), 0), each a mean over its batch; ``fake`` is
    detached so that no gradient reaches the generator."""
    s_real = D(real)
    s_fake = D(fake.detach())
    xp = s_real.backend.xp  # the targets on the scores' device
    ones = Tensor(xp.ones(s_real.shape, dtype=np.float32))
    zeros = Tensor(xp.zeros(s_fake.shape, dtype=np.float32))
    return (F.binary_cross_entropy_with_logits(s_real, ones)
            + F.binary_cross_entropy_with_logits(s_fake, zeros))


def generator_loss(D: nn.Module, fake: Tensor) -> Tensor:
    """The non-saturating L_G = BCE(D(G(z)), 1) = mean -log sigma(D(G(z)));
    d L / d s = -(1 - sigma(s)) / n per sample."""
    s = D(fake)
    return F.binary_cross_entropy_with_logits(s, Tensor(s.backend.xp.ones(s.shape, s.dtype)))


def saturating_generator_loss(D: nn.Module, fake: Tensor) -> Tensor:
    """The minimax L_G = mean log(1 - sigma(D(G(z)))) = -BCE(D(G(z)), 0);
    d L / d s = -sigma(s) / n per sample (vanishes when D rejects the fakes)."""
    s = D(fake)
    return -F.binary_cross_entropy_with_logits(s, Tensor(s.backend.xp.zeros(s.shape, s.dtype)))


# ---------------------------------------------------------------------------- training


def d_step(G: nn.Module, D: nn.Module, opt_d: Any, real: np.ndarray,
           rng: np.random.Generator, z_dim: int = 2) -> float:
    """One discriminator step on L_D; G(z) is computed without a graph, so G's
    parameters get no gradient. Returns L_D."""
    be = model_backend(D)  # host data and noise onto the models' device
    x = Tensor(to_host(real).astype(np.float32), backend=be)
    with no_grad():
        fake = G(Tensor(rng.standard_normal((len(x), z_dim)).astype(np.float32), backend=be))
    loss = discriminator_loss(D, x, fake)
    loss.backward()
    opt_d.step()
    opt_d.zero_grad()
    return float(loss.item())


def g_step(G: nn.Module, D: nn.Module, opt_g: Any, n: int, rng: np.random.Generator,
           z_dim: int = 2) -> float:
    """One generator step on the non-saturating L_G. The backward pass goes through
    D (and fills D's .grad); only ``opt_g`` steps, then D's gradients are cleared so
    that none leaks into the next D step. Returns L_G."""
    z = rng.standard_normal((n, z_dim)).astype(np.float32)
    fake = G(Tensor(z, backend=model_backend(G)))
    loss = generator_loss(D, fake)
    loss.backward()
    opt_g.step()
    opt_g.zero_grad()
    for p in D.parameters():
        p.grad = None
    return float(loss.item())


def gan_step(G: nn.Module, D: nn.Module, opt_g: Any, opt_d: Any, real: np.ndarray,
             rng: np.random.Generator, z_dim: int = 2, d_steps: int = 1) -> tuple[float, float]:
    """One alternation: ``d_steps`` D steps on (real, G(z)) then one G step;
    returns (L_D, L_G). ``opt_d`` holds only D's parameters, ``opt_g`` only G's."""
    loss_d = 0.0
    for _ in range(d_steps):
        loss_d = d_step(G, D, opt_d, real, rng, z_dim)
    return loss_d, g_step(G, D, opt_g, len(real), rng, z_dim)


def mode_coverage(samples: np.ndarray, centres: np.ndarray, std: float,
                  min_fraction: float | None = None, radius_sigmas: float = 3.0) -> dict:
    """Which modes the samples cover (see the module docstring): returns
    ``{"covered": int, "counts": n_k array, "quality": float}``; a mode is covered if
    n_k / n >= min_fraction (default 0.25 / K)."""
    samples = np.asarray(samples, dtype=np.float64)
    k = len(centres)
    min_fraction = 0.25 / k if min_fraction is None else min_fraction
    d = np.linalg.norm(samples[:, None, :] - centres[None, :, :], axis=2)  # (n, K)
    near = d <= radius_sigmas * std
    counts = near.sum(axis=0)
    n = max(len(samples), 1)
    return {"covered": int((counts / n >= min_fraction).sum()), "counts": counts,
            "quality": float(near.any(axis=1).sum() / n)}


@dataclass
class GANHistory:
    """Per epoch: mean D and G losses, modes covered, quality; and the samples drawn
    at the end of each epoch (for plots)."""

    loss_d: list[float] = field(default_factory=list)
    loss_g: list[float] = field(default_factory=list)
    covered: list[int] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)


def train_gan(epochs: int = 20, steps_per_epoch: int = 100, batch_size: int = 128,
              z_dim: int = 2, hidden: int = 64, lr_g: float = 2e-3, lr_d: float = 2e-3,
              k: int = 8, radius: float = 2.0, std: float = 0.1, seed: int = 0,
              n_eval: int = 1000, d_steps: int = 1,
              callback: Callable[[int, GANHistory], None] | None = None
              ) -> tuple[nn.Module, nn.Module, GANHistory]:
    """Train G and D on the ring of K Gaussians with Adam (betas 0.5, 0.999, as in
    DCGAN); after each epoch, ``n_eval`` samples are scored by :func:`mode_coverage`.
    Returns (G, D, history). Seeded: the same seed gives the same run."""
    from ..backends import manual_seed

    manual_seed(seed)
    rng = np.random.default_rng(seed)
    G = make_generator(z_dim, hidden)
    D = make_discriminator(2, hidden)
    opt_g = optim.Adam(G.parameters(), lr=lr_g, betas=(0.5, 0.999))
    opt_d = optim.Adam(D.parameters(), lr=lr_d, betas=(0.5, 0.999))
    centres = ring_centres(k, radius)
    hist = GANHistory()
    for epoch in range(1, epochs + 1):
        ld_sum = lg_sum = 0.0
        for _ in range(steps_per_epoch):
            real = ring_of_gaussians(batch_size, k, radius, std, rng)
            ld, lg = gan_step(G, D, opt_g, opt_d, real, rng, z_dim, d_steps)
            ld_sum += ld
            lg_sum += lg
        xs = sample(G, n_eval, z_dim, rng)
        cov = mode_coverage(xs, centres, std)
        hist.loss_d.append(ld_sum / steps_per_epoch)
        hist.loss_g.append(lg_sum / steps_per_epoch)
        hist.covered.append(cov["covered"])
        hist.quality.append(cov["quality"])
        hist.samples.append(xs)
        if callback is not None:
            callback(epoch, hist)
    return G, D, hist
