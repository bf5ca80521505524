"""Neural text classifiers for ``minilm classify --model lstm|gru|textcnn|transformer``
(and ``gpt``, a GPT trunk + new head, for pretraining / fine-tuning exercises):
words (``minilm.data.tokenize`` of ``clean_text``, lowercased) → a word ``Vocab`` built
on the training texts (min_count) → ids truncated to ``max_len`` and padded per batch
with a mask → the model (``nn.RNNClassifier``, ``nn.TextCNN``,
``nn.TransformerEncoderClassifier``) → softmax cross-entropy, AdamW, gradient clipping;
after each epoch the validation loss is measured, the best epoch's weights are kept and
training stops after ``patience`` epochs without improvement. Batches group texts of
similar length (``bucket_batches``), so little of each batch is padding.

The same interface as the other ``minilm classify`` models: ``fit``, ``scores`` (logits),
``predict_proba``, ``state`` / ``from_state`` (tensors + JSON parameters).

Options for the classification exercises (all off by default, so the defaults train
exactly as before):

- ``optimizer``: ``"adamw"`` (decoupled weight decay ``lr * weight_decay * w``) or
  ``"sgd"`` (``optim.SGD`` with ``momentum``; its ``weight_decay`` is the coupled L2
  term ``g + weight_decay * w``). Weight decay applies to the matrices (ndim >= 2)
  whose name lacks "embed": not to biases, norms or the LSTM / TextCNN embeddings (the
  transformer's and GPT's ``tok_emb`` / ``pos_emb`` are decayed, as before).
- ``l1 = lam``: the L1 penalty ``lam * sum |w|`` over the ``l1_scope`` weights
  (``"matrices"``: the weight-decayed matrices; ``"all"``: every matrix, embeddings
  included; ``"head"``: the head's weight), added to the batch's *mean* cross-entropy
  (not multiplied by the batch size). With ``l1_proximal`` (default) it is applied as
  the proximal step after each optimizer step, ``w <- sign(w) max(|w| - lr * lam, 0)``
  (``F.l1_proximal_``), which gives exact zeros; otherwise ``F.l1_penalty`` is added to
  the loss (subgradient ``lam * sign(w)``: small, not exactly zero weights).
  :meth:`NeuralTextClassifier.sparsity` reports the fraction of exact zeros.
- ``freeze_trunk``: train only the ``head.*`` parameters (a linear probe); every other
  parameter gets ``requires_grad = False``, is left out of the optimizer and never moves.
  For ``kind="gpt"`` the pooled features are then standardized with their mean and
  standard deviation over the training texts (``GPTClassifier.standardize``) before
  the head is trained.
- ``kind="gpt"``: :class:`minilm.nn.GPTClassifier` (a GPT of ``n_layers`` blocks,
  ``dim`` wide, context ``max_len``, mean-pooled, new linear head).
  :func:`pretrain_gpt` trains such a GPT on unlabelled texts (next-token prediction)
  and :meth:`NeuralTextClassifier.set_trunk` makes ``fit`` start from its weights and
  vocabulary (or from the vocabulary alone: the same model from scratch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from .. import optim
from ..autograd import no_grad
from ..backends import manual_seed, to_host
from ..data import Vocab, bucket_batches, clean_text, pad_sequences, tokenize
from ..nn import (
    GPT,
    GPTClassifier,
    GPTConfig,
    RNNClassifier,
    TextCNN,
    TransformerEncoderClassifier,
)
from ..nn.module import model_backend
from ..tensor import Tensor
from .early_stopping import EarlyStopping, host_state

__all__ = ["CLASSIFIER_KINDS", "NEURAL_MODELS", "NeuralTextClassifier", "pretrain_gpt"]

NEURAL_MODELS = ("lstm", "gru", "textcnn", "transformer")
CLASSIFIER_KINDS = NEURAL_MODELS + ("gpt",)
OPTIMIZERS = ("adamw", "sgd")
L1_SCOPES = ("matrices", "all", "head")


def _words(text: str) -> list[str]:
    return tokenize(clean_text(text, lowercase=True))


def _gpt_config(vocab_size: int, max_len: int, dim: int, n_layers: int,
                n_heads: int) -> GPTConfig:
    """The GPT of ``kind="gpt"`` and of :func:`pretrain_gpt`: no dropout inside the
    trunk (the classifier's dropout sits before its head)."""
    return GPTConfig(vocab_size=vocab_size, context_length=max_len, n_layers=n_layers,
                     n_heads=n_heads, d_model=dim, dropout=0.0)


class NeuralTextClassifier:
    """One of :data:`CLASSIFIER_KINDS` on word ids; see the module docstring."""

    def __init__(self, kind: str, n_classes: int, lr: float = 2e-3, weight_decay: float = 0.01,
                 batch_size: int = 32, max_len: int = 256, min_count: int = 2,
                 dim: int = 64, dropout: float = 0.3, grad_clip: float = 1.0,
                 optimizer: str = "adamw", momentum: float = 0.9, l1: float = 0.0,
                 l1_proximal: bool = True, l1_scope: str = "matrices",
                 freeze_trunk: bool = False, n_layers: int = 2, n_heads: int = 4,
                 max_vocab: int | None = None) -> None:
        if kind not in CLASSIFIER_KINDS:
            raise ValueError(f"NeuralTextClassifier: kind must be one of {CLASSIFIER_KINDS}, "
                             f"got {kind!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"NeuralTextClassifier: optimizer must be one of {OPTIMIZERS}, "
                             f"got {optimizer!r}")
        if l1_scope not in L1_SCOPES:
            raise ValueError(f"NeuralTextClassifier: l1_scope must be one of {L1_SCOPES}, "
                             f"got {l1_scope!r}")
        if not (l1 >= 0 and math.isfinite(l1)):
            raise ValueError(f"NeuralTextClassifier: l1 must be a finite number >= 0, got {l1}")
        self.kind, self.n_classes = kind, int(n_classes)
        self.lr, self.weight_decay, self.batch_size = float(lr), float(weight_decay), int(batch_size)
        self.max_len, self.min_count, self.dim = int(max_len), int(min_count), int(dim)
        self.dropout, self.grad_clip = float(dropout), float(grad_clip)
        self.optimizer, self.momentum = optimizer, float(momentum)
        self.l1, self.l1_proximal, self.l1_scope = float(l1), bool(l1_proximal), l1_scope
        self.freeze_trunk, self.n_layers, self.n_heads = bool(freeze_trunk), int(n_layers), int(n_heads)
        self.max_vocab = None if max_vocab is None else int(max_vocab)
        self.vocab: Vocab | None = None
        self.model: Any = None
        self._fixed_vocab = False
        self._trunk_state: dict | None = None

    def set_trunk(self, vocab: Vocab, trunk_state: dict | None = None) -> NeuralTextClassifier:
        """Make :meth:`fit` use ``vocab`` (the pretraining vocabulary) instead of building
        one and, for ``kind="gpt"``, start the trunk from ``trunk_state`` (a ``GPT``
        state dict, as :func:`pretrain_gpt` returns it; None: random init, i.e. the same
        model from scratch). The head is always new."""
        if trunk_state is not None and self.kind != "gpt":
            raise ValueError(f"NeuralTextClassifier.set_trunk: a pretrained trunk needs "
                             f"kind 'gpt', got {self.kind!r}")
        self.vocab, self._fixed_vocab = vocab, True
        self._trunk_state = None if trunk_state is None else dict(trunk_state)
        return self

    def _build(self) -> Any:
        v, k, d = len(self.vocab), self.n_classes, self.dim
        if self.kind in ("lstm", "gru"):
            return RNNClassifier(v, k, embed_dim=d, hidden_size=d, cell=self.kind,
                                 dropout=self.dropout)
        if self.kind == "textcnn":
            return TextCNN(v, k, embed_dim=d, num_filters=d, dropout=self.dropout)
        if self.kind == "gpt":
            cfg = _gpt_config(v, self.max_len, d, self.n_layers, self.n_heads)
            return GPTClassifier(k, cfg, dropout=self.dropout)
        return TransformerEncoderClassifier(v, k, max_len=self.max_len + 1, d_model=d,
                                            n_heads=self.n_heads, n_layers=self.n_layers,
                                            dropout=self.dropout, pooling="mean")

    def _ids(self, texts: list[str]) -> list[np.ndarray]:
        out = []
        for t in texts:
            ids = self.vocab.encode(_words(t))[: self.max_len]
            out.append(ids if len(ids) else np.array([self.vocab.unk_id], np.int64))
        return out

    def _batch(self, seqs: list[np.ndarray], idx: Any) -> tuple:
        ids, mask, _ = pad_sequences([seqs[i] for i in idx])
        return Tensor(ids, backend=model_backend(self.model)), mask  # where the model is

    @staticmethod
    def _decayed(name: str, p: Any) -> bool:
        return p.ndim >= 2 and "embed" not in name

    def l1_parameters(self) -> list[tuple[str, Any]]:
        """``(name, parameter)`` of the weights under the L1 penalty (``l1_scope``)."""
        named = list(self.model.named_parameters())
        if self.l1_scope == "head":
            return [(n, p) for n, p in named if n == "head.weight"]
        if self.l1_scope == "all":
            return [(n, p) for n, p in named if p.ndim >= 2]
        return [(n, p) for n, p in named if self._decayed(n, p)]

    def sparsity(self) -> dict:
        """Exact zeros: ``l1_weights`` (fraction over the ``l1_scope`` weights, whether or
        not L1 was on), ``all`` (over every parameter) and ``per_tensor`` (name ->
        fraction, for the ``l1_scope`` weights)."""
        per, z, n = {}, 0, 0
        for name, p in self.l1_parameters():
            a = to_host(p.data)
            per[name] = float(np.mean(a == 0))
            z, n = z + int(np.sum(a == 0)), n + a.size
        every = [to_host(p.data) for p in self.model.parameters()]
        return {"l1_weights": z / max(n, 1), "l1_weights_count": n,
                "all": float(sum(int(np.sum(a == 0)) for a in every) / sum(a.size for a in every)),
                "per_tensor": per}

    def _optimizer(self, m: Any) -> Any:
        named = list(m.named_parameters())
        if self.freeze_trunk:
            for n, p in named:
                if not n.startswith("head."):
                    p.requires_grad = False
        named = [(n, p) for n, p in named if p.requires_grad]
        decay = [p for n, p in named if self._decayed(n, p)]
        rest = [p for n, p in named if not self._decayed(n, p)]
        groups = [g for g in ({"params": decay, "weight_decay": self.weight_decay},
                              {"params": rest, "weight_decay": 0.0}) if g["params"]]
        if self.optimizer == "sgd":
            return optim.SGD(groups, lr=self.lr, momentum=self.momentum)
        return optim.AdamW(groups, lr=self.lr)

    def fit(self, texts: list[str], labels: Any, val_texts: list[str], val_labels: Any,
            epochs: int = 20, patience: int = 3, seed: int = 0, log: Any = None) -> list[dict]:
        """Train; one row per epoch (``epoch``, ``step``, ``loss``, ``val_loss``,
        ``val_accuracy``; with L1 also ``sparsity``, the fraction of exact zeros in the
        L1 weights), each also passed to ``log(row)``. ``loss`` is the mean training
        cross-entropy (without the L1 term)."""
        if epochs < 1:
            raise ValueError(f"NeuralTextClassifier.fit: epochs must be >= 1, got {epochs}")
        manual_seed(seed)
        y = np.asarray(labels, dtype=np.int64)
        if not self._fixed_vocab:
            self.vocab = Vocab.build((_words(t) for t in texts), min_count=self.min_count,
                                     max_size=self.max_vocab)
        seqs = self._ids(texts)
        self.model = m = self._build()
        if self._trunk_state is not None:
            m.trunk.load_state_dict(self._trunk_state)  # strict: the pretraining's shapes
        if self.freeze_trunk and hasattr(m, "standardize"):
            m.standardize(self._pooled(seqs))  # fixed features: standardize them once
        opt = self._optimizer(m)
        trainable = [p for p in m.parameters() if p.requires_grad]  # set by _optimizer
        l1_params = [p for _, p in self.l1_parameters() if p.requires_grad] if self.l1 > 0 else []
        lengths = np.array([len(s) for s in seqs])
        yv = np.asarray(val_labels, dtype=np.int64)
        vseqs = self._ids(val_texts)  # tokenized once, scored every epoch
        stopper = EarlyStopping(patience, snapshot=lambda: host_state(m), log=log)
        step = 0
        for epoch in range(1, epochs + 1):
            m.train()
            total = 0.0
            for idx in bucket_batches(lengths, self.batch_size, n_buckets=8, shuffle=True,
                                      seed=seed * 1000 + epoch):
                ids, mask = self._batch(seqs, idx)
                ce = F.cross_entropy(m(ids, mask), Tensor(y[idx], backend=model_backend(m)))
                loss = ce
                if l1_params and not self.l1_proximal:
                    loss = ce + F.l1_penalty(l1_params, self.l1)
                opt.zero_grad()
                loss.backward()
                if self.grad_clip > 0:
                    optim.clip_grad_norm_(trainable, self.grad_clip)
                opt.step()
                if l1_params and self.l1_proximal:
                    F.l1_proximal_(l1_params, self.lr * self.l1)
                step += 1
                total += float(ce.item()) * len(idx)
            logits = self._scores(vseqs)
            logp = F.log_softmax(Tensor(logits), dim=1).numpy()
            val_loss = float(-logp[np.arange(len(yv)), yv].mean())
            row = {"epoch": epoch, "step": step, "loss": total / len(y), "val_loss": val_loss,
                   "val_accuracy": float(np.mean(logits.argmax(1) == yv))}
            if self.l1 > 0:
                row["sparsity"] = self.sparsity()["l1_weights"]
            if stopper.update(row):
                break
        if stopper.best_state is not None:
            m.load_state_dict(stopper.best_state)
        return stopper.history

    @no_grad()
    def _pooled(self, seqs: list[np.ndarray]) -> np.ndarray:
        """The model's pooled ``features`` of id sequences, in eval mode."""
        m = self.model
        was = m.training
        m.eval()
        try:
            return np.concatenate([to_host(m.features(*self._batch(seqs, np.arange(
                s, min(s + 64, len(seqs)))))) for s in range(0, len(seqs), 64)])
        finally:
            m.train(was)

    def scores(self, texts: list[str]) -> np.ndarray:
        """Logits (n, classes), float64, in eval mode."""
        return self._scores(self._ids(texts))

    @no_grad()
    def _scores(self, seqs: list[np.ndarray]) -> np.ndarray:
        m = self.model
        was = m.training
        m.eval()
        out = np.zeros((len(seqs), self.n_classes))
        try:
            for s in range(0, len(seqs), 64):
                idx = np.arange(s, min(s + 64, len(seqs)))
                ids, mask = self._batch(seqs, idx)
                out[idx] = np.asarray(m(ids, mask).numpy(), dtype=np.float64)
        finally:
            m.train(was)
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return F.softmax(Tensor(self.scores(texts)), dim=1).numpy()

    # saved alongside the original parameters; absent in older runs, which get these
    _OPTION_DEFAULTS = {"optimizer": "adamw", "momentum": 0.9, "l1": 0.0, "l1_proximal": True,
                        "l1_scope": "matrices", "freeze_trunk": False, "n_layers": 2,
                        "n_heads": 4, "max_vocab": None}

    def state(self) -> tuple[dict, dict]:
        tensors = {k: to_host(v) for k, v in self.model.state_dict().items()}
        params = {"kind": self.kind, "lr": self.lr, "weight_decay": self.weight_decay,
                  "batch_size": self.batch_size, "max_len": self.max_len,
                  "min_count": self.min_count, "dim": self.dim, "dropout": self.dropout,
                  "grad_clip": self.grad_clip, "vocab": self.vocab.to_dict()}
        params.update({k: getattr(self, k) for k in self._OPTION_DEFAULTS})
        return tensors, params

    @classmethod
    def from_state(cls, tensors: dict, meta: dict, n_classes: int) -> NeuralTextClassifier:
        options = {k: meta.get(k, v) for k, v in cls._OPTION_DEFAULTS.items()}
        c = cls(meta["kind"], n_classes, meta["lr"], meta["weight_decay"], meta["batch_size"],
                meta["max_len"], meta["min_count"], meta["dim"], meta["dropout"],
                meta["grad_clip"], **options)
        c.vocab = Vocab.from_dict(meta["vocab"])
        c.model = c._build()
        c.model.load_state_dict(tensors)  # strict: every key and shape checked
        c.model.eval()
        return c


def pretrain_gpt(texts: list[str], vocab: Vocab | None = None, max_len: int = 128,
                 dim: int = 64, n_layers: int = 2, n_heads: int = 4, steps: int = 500,
                 batch_size: int = 16, lr: float = 3e-3, min_count: int = 2,
                 max_vocab: int | None = 8000, seed: int = 0,
                 log: Any = None, log_every: int = 50) -> tuple[Vocab, GPT, list[dict]]:
    """Next-token pretraining on unlabelled ``texts`` (pass only training texts).

    The words of every text (``vocab``, or one built on ``texts`` with ``min_count`` and
    ``max_vocab``) are joined into one stream; each step takes ``batch_size`` windows of
    ``max_len + 1`` tokens at random offsets and minimises the mean cross-entropy of
    predicting token t + 1 from tokens 0..t (``GPT.forward(ids, targets)``), with AdamW
    (weight decay 0.01 on the non-embedding matrices), a linear warm-up over the first
    5% of the steps then cosine decay to 0.1 lr, and gradient clipping at 1. Returns
    ``(vocab, gpt, history)``; history rows (``step``, ``loss``, the mean over the last
    ``log_every`` steps) also go to ``log(row)``. ``gpt.state_dict()`` is what
    :meth:`NeuralTextClassifier.set_trunk` takes (with the same ``max_len``, ``dim``,
    ``n_layers``, ``n_heads``)."""
    if steps < 1:
        raise ValueError(f"pretrain_gpt: steps must be >= 1, got {steps}")
    manual_seed(seed)
    if vocab is None:
        vocab = Vocab.build((_words(t) for t in texts), min_count=min_count, max_size=max_vocab)
    stream = np.concatenate([vocab.encode(_words(t)) for t in texts] + [np.zeros(0, np.int64)])
    if len(stream) < max_len + 2:
        raise ValueError(f"pretrain_gpt: {len(stream)} tokens in the texts, fewer than one "
                         f"window of max_len + 1 = {max_len + 1}")
    gpt = GPT(_gpt_config(len(vocab), max_len, dim, n_layers, n_heads))
    named = list(gpt.named_parameters())
    decay = [p for n, p in named if p.ndim >= 2 and "emb" not in n]
    rest = [p for n, p in named if not (p.ndim >= 2 and "emb" not in n)]
    opt = optim.AdamW([{"params": decay, "weight_decay": 0.01},
                       {"params": rest, "weight_decay": 0.0}], lr=lr)
    warm = max(1, steps // 20)
    rng = np.random.default_rng(seed)
    history, window = [], []
    gpt.train()
    for step in range(1, steps + 1):
        frac = step / warm if step <= warm else \
            0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr * frac
        starts = rng.integers(0, len(stream) - max_len - 1, size=batch_size)
        chunk = np.stack([stream[s:s + max_len + 1] for s in starts])
        be = model_backend(gpt)  # the windows go where the model is (a device too)
        _, loss = gpt(Tensor(chunk[:, :-1], backend=be), Tensor(chunk[:, 1:], backend=be))
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(gpt.parameters(), 1.0)
        opt.step()
        window.append(float(loss.item()))
        if step % log_every == 0 or step == steps:
            row = {"step": step, "loss": float(np.mean(window))}
            window = []
            history.append(row)
            if log is not None:
                log(row)
    gpt.eval()
    return vocab, gpt, history
