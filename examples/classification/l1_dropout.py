"""Exercise (7): L1 + dropout on the LSTM, and the sparsity L1 produces.

Every arm: the LSTM of lstm.py with dropout --dropout, AdamW, no weight decay, the
same seed and epochs. The L1 arms (one per value of --l1) add lam * sum |w| over the
LSTM and head weight matrices (not the embeddings, not the biases), added to the
batch's mean cross-entropy and applied as the proximal step after every AdamW step,
``w <- sign(w) max(|w| - lr * lam, 0)``, so weights become exactly 0. Reports each
arm's test accuracy, macro-F1 and the fraction of exact zeros in those matrices (the
weights of the epoch with the lowest validation loss). Writes OUT_DIR/curves.png and
OUT_DIR/results.json.

    python examples/classification/l1_dropout.py [--epochs 8] [--l1 0.03 0.1 0.3] [--quick]
"""

import _common as C

from minilm.train.text_classifier import NeuralTextClassifier


def main(argv: list[str] | None = None) -> dict:
    ap = C.parser(__doc__, "l1_dropout", epochs=8)
    ap.add_argument("--lr", type=float, default=None, help="default 2e-3 (1e-2 with --quick)")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--l1", type=C.nonneg_float, nargs="+", default=[0.03, 0.1, 0.3],
                    help="lam of lam * sum |w| (per batch mean cross-entropy), one arm each")
    args = ap.parse_args(argv)
    data = C.setup(args)
    lr = args.lr or (1e-2 if args.quick else 2e-3)
    results = {}
    arms = [(f"dropout + L1 {lam:g}", lam) for lam in args.l1] + [("dropout only", 0.0)]
    for name, lam in arms:
        clf = NeuralTextClassifier("lstm", len(data["label_names"]), lr=lr, dim=args.dim,
                                   max_len=args.max_len, dropout=args.dropout,
                                   weight_decay=0.0, l1=lam, l1_proximal=True)
        results[name] = res = C.fit(name, clf, data, args)
        sp = clf.sparsity()
        res.update({"l1": lam, "zeros": sp["l1_weights"], "zeros_all": sp["all"],
                    "zeros_per_tensor": sp["per_tensor"], "n_weights": sp["l1_weights_count"]})
        print(f"[{name}] exact zeros: {sp['l1_weights']:.1%} of the {sp['l1_weights_count']:,} "
              f"LSTM + head weights, {sp['all']:.1%} of all parameters; "
              + ", ".join(f"{n} {f:.1%}" for n, f in sp["per_tensor"].items()))
    C.plot_curves({k: v["history"] for k, v in results.items()}, f"{args.out_dir}/curves.png",
                  "LSTM on BBC News: dropout with and without L1 (proximal)")
    C.write_results(args, {"arms": results})
    return results


if __name__ == "__main__":
    main()
