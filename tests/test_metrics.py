"""Tests of minilm.train.metrics: hand-computed values on small examples, Hypothesis
properties (AUC identities, confusion-matrix sums, perfect scores), and, only when
scikit-learn happens to be importable, a cross-check against it."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilm
import minilm.functional as F
from minilm.train.metrics import (
    accuracy,
    confusion_matrix,
    corpus_bleu,
    exact_match,
    perplexity,
    precision_recall_f1,
    roc_auc,
    roc_curve,
    sentence_bleu,
)

# --------------------------------------------------------------------------- perplexity


def test_perplexity_of_mean_nll():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(np.float32(2.0)) == pytest.approx(math.exp(2.0))


def test_perplexity_from_per_token_losses_and_weighted_batches():
    # per-token losses: exp(mean) = exp((1 + 2 + 3) / 3) = exp(2)
    assert perplexity([1.0, 2.0, 3.0]) == pytest.approx(math.exp(2.0))
    # batch means 1.0 over 1 token and 2.0 over 3 tokens: exp((1*1 + 3*2) / 4) = exp(1.75),
    # not exp(1.5) as a plain mean of the two batch losses would give
    assert perplexity([1.0, 2.0], counts=[1, 3]) == pytest.approx(math.exp(1.75))
    assert perplexity(1e6) == math.inf
    with pytest.raises(ValueError):
        perplexity([1.0, 2.0], counts=[1])
    with pytest.raises(ValueError):
        perplexity([1.0], counts=[0])


@given(st.integers(2, 2000))
def test_perplexity_of_uniform_distribution_is_vocab_size(v):
    assert perplexity(math.log(v)) == pytest.approx(v, rel=1e-12)


def test_perplexity_of_uniform_logits_through_cross_entropy():
    # all-zero logits are the uniform distribution over V = 50 classes: NLL = log 50
    logits = minilm.zeros(6, 50)
    loss = F.cross_entropy(logits, minilm.tensor([0, 3, 7, 49, 1, 2]))
    assert perplexity(loss) == pytest.approx(50.0, rel=1e-5)  # a minilm Tensor works


# --------------------------------------------------------------------------- accuracy


def test_accuracy_labels_logits_and_ignore_index():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])  # argmax = 1, 0, 1
    assert accuracy(logits, [1, 1, 1]) == pytest.approx(2 / 3)
    # LM shapes: (B, T, V) logits against (B, T) targets, padding ignored
    lm_logits = np.zeros((2, 3, 5))
    lm_logits[..., 2] = 1.0  # always predicts token 2
    target = np.array([[2, 2, -100], [1, 2, -100]])
    assert accuracy(minilm.tensor(lm_logits), minilm.tensor(target), ignore_index=-100) == 0.75
    assert math.isnan(accuracy([1, 2], [-100, -100], ignore_index=-100))
    with pytest.raises(ValueError, match="shape"):
        accuracy([1, 2, 3], [1, 2])


# --------------------------------------------------------------------------- classification


def test_confusion_matrix_by_hand():
    # rows = true class, columns = predicted class
    cm = confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 1, 1])
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [0, 1, 1]])
    cm = confusion_matrix([0, 1], [1, 1], num_classes=4)
    assert cm.shape == (4, 4) and cm[0, 1] == 1 and cm[1, 1] == 1 and cm.sum() == 2
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 5], [0, 1], num_classes=3)
    with pytest.raises(ValueError):
        confusion_matrix([0, -1], [0, 1])


def test_precision_recall_f1_by_hand():
    y_true, y_pred = [0, 1, 2, 2, 1], [0, 2, 2, 1, 1]
    # class 0: TP 1, predicted 1, support 1 -> P = R = F1 = 1
    # class 1: TP 1, predicted 2, support 2 -> P = R = F1 = 1/2; class 2 the same
    p, r, f = precision_recall_f1(y_true, y_pred, average=None)
    np.testing.assert_allclose(p, [1, 0.5, 0.5])
    np.testing.assert_allclose(r, [1, 0.5, 0.5])
    np.testing.assert_allclose(f, [1, 0.5, 0.5])
    assert precision_recall_f1(y_true, y_pred) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # weighted by support (1, 2, 2): (1 + 2 * 0.5 + 2 * 0.5) / 5 = 3/5
    assert precision_recall_f1(y_true, y_pred, average="weighted") == pytest.approx((0.6, 0.6, 0.6))
    # micro = accuracy = 3/5 for single-label data
    assert precision_recall_f1(y_true, y_pred, average="micro") == pytest.approx((0.6, 0.6, 0.6))
    with pytest.raises(ValueError, match="average"):
        precision_recall_f1(y_true, y_pred, average="samples")


def test_precision_recall_f1_zero_division_is_zero():
    # class 1 is never predicted: P_1 = 0 (0/0 -> 0), R_1 = 0/1 = 0, F1_1 = 0
    # class 0: P = 2/3, R = 2/2 = 1, F1 = 2 * (2/3) / (5/3) = 0.8
    p, r, f = precision_recall_f1([0, 0, 1], [0, 0, 0], average=None)
    np.testing.assert_allclose(p, [2 / 3, 0.0])
    np.testing.assert_allclose(r, [1.0, 0.0])
    np.testing.assert_allclose(f, [0.8, 0.0])
    assert precision_recall_f1([0, 0, 1], [0, 0, 0]) == pytest.approx((1 / 3, 0.5, 0.4))
    # a class that occurs nowhere (2 with num_classes=3) is left out of the macro mean
    assert precision_recall_f1([0, 1], [0, 1], num_classes=3) == (1.0, 1.0, 1.0)


labels = st.integers(1, 6).flatmap(
    lambda k: st.integers(1, 40).flatmap(
        lambda n: st.tuples(st.just(k), st.lists(st.integers(0, k - 1), min_size=n, max_size=n),
                            st.lists(st.integers(0, k - 1), min_size=n, max_size=n))))


@given(labels)
def test_confusion_matrix_sums_and_recall(case):
    k, y_true, y_pred = case
    cm = confusion_matrix(y_true, y_pred, num_classes=k)
    assert cm.shape == (k, k) and cm.sum() == len(y_true)
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(y_true, minlength=k))
    np.testing.assert_array_equal(cm.sum(axis=0), np.bincount(y_pred, minlength=k))
    _, recall, _ = precision_recall_f1(y_true, y_pred, num_classes=k, average=None)
    rows = cm.sum(axis=1)
    present = rows > 0
    np.testing.assert_allclose(recall[present], np.diag(cm)[present] / rows[present])
    assert np.trace(cm) / len(y_true) == pytest.approx(accuracy(y_pred, y_true))
    p, r, f = precision_recall_f1(y_true, y_pred, num_classes=k, average="micro")
    assert p == pytest.approx(accuracy(y_pred, y_true)) and r == pytest.approx(p)
    for avg in ("macro", "weighted", "micro"):
        assert all(0.0 <= v <= 1.0 for v in precision_recall_f1(y_true, y_pred, k, avg))


@given(labels)
def test_perfect_prediction_scores_one(case):
    _, y_true, _ = case
    assert precision_recall_f1(y_true, y_true) == (1.0, 1.0, 1.0)
    assert precision_recall_f1(y_true, y_true, average="weighted") == pytest.approx((1.0, 1.0, 1.0))
    assert accuracy(y_true, y_true) == 1.0


# --------------------------------------------------------------------------- ROC


def test_roc_curve_by_hand():
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    fpr, tpr, thr = roc_curve(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    # area: 0.5 * 0.5 (from fpr 0 -> 0.5 at tpr 0.5) + 0.5 * 1 = 0.75
    assert roc_auc(y, s) == 0.75


def test_roc_curve_with_ties_is_diagonal():
    # sorted by score: 0.9 (pos) | 0.5 (neg, pos tied) | 0.2 (neg)
    # points: (0, 0), (0, .5), (.5, 1) diagonal across the tie, (1, 1)
    y, s = [0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]
    fpr, tpr, thr = roc_curve(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.5, 0.2])
    # trapezoids: 0.5 * (0.5 + 1) / 2 + 0.5 * 1 = 0.875; Mann-Whitney: pairs (pos, neg)
    # (.5,.5) tie 1/2, (.5,.2) 1, (.9,.5) 1, (.9,.2) 1 -> 3.5 / 4 = 0.875
    assert roc_auc(y, s) == 0.875
    # all scores equal: one diagonal from (0, 0) to (1, 1), AUC 1/2
    assert roc_auc([0, 1, 1, 0, 1], [3, 3, 3, 3, 3]) == 0.5


def test_roc_errors():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="binary"):
        roc_curve([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, np.nan])


def _mann_whitney_auc(y, s):
    pos = [si for yi, si in zip(y, s) if yi == 1]
    neg = [si for yi, si in zip(y, s) if yi == 0]
    u = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return u / (len(pos) * len(neg))


binary_scores = st.integers(2, 30).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
        st.one_of(st.lists(st.integers(-3, 3), min_size=n, max_size=n),  # many ties
                  st.lists(st.floats(-1e3, 1e3), min_size=n, max_size=n))))


@given(binary_scores)
def test_auc_is_the_mann_whitney_statistic(case):
    y, s = case
    auc = roc_auc(y, s)
    assert 0.0 <= auc <= 1.0
    assert auc == pytest.approx(_mann_whitney_auc(y, s), abs=1e-12)
    # reversing the score (or swapping the classes) mirrors the curve: 1 - AUC, ties too
    assert roc_auc(y, -np.asarray(s, dtype=float)) == pytest.approx(1.0 - auc, abs=1e-12)
    assert roc_auc(1 - np.asarray(y), s) == pytest.approx(1.0 - auc, abs=1e-12)


@given(binary_scores)
def test_roc_curve_shape(case):
    y, s = case
    fpr, tpr, thr = roc_curve(minilm.tensor(np.asarray(y)), np.asarray(s, dtype=float))
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thr) < 0)  # one point per distinct score
    assert len(thr) == len(set(s)) + 1
    assert roc_auc(y, s) == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-12)


def test_against_sklearn_if_available():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 10, 200).astype(float)  # ties
    assert roc_auc(y, s) == pytest.approx(metrics.roc_auc_score(y, s))
    t, p = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    np.testing.assert_array_equal(confusion_matrix(t, p), metrics.confusion_matrix(t, p))
    for avg in ("macro", "weighted", "micro"):
        ours = precision_recall_f1(t, p, average=avg)
        theirs = metrics.precision_recall_fscore_support(t, p, average=avg, zero_division=0)[:3]
        assert ours == pytest.approx(theirs)


# --------------------------------------------------------------------------- BLEU

REF = "the cat is on the mat"
HYP = "the cat sat on the mat"
# Worked out by hand (c = r = 6, so BP = exp(1 - 6/6) = 1):
#   unigrams: hyp the x2, cat, sat, on, mat (6); clipped matches the 2, cat, on, mat -> p1 = 5/6
#   bigrams:  the-cat, cat-sat, sat-on, on-the, the-mat (5); matches the-cat, on-the,
#             the-mat -> p2 = 3/5
#   trigrams: the-cat-sat, cat-sat-on, sat-on-the, on-the-mat (4); match on-the-mat -> p3 = 1/4
#   4-grams:  3, no match -> p4 = 0/3
# BLEU-3 = (5/6 * 3/5 * 1/4)^(1/3) = (1/8)^(1/3) = 1/2; BLEU-4 unsmoothed = 0.


def test_sentence_bleu_worked_example():
    assert sentence_bleu(REF, HYP, max_n=3) == pytest.approx(0.5)
    assert sentence_bleu(REF, HYP) == 0.0  # p4 = 0 and no smoothing
    assert sentence_bleu([REF.split()], HYP.split(), max_n=3) == pytest.approx(0.5)
    assert sentence_bleu(REF.split(), HYP, max_n=3) == pytest.approx(0.5)
    # weights (1/2, 1/2, 0, 0): the zero-weighted p4 = 0 does not matter
    assert sentence_bleu(REF, HYP, weights=(0.5, 0.5, 0, 0)) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))


def test_sentence_bleu_smoothing():
    # floor / epsilon (method1): p4 = 0.1 / 3 -> (5/6 * 3/5 * 1/4 * 1/30)^(1/4) = (1/240)^(1/4)
    for name in ("floor", "epsilon", "method1"):
        assert sentence_bleu(REF, HYP, smoothing=name) == pytest.approx((1 / 240) ** 0.25)
    # add-one on n > 1 (Lin & Och, method2): p2 = 4/6, p3 = 2/5, p4 = 1/4
    # -> (5/6 * 4/6 * 2/5 * 1/4)^(1/4) = (1/18)^(1/4)
    for name in ("add1", "method2"):
        assert sentence_bleu(REF, HYP, smoothing=name) == pytest.approx((1 / 18) ** 0.25)
    # exp (method3): the first zero precision becomes 1/(2 * 3) -> (1/8 * 1/6)^(1/4)
    assert sentence_bleu(REF, HYP, smoothing="exp") == pytest.approx((1 / 48) ** 0.25)
    # a hypothesis shorter than n: add1 uses (0 + 1) / (max(0, 1) + 1) = 1/2 (as NLTK)
    # "b c c" vs "c": p1 = 1/3, p2 = (0 + 1)/(2 + 1), p3 = (0 + 1)/(1 + 1), p4 = 1/2, BP = 1
    assert sentence_bleu("c", "b c c", smoothing="add1") == pytest.approx((1 / 36) ** 0.25)
    # no unigram in common: 0 whatever the smoothing
    for name in ("add1", "floor", "exp"):
        assert sentence_bleu("a b c", "x y z", smoothing=name) == 0.0
    with pytest.raises(ValueError, match="smoothing"):
        sentence_bleu(REF, HYP, smoothing="laplace")


def test_bleu_perfect_match_is_one():
    assert sentence_bleu(REF, REF) == 1.0
    assert corpus_bleu([[REF], ["a b c d e"]], [REF, "a b c d e"]) == 1.0


def test_bleu_clipping():
    # "the the the the" vs "the cat": "the" is credited at most once -> p1 = 1/4;
    # c = 4 > r = 2 so BP = 1 and BLEU-1 = 1/4 (an unclipped precision would be 4/4)
    assert sentence_bleu("the cat", "the the the the", max_n=1) == pytest.approx(0.25)
    # Papineni et al.'s example: 7 x "the" against two references, max count of "the" in
    # one reference is 2 -> p1 = 2/7; closest reference length is 7 -> BP = 1
    refs = ["the cat is on the mat", "there is a cat on the mat"]
    assert sentence_bleu(refs, "the the the the the the the", max_n=1) == pytest.approx(2 / 7)


def test_bleu_brevity_penalty():
    # hypothesis "the cat" (c = 2) against a 6-token reference: p1 = p2 = 1,
    # BP = exp(1 - 6/2) = exp(-2)
    assert sentence_bleu(REF, "the cat", max_n=2) == pytest.approx(math.exp(-2))
    # closest reference length with a tie goes to the shorter one: c = 4, lengths 3 and 5
    # -> r = 3, c > r, BP = 1 (r = 5 would give exp(1 - 5/4))
    assert sentence_bleu(["a b c", "a b c d e"], "a b c d", max_n=1) == 1.0
    # c == r -> BP = exp(0) = 1; an empty hypothesis scores 0
    assert sentence_bleu("a b", "a b", max_n=1) == 1.0
    assert sentence_bleu("a b", "", max_n=1) == 0.0


def test_corpus_bleu_sums_counts_before_dividing():
    # sentence 1: 4/4 unigrams match (c = r = 4); sentence 2: "x z" vs "x y", 1/2 (c = r = 2)
    # corpus p1 = (4 + 1) / (4 + 2) = 5/6, BP = 1 -> 5/6, while the mean of the
    # sentence scores would be (1 + 1/2) / 2 = 3/4
    refs = [["a b c d"], ["x y"]]
    hyps = ["a b c d", "x z"]
    assert corpus_bleu(refs, hyps, max_n=1) == pytest.approx(5 / 6)
    # brevity at corpus level: c = 4 + 1 = 5 against r = 4 + 2 = 6 -> BP = exp(1 - 6/5)
    # p1 = (4 + 1) / 5 = 1
    assert corpus_bleu(refs, ["a b c d", "x"], max_n=1) == pytest.approx(math.exp(1 - 6 / 5))
    with pytest.raises(ValueError):
        corpus_bleu(refs, hyps[:1])
    with pytest.raises(ValueError, match="max_n"):
        corpus_bleu(refs, hyps, weights=(0.5, 0.5))


words = st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=0, max_size=12)


@given(st.lists(words, min_size=1, max_size=3), words,
       st.sampled_from([None, "add1", "floor", "exp"]))
def test_bleu_properties(refs, hyp, smoothing):
    b = sentence_bleu(refs, hyp, smoothing=smoothing)
    assert 0.0 <= b <= 1.0 + 1e-12
    # one sentence: corpus BLEU is sentence BLEU
    assert corpus_bleu([refs], [hyp], smoothing=smoothing) == pytest.approx(b)
    if len(hyp) >= 4:
        assert sentence_bleu([hyp] + refs, hyp, smoothing=smoothing) == pytest.approx(1.0)


# --------------------------------------------------------------------------- exact match


def test_exact_match():
    assert exact_match(["Paris", "london"], ["Paris", "London"]) == 0.5
    assert exact_match(["Paris", "london"], ["Paris", "London"], normalize=True) == 1.0
    # SQuAD normalisation: case, punctuation and articles do not count
    assert exact_match(["The Eiffel tower!"], ["eiffel  tower"], normalize=True) == 1.0
    # several acceptable answers
    assert exact_match(["4", "five"], [["four", "4"], ["5"]]) == 0.5
    assert exact_match(["A"], ["a"], normalize=str.lower) == 1.0
    assert math.isnan(exact_match([], []))
    with pytest.raises(ValueError):
        exact_match(["a"], [])
