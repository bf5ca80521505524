"""Continual learning: a language model trained on a stream of text shards, one after
the other, and how much it forgets the first.

A model trained on shard A and then on shard B drifts towards B and its loss on A
goes back up: catastrophic forgetting. Measured on held-out windows of each shard::

    forgetting = L_A(after B) - L_A(after A)        (> 0: it forgot)
    L_B(after B)                                     (how well it learnt B)

Three ways to train on B (all start from the same model trained on A):

Naive fine-tuning: minimise L_B alone.

Rehearsal (experience replay): keep a fixed-size buffer of shard-A windows and mix
them into every shard-B batch, a fraction ``ratio`` of its rows. The buffer is filled
by reservoir sampling (Vitter's algorithm R), which keeps a uniform sample of a stream
of unknown length in K slots::

    item t (t = 1, 2, ...):  if t <= K: slot t <- item
                             else: j ~ U{1..t}; if j <= K: slot j <- item

Every item seen so far is in the buffer with probability K / t.

EWC (elastic weight consolidation, Kirkpatrick et al. 2017): after training on A,
estimate how much each parameter matters to A by the diagonal of the Fisher
information, then penalise moving the important ones::

    F_i = E_x[ (d log p(x) / d theta_i)^2 ]           at theta* (the weights after A)
    L(theta) = L_B(theta) + lambda/2 sum_i F_i (theta_i - theta*_i)^2
    dL/dtheta_i = dL_B/dtheta_i + lambda F_i (theta_i - theta*_i)

:func:`fisher_diagonal` averages, over N shard-A windows x_j, the squared gradient of
each window's log-likelihood (its mean next-token log-probability): the *empirical*
Fisher, with the data's next tokens as labels (the true Fisher would sample them from
the model). One backward pass per window: squares of per-window gradients, not the
square of a batch's mean gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import nn, optim
from ..backends import manual_seed, to_host
from ..data import CharTokenizer, random_windows
from ..tensor import Tensor
from .trainer import evaluate_loss

__all__ = [
    "ContinualConfig", "ReplayBuffer", "char_vocab", "continual_experiment", "encode",
    "ewc_penalty", "fisher_diagonal", "lm_loss", "mean_loss", "split_windows", "text_shards",
    "train_steps",
]


# ---------------------------------------------------------------------------- data


def text_shards() -> dict[str, str]:
    """Two text sources that ship with Python: ``"docs"``, the reference manual's topics
    (``pydoc_data.topics``, English prose with grammar snippets), and ``"code"``, the
    source of a few pure-Python standard-library modules (code and comments)."""
    import argparse
    import calendar
    import fractions
    import inspect
    import pydoc_data.topics as topics
    import string
    import textwrap

    docs = "\n".join(topics.topics[k] for k in sorted(topics.topics))
    code = "\n".join(inspect.getsource(m) for m in (argparse, calendar, textwrap, string, fractions))
    return {"docs": docs, "code": code}


def char_vocab() -> str:
    """Printable ASCII plus newline (96 characters); id 0 (newline) also stands for any
    other character."""
    return "\n" + "".join(chr(c) for c in range(32, 127))


def encode(text: str, vocab: str | None = None) -> np.ndarray:
    """Character ids of ``text`` (int64); characters outside ``vocab`` map to id 0."""
    tok = CharTokenizer(vocab if vocab is not None else char_vocab(), unk=0)
    return np.asarray(tok.encode(text), dtype=np.int64)


def split_windows(ids: np.ndarray, context: int, n_eval: int, held_out: float = 0.1,
                  seed: int = 0) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(training ids, (x, y) of ``n_eval`` fixed held-out windows): the last
    ``held_out`` fraction of the shard is kept for evaluation."""
    cut = int(len(ids) * (1 - held_out))
    x, y = random_windows(ids[cut:], n_eval, context, np.random.default_rng(seed))
    return ids[:cut], (x, y)


# ---------------------------------------------------------------------------- replay buffer


class ReplayBuffer:
    """A fixed-capacity reservoir sample of a stream (Vitter's algorithm R; module
    docstring): after t additions each item is held with probability capacity / t."""

    def __init__(self, capacity: int, rng: np.random.Generator | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"ReplayBuffer: capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.items: list[Any] = []
        self.seen = 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            j = int(self.rng.integers(0, self.seen))  # uniform on 0 .. seen - 1
            if j < self.capacity:
                self.items[j] = item

    def extend(self, items: Iterable[Any]) -> None:
        for it in items:
            self.add(it)

    def sample(self, k: int) -> list[Any]:
        """``k`` items drawn uniformly with replacement."""
        if not self.items:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        return [self.items[i] for i in self.rng.integers(0, len(self.items), size=k)]


# ---------------------------------------------------------------------------- EWC


def fisher_diagonal(params: Sequence[Tensor], loss_of: Callable[[Any], Tensor],
                    samples: Iterable[Any]) -> list[np.ndarray]:
    """F_i = 1/N sum_j (d loss_of(sample_j) / d theta_i)^2 for every parameter, one
    backward pass per sample. ``loss_of(s)`` is the negative log-likelihood of one
    sample (its sign does not matter once squared). The parameters' ``.grad`` are
    cleared before each sample and left cleared."""
    params = list(params)
    # accumulated where each parameter lives (float64): no host copy per sample
    fisher = [p.backend.xp.zeros(p.shape, dtype=np.float64) for p in params]
    n = 0
    for s in samples:
        for p in params:
            p.grad = None
        loss_of(s).backward()
        for f, p in zip(fisher, params):
            if p.grad is not None:
                f += p.grad.data.astype(np.float64) ** 2
        n += 1
    for p in params:
        p.grad = None
    if n == 0:
        raise ValueError("fisher_diagonal: no samples")
    return [f / n for f in fisher]


def _constant(p: Tensor, a: Any) -> Tensor:
    """``a`` as a constant Tensor on ``p``'s backend in its dtype (as it is when it
    already is one: the penalty closure converts once, not every step)."""
    if isinstance(a, Tensor) and a.backend is p.backend and a.dtype == p.dtype:
        return a
    return Tensor(to_host(a).astype(p.dtype), backend=p.backend)


def ewc_penalty(params: Sequence[Tensor], fisher: Sequence[Any], star: Sequence[Any],
                lam: float) -> Tensor:
    """lambda/2 sum_i F_i (theta_i - theta*_i)^2, a scalar Tensor differentiable in the
    parameters (gradient lambda F_i (theta_i - theta*_i))."""
    total = None
    for p, f, s in zip(params, fisher, star):
        d = p - _constant(p, s)
        term = (_constant(p, f) * d * d).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("ewc_penalty: no parameters")
    return total * (lam / 2)


# ---------------------------------------------------------------------------- training


def lm_loss(model: nn.Module, x: Any, y: Any) -> Tensor:
    """Mean next-token cross-entropy of ``model`` (a GPT: ``model(x, y) -> (logits, loss)``;
    it puts host ids on its own device)."""
    return model(x, y)[1]


def mean_loss(model: nn.Module, xy: tuple[np.ndarray, np.ndarray], batch_size: int = 32) -> float:
    """Mean loss over fixed evaluation windows: ``trainer.evaluate_loss`` (eval mode, no
    graph, each window's targets counted once) over batches of ``batch_size`` rows."""
    x, y = xy
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return evaluate_loss(model, batches)["loss"]


def train_steps(model: nn.Module, opt: Any, batch_fn: Callable[[], tuple], steps: int,
                penalty: Callable[[], Tensor] | None = None, grad_clip: float = 1.0,
                on_step: Callable[[int], None] | None = None) -> list[float]:
    """``steps`` updates on ``batch_fn()`` batches, the loss plus ``penalty()`` if given,
    gradients clipped at norm ``grad_clip``; ``on_step(t)`` after step t (from 1).
    Returns the data losses."""
    losses = []
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for _ in range(steps):
        x, y = batch_fn()
        loss = lm_loss(model, x, y)
        total = loss + penalty() if penalty is not None else loss
        total.backward()
        optim.clip_grad_norm_(params, grad_clip)
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.item()))
        if on_step is not None:
            on_step(len(losses))
    return losses


def _rehearsal_batches(ids_a: np.ndarray, ids_b: np.ndarray, cfg: ContinualConfig,
                       rng: np.random.Generator) -> Callable[[], tuple]:
    """Shard-B batches whose last round(ratio B) rows (at least 1, at most B - 1) come
    from a reservoir of shard-A windows (a stream of 4 x capacity windows fills it)."""
    buf = ReplayBuffer(cfg.replay_capacity, rng)
    xa, ya = random_windows(ids_a, 4 * cfg.replay_capacity, cfg.context, rng)
    buf.extend(zip(xa, ya))
    n_old = min(max(int(round(cfg.replay_ratio * cfg.batch_size)), 1), cfg.batch_size - 1)

    def batch_fn() -> tuple:
        x, y = random_windows(ids_b, cfg.batch_size - n_old, cfg.context, rng)
        old = buf.sample(n_old)
        return (np.concatenate([x, np.stack([o[0] for o in old])]),
                np.concatenate([y, np.stack([o[1] for o in old])]))
    return batch_fn


def _ewc_penalty_fn(model: nn.Module, ids_a: np.ndarray, cfg: ContinualConfig,
                    rng: np.random.Generator) -> Callable[[], Tensor]:
    """The Fisher diagonal on ``fisher_samples`` shard-A windows at the current weights
    theta*, and the penalty lambda/2 sum F (theta - theta*)^2 as a closure."""
    params = list(model.parameters())
    fx, fy = random_windows(ids_a, cfg.fisher_samples, cfg.context, rng)
    fisher = fisher_diagonal(params, lambda s: lm_loss(model, s[0][None], s[1][None]), zip(fx, fy))
    fisher = [_constant(p, f) for p, f in zip(params, fisher)]  # once, on the device
    star = [Tensor._make(p.data.copy()) for p in params]
    return lambda: ewc_penalty(params, fisher, star, cfg.ewc_lambda)


@dataclass
class ContinualConfig:
    """The model, the two phases and each method's knobs."""

    context: int = 32
    d_model: int = 48
    n_layers: int = 2
    n_heads: int = 4
    batch_size: int = 16
    steps_a: int = 300
    steps_b: int = 300
    lr: float = 3e-3
    n_eval: int = 64
    replay_capacity: int = 256
    replay_ratio: float = 0.25
    ewc_lambda: float = 1e4
    fisher_samples: int = 64
    seed: int = 0


#: The methods ``continual_experiment`` compares.
METHODS = ("naive", "rehearsal", "ewc")


def continual_experiment(shard_a: str, shard_b: str, cfg: ContinualConfig | None = None,
                         methods: Sequence[str] = ("naive", "rehearsal", "ewc"),
                         log: Callable[[str], None] | None = None) -> dict:
    """Train a small GPT on shard A, then (from that same model) on shard B with each
    method; returns ``{"loss_a_after_a", "loss_b_after_a", "methods": {name: {
    "loss_a", "loss_b", "forgetting"}}}`` measured on held-out windows."""
    from ..nn import GPT, GPTConfig

    cfg = cfg if cfg is not None else ContinualConfig()
    unknown = [m for m in methods if m not in METHODS]
    if unknown:  # before any training, not after phase A
        raise ValueError(f"continual_experiment: unknown method(s) {unknown}; known: "
                         f"{list(METHODS)}")
    if "rehearsal" in methods and cfg.batch_size < 2:
        raise ValueError(f"continual_experiment: rehearsal mixes old and new rows in a batch: "
                         f"batch_size must be >= 2, got {cfg.batch_size}")
    log = log if log is not None else (lambda s: None)
    vocab = char_vocab()
    ids_a, eval_a = split_windows(encode(shard_a, vocab), cfg.context, cfg.n_eval, seed=cfg.seed)
    ids_b, eval_b = split_windows(encode(shard_b, vocab), cfg.context, cfg.n_eval, seed=cfg.seed + 1)
    manual_seed(cfg.seed)
    model = GPT(GPTConfig(vocab_size=len(vocab), context_length=cfg.context, n_layers=cfg.n_layers,
                          n_heads=cfg.n_heads, d_model=cfg.d_model))
    rng = np.random.default_rng(cfg.seed)

    def batches(ids: np.ndarray) -> Callable[[], tuple]:
        return lambda: random_windows(ids, cfg.batch_size, cfg.context, rng)

    train_steps(model, optim.AdamW(model.parameters(), lr=cfg.lr), batches(ids_a), cfg.steps_a)
    after_a = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    out = {"loss_a_after_a": mean_loss(model, eval_a), "loss_b_after_a": mean_loss(model, eval_b),
           "methods": {}}
    log(f"after A: loss A {out['loss_a_after_a']:.4f}, loss B {out['loss_b_after_a']:.4f}")

    for method in methods:
        model.load_state_dict({k: Tensor(v.copy()) for k, v in after_a.items()})
        rng = np.random.default_rng(cfg.seed + 100)  # the same shard-B batches for each method
        penalty = None
        batch_fn = batches(ids_b)
        if method == "rehearsal":
            batch_fn = _rehearsal_batches(ids_a, ids_b, cfg, rng)
        elif method == "ewc":
            penalty = _ewc_penalty_fn(model, ids_a, cfg, rng)
        train_steps(model, optim.AdamW(model.parameters(), lr=cfg.lr), batch_fn, cfg.steps_b,
                    penalty)
        la, lb = mean_loss(model, eval_a), mean_loss(model, eval_b)
        out["methods"][method] = {"loss_a": la, "loss_b": lb,
                                  "forgetting": la - out["loss_a_after_a"]}
        log(f"{method}: loss A {la:.4f} (forgetting {la - out['loss_a_after_a']:+.4f}), "
            f"loss B {lb:.4f}")
    return out
