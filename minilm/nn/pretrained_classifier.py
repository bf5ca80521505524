"""A classifier on the hidden states of a (pretrained) GPT: the trunk + a new head.

GPTClassifier::

    h = LN_f(blocks(E_tok[ids] + E_pos))      (B, T, d)  the GPT's final hidden states
                                               (causal attention, no LM head)
    pooled = sum_t mask_t h_t / sum_t mask_t    the mean over real tokens only
    logits = W dropout(pooled) + b              ``head``: a new Linear(d, num_classes)

The trunk is a :class:`minilm.nn.GPT` (its ``tok_emb``, ``pos_emb``, ``blocks`` and
``ln_f``; its LM head is tied to ``tok_emb`` and not used here), so weights from
next-token pretraining load into ``classifier.trunk`` unchanged. Inputs are
right-padded (as ``minilm.data.pad_sequences`` gives them): with causal attention a
real token reads only the tokens before it, never the padding after it, and the
padding is left out of the mean, so a sequence gives the same logits alone as inside a
padded batch. A linear probe freezes the trunk (``requires_grad = False`` on every
``trunk.*`` parameter) and trains the head only.
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
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
        self.head = Linear(self.trunk.config.d_model, num_classes)

    def features(self, ids: Any, mask: Any = None) -> Tensor:
        """The mean of the trunk's final hidden states over real tokens, (B, d)."""
        ids, m = _ids_and_mask("GPTClassifier", ids, mask)
        g = self.trunk
        if ids.shape[1] > g.config.context_length:
            raise ValueError(f"GPTClassifier: {ids.shape[1]} tokens (ids shape {ids.shape}) "
                             f"exceed the trunk's context length {g.config.context_length}; "
                             "truncate the inputs")
        x = g.embed(ids)
        for block in g.blocks:
            x = block(x)
        h = g.ln_f(x)
        return F.global_avg_pool1d(h.transpose(1, 2), m)

    def forward(self, ids: Any, mask: Any = None) -> Tensor:
        return self.head(self.dropout(self.features(ids, mask)))

    def freeze_trunk(self, frozen: bool = True) -> GPTClassifier:
        """Stop (or restart) gradients into every trunk parameter: a linear probe."""
        for p in self.trunk.parameters():
            p.requires_grad = not frozen
        return self
