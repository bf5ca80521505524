"""Evaluation metrics on NumPy arrays or minilm Tensors.

Every function accepts NumPy arrays, minilm Tensors (converted with ``.numpy()``),
CuPy arrays (copied to the host) or plain Python sequences, and returns Python floats
or NumPy arrays. Each docstring states the formula it computes.

- language modelling: :func:`perplexity`
- classification: :func:`accuracy`, :func:`confusion_matrix`,
  :func:`precision_recall_f1`
- ranking / binary scores: :func:`roc_curve`, :func:`roc_auc`
- generation: :func:`sentence_bleu`, :func:`corpus_bleu`, :func:`exact_match`

Conventions. Where a ratio has a zero denominator the documented value is returned
instead of a warning (precision/recall/F1 of a class never predicted or never present:
0; accuracy or exact match over zero items: NaN). Scores are fractions in [0, 1],
never percentages (BLEU 1.0 is a perfect match, sacreBLEU would print 100).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backends import to_host

__all__ = [
    "accuracy",
    "confusion_matrix",
    "corpus_bleu",
    "exact_match",
    "perplexity",
    "precision_recall_f1",
    "roc_auc",
    "roc_curve",
    "sentence_bleu",
]


def _labels(x: Any, name: str, op: str) -> np.ndarray:
    """An integer (or bool) label array, checked."""
    a = to_host(x)
    if a.dtype == np.bool_:
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        if a.size and not np.all(np.isfinite(a) & (a == np.round(a))):
            raise ValueError(f"{op}: {name} must hold integer class labels, got non-integer floats")
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must hold integer class labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


# --------------------------------------------------------------------------- perplexity
def perplexity(nll: Any, counts: Any = None) -> float:
    """Perplexity ``PPL = exp(mean NLL)``, the NLL in nats per token.

    - ``nll`` a scalar: the mean negative log-likelihood per token; ``PPL = exp(nll)``.
    - ``nll`` an array of per-token losses: ``PPL = exp(sum_i nll_i / N)``.
    - ``nll`` an array of per-batch *mean* losses with ``counts`` the number of tokens
      in each batch: ``PPL = exp(sum_b counts_b * nll_b / sum_b counts_b)`` (the token
      -weighted mean, which is what a plain mean of batch losses gets wrong when the
      batches hold different numbers of tokens).

    A uniform model over ``V`` tokens has NLL ``log V`` and perplexity ``V``. Returns
    ``inf`` when the exponent overflows.
    """
    losses = to_host(nll).astype(np.float64)
    if counts is None:
        if losses.size == 0:
            raise ValueError("perplexity: no losses given")
        mean = float(losses.mean())
    else:
        c = to_host(counts).astype(np.float64)
        if c.shape != losses.shape:
            raise ValueError(f"perplexity: losses of shape {losses.shape} but counts of shape {c.shape}")
        if np.any(c < 0):
            raise ValueError("perplexity: counts must be non-negative")
        total = float(c.sum())
        if total <= 0:
            raise ValueError("perplexity: counts sum to zero, no tokens to average over")
        mean = float((losses * c).sum() / total)
    if math.isnan(mean):
        return math.nan
    try:
        return math.exp(mean)
    except OverflowError:
        return math.inf


# --------------------------------------------------------------------------- accuracy
def accuracy(pred: Any, target: Any, ignore_index: int | None = None) -> float:
    """Fraction of positions where the prediction equals the target:
    ``acc = sum_i [pred_i == y_i] / N`` over the positions with ``y_i != ignore_index``.

    ``pred`` is either labels with the shape of ``target`` or logits/probabilities with
    one more (last) axis of classes, e.g. LM logits ``(B, T, V)`` against ``(B, T)``
    targets; then ``pred_i = argmax_c logits_{i,c}``. NaN when no position is scored.
    """
    p = to_host(pred)
    t = to_host(target)
    if p.ndim == t.ndim + 1:
        p = p.argmax(axis=-1)
    if p.shape != t.shape:
        raise ValueError(
            f"accuracy: predictions of shape {p.shape} do not match targets of shape {t.shape} "
            "(pass labels of the target's shape or logits with one extra last axis)"
        )
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    if t.size == 0:
        return math.nan
    return float(np.mean(p == t))


# --------------------------------------------------------------------------- classification
def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """``C[i, j]`` = number of samples whose true class is ``i`` and predicted class
    ``j`` (rows = true, columns = predicted), an int64 ``(K, K)`` array.

    Labels are integers in ``[0, K)``; ``K = num_classes`` or ``1 + max label``.
    ``C.sum() = n``, ``diag(C)`` are the true positives of each class, the row sums its
    support and the column sums its number of predictions.
    """
    t = _labels(y_true, "y_true", "confusion_matrix").ravel()
    p = _labels(y_pred, "y_pred", "confusion_matrix").ravel()
    if t.shape != p.shape:
        raise ValueError(f"confusion_matrix: y_true has {t.size} labels but y_pred has {p.size}")
    if t.size and min(t.min(), p.min()) < 0:
        raise ValueError("confusion_matrix: labels must be non-negative")
    top = int(max(t.max(), p.max())) + 1 if t.size else 0
    if num_classes is None:
        k = top
    else:
        k = int(num_classes)
        if top > k:
            raise ValueError(f"confusion_matrix: label {top - 1} out of range for num_classes={k}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def precision_recall_f1(y_true: Any, y_pred: Any, num_classes: int | None = None,
                        average: str | None = "macro") -> tuple:
    """Precision, recall and F1 of a single-label classification.

    Per class ``c`` with ``TP_c``, ``FP_c``, ``FN_c`` read off the confusion matrix:
    ``P_c = TP_c / (TP_c + FP_c)``, ``R_c = TP_c / (TP_c + FN_c)``,
    ``F1_c = 2 P_c R_c / (P_c + R_c)``. **Zero division gives 0**: a class never
    predicted has ``P_c = 0``, a class never present ``R_c = 0``, and ``F1_c = 0`` when
    ``P_c + R_c = 0``.

    ``average``:

    - ``None``: the per-class arrays (length ``K``);
    - ``"macro"``: the unweighted mean over the classes that occur in ``y_true`` or
      ``y_pred`` (classes absent from both would only add zeros; as scikit-learn);
    - ``"weighted"``: the mean weighted by support ``n_c / n``; F1 is the weighted mean
      of ``F1_c`` (so it need not lie between the weighted P and R);
    - ``"micro"``: from the global counts, ``P = sum TP / sum (TP + FP)``,
      ``R = sum TP / sum (TP + FN)``; for single-label data both equal the accuracy.

    Returns ``(precision, recall, f1)``.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    p = _safe_div(tp, predicted)
    r = _safe_div(tp, support)
    f = _safe_div(2 * p * r, p + r)
    if average is None:
        return p, r, f
    if average == "micro":
        mp = float(_safe_div(tp.sum(), predicted.sum()))
        mr = float(_safe_div(tp.sum(), support.sum()))
        return mp, mr, float(_safe_div(2 * mp * mr, mp + mr))
    if average == "macro":
        present = (predicted + support) > 0
        if not present.any():
            return 0.0, 0.0, 0.0
        return float(p[present].mean()), float(r[present].mean()), float(f[present].mean())
    if average == "weighted":
        n = support.sum()
        if n == 0:
            return 0.0, 0.0, 0.0
        # sum(n_c x) / n rather than sum((n_c / n) x): exactly 1 when every x is 1
        return (float((support * p).sum() / n), float((support * r).sum() / n),
                float((support * f).sum() / n))
    raise ValueError(
        f"precision_recall_f1: average must be 'macro', 'weighted', 'micro' or None, got {average!r}"
    )


# --------------------------------------------------------------------------- ROC
def _binary_scores(y_true: Any, scores: Any, op: str) -> tuple:
    y = to_host(y_true).ravel()
    s = to_host(scores).astype(np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{op}: y_true has {y.size} entries but scores has {s.size}")
    if y.dtype != np.bool_:
        if y.size and not np.all((y == 0) | (y == 1)):
            raise ValueError(f"{op}: y_true must be binary (0/1 or bool), got values {np.unique(y)[:5]}")
        y = y == 1
    if np.isnan(s).any():
        raise ValueError(f"{op}: scores contain NaN")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{op}: y_true must contain both classes (got {n_pos} positives and {n_neg} negatives); "
            "the ROC curve is undefined otherwise"
        )
    return y, s, n_pos, n_neg


def _roc_counts(y: np.ndarray, s: np.ndarray) -> tuple:
    """Cumulative (FP, TP) counts at each distinct threshold, highest first, with the
    starting point (0, 0) at threshold +inf."""
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # The last index of every run of equal scores: all tied samples cross the
    # threshold together, so the curve jumps diagonally across a mixed tie.
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    thresholds = s_sorted[last]
    return (np.r_[0, fp].astype(np.int64), np.r_[0, tp].astype(np.int64),
            np.r_[np.inf, thresholds])


def roc_curve(y_true: Any, scores: Any) -> tuple:
    """Receiver operating characteristic of binary labels against real-valued scores.

    For each distinct score ``t`` (decreasing) the classifier "positive iff s >= t"
    has ``TPR(t) = #{s_i >= t, y_i = 1} / P`` and ``FPR(t) = #{s_i >= t, y_i = 0} / N``.
    Tied scores are one threshold (one point), so a tie between positives and negatives
    is a diagonal segment. Returns ``(fpr, tpr, thresholds)``, starting at
    ``(0, 0)`` with threshold ``+inf`` and ending at ``(1, 1)``; every distinct score
    is kept (no points dropped). Both classes must occur.
    """
    y, s, n_pos, n_neg = _binary_scores(y_true, scores, "roc_curve")
    fp, tp, thr = _roc_counts(y, s)
    return fp / n_neg, tp / n_pos, thr


def roc_auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve, by the trapezoid rule over :func:`roc_curve`:
    ``AUC = sum_k (FPR_k - FPR_{k-1}) (TPR_k + TPR_{k-1}) / 2``.

    This equals the Mann–Whitney statistic: the probability that a random positive
    scores above a random negative, ties counted 1/2,
    ``AUC = (1 / (P N)) sum_{i: y=1} sum_{j: y=0} ([s_i > s_j] + [s_i = s_j] / 2)``.
    (Computed on integer counts, so the identity holds to rounding.)
    """
    y, s, n_pos, n_neg = _binary_scores(y_true, scores, "roc_auc")
    fp, tp, _ = _roc_counts(y, s)
    twice_area = np.sum(np.diff(fp) * (tp[1:] + tp[:-1]))  # integer: 2 * U
    return float(twice_area) / (2.0 * n_pos * n_neg)


# --------------------------------------------------------------------------- BLEU
def _tokens(x: Any) -> list:
    if isinstance(x, str):
        return x.split()
    return [str(t) for t in x]


def _references(refs: Any) -> list:
    """One reference (a str or a list of tokens) or a list of references, as a list of
    token lists. A list of strings is one tokenized reference, unless one of its strings
    contains whitespace (a whitespace-split token never does): then each string is a
    reference."""
    if isinstance(refs, str):
        return [refs.split()]
    refs = list(refs)
    if not refs:
        raise ValueError("bleu: no reference given")
    if all(isinstance(r, str) for r in refs):
        if any(any(ch.isspace() for ch in r) for r in refs):
            return [r.split() for r in refs]
        return [list(refs)]
    return [_tokens(r) for r in refs]


def _ngrams(tokens: list, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _bleu_stats(refs: list, hyp: list, max_n: int) -> tuple:
    """Clipped n-gram matches and hypothesis n-gram totals for n = 1..max_n, the
    hypothesis length c and the closest reference length r (ties -> shorter)."""
    matches = np.zeros(max_n, dtype=np.int64)
    totals = np.zeros(max_n, dtype=np.int64)
    for n in range(1, max_n + 1):
        hyp_counts = _ngrams(hyp, n)
        max_ref: Counter = Counter()
        for ref in refs:
            for g, c in _ngrams(ref, n).items():
                if c > max_ref[g]:
                    max_ref[g] = c
        matches[n - 1] = sum(min(c, max_ref[g]) for g, c in hyp_counts.items())
        totals[n - 1] = sum(hyp_counts.values())
    c = len(hyp)
    r = min((abs(len(ref) - c), len(ref)) for ref in refs)[1]
    return matches, totals, c, r


_SMOOTHING = {
    None: None, "none": None,
    "add1": "add1", "method2": "add1",
    "floor": "floor", "epsilon": "floor", "method1": "floor",
    "exp": "exp", "method3": "exp",
}


def _bleu_score(matches: np.ndarray, totals: np.ndarray, c: int, r: int, weights: np.ndarray,
                smoothing: str | None, epsilon: float) -> float:
    if smoothing not in _SMOOTHING:
        raise ValueError(
            f"bleu: unknown smoothing {smoothing!r}; use None, 'add1' (method2), "
            "'floor'/'epsilon' (method1) or 'exp' (method3)"
        )
    method = _SMOOTHING[smoothing]
    if c == 0 or matches[0] == 0:  # nothing in common with the references: 0 whatever
        return 0.0                 # the smoothing
    log_sum = 0.0
    k = 1  # for 'exp': the k-th zero precision gets 1 / 2^k
    for i, w in enumerate(weights):
        if w == 0:
            continue
        m, t = float(matches[i]), float(totals[i])
        if method == "add1" and i > 0:
            m, t = m + 1.0, max(t, 1.0) + 1.0
        elif m == 0:
            if method is None:
                return 0.0
            if method == "floor":
                m = epsilon
            elif method == "exp":
                m = 1.0 / 2.0 ** k
                k += 1
            t = max(t, 1.0)
        log_sum += w * math.log(m / t)
    bp = 1.0 if c > r else math.exp(1.0 - r / c)
    return bp * math.exp(log_sum)


def _weights(max_n: int, weights: Sequence[float] | None) -> np.ndarray:
    if max_n < 1:
        raise ValueError(f"bleu: max_n must be >= 1, got {max_n}")
    if weights is None:
        return np.full(max_n, 1.0 / max_n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (max_n,):
        raise ValueError(f"bleu: weights has {w.size} entries but max_n={max_n}; pass max_n={w.size}")
    if np.any(w < 0):
        raise ValueError("bleu: weights must be non-negative")
    return w


def sentence_bleu(references: Any, hypothesis: Any, max_n: int = 4,
                  weights: Sequence[float] | None = None, smoothing: str | None = None,
                  epsilon: float = 0.1) -> float:
    """BLEU of one hypothesis against one or more references (Papineni et al. 2002).

    ``BLEU = BP * exp(sum_n w_n log p_n)``, n = 1..max_n, ``w_n = 1/max_n`` by default:

    - modified (clipped) n-gram precision
      ``p_n = sum_g min(count_hyp(g), max_ref count_ref(g)) / sum_g count_hyp(g)``
      (a hypothesis n-gram is credited at most as often as it occurs in one reference);
    - brevity penalty ``BP = 1 if c > r else exp(1 - r / c)`` with ``c`` the hypothesis
      length and ``r`` the reference length closest to ``c`` (ties -> the shorter one);
      an empty hypothesis scores 0.

    ``smoothing`` (Chen & Cherry 2014 numbering; each gives the same sentence scores as
    NLTK's ``SmoothingFunction().methodN``) for precisions with no match. No smoothing
    rescues a hypothesis without a single unigram match: that scores 0.

    - ``None``: no smoothing; BLEU is 0 as soon as one ``p_n`` (with ``w_n > 0``) is 0;
    - ``"add1"`` / ``"method2"`` (Lin & Och 2004): ``p_n = (m_n + 1) / (max(l_n, 1) + 1)``
      for ``n > 1``, unigrams unchanged (a hypothesis with no n-grams of order n gets
      1/2, not 1/1);
    - ``"floor"`` / ``"epsilon"`` / ``"method1"``: a zero match count becomes
      ``epsilon``, ``p_n = epsilon / max(l_n, 1)``;
    - ``"exp"`` / ``"method3"`` (NIST, sacreBLEU's default): the k-th zero precision
      becomes ``1 / (2^k max(l_n, 1))``.

    Tokens are lists of strings; a str is split on whitespace. ``references`` is one
    reference or a list of them (see :func:`corpus_bleu`). Returns a float in [0, 1].
    """
    refs = _references(references)
    hyp = _tokens(hypothesis)
    w = _weights(max_n, weights)
    m, t, c, r = _bleu_stats(refs, hyp, max_n)
    return _bleu_score(m, t, c, r, w, smoothing, epsilon)


def corpus_bleu(list_of_references: Sequence[Any], hypotheses: Sequence[Any], max_n: int = 4,
                weights: Sequence[float] | None = None, smoothing: str | None = None,
                epsilon: float = 0.1) -> float:
    """Corpus-level BLEU: the clipped match counts ``m_n``, the hypothesis n-gram counts
    ``l_n``, the hypothesis lengths ``c`` and the closest reference lengths ``r`` are
    **summed over all sentences first**, then combined once,
    ``BLEU = BP(sum c, sum r) * exp(sum_n w_n log(sum m_n / sum l_n))``
    — not the average of sentence BLEUs. Smoothing as in :func:`sentence_bleu`,
    applied to the summed counts. (``l_n`` counts the n-grams that exist: NLTK's
    ``corpus_bleu`` also adds 1 for every hypothesis shorter than n, and without
    smoothing returns a tiny positive number where this returns 0.)

    ``list_of_references[i]`` is the reference (or list of references) of
    ``hypotheses[i]``; each a list of tokens or a whitespace-split str.
    """
    refs_list = list(list_of_references)
    hyps = list(hypotheses)
    if len(refs_list) != len(hyps):
        raise ValueError(
            f"corpus_bleu: {len(refs_list)} reference sets for {len(hyps)} hypotheses"
        )
    w = _weights(max_n, weights)
    matches = np.zeros(max_n, dtype=np.int64)
    totals = np.zeros(max_n, dtype=np.int64)
    c_sum = r_sum = 0
    for refs, hyp in zip(refs_list, hyps):
        m, t, c, r = _bleu_stats(_references(refs), _tokens(hyp), max_n)
        matches += m
        totals += t
        c_sum += c
        r_sum += r
    return _bleu_score(matches, totals, c_sum, r_sum, w, smoothing, epsilon)


# --------------------------------------------------------------------------- exact match
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def _squad_normalize(s: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace
    (the SQuAD evaluation normalisation)."""
    s = s.lower().translate(_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(preds: Sequence[str], refs: Sequence[Any],
                normalize: bool | Callable[[str], str] = False) -> float:
    """Fraction of predictions equal to their reference:
    ``EM = (1/N) sum_i [norm(pred_i) in {norm(ref) : ref in refs_i}]``.

    ``refs[i]`` is a str or a list of acceptable strings (any of them matches).
    ``normalize``: ``False`` compares the strings as they are; ``True`` applies the
    SQuAD normalisation (lower case, no punctuation, no articles, single spaces); a
    callable ``str -> str`` is applied to both sides. NaN for zero items.
    """
    preds = list(preds)
    refs = list(refs)
    if len(preds) != len(refs):
        raise ValueError(f"exact_match: {len(preds)} predictions for {len(refs)} references")
    if not preds:
        return math.nan
    if normalize is True:
        norm: Callable[[str], str] = _squad_normalize
    elif normalize is False or normalize is None:
        def norm(s: str) -> str:
            return s
    elif callable(normalize):
        norm = normalize
    else:
        raise TypeError(f"exact_match: normalize must be a bool or a callable, got {normalize!r}")
    hits = 0
    for p, r in zip(preds, refs):
        options = [r] if isinstance(r, str) else list(r)
        if any(not isinstance(o, str) for o in options) or not isinstance(p, str):
            raise TypeError("exact_match: predictions and references must be strings")
        target = norm(p)
        hits += any(norm(o) == target for o in options)
    return hits / len(preds)
