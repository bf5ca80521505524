"""Masked-language-model inputs with dynamic masking (BERT; re-drawn every batch as in
RoBERTa).

For a batch of token ids x (B, L), each position that is not a special token
(``[CLS]``, ``[SEP]``, ``[PAD]``, …) is *selected* independently with probability
p = 0.15. A selected position becomes

    [MASK]              with probability 0.8
    a random token      with probability 0.1   (uniform over the non-special ids)
    itself (unchanged)  with probability 0.1

and its label is the original id; every other position gets the label -100 (ignored by
the loss: ``F.cross_entropy(..., ignore_index=-100)``). The model must predict the
selected tokens, and since 10% of them are left as they are and 10% replaced at random,
it cannot tell from the input which positions are being tested, nor trust a token
because it is not ``[MASK]``.

Whole-word masking (``word_starts``): the unit of selection is the word, not the
WordPiece: a word is selected with probability p and *all* its pieces (a piece whose
token starts with ``##`` continues the word before it) get the 80/10/10 treatment,
each piece drawing its own replacement. Predicting ``##able`` from ``un ##aff [MASK]``
is too easy; the whole word must be recovered from context.

Dynamic: :class:`DynamicMasking` wraps a loader of token windows and draws a fresh
mask for every batch from its own seeded generator (saved in ``state_dict`` with the
wrapped loader's state, so a resumed run sees the masks the uninterrupted one would
have). Static masking (one mask per example, fixed before training, as in the original
BERT) is ``mask_tokens`` applied once to the dataset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .batches import make_rng, rng_state, set_rng_state

__all__ = ["IGNORE_INDEX", "DynamicMasking", "mask_tokens", "word_start_table"]

IGNORE_INDEX = -100


def word_start_table(vocab: list[str]) -> np.ndarray:
    """(V,) bool: True for tokens that start a word (not a ``##`` continuation)."""
    return np.array([not t.startswith("##") for t in vocab], dtype=bool)


def mask_tokens(ids: Any, rng: np.random.Generator, vocab_size: int, mask_id: int,
                special_ids: Iterable[int], mlm_probability: float = 0.15,
                mask_fraction: float = 0.8, random_fraction: float = 0.1,
                word_starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, labels)`` for ids (B, L) int; see the module docstring. ``word_starts``
    (a (V,) bool table, :func:`word_start_table`) turns on whole-word masking."""
    x = np.asarray(ids)
    if x.ndim != 2 or x.dtype.kind not in "iu":
        raise ValueError(f"mask_tokens: ids must be an integer array (B, L), got {x.dtype} "
                         f"{x.shape}")
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mask_tokens: mlm_probability must be in (0, 1), got {mlm_probability}")
    if not (0 <= mask_fraction and 0 <= random_fraction and mask_fraction + random_fraction <= 1):
        raise ValueError(f"mask_tokens: mask_fraction {mask_fraction} and random_fraction "
                         f"{random_fraction} must be >= 0 and sum to at most 1")
    if x.size and (x.min() < 0 or x.max() >= vocab_size):
        raise ValueError(f"mask_tokens: ids must lie in [0, {vocab_size}), got "
                         f"[{x.min()}, {x.max()}]")
    specials = np.array(sorted(set(int(i) for i in special_ids)), dtype=np.int64)
    candidate = ~np.isin(x, specials)
    if word_starts is None:
        selected = candidate & (rng.random(x.shape) < mlm_probability)
    else:
        # a word = a start piece and the ## pieces after it; select words, then spread
        prev_candidate = np.zeros_like(candidate)
        prev_candidate[:, 1:] = candidate[:, :-1]
        # a word starts at a start piece, or at a ## piece with no word before it
        starts = candidate & (np.asarray(word_starts)[x] | ~prev_candidate)
        word_id = np.cumsum(starts, axis=1)  # pieces share their word's number
        pick = rng.random(x.shape) < mlm_probability  # one draw per start position
        chosen = np.zeros((x.shape[0], x.shape[1] + 1), dtype=bool)
        rows, cols = np.nonzero(starts & pick)
        chosen[rows, word_id[rows, cols]] = True
        selected = candidate & np.take_along_axis(chosen, word_id, axis=1) & (word_id > 0)
    labels = np.where(selected, x, IGNORE_INDEX).astype(np.int64)
    u = rng.random(x.shape)
    to_mask = selected & (u < mask_fraction)
    to_random = selected & (u >= mask_fraction) & (u < mask_fraction + random_fraction)
    inputs = x.astype(np.int64, copy=True)
    inputs[to_mask] = mask_id
    n = int(to_random.sum())
    if n:
        allowed = np.setdiff1d(np.arange(vocab_size), specials)
        inputs[to_random] = allowed[rng.integers(0, len(allowed), size=n)]
    return inputs, labels


class DynamicMasking:
    """Wrap a loader of (x, y) token windows (``next(loader)`` or ``loader.next_batch()``;
    y is ignored) into one of (masked x, labels), with a fresh mask for every batch."""

    def __init__(self, loader: Any, vocab_size: int, mask_id: int, special_ids: Iterable[int],
                 mlm_probability: float = 0.15, seed: int = 0,
                 word_starts: np.ndarray | None = None) -> None:
        self.loader = loader
        self.vocab_size, self.mask_id = int(vocab_size), int(mask_id)
        self.special_ids = tuple(int(i) for i in special_ids)
        self.mlm_probability, self.word_starts = float(mlm_probability), word_starts
        self.rng = make_rng(seed)

    def __iter__(self) -> DynamicMasking:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        batch = self.loader.next_batch() if hasattr(self.loader, "next_batch") else next(self.loader)
        x = batch[0] if isinstance(batch, tuple) else batch
        return mask_tokens(x, self.rng, self.vocab_size, self.mask_id, self.special_ids,
                           self.mlm_probability, word_starts=self.word_starts)

    next_batch = __next__

    def state_dict(self) -> dict:
        return {"loader": self.loader.state_dict(), "mask_rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state["loader"])
        set_rng_state(self.rng, state["mask_rng"])
