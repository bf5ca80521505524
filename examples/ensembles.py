"""Ensembles of three cheap BBC News classifiers: weighted probability averaging,
majority voting and stacking, against each base model alone.

    python examples/ensembles.py [--epochs 8] [--seed 0] [--out runs/ensembles]
    python examples/ensembles.py --quick     # 40 / 8 / 12 articles per label

Base models (minilm.classify, minilm.train.text_classifier), trained on the train
split with early stopping on the validation split:
  hash-nb   multinomial naive Bayes on hashed words (2^16 buckets)
  tfidf-lr  TF-IDF + softmax regression
  textcnn   a small TextCNN on word ids
Each model's validation probabilities fit the ensembles (averaging weights, the
stacking meta-learner); everything is scored on the test split
(minilm.train.ensembles; docs/workflows.md, "Ensembles").
"""

import argparse
import json
import os
import time

import numpy as np

from minilm.classify import HashNaiveBayes, TfidfLogReg, stratified_limit
from minilm.data import load_bbc_news
from minilm.train import ensembles as E
from minilm.train.text_classifier import NeuralTextClassifier

QUICK_LIMITS = {"train": 40, "val": 8, "test": 12}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small stratified subset, 4 epochs")
    p.add_argument("--epochs", type=int, default=8, help="epochs of the iterative base models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/ensembles", help="folder for results.json")
    args = p.parse_args()
    if args.quick:
        args.epochs = min(args.epochs, 4)

    bbc = load_bbc_news(split_seed=0)
    data = {}
    for split, idx in bbc.splits.items():
        if args.quick:
            idx = stratified_limit(bbc.labels, idx, QUICK_LIMITS[split])
        data[split] = ([bbc.texts[i] for i in idx], bbc.labels[idx])
    C = len(bbc.label_names)
    (xt, yt), (xv, yv), (xs, ys) = data["train"], data["val"], data["test"]
    print(f"BBC News{' (--quick subset)' if args.quick else ''}: {len(yt)} / {len(yv)} / "
          f"{len(ys)} train / val / test articles, {C} labels")

    models = {
        "hash-nb": HashNaiveBayes(C, bits=16, alpha=0.1),
        "tfidf-lr": TfidfLogReg(C, lr=0.05),
        "textcnn": NeuralTextClassifier("textcnn", C, dim=32, max_len=128, lr=3e-3),
    }
    val_p, test_p = {}, {}
    for name, m in models.items():
        t0 = time.time()
        if name == "hash-nb":
            m.fit(xt, yt)
        else:
            m.fit(xt, yt, xv, yv, epochs=args.epochs, patience=3, seed=args.seed)
        val_p[name], test_p[name] = m.predict_proba(xv), m.predict_proba(xs)
        print(f"  trained {name:9s} in {time.time() - t0:5.1f} s")

    names = list(models)
    pv, ps = [val_p[n] for n in names], [test_p[n] for n in names]
    w_ll = E.fit_simplex_weights(pv, yv)
    w_acc = E.accuracy_weights(pv, yv)
    stack = E.StackingClassifier(seed=args.seed).fit(pv, yv)
    preds = {n: test_p[n].argmax(1) for n in names}
    probs = {n: test_p[n] for n in names}
    ens = {
        "average (equal)": E.average_probs(ps),
        "average (log-loss weights)": E.average_probs(ps, w_ll),
        "average (accuracy weights)": E.average_probs(ps, w_acc),
        "stacking (logistic regression)": stack.predict_proba(ps),
    }
    for k, q in ens.items():
        preds[k], probs[k] = q.argmax(1), q
    preds["majority vote"] = E.majority_vote(ps)

    rows = {k: {"accuracy": float((v == ys).mean()),
                "log_loss": E.log_loss(probs[k], ys) if k in probs else None}
            for k, v in preds.items()}
    best = max(rows[n]["accuracy"] for n in names)
    print(f"\n{'model':32s} {'test acc':>8s} {'log loss':>9s} {'gain':>7s}")
    for k, r in rows.items():
        ll = f"{r['log_loss']:9.4f}" if r["log_loss"] is not None else f"{'-':>9s}"
        gain = "" if k in names else f"{100 * (r['accuracy'] - best):+6.2f}"
        print(f"{k:32s} {r['accuracy']:8.4f} {ll} {gain:>7s}")
    print(f"\nlog-loss weights {dict(zip(names, np.round(w_ll, 3).tolist()))}")
    print(f"accuracy weights {dict(zip(names, np.round(w_acc, 3).tolist()))}")
    print("gain: accuracy points over the best single model")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"rows": rows, "weights_logloss": dict(zip(names, w_ll.tolist())),
                   "weights_accuracy": dict(zip(names, w_acc.tolist())), "quick": args.quick},
                  f, indent=2)
    print(f"results in {args.out}/results.json")


if __name__ == "__main__":
    main()
