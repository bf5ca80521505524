"""Metrics of generated sequences, in the seq2seq order (hypotheses first): exact match
and corpus BLEU (Papineni et al. 2002) of token sequences.

Corpus BLEU of hypotheses h_i against one reference r_i each, n-grams up to N (4):

    p_n  = sum_i sum_{g in ngrams_n(h_i)} min(count_{h_i}(g), count_{r_i}(g))
           / sum_i |ngrams_n(h_i)|                       (clipped n-gram precision)
    BP   = 1 if c > r else exp(1 - r / c)                (c = sum |h_i|, r = sum |r_i|)
    BLEU = BP * exp( sum_{n=1..N} (1/N) log p_n )        (0 if some p_n = 0)

Counts are summed over the whole corpus before dividing (not an average of sentence
scores). Tokens are the items of each sequence: a string is scored character by
character, a list of words word by word. The arithmetic is :mod:`minilm.train.metrics`'
``corpus_bleu`` (NLTK's argument order: references first; whitespace-split strings,
several references, smoothing); this module only adapts the inputs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .metrics import _ngrams
from .metrics import corpus_bleu as _corpus_bleu

__all__ = ["corpus_bleu", "exact_match", "ngram_counts"]


def exact_match(hypotheses: Sequence, references: Sequence) -> float:
    """Fraction of hypotheses equal to their reference, item for item (sequences of any
    tokens; :func:`minilm.train.metrics.exact_match` compares strings, with optional
    normalisation and several references)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"exact_match: {len(hypotheses)} hypotheses but {len(references)} "
                         "references")
    if not hypotheses:
        raise ValueError("exact_match: no hypotheses")
    return sum(list(h) == list(r) for h, r in zip(hypotheses, references)) / len(hypotheses)


def ngram_counts(tokens: Sequence, n: int) -> Counter:
    """How many times each n-gram (a tuple of n tokens) occurs in ``tokens``."""
    return _ngrams(list(tokens), n)


def corpus_bleu(hypotheses: Sequence, references: Sequence, max_n: int = 4) -> float:
    """Corpus BLEU in [0, 1] with uniform weights 1/max_n and the brevity penalty; each
    hypothesis and reference a sequence of tokens (a str: its characters)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"corpus_bleu: {len(hypotheses)} hypotheses but {len(references)} "
                         "references")
    if max_n < 1:
        raise ValueError(f"corpus_bleu: max_n must be >= 1, got {max_n}")
    return _corpus_bleu([[list(r)] for r in references], [list(h) for h in hypotheses],
                        max_n=max_n)
