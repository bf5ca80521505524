"""TF-IDF + multinomial logistic regression on BBC News.

TF-IDF features (sublinear tf, fitted on the training split only) as a sparse CSR
matrix; a softmax regression ``logits = X W + b`` whose ``X W`` is the differentiable
``minilm.functional.sparse_matmul`` (gradient ``X^T G``), trained with AdamW on
mini-batches, keeping the weights of the epoch with the lowest validation loss.

    python examples/classification/tfidf_logreg.py [--epochs 100] [--lr 0.05]
"""

import argparse
import time

from minilm.classify import TfidfLogReg
from minilm.data import load_bbc_news
from minilm.train.classification_metrics import classification_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--group-duplicates", action="store_true")
    args = ap.parse_args()
    if args.epochs < 1:
        ap.error(f"--epochs must be >= 1, got {args.epochs}")
    if not args.weight_decay >= 0:
        ap.error(f"--weight-decay must be >= 0, got {args.weight_decay}")

    bbc = load_bbc_news(split_seed=args.split_seed, group_duplicates=args.group_duplicates)
    t0 = time.perf_counter()
    clf = TfidfLogReg(len(bbc.label_names), lr=args.lr, weight_decay=args.weight_decay)
    history = clf.fit(*bbc.subset("train"), *bbc.subset("val"), epochs=args.epochs,
                      seed=args.seed)
    best = min(history, key=lambda r: r["val_loss"])
    x_test, y_test = bbc.subset("test")
    probs = clf.predict_proba(x_test)
    m = classification_metrics(y_test, probs.argmax(1), probs, bbc.label_names)
    print(f"TF-IDF ({len(clf.vectorizer.vocabulary_)} terms) + logistic regression: "
          f"{len(history)} epochs, best val loss {best['val_loss']:.4f} at epoch "
          f"{best['epoch']}, {time.perf_counter() - t0:.1f} s")
    print(f"test accuracy {m['accuracy']:.4f}  macro-F1 {m['macro']['f1']:.4f}  "
          f"ROC-AUC ovr {m['roc_auc_ovr']:.4f}")


if __name__ == "__main__":
    main()
