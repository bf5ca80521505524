"""The worked numbers of docs/losses.md and docs/metrics.md, recomputed with minilm.

Each worked example in those pages ends with an HTML comment
``<!-- check: name = value -->``. Every such comment must have a callable in CHECKS
below, every callable must have a comment, and the callable's value must equal the
written one to the number of decimals printed there."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

import minilm as ml
from minilm import functional as F
from minilm.models.pretrained import cosine_table
from minilm.train import metrics as M
from minilm.train import seq_metrics as S
from minilm.train.classification_metrics import binary_auc, roc_auc_ovr
from minilm.train.encoder_distill import embedding_distill_loss
from minilm.train.trainer import evaluate_loss

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("losses.md", "metrics.md")
CHECK = re.compile(r"<!--\s*check:\s*([A-Za-z0-9_]+)\s*=\s*(-?\d+(?:\.\d+)?)\s*-->")


def f(a) -> ml.Tensor:
    return ml.Tensor(np.array(a, dtype=np.float64))


def ids(a) -> ml.Tensor:
    return ml.Tensor(np.array(a, dtype=np.int64))


Z = [[2.0, 1.0, 0.1]]


def ce_grad(**kw) -> float:
    z = ml.Tensor(np.array(Z), requires_grad=True)
    F.cross_entropy(z, ids([0]), **kw).backward()
    return float(np.asarray(z.grad.numpy())[0, 0])


def bce_logits_grad() -> float:
    z = ml.Tensor(np.array([1.0, -2.0]), requires_grad=True)
    F.binary_cross_entropy_with_logits(z, f([1.0, 0.0])).backward()
    return float(np.asarray(z.grad.numpy())[0])


class _FakeModel:
    """model(x, y) -> (None, mean loss): the batch's first target holds its mean loss."""

    training = True

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def __call__(self, x, y):
        return None, ml.Tensor(np.array(float(np.asarray(y.numpy()).flat[0])))


def eval_ppl() -> float:
    batches = [(np.zeros((1, 10), np.int64), np.full((1, 10), 2.0)),
               (np.zeros((1, 30), np.int64), np.full((1, 30), 3.0))]
    out = evaluate_loss(_FakeModel(), iter(batches))
    assert out["tokens"] == 40 and out["loss"] == pytest.approx(2.75)
    return out["ppl"]


YT, YP = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
HYP, REF = "the cat sat on the mat", "the cat is on the mat"
EM_PRED, EM_REF = ["The Cat.", "dog", "a bird"], ["the cat", ["Dog", "dog"], "bird"]
OVR_SCORES = [[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]
ZS, ZT = [[1.0, 2.0, 0.0]], [[0.0, 3.0, 0.0]]
X3, T3 = [1.0, 2.0, 3.0], [1.5, 2.0, 1.0]


def prf(average: str, which: int) -> float:
    return M.precision_recall_f1(YT, YP, average=average)[which]


def cosine_from_table() -> float:
    table = cosine_table(["a", "b"], np.array([[1.0, 0.0], [0.6, 0.8]]))
    return float(table.splitlines()[1].split()[2])


CHECKS = {
    # ---------------------------------------------------------------- docs/losses.md
    "cross_entropy": lambda: F.cross_entropy(f(Z), ids([0])).item(),
    "cross_entropy_grad0": lambda: ce_grad(),
    "cross_entropy_ignore_index": lambda: F.cross_entropy(
        f(Z + [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), ids([0, -100, -100])).item(),
    "cross_entropy_weighted": lambda: F.cross_entropy(
        f(Z + Z), ids([0, 1]), weight=f([2.0, 1.0, 1.0])).item(),
    "cross_entropy_label_smoothing": lambda: F.cross_entropy(
        f(Z), ids([0]), label_smoothing=0.1).item(),
    "cross_entropy_label_smoothing_grad0": lambda: ce_grad(label_smoothing=0.1),
    "cross_entropy_soft_target": lambda: F.cross_entropy(f(Z), f([[0.7, 0.2, 0.1]])).item(),
    "nll_loss": lambda: F.nll_loss(f(np.log([[0.7, 0.2, 0.1]])), ids([1])).item(),
    "kl_div_batchmean": lambda: F.kl_div(f(np.log([[0.5, 0.5]])), f([[0.8, 0.2]]),
                                         reduction="batchmean").item(),
    "kl_div_mean": lambda: F.kl_div(f(np.log([[0.5, 0.5]])), f([[0.8, 0.2]])).item(),
    "multi_margin_loss": lambda: F.multi_margin_loss(f([[0.1, 0.2, 0.4, 0.8]]), ids([3])).item(),
    "mse_loss": lambda: F.mse_loss(f(X3), f(T3)).item(),
    "l1_loss": lambda: F.l1_loss(f(X3), f(T3)).item(),
    "smooth_l1_loss": lambda: F.smooth_l1_loss(f(X3), f(T3), beta=1.0).item(),
    "huber_loss": lambda: F.huber_loss(f(X3), f(T3), delta=1.5).item(),
    "binary_cross_entropy": lambda: F.binary_cross_entropy(f([0.8, 0.3]), f([1.0, 0.0])).item(),
    "bce_with_logits": lambda: F.binary_cross_entropy_with_logits(
        f([1.0, -2.0]), f([1.0, 0.0])).item(),
    "bce_with_logits_grad0": bce_logits_grad,
    "bce_with_logits_pos_weight": lambda: F.binary_cross_entropy_with_logits(
        f([1.0, -2.0]), f([1.0, 0.0]), pos_weight=f([3.0])).item(),
    "hinge_embedding_loss": lambda: F.hinge_embedding_loss(
        f([0.3, 1.2, 0.4]), f([1.0, -1.0, -1.0]), margin=1.0).item(),
    "distillation_soft": lambda: F.distillation_loss(f(ZS), f(ZT), None, T=2.0, alpha=1.0).item(),
    "distillation_loss": lambda: F.distillation_loss(f(ZS), f(ZT), ids([1]), T=2.0,
                                                     alpha=0.5).item(),
    "hidden_state_mse": lambda: F.hidden_state_mse(f([[1.0, 2.0]]), f([[0.0, 0.0]])).item(),
    "embedding_distill_loss": lambda: embedding_distill_loss(
        f([[1.0, 0.0]]), np.array([[0.6, 0.8]])).item(),
    "l1_penalty": lambda: F.l1_penalty(f([1.0, -2.0, 3.0]), 0.1).item(),
    "l2_penalty": lambda: F.l2_penalty(f([1.0, -2.0, 3.0]), 0.1).item(),
    # ---------------------------------------------------------------- docs/metrics.md
    "perplexity_weighted": lambda: M.perplexity([2.0, 3.0], [10, 30]),
    "perplexity_uniform": lambda: M.perplexity(math.log(50.0)),
    "evaluate_loss_ppl": eval_ppl,
    "accuracy": lambda: M.accuracy([0, 1, 1, 2], [0, 1, 2, -100], ignore_index=-100),
    "confusion_true0_pred1": lambda: M.confusion_matrix(YT, YP)[0, 1],
    "confusion_trace": lambda: np.trace(M.confusion_matrix(YT, YP)),
    "f1_class0": lambda: M.precision_recall_f1(YT, YP, average=None)[2][0],
    "macro_precision": lambda: prf("macro", 0),
    "macro_recall": lambda: prf("macro", 1),
    "macro_f1": lambda: prf("macro", 2),
    "weighted_precision": lambda: prf("weighted", 0),
    "weighted_f1": lambda: prf("weighted", 2),
    "micro_f1": lambda: prf("micro", 2),
    "roc_auc": lambda: M.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]),
    "binary_auc_ties": lambda: binary_auc([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.9]),
    "roc_auc_ovr_macro": lambda: roc_auc_ovr([0, 1, 2, 1], OVR_SCORES, "macro"),
    "sentence_bleu_2": lambda: M.sentence_bleu(REF, HYP, max_n=2),
    "sentence_bleu_4": lambda: M.sentence_bleu(REF, HYP),
    "sentence_bleu_4_exp": lambda: M.sentence_bleu(REF, HYP, smoothing="exp"),
    "sentence_bleu_4_add1": lambda: M.sentence_bleu(REF, HYP, smoothing="add1"),
    "sentence_bleu_4_floor": lambda: M.sentence_bleu(REF, HYP, smoothing="floor"),
    "corpus_bleu_2": lambda: M.corpus_bleu([REF, "a dog barks"], [HYP, "a dog"], max_n=2),
    "seq_corpus_bleu_words": lambda: S.corpus_bleu([HYP.split(), ["a", "dog"]],
                                                   [REF.split(), ["a", "dog", "barks"]], max_n=2),
    "seq_corpus_bleu_chars": lambda: S.corpus_bleu(["abcd"], ["abce"], max_n=2),
    "seq_exact_match": lambda: S.exact_match(["abc", "abd", [1, 2]], ["abc", "abc", (1, 2)]),
    "exact_match": lambda: M.exact_match(EM_PRED, EM_REF),
    "exact_match_normalized": lambda: M.exact_match(EM_PRED, EM_REF, normalize=True),
    "cosine_similarity": cosine_from_table,
}


def _written() -> dict:
    """{name: (text of the value, page)} of every check comment in the pages."""
    found: dict = {}
    for page in PAGES:
        for name, value in CHECK.findall((DOCS / page).read_text(encoding="utf-8")):
            assert name not in found, f"check {name!r} appears twice ({found[name][1]}, {page})"
            found[name] = (value, page)
    return found


def test_every_check_has_a_callable_and_every_callable_a_check():
    written = _written()
    assert written, "no <!-- check: name = value --> comments found in docs/"
    missing = sorted(set(written) - set(CHECKS))
    unused = sorted(set(CHECKS) - set(written))
    assert not missing, f"check comments without a callable in CHECKS: {missing}"
    assert not unused, f"callables in CHECKS without a check comment in the docs: {unused}"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_worked_number(name):
    written = _written()
    if name not in written:
        pytest.fail(f"{name}: no check comment in docs/{' or docs/'.join(PAGES)}")
    text, page = written[name]
    decimals = len(text.split(".")[1]) if "." in text else 0
    got = float(CHECKS[name]())
    tol = 0.5 * 10.0 ** -decimals + 1e-12
    assert abs(got - float(text)) <= tol, (
        f"docs/{page}: {name} = {text}, but minilm computes {got:.{decimals + 3}f}")
