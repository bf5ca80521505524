"""What the small GPT examples share (prune, low_rank, albert_sharing, topk_attention):
the built-in corpus as characters, a 90/10 split with fixed validation windows, and a
plain AdamW training loop on random windows (``minilm.train.continual.train_steps``).
Imported by those scripts (run them as ``python examples/<name>.py``: this folder is
then on the import path)."""

from __future__ import annotations

from typing import Any

import numpy as np

from minilm import optim
from minilm.data import CharTokenizer, load_corpus, random_windows
from minilm.train.continual import train_steps

CONTEXT, BATCH = 32, 16


def char_corpus(eval_batches: int, context: int = CONTEXT) -> tuple:
    """(tokenizer, training ids, ``eval_batches`` validation (x, y) batches of
    BATCH x ``context`` drawn with seed 1) of the built-in corpus, split 90 / 10."""
    text = load_corpus()
    tok = CharTokenizer.train(text)
    tokens = np.asarray(tok.encode(text), dtype=np.int64)
    split = int(0.9 * len(tokens))
    vrng = np.random.default_rng(1)
    val = [random_windows(tokens[split:], BATCH, context, vrng) for _ in range(eval_batches)]
    return tok, tokens[:split], val


def train(model: Any, tokens: np.ndarray, steps: int, rng: np.random.Generator,
          lr: float = 3e-3, opt: Any = None, on_step: Any = None,
          context: int = CONTEXT) -> float:
    """``steps`` AdamW steps (lr, weight decay 0.01, unless ``opt`` is given) on random
    windows, gradients clipped at norm 1; ``on_step(t)`` after step t. Returns the last
    loss."""
    opt = opt if opt is not None else optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = train_steps(model, opt, lambda: random_windows(tokens, BATCH, context, rng), steps,
                         on_step=on_step)
    return losses[-1] if losses else float("nan")
