"""A classifier on the hidden states of a (pretrained) GPT: the trunk + a new head.

GPTClassifier::

    h = LN_f(blocks(E_tok[ids] + E_pos))      (B, T, d)  the GPT's final hidden states
                                               (causal attention, no LM head)
    pooled = sum_t mask_t h_t / sum_t mask_t    the mean over real tokens only
    z = (pooled - shift) / scale                fixed buffers, 0 and 1 unless set
    logits = W dropout(z) + b                   ``head``: a new Linear(d, num_classes)

The trunk is a :class:`minilm.nn.GPT` (its ``tok_emb``, ``pos_emb``, ``blocks`` and
``ln_f``; its LM head is tied to ``tok_emb`` and not used here), so weights from
next-token pretraining load into ``classifier.trunk`` unchanged. Inputs are
right-padded (as ``minilm.data.pad_sequences`` gives them): with causal attention a
real token reads only the tokens before it, never the padding after it, and the
padding is left out of the mean, so a sequence gives the same logits alone as inside a
padded batch. A linear probe freezes the trunk (``requires_grad = False`` on every
``trunk.*`` parameter) and trains the head only; :meth:`GPTClassifier.standardize`
then sets ``shift`` / ``scale`` to the mean and standard deviation of the pooled
features over the training texts. The pooled features of a language model share a
large common component (on BBC News their mean is about 4x their spread across
articles), and the head learns far faster on standardized inputs; ``(x - shift) /
scale`` followed by a linear map is still a linear map of the features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..creation import ones, zeros
from ..tensor import Tensor
from .classifiers import _ids_and_mask
from .layers import Dropout, Linear
from .module import Module
from .transformer import GPT, GPTConfig

__all__ = ["GPTClassifier"]


class GPTClassifier(Module):
    """GPT trunk, masked mean pooling of its final hidden states, dropout, linear head
    (see the module docstring). ``trunk`` may be an existing (pretrained) ``GPT``."""

    def __init__(self, num_classes: int, config: GPTConfig | None = None,
                 dropout: float = 0.1, trunk: GPT | None = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"GPTClassifier: num_classes must be >= 2, got {num_classes}")
        if (config is None) == (trunk is None):
            raise ValueError("GPTClassifier: give exactly one of config and trunk")
        self.num_classes = num_classes
        self.trunk = trunk if trunk is not None else GPT(config)
        self.dropout = Dropout(dropout)
        d = self.trunk.config.d_model
        self.head = Linear(d, num_classes)
        self.register_buffer("shift", zeros(d))  # on the current backend, as the head
        self.register_buffer("scale", ones(d))

    def features(self, ids: Any, mask: Any = None) -> Tensor:
        """The mean of the trunk's final hidden states over real tokens, (B, d)."""
        ids, m = _ids_and_mask("GPTClassifier", ids, mask, self)
        g = self.trunk
        if ids.shape[1] > g.config.context_length:
            raise ValueError(f"GPTClassifier: {ids.shape[1]} tokens (ids shape {ids.shape}) "
                             f"exceed the trunk's context length {g.config.context_length}; "
                             "truncate the inputs")
        x = g.embed(ids)
        for block in g.layer_blocks():  # (one block applied n_layers times if shared)
            x = block(x)
        h = g.ln_f(x)
        return F.global_avg_pool1d(h.transpose(1, 2), m)

    def forward(self, ids: Any, mask: Any = None) -> Tensor:
        z = (self.features(ids, mask) - self.shift) / self.scale
        return self.head(self.dropout(z))

    def standardize(self, pooled: Any, eps: float = 1e-5) -> GPTClassifier:
        """Set ``shift`` and ``scale`` to the per-feature mean and standard deviation
        (+ eps) of ``pooled`` (n, d), the :meth:`features` of the training texts."""
        a = np.asarray(pooled.numpy() if isinstance(pooled, Tensor) else pooled, np.float64)
        if a.ndim != 2 or a.shape[1] != self.shift.shape[0] or len(a) < 2:
            raise ValueError(f"GPTClassifier.standardize: pooled must be (n >= 2, "
                             f"{self.shift.shape[0]}), got {a.shape}")
        xp = self.shift.backend.xp
        self.shift.data[...] = xp.asarray(a.mean(0), dtype=self.shift.dtype)
        self.scale.data[...] = xp.asarray(a.std(0) + eps, dtype=self.scale.dtype)
        return self

    def freeze_trunk(self, frozen: bool = True) -> GPTClassifier:
        """Stop (or restart) gradients into every trunk parameter: a linear probe."""
        for p in self.trunk.parameters():
            p.requires_grad = not frozen
        return self
