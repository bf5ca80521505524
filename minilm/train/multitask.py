"""Multi-task learning: one shared trunk, one head per task, one combined loss.

The tasks here are built from two text sources that ship with Python
(:func:`minilm.train.continual.text_shards`: the reference manual's prose, "docs", and
standard-library source, "code"). A batch holds character windows of both; each window
feeds two tasks:

- ``lm``:  next-character language modelling (cross-entropy at every position)
- ``cls``: is this window code or prose? (2-way cross-entropy on the mean-pooled trunk state)

Model (:class:`MultiTaskModel`)::

    trunk:  Embedding(V, d) -> LSTM(d, H)            h (B, T, H), shared by every task
    lm head:  Linear(H, V) at every position          logits (B, T, V)
    cls head: Linear(H, 2) on mean_t h                logits (B, 2)

Combined loss (:class:`MultiTaskLoss`), K tasks with losses L_k:

- fixed weights:  ``L = Σ_k λ_k L_k``
- uncertainty weighting (Kendall, Gal & Cipolla 2018), with one learned scalar per task
  ``s_k = log σ_k²`` (initialised at 0, i.e. σ_k = 1)::

      L = Σ_k ( ½ exp(-s_k) L_k + ½ s_k )          (= Σ_k L_k / (2σ_k²) + log σ_k)
      ∂L/∂s_k = ½ - ½ exp(-s_k) L_k                  (zero at exp(s_k) = L_k)

  so at the optimum over s each task's weight is 1/(2 L_k): a task with a large loss
  (noisy, or on another scale) is weighted down. (The paper's classification variant
  has a slightly different likelihood; the form above, used for every task, is the
  common practice and the one implemented and tested.)

Gradient flow: each head's parameters receive gradient only from its own task's loss
(its output feeds nothing else), the trunk's from every task (tests/test_multitask.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import nn, optim
from ..autograd import no_grad
from ..backends import manual_seed, to_host
from ..creation import zeros
from ..data import random_windows
from ..functional import cross_entropy
from ..nn.module import model_backend
from ..tensor import Tensor
from .continual import char_vocab, encode, text_shards

__all__ = ["MultiTaskConfig", "MultiTaskLoss", "MultiTaskModel", "code_prose_data",
           "evaluate", "task_losses", "train_multitask", "uncertainty_weighted"]

TASKS = ("lm", "cls")


# ---------------------------------------------------------------------------- losses


def uncertainty_weighted(losses: list, s: Tensor) -> Tensor:
    """``Σ_k ½ exp(-s_k) L_k + ½ s_k`` for task losses ``L_k`` (scalar tensors) and the
    log-variances ``s`` (a (K,) tensor)."""
    total = None
    for k, lk in enumerate(losses):
        sk = s[k]
        term = (-sk).exp() * lk * 0.5 + sk * 0.5
        total = term if total is None else total + term
    return total


class MultiTaskLoss(nn.Module):
    """Combines K task losses: ``mode="fixed"`` (``L = Σ λ_k L_k``, ``weights`` default
    all 1) or ``mode="uncertainty"`` (learned ``log_vars`` s_k, see the module doc)."""

    def __init__(self, n_tasks: int, mode: str = "fixed", weights: Any = None) -> None:
        super().__init__()
        if mode not in ("fixed", "uncertainty"):
            raise ValueError(f"MultiTaskLoss: mode must be 'fixed' or 'uncertainty', got {mode!r}")
        self.mode, self.n_tasks = mode, n_tasks
        self.weights = [1.0] * n_tasks if weights is None else [float(w) for w in weights]
        if len(self.weights) != n_tasks:
            raise ValueError(f"MultiTaskLoss: {len(self.weights)} weights for {n_tasks} tasks")
        if mode == "uncertainty":
            self.log_vars = nn.Parameter(zeros(n_tasks, dtype="float64"))  # current backend

    def forward(self, losses: list) -> Tensor:
        if len(losses) != self.n_tasks:
            raise ValueError(f"MultiTaskLoss: {len(losses)} losses for {self.n_tasks} tasks")
        if self.mode == "uncertainty":
            return uncertainty_weighted(losses, self.log_vars)
        total = None
        for w, lk in zip(self.weights, losses):
            total = lk * w if total is None else total + lk * w
        return total

    def task_weights(self) -> list[float]:
        """The effective weight of each L_k: λ_k, or ½ exp(-s_k)."""
        if self.mode == "fixed":
            return list(self.weights)
        return [float(0.5 * np.exp(-v)) for v in self.log_vars.numpy()]


# ---------------------------------------------------------------------------- model


class MultiTaskModel(nn.Module):
    """Embedding + LSTM trunk, an LM head and a code/prose classification head."""

    def __init__(self, vocab_size: int, d_embed: int = 32, hidden: int = 64,
                 n_classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.lstm = nn.LSTM(d_embed, hidden, batch_first=True)
        self.lm_head = nn.Linear(hidden, vocab_size)
        self.cls_head = nn.Linear(hidden, n_classes)

    def trunk(self, x: Tensor) -> Tensor:
        h, _ = self.lstm(self.embed(x))
        return h

    def trunk_parameters(self) -> list:
        return list(self.embed.parameters()) + list(self.lstm.parameters())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(LM logits (B, T, V), class logits (B, C))."""
        h = self.trunk(x)
        return self.lm_head(h), self.cls_head(h.mean(dim=1))


def task_losses(model: MultiTaskModel, x: Any, y_lm: Any, y_cls: Any) -> dict:
    """{"lm": mean next-character cross-entropy, "cls": mean 2-way cross-entropy}."""
    be = model_backend(model)  # host batches onto the model's device
    lm_logits, cls_logits = model(Tensor(to_host(x), backend=be))
    B, T, V = lm_logits.shape
    lm = cross_entropy(lm_logits.reshape(B * T, V), Tensor(to_host(y_lm).reshape(-1), backend=be))
    cls = cross_entropy(cls_logits, Tensor(to_host(y_cls), backend=be))
    return {"lm": lm, "cls": cls, "cls_logits": cls_logits}


# ---------------------------------------------------------------------------- data


def code_prose_data(context: int = 32, n_eval: int = 256, held_out: float = 0.1,
                    seed: int = 0) -> dict:
    """Character ids of the two sources split into training and held-out parts, and a
    fixed held-out evaluation set (half prose, half code): {"train": [docs ids, code
    ids], "eval": (x, y_lm, y_cls), "vocab_size"}. Class 0 = prose, 1 = code."""
    shards = text_shards()
    rng = np.random.default_rng(seed)
    train, ex, ey, ec = [], [], [], []
    for label, name in enumerate(("docs", "code")):
        ids = encode(shards[name])
        cut = int(len(ids) * (1 - held_out))
        train.append(ids[:cut])
        x, y = random_windows(ids[cut:], n_eval // 2, context, rng)
        ex.append(x), ey.append(y), ec.append(np.full(len(x), label, dtype=np.int64))
    return {"train": train, "eval": (np.concatenate(ex), np.concatenate(ey), np.concatenate(ec)),
            "vocab_size": len(char_vocab())}


def sample_batch(train: list, batch: int, context: int, rng: np.random.Generator) -> tuple:
    """(x, y_lm, y_cls): ``batch`` windows, each source with probability ½."""
    labels = rng.integers(0, 2, size=batch)
    xs, ys = np.empty((batch, context), np.int64), np.empty((batch, context), np.int64)
    for c in (0, 1):
        rows = np.flatnonzero(labels == c)
        if rows.size:
            xs[rows], ys[rows] = random_windows(train[c], rows.size, context, rng)
    return xs, ys, labels.astype(np.int64)


# ---------------------------------------------------------------------------- training


@dataclass
class MultiTaskConfig:
    context: int = 32
    batch: int = 32
    steps: int = 150
    lr: float = 3e-3
    d_embed: int = 32
    hidden: int = 64
    weights: tuple = (1.0, 1.0)   # fixed mode: λ_lm, λ_cls
    n_eval: int = 256
    seed: int = 0


def evaluate(model: MultiTaskModel, data: tuple, batch: int = 64) -> dict:
    """Held-out {"lm_loss", "cls_loss", "cls_acc"}."""
    x, y, c = data
    was = model.training
    model.eval()
    lm = cl = 0.0
    correct = 0
    with no_grad():
        for i in range(0, len(x), batch):
            sl = slice(i, i + batch)
            out = task_losses(model, x[sl], y[sl], c[sl])
            n = len(x[sl])
            lm += out["lm"].item() * n
            cl += out["cls"].item() * n
            correct += int((out["cls_logits"].numpy().argmax(axis=1) == c[sl]).sum())
    model.train(was)
    return {"lm_loss": lm / len(x), "cls_loss": cl / len(x), "cls_acc": correct / len(x)}


def train_multitask(mode: str, cfg: MultiTaskConfig | None = None, data: dict | None = None,
                    ) -> dict:
    """Train one model. ``mode``: "lm" or "cls" (single task: only that loss, the other
    head untouched), "fixed" (``λ_lm L_lm + λ_cls L_cls``) or "uncertainty" (learned
    s_k). Returns {"mode", "eval" (held-out metrics), "train_losses" ({task: per step}),
    "weights" (final effective task weights), "time_s"}."""
    cfg = cfg or MultiTaskConfig()
    if mode not in ("lm", "cls", "fixed", "uncertainty"):
        raise ValueError(f"train_multitask: unknown mode {mode!r}")
    data = data or code_prose_data(cfg.context, cfg.n_eval, seed=cfg.seed)
    manual_seed(cfg.seed)
    model = MultiTaskModel(data["vocab_size"], cfg.d_embed, cfg.hidden)
    combine = MultiTaskLoss(2, "uncertainty" if mode == "uncertainty" else "fixed",
                            weights=cfg.weights if mode == "fixed" else
                            ((1.0, 0.0) if mode == "lm" else (0.0, 1.0) if mode == "cls" else None))
    params = list(model.parameters()) + list(combine.parameters())
    opt = optim.Adam(params, lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed + 1)
    hist: dict = {t: [] for t in TASKS}
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        x, y, c = sample_batch(data["train"], cfg.batch, cfg.context, rng)
        out = task_losses(model, x, y, c)
        if mode in ("lm", "cls"):
            loss = out[mode]  # the other head gets no gradient at all
        else:
            loss = combine([out["lm"], out["cls"]])
        loss.backward()
        optim.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        for t in TASKS:
            hist[t].append(float(out[t].item()))
    return {"mode": mode, "eval": evaluate(model, data["eval"]), "train_losses": hist,
            "weights": combine.task_weights() if mode in ("fixed", "uncertainty") else None,
            "time_s": time.perf_counter() - t0, "model": model, "loss_module": combine}
