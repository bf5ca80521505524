"""Tests of minilm.train.classification_metrics: hand-computed small cases, Hypothesis
properties (perfect predictions, confusion sums, AUC of separated / reversed scores,
invariance to monotone transforms, agreement with the pairwise definition), the text
report and the PNG."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilm.train.classification_metrics import (
    average_ranks,
    binary_auc,
    classification_metrics,
    classification_report,
    plot_confusion,
    roc_auc_ovr,
)

NAMES = ["a", "b", "c"]


def test_hand_computed_three_classes():
    y = [0, 0, 0, 1, 1, 2]
    p = [0, 0, 1, 1, 2, 2]
    m = classification_metrics(y, p, label_names=NAMES)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class a: P = 2/2, R = 2/3, F1 = 0.8; b: P = 1/2, R = 1/2, F1 = 1/2; c: P = 1/2, R = 1, F1 = 2/3
    pc = m["per_class"]
    assert (pc["a"]["precision"], pc["a"]["recall"], pc["a"]["f1"]) == pytest.approx((1, 2 / 3, 0.8))
    assert (pc["b"]["precision"], pc["b"]["recall"], pc["b"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (pc["c"]["precision"], pc["c"]["recall"], pc["c"]["f1"]) == pytest.approx((0.5, 1, 2 / 3))
    assert m["macro"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["macro"]["precision"] == pytest.approx(2 / 3)
    assert m["weighted"]["f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert m["weighted"]["recall"] == pytest.approx(4 / 6)   # weighted recall = accuracy
    assert m["support"] == [3, 2, 1]


def test_average_ranks_ties():
    np.testing.assert_allclose(average_ranks([10, 20, 20, 30]), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(average_ranks([3, 1, 3, 3]), [3, 1, 3, 3])


def test_binary_auc_hand_computed():
    # positives 0.8, 0.4; negatives 0.6, 0.4, 0.1: pairs > : (0.8 all 3) + (0.4 > 0.1) = 4,
    # one tie (0.4, 0.4) counts 1/2 -> 4.5 / 6
    y = [1, 0, 1, 0, 0]
    s = [0.8, 0.6, 0.4, 0.4, 0.1]
    assert binary_auc(y, s) == pytest.approx(4.5 / 6)
    assert math.isnan(binary_auc([1, 1], [0.1, 0.2]))


def test_roc_auc_ovr_hand_computed():
    y = np.array([0, 1, 2, 0])
    s = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3], [0.4, 0.5, 0.1]])
    per = roc_auc_ovr(y, s, average=None)
    # class 0: positives 0.9, 0.4 vs negatives 0.2, 0.5 -> (2 + 1) / 4
    # class 1: positive 0.7 vs 0.05, 0.2, 0.5 -> 1; class 2: 0.3 vs 0.05, 0.1, 0.1 -> 1
    np.testing.assert_allclose(per, [0.75, 1.0, 1.0])
    assert roc_auc_ovr(y, s) == pytest.approx(2.75 / 3)
    assert roc_auc_ovr(y, s, "weighted") == pytest.approx((2 * 0.75 + 1 + 1) / 4)


def _pairwise_auc(y, s):
    pos, neg = s[y], s[~y]
    return (np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])) \
        / (len(pos) * len(neg))


labels_and_scores = st.integers(2, 30).flatmap(lambda n: st.tuples(
    st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda v: 0 < sum(v) < len(v)),
    st.lists(st.integers(-5, 5), min_size=n, max_size=n)))


@given(labels_and_scores)
def test_auc_equals_pairwise_definition(ys):
    y, s = np.array(ys[0]), np.array(ys[1], dtype=float)
    assert binary_auc(y, s) == pytest.approx(_pairwise_auc(y, s))


@given(labels_and_scores)
def test_auc_invariant_to_monotone_transforms(ys):
    y, s = np.array(ys[0]), np.array(ys[1], dtype=float)
    a = binary_auc(y, s)
    assert binary_auc(y, np.exp(s / 3)) == pytest.approx(a)
    assert binary_auc(y, 7 * s ** 3 - 2) == pytest.approx(a)
    assert binary_auc(y, -s) == pytest.approx(1 - a)


@given(st.lists(st.booleans(), min_size=2, max_size=40).filter(lambda v: 0 < sum(v) < len(v)),
       st.integers(0, 2 ** 31 - 1))
def test_auc_of_separated_scores(y, seed):
    y = np.array(y)
    rng = np.random.default_rng(seed)
    s = np.where(y, rng.uniform(1, 2, len(y)), rng.uniform(-2, 0.9, len(y)))
    assert binary_auc(y, s) == 1.0
    assert binary_auc(y, -s) == 0.0


@given(st.lists(st.integers(0, 4), min_size=1, max_size=60))
def test_perfect_prediction(y):
    y = np.array(y)
    m = classification_metrics(y, y, label_names=list("abcde"))
    assert m["accuracy"] == 1.0
    assert m["macro"]["f1"] == pytest.approx(1.0) and m["weighted"]["f1"] == pytest.approx(1.0)
    onehot = np.eye(5)[y]
    auc = roc_auc_ovr(y, onehot, average=None)
    assert all(a == 1.0 for a in auc if not math.isnan(a))


@given(st.integers(1, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 3), min_size=n, max_size=n),
    st.lists(st.integers(0, 3), min_size=n, max_size=n))))
def test_confusion_sums(yp):
    y, p = np.array(yp[0]), np.array(yp[1])
    m = classification_metrics(y, p, label_names=list("abcd"))
    cm = np.array(m["confusion"])
    assert cm.sum() == len(y)
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(y, minlength=4))
    np.testing.assert_array_equal(cm.sum(axis=0), np.bincount(p, minlength=4))
    assert m["accuracy"] == pytest.approx(np.trace(cm) / len(y))


def test_report_and_bad_input(tmp_path):
    y = [0, 1, 2, 2]
    s = np.array([[2.0, 0, 0], [0, 2, 0], [0, 0, 2], [0, 3, 1]])
    m = classification_metrics(y, s.argmax(1), s, NAMES)
    text = classification_report(m)
    assert "macro avg" in text and "weighted avg" in text and "ROC-AUC" in text
    assert "accuracy" in text and "0.7500 (3/4)" in text
    with pytest.raises(ValueError, match="roc_auc_ovr"):
        roc_auc_ovr(y, s[:3])
    with pytest.raises(ValueError, match="labels must lie"):
        roc_auc_ovr([0, 5, 1, 1], s)
    with pytest.raises(ValueError, match="no samples"):
        classification_metrics([], [])
    png = tmp_path / "cm.png"
    plot_confusion(np.array(m["confusion"]), NAMES, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(ValueError, match="plot_confusion"):
        plot_confusion(np.eye(2), NAMES, png)
