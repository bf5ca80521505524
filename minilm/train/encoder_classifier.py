"""Text classification on a pretrained encoder (``minilm classify --model encoder``):
a BERT-family encoder (all-MiniLM-L6-v2, or the encoder of a ``minilm pretrain-mlm``
run) with a new linear head on the mean-pooled last hidden states::

    ids = WordPiece([CLS] text [SEP]), truncated to max_len tokens
    u   = mean_t h_t over the real tokens          (h = encoder(ids), (B, T, H))
    z   = W Dropout(u) + b                          (the new head, (B, classes))
    loss = cross_entropy(z, y)

Three ways to train it (``mode``), the usual transfer-learning comparison:

- ``probe`` (linear probe): the encoder is frozen. Its pooled features of every text
  are computed once (eval mode, no graph) and only the head is trained on them, with
  AdamW to early stopping — as cheap as logistic regression on fixed embeddings; it
  measures what the pretrained representation already separates.
- ``full`` (full fine-tuning): every parameter trained with AdamW, one learning rate,
  linear warmup over the first 10% of steps then linear decay to 0.
- ``llrd`` (layer-wise learning-rate decay): as ``full`` but layer l of L (l = L for the
  top encoder layer, 0 for the embeddings) gets ``lr * decay**(L - l)``; the head gets
  ``lr``. Lower layers hold general features and move less.

Weight decay applies to matrices only (not biases, LayerNorm weights or embeddings).
The best epoch on the validation loss is kept (patience epochs without improvement
stop training).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import functional as F
from .. import optim
from ..autograd import no_grad
from ..backends import manual_seed, to_host
from ..nn.bert import BertConfig, BertModel, mean_pool, pad_batch
from ..nn.layers import Dropout, Linear
from ..nn.module import Module, model_backend
from ..tensor import Tensor
from .early_stopping import EarlyStopping, host_state

__all__ = ["MODES", "EncoderTextClassifier", "load_encoder"]

MODES = ("probe", "full", "llrd")


def load_encoder(init: str) -> tuple:
    """(BertModel, WordPieceTokenizer) of a pretrained model's name or folder, or of a
    ``minilm pretrain-mlm`` run directory (its best checkpoint)."""
    p = Path(init)
    if p.is_dir() and (p / "run.json").exists():
        from .mlm import load_mlm_run

        model, tokenizer, _ = load_mlm_run(p)
        return model.bert, tokenizer
    from ..models import load_pretrained

    encoder, tokenizer = load_pretrained(init)
    return encoder.bert, tokenizer


class _Classifier(Module):
    """encoder -> mean pooling -> dropout -> linear head."""

    def __init__(self, bert: BertModel, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.bert = bert
        self.dropout = Dropout(dropout)
        self.head = Linear(bert.config.hidden_size, n_classes)

    def features(self, ids: Any, mask: Any) -> Tensor:
        h, _ = self.bert(ids, mask)
        return mean_pool(h, mask)

    def forward(self, ids: Any, mask: Any) -> Tensor:
        return self.head(self.dropout(self.features(ids, mask)))


class EncoderTextClassifier:
    """See the module docstring. The same interface as the other ``minilm classify``
    models: ``fit``, ``scores``, ``predict_proba``, ``state`` / ``from_state``."""

    def __init__(self, n_classes: int, init: str = "all-MiniLM-L6-v2", mode: str = "full",
                 lr: float | None = None, weight_decay: float = 0.01, batch_size: int = 16,
                 max_len: int = 128, llrd_decay: float = 0.8, dropout: float = 0.1,
                 grad_clip: float = 1.0) -> None:
        if mode not in MODES:
            raise ValueError(f"EncoderTextClassifier: mode must be one of {MODES}, got {mode!r}")
        if not 0.0 < llrd_decay <= 1.0:
            raise ValueError(f"EncoderTextClassifier: llrd_decay must be in (0, 1], got "
                             f"{llrd_decay}")
        self.n_classes, self.init, self.mode = int(n_classes), str(init), mode
        self.lr = float(lr if lr is not None else (3e-3 if mode == "probe" else 5e-5))
        self.weight_decay, self.batch_size = float(weight_decay), int(batch_size)
        self.max_len, self.llrd_decay = int(max_len), float(llrd_decay)
        self.dropout, self.grad_clip = float(dropout), float(grad_clip)
        self.model: _Classifier | None = None
        self.tokenizer: Any = None

    def load(self) -> EncoderTextClassifier:
        """Load the pretrained encoder (``init``) and put a new head on it; ``fit``
        does it if not done before (call it first to fail early on a bad ``init``)."""
        bert, self.tokenizer = load_encoder(self.init)
        self.max_len = min(self.max_len, bert.config.max_length)
        self.model = _Classifier(bert, self.n_classes, self.dropout)
        return self

    # ------------------------------------------------------------------ data
    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [self.tokenizer.encode(t, max_length=self.max_len) for t in texts]

    def _batch(self, seqs: list, idx: Any) -> tuple:
        ids, mask = pad_batch(seqs, idx, self.tokenizer.pad_id)
        return self._on_model(ids), mask

    def _on_model(self, a: np.ndarray) -> Tensor:
        """A host array as a Tensor on the model's backend (the device for a device
        model)."""
        return Tensor(a, backend=model_backend(self.model))

    def _order(self, seqs: list) -> list:
        """Batches of similar length (less padding), in a fixed order."""
        by_len = np.argsort([len(s) for s in seqs], kind="stable")
        return [by_len[i:i + self.batch_size] for i in range(0, len(seqs), self.batch_size)]

    @no_grad()
    def _features(self, seqs: list) -> np.ndarray:
        m = self.model
        was = m.training
        m.eval()
        out = np.zeros((len(seqs), m.bert.config.hidden_size))
        try:
            for idx in self._order(seqs):
                ids, mask = self._batch(seqs, idx)
                out[idx] = to_host(m.features(ids, mask))
        finally:
            m.train(was)
        return out

    # ------------------------------------------------------------------ optimizer
    def _param_groups(self) -> list:
        """AdamW groups: decay on matrices only; with ``llrd`` one group per depth."""
        m = self.model
        L = m.bert.config.num_hidden_layers

        def depth(name: str) -> int:
            if name.startswith("head."):
                return L + 1
            if name.startswith("bert.encoder.layers."):
                return int(name.split(".")[3]) + 1
            if name.startswith("bert.pooler."):
                return L
            return 0  # embeddings

        groups: dict = {}
        for name, p in m.named_parameters():
            if self.mode == "probe" and not name.startswith("head."):
                continue
            decay = p.ndim >= 2 and "embeddings" not in name
            d = depth(name)
            scale = self.llrd_decay ** max(L - d, 0) if self.mode == "llrd" and d <= L else 1.0
            key = (scale, decay)
            g = groups.setdefault(key, {"params": [], "lr": self.lr * scale,
                                        "weight_decay": self.weight_decay if decay else 0.0})
            g["params"].append(p)
        return list(groups.values())

    # ------------------------------------------------------------------ training
    def fit(self, texts: list[str], labels: Any, val_texts: list[str], val_labels: Any,
            epochs: int = 4, patience: int = 2, seed: int = 0, log: Any = None) -> list[dict]:
        """Train; one row per epoch (``epoch``, ``step``, ``loss``, ``val_loss``,
        ``val_accuracy``), each also passed to ``log(row)``."""
        if epochs < 1:
            raise ValueError(f"EncoderTextClassifier.fit: epochs must be >= 1, got {epochs}")
        manual_seed(seed)
        if self.model is None:
            self.load()
        m = self.model
        y, yv = np.asarray(labels, np.int64), np.asarray(val_labels, np.int64)
        seqs, vseqs = self._encode(texts), self._encode(val_texts)
        frozen = self.mode == "probe"
        if frozen:  # the encoder's features, once
            feats = self._features(seqs).astype(np.float32)  # not re-cast every batch
            vfeats = self._features(vseqs)
        opt = optim.AdamW(self._param_groups(), lr=self.lr)
        steps_per_epoch = math.ceil(len(seqs) / self.batch_size)
        total = steps_per_epoch * epochs
        sched = None if frozen else optim.lr_scheduler.LinearWarmupDecay(
            opt, warmup_steps=max(1, total // 10), total_steps=total)
        rng = np.random.default_rng(seed)
        trainable = [p for g in opt.param_groups for p in g["params"]]
        def snapshot() -> dict:  # probing: only the head changes
            return host_state(m, None if not frozen else lambda k: k.startswith("head."))

        stopper = EarlyStopping(patience, snapshot=snapshot, log=log)
        step = 0
        for epoch in range(1, epochs + 1):
            m.train()
            batches = self._order(seqs)
            rng.shuffle(batches)
            total_loss = 0.0
            for idx in batches:
                if frozen:
                    logits = m.head(m.dropout(self._on_model(feats[idx])))
                else:
                    ids, mask = self._batch(seqs, idx)
                    logits = m(ids, mask)
                loss = F.cross_entropy(logits, self._on_model(y[idx]))
                opt.zero_grad()
                loss.backward()
                if self.grad_clip > 0:
                    optim.clip_grad_norm_(trainable, self.grad_clip)
                opt.step()
                if sched is not None:
                    sched.step()
                step += 1
                total_loss += float(loss.item()) * len(idx)
            logits = self._head_scores(vfeats) if frozen else self._scores(vseqs)
            logp = F.log_softmax(Tensor(logits), dim=1).numpy()
            val_loss = float(-logp[np.arange(len(yv)), yv].mean())
            row = {"epoch": epoch, "step": step, "loss": total_loss / len(y),
                   "val_loss": val_loss, "val_accuracy": float(np.mean(logits.argmax(1) == yv))}
            if stopper.update(row):
                break
        if stopper.best_state is not None:
            m.load_state_dict(stopper.best_state, strict=not frozen)
        return stopper.history

    # ------------------------------------------------------------------ inference
    @no_grad()
    def _head_scores(self, feats: np.ndarray) -> np.ndarray:
        m = self.model
        was = m.training
        m.eval()
        try:
            return np.asarray(to_host(m.head(self._on_model(feats.astype(np.float32)))),
                              np.float64)
        finally:
            m.train(was)

    @no_grad()
    def _scores(self, seqs: list) -> np.ndarray:
        m = self.model
        was = m.training
        m.eval()
        out = np.zeros((len(seqs), self.n_classes))
        try:
            for idx in self._order(seqs):
                ids, mask = self._batch(seqs, idx)
                out[idx] = to_host(m(ids, mask))
        finally:
            m.train(was)
        return out

    def scores(self, texts: list[str]) -> np.ndarray:
        """Logits (n, classes), float64, in eval mode."""
        return self._scores(self._encode(texts))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return F.softmax(Tensor(self.scores(texts)), dim=1).numpy()

    # ------------------------------------------------------------------ saving
    def state(self) -> tuple[dict, dict]:
        tensors = {k: to_host(v) for k, v in self.model.state_dict().items()}
        params = {"init": self.init, "mode": self.mode, "lr": self.lr,
                  "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                  "max_len": self.max_len, "llrd_decay": self.llrd_decay,
                  "dropout": self.dropout, "grad_clip": self.grad_clip,
                  "bert_config": self.model.bert.config.to_dict(),
                  "pooler": self.model.bert.pooler is not None,
                  "tokenizer": self.tokenizer.to_dict()}
        return tensors, params

    @classmethod
    def from_state(cls, tensors: dict, meta: dict, n_classes: int) -> EncoderTextClassifier:
        from ..data.tokenizer import tokenizer_from_dict

        c = cls(n_classes, meta["init"], meta["mode"], meta["lr"], meta["weight_decay"],
                meta["batch_size"], meta["max_len"], meta["llrd_decay"], meta["dropout"],
                meta["grad_clip"])
        bert = BertModel(BertConfig(**meta["bert_config"]), add_pooling_layer=meta["pooler"])
        c.model = _Classifier(bert, n_classes, c.dropout)
        c.model.load_state_dict(tensors)  # strict: every key and shape checked
        c.model.eval()
        c.tokenizer = tokenizer_from_dict(meta["tokenizer"])
        return c
