"""Metrics of a single-label, K-class classifier, gathered for a test report.

Accuracy, the confusion matrix and per-class precision / recall / F1 are the ones of
:mod:`minilm.train.metrics` (one implementation each; re-exported here). This module adds
what a classification run reports on top of them:

- :func:`roc_auc_ovr`: ROC-AUC one-vs-rest from class scores, rank-based (ties averaged);
- :func:`classification_metrics`: every number of the report in one JSON-able dict;
- :func:`classification_report`: that dict as a fixed-width text table;
- :func:`plot_confusion`: the confusion matrix as a PNG (matplotlib Agg, atomic write).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import to_host
from .metrics import accuracy, confusion_matrix, precision_recall_f1

__all__ = ["accuracy", "average_ranks", "binary_auc", "classification_metrics",
           "classification_report", "confusion_matrix", "plot_confusion",
           "precision_recall_f1", "roc_auc_ovr"]


def average_ranks(x: Any) -> np.ndarray:
    """1-based ranks of the values of a 1-D array, ties given the mean of the ranks
    they span (``[10, 20, 20, 30] -> [1, 2.5, 2.5, 4]``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # start of each run of equal values, and the run each sorted position belongs to
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], xs.size]
    run = np.repeat(np.arange(len(starts)), ends - starts)
    mean_rank = (starts + ends + 1) / 2.0           # mean of the ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = mean_rank[run]
    return ranks


def binary_auc(y: Any, scores: Any) -> float:
    """AUC of binary labels against scores by the Mann–Whitney rank formula:

        AUC = (R_pos - P (P + 1) / 2) / (P N)

    with ``R_pos`` the sum of the (tie-averaged) ranks of the P positives among all
    P + N scores; equal to P(s_pos > s_neg) + P(s_pos = s_neg) / 2. NaN when either
    class is absent."""
    y = np.asarray(y).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"binary_auc: {y.size} labels but {s.size} scores")
    if np.isnan(s).any():
        raise ValueError("binary_auc: scores contain NaN")
    p = int(y.sum())
    n = y.size - p
    if p == 0 or n == 0:
        return math.nan
    r_pos = float(average_ranks(s)[y].sum())
    return (r_pos - p * (p + 1) / 2.0) / (p * n)


def roc_auc_ovr(y_true: Any, scores: Any, average: str | None = "macro") -> Any:
    """One-vs-rest ROC-AUC of ``scores`` (N, K) (probabilities, logits or any score
    that grows with the class's likelihood) against labels ``y_true`` (N,) in [0, K).

    ``AUC_c = binary_auc(y == c, scores[:, c])``. ``average``: None gives the K values
    (NaN for a class absent from y_true or present in every row); "macro" their mean
    over the defined ones; "weighted" the mean weighted by support ``n_c / n``.
    """
    y = to_host(y_true).ravel().astype(np.int64)
    s = to_host(scores).astype(np.float64)
    if s.ndim != 2 or s.shape[0] != y.size:
        raise ValueError(f"roc_auc_ovr: scores must be (N, K) with N = {y.size} labels, "
                         f"got shape {s.shape}")
    if y.size and (y.min() < 0 or y.max() >= s.shape[1]):
        raise ValueError(f"roc_auc_ovr: labels must lie in [0, {s.shape[1]})")
    per = np.array([binary_auc(y == c, s[:, c]) for c in range(s.shape[1])])
    if average is None:
        return per
    ok = ~np.isnan(per)
    if not ok.any():
        return math.nan
    if average == "macro":
        return float(per[ok].mean())
    if average == "weighted":
        support = np.bincount(y, minlength=s.shape[1]).astype(np.float64)[ok]
        return float((support * per[ok]).sum() / support.sum())
    raise ValueError(f"roc_auc_ovr: average must be 'macro', 'weighted' or None, got {average!r}")


def classification_metrics(y_true: Any, y_pred: Any, scores: Any = None,
                           label_names: Sequence[str] | None = None) -> dict:
    """Accuracy, per-class / macro / weighted precision, recall and F1, the confusion
    matrix (rows true, columns predicted) and, given ``scores`` (N, K), the one-vs-rest
    ROC-AUC (macro and per class), as one JSON-able dict."""
    y = to_host(y_true).ravel().astype(np.int64)
    p = to_host(y_pred).ravel().astype(np.int64)
    if y.size == 0:
        raise ValueError("classification_metrics: no samples")
    k = len(label_names) if label_names is not None else int(max(y.max(), p.max())) + 1
    names = list(label_names) if label_names is not None else [str(c) for c in range(k)]
    cm = confusion_matrix(y, p, k)
    pc, rc, fc = precision_recall_f1(y, p, k, average=None)
    out = {"n": int(y.size), "accuracy": accuracy(p, y), "labels": names,
           "confusion": cm.tolist(), "support": cm.sum(axis=1).tolist(),
           "per_class": {names[c]: {"precision": float(pc[c]), "recall": float(rc[c]),
                                    "f1": float(fc[c]), "support": int(cm[c].sum())}
                         for c in range(k)}}
    for avg in ("macro", "weighted"):
        pr, re, f1 = precision_recall_f1(y, p, k, average=avg)
        out[avg] = {"precision": pr, "recall": re, "f1": f1}
    if scores is not None:
        per = roc_auc_ovr(y, scores, average=None)
        out["roc_auc_ovr"] = roc_auc_ovr(y, scores, "macro")
        out["roc_auc_per_class"] = {names[c]: (None if np.isnan(a) else float(a))
                                    for c, a in enumerate(per)}
    return out


def classification_report(m: dict) -> str:
    """The dict of :func:`classification_metrics` as text: a per-class table, the macro
    and weighted averages, accuracy, ROC-AUC and the confusion matrix."""
    names = m["labels"]
    w = max(12, *(len(s) for s in names))
    lines = [f"{'':{w}}  precision  recall     f1  support"]
    for name in names:
        c = m["per_class"][name]
        lines.append(f"{name:{w}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}"
                     f"  {c['support']:7d}")
    for avg in ("macro", "weighted"):
        a = m[avg]
        lines.append(f"{avg + ' avg':{w}}  {a['precision']:9.4f}  {a['recall']:6.4f}  {a['f1']:.4f}"
                     f"  {m['n']:7d}")
    lines.append(f"{'accuracy':{w}}  {m['accuracy']:.4f} ({round(m['accuracy'] * m['n'])}/{m['n']})")
    if "roc_auc_ovr" in m:
        lines.append(f"{'ROC-AUC ovr':{w}}  {m['roc_auc_ovr']:.4f} (macro)")
    lines.append("confusion matrix (rows true, columns predicted):")
    cw = max(5, *(len(s[:8]) for s in names))
    lines.append(f"{'':{w}}  " + " ".join(f"{s[:8]:>{cw}}" for s in names))
    for name, row in zip(names, m["confusion"]):
        lines.append(f"{name:{w}}  " + " ".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)


def plot_confusion(cm: Any, label_names: Sequence[str], png_path: str | Path,
                   title: str = "confusion matrix") -> None:
    """Save the confusion matrix (rows true, columns predicted) as a PNG heat map with
    the counts written in the cells; written to a temporary file, then renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    k = len(label_names)
    if cm.shape != (k, k):
        raise ValueError(f"plot_confusion: matrix of shape {cm.shape} for {k} labels")
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.1 * k + 2))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), label_names, rotation=45, ha="right")
    ax.set_yticks(range(k), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if cm[i, j] > top / 2 else "black")
    fig.tight_layout()
    tmp = str(png_path) + ".tmp.png"
    try:
        fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    os.replace(tmp, png_path)
