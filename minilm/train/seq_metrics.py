"""Metrics of generated sequences: exact match and corpus BLEU (Papineni et al. 2002).

Corpus BLEU of hypotheses h_i against one reference r_i each, n-grams up to N (4):

    p_n  = sum_i sum_{g in ngrams_n(h_i)} min(count_{h_i}(g), count_{r_i}(g))
           / sum_i |ngrams_n(h_i)|                       (clipped n-gram precision)
    BP   = 1 if c > r else exp(1 - r / c)                (c = sum |h_i|, r = sum |r_i|)
    BLEU = BP * exp( sum_{n=1..N} (1/N) log p_n )        (0 if some p_n = 0)

Counts are summed over the whole corpus before dividing (not an average of sentence
scores). Tokens are the items of each sequence: a string is scored character by
character, a list of words word by word.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["corpus_bleu", "exact_match", "ngram_counts"]


def exact_match(hypotheses: Sequence, references: Sequence) -> float:
    """Fraction of hypotheses equal to their reference."""
    if len(hypotheses) != len(references):
        raise ValueError(f"exact_match: {len(hypotheses)} hypotheses but {len(references)} "
                         "references")
    if not hypotheses:
        raise ValueError("exact_match: no hypotheses")
    return sum(list(h) == list(r) for h, r in zip(hypotheses, references)) / len(hypotheses)


def ngram_counts(tokens: Sequence, n: int) -> Counter:
    """How many times each n-gram (a tuple of n tokens) occurs in ``tokens``."""
    tokens = list(tokens)
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: Sequence, references: Sequence, max_n: int = 4) -> float:
    """Corpus BLEU in [0, 1] with uniform weights 1/max_n and the brevity penalty."""
    if len(hypotheses) != len(references):
        raise ValueError(f"corpus_bleu: {len(hypotheses)} hypotheses but {len(references)} "
                         "references")
    if max_n < 1:
        raise ValueError(f"corpus_bleu: max_n must be >= 1, got {max_n}")
    matched, total = [0] * max_n, [0] * max_n
    c = r = 0
    for h, ref in zip(hypotheses, references):
        c += len(h)
        r += len(ref)
        for n in range(1, max_n + 1):
            hc, rc = ngram_counts(h, n), ngram_counts(ref, n)
            matched[n - 1] += sum(min(k, rc[g]) for g, k in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    if c == 0 or min(matched) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matched, total)) / max_n
    bp = 1.0 if c > r else math.exp(1.0 - r / c)
    return bp * math.exp(log_p)
