"""Neural text classifiers for ``minilm classify --model lstm|gru|textcnn|transformer``:
words (``minilm.data.tokenize`` of ``clean_text``, lowercased) → a word ``Vocab`` built
on the training texts (min_count) → ids truncated to ``max_len`` and padded per batch
with a mask → the model (``nn.RNNClassifier``, ``nn.TextCNN``,
``nn.TransformerEncoderClassifier``) → softmax cross-entropy, AdamW, gradient clipping;
after each epoch the validation loss is measured, the best epoch's weights are kept and
training stops after ``patience`` epochs without improvement. Batches group texts of
similar length (``bucket_batches``), so little of each batch is padding.

The same interface as the other ``minilm classify`` models: ``fit``, ``scores`` (logits),
``predict_proba``, ``state`` / ``from_state`` (tensors + JSON parameters).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from .. import optim
from ..autograd import no_grad
from ..backends import manual_seed
from ..data import Vocab, bucket_batches, clean_text, pad_sequences, tokenize
from ..nn import RNNClassifier, TextCNN, TransformerEncoderClassifier
from ..tensor import Tensor

__all__ = ["NEURAL_MODELS", "NeuralTextClassifier"]

NEURAL_MODELS = ("lstm", "gru", "textcnn", "transformer")


def _host(v: Any) -> np.ndarray:
    return np.asarray(v.numpy() if isinstance(v, Tensor) else v)


def _words(text: str) -> list[str]:
    return tokenize(clean_text(text, lowercase=True))


class NeuralTextClassifier:
    """One of :data:`NEURAL_MODELS` on word ids; see the module docstring."""

    def __init__(self, kind: str, n_classes: int, lr: float = 2e-3, weight_decay: float = 0.01,
                 batch_size: int = 32, max_len: int = 256, min_count: int = 2,
                 dim: int = 64, dropout: float = 0.3, grad_clip: float = 1.0) -> None:
        if kind not in NEURAL_MODELS:
            raise ValueError(f"NeuralTextClassifier: kind must be one of {NEURAL_MODELS}, "
                             f"got {kind!r}")
        self.kind, self.n_classes = kind, int(n_classes)
        self.lr, self.weight_decay, self.batch_size = float(lr), float(weight_decay), int(batch_size)
        self.max_len, self.min_count, self.dim = int(max_len), int(min_count), int(dim)
        self.dropout, self.grad_clip = float(dropout), float(grad_clip)
        self.vocab: Vocab | None = None
        self.model: Any = None

    def _build(self) -> Any:
        v, k, d = len(self.vocab), self.n_classes, self.dim
        if self.kind in ("lstm", "gru"):
            return RNNClassifier(v, k, embed_dim=d, hidden_size=d, cell=self.kind,
                                 dropout=self.dropout)
        if self.kind == "textcnn":
            return TextCNN(v, k, embed_dim=d, num_filters=d, dropout=self.dropout)
        return TransformerEncoderClassifier(v, k, max_len=self.max_len + 1, d_model=d,
                                            n_heads=4, n_layers=2, dropout=self.dropout,
                                            pooling="mean")

    def _ids(self, texts: list[str]) -> list[np.ndarray]:
        out = []
        for t in texts:
            ids = self.vocab.encode(_words(t))[: self.max_len]
            out.append(ids if len(ids) else np.array([self.vocab.unk_id], np.int64))
        return out

    def _batch(self, seqs: list[np.ndarray], idx: Any) -> tuple:
        ids, mask, _ = pad_sequences([seqs[i] for i in idx])
        return Tensor(ids), mask

    def fit(self, texts: list[str], labels: Any, val_texts: list[str], val_labels: Any,
            epochs: int = 20, patience: int = 3, seed: int = 0, log: Any = None) -> list[dict]:
        """Train; one row per epoch (``epoch``, ``step``, ``loss``, ``val_loss``,
        ``val_accuracy``), each also passed to ``log(row)``."""
        manual_seed(seed)
        y = np.asarray(labels, dtype=np.int64)
        self.vocab = Vocab.build((_words(t) for t in texts), min_count=self.min_count)
        seqs = self._ids(texts)
        self.model = m = self._build()
        decay = [p for n, p in m.named_parameters() if p.ndim >= 2 and "embed" not in n]
        rest = [p for n, p in m.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
        opt = optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                           {"params": rest, "weight_decay": 0.0}], lr=self.lr)
        lengths = np.array([len(s) for s in seqs])
        yv = np.asarray(val_labels, dtype=np.int64)
        best, best_state, bad, step, history = math.inf, None, 0, 0, []
        for epoch in range(1, epochs + 1):
            m.train()
            total = 0.0
            for idx in bucket_batches(lengths, self.batch_size, n_buckets=8, shuffle=True,
                                      seed=seed * 1000 + epoch):
                ids, mask = self._batch(seqs, idx)
                loss = F.cross_entropy(m(ids, mask), Tensor(y[idx]))
                opt.zero_grad()
                loss.backward()
                if self.grad_clip > 0:
                    optim.clip_grad_norm_(m.parameters(), self.grad_clip)
                opt.step()
                step += 1
                total += float(loss.item()) * len(idx)
            logits = self.scores(val_texts)
            logp = F.log_softmax(Tensor(logits), dim=1).numpy()
            val_loss = float(-logp[np.arange(len(yv)), yv].mean())
            row = {"epoch": epoch, "step": step, "loss": total / len(y), "val_loss": val_loss,
                   "val_accuracy": float(np.mean(logits.argmax(1) == yv))}
            history.append(row)
            if log is not None:
                log(row)
            if val_loss < best - 1e-6:
                best, bad = val_loss, 0
                best_state = {k: np.array(_host(v), copy=True) for k, v in m.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
        if best_state is not None:
            m.load_state_dict(best_state)
        return history

    @no_grad()
    def scores(self, texts: list[str]) -> np.ndarray:
        """Logits (n, classes), float64, in eval mode."""
        m = self.model
        was = m.training
        m.eval()
        seqs = self._ids(texts)
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

    def state(self) -> tuple[dict, dict]:
        tensors = {k: _host(v) for k, v in self.model.state_dict().items()}
        params = {"kind": self.kind, "lr": self.lr, "weight_decay": self.weight_decay,
                  "batch_size": self.batch_size, "max_len": self.max_len,
                  "min_count": self.min_count, "dim": self.dim, "dropout": self.dropout,
                  "grad_clip": self.grad_clip, "vocab": self.vocab.to_dict()}
        return tensors, params

    @classmethod
    def from_state(cls, tensors: dict, meta: dict, n_classes: int) -> NeuralTextClassifier:
        c = cls(meta["kind"], n_classes, meta["lr"], meta["weight_decay"], meta["batch_size"],
                meta["max_len"], meta["min_count"], meta["dim"], meta["dropout"],
                meta["grad_clip"])
        c.vocab = Vocab.from_dict(meta["vocab"])
        c.model = c._build()
        c.model.load_state_dict(tensors)  # strict: every key and shape checked
        c.model.eval()
        return c
