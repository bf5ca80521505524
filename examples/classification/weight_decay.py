"""Exercise (3): the LSTM with weight decay vs without, curves on one plot.

The LSTM of lstm.py trained twice from the same seed, with AdamW's decoupled weight
decay ``w <- w - lr * wd * w`` on the LSTM and head matrices (never on embeddings or
biases) at --weight-decay, and with wd = 0. Every epoch is run (no early stopping, so
the curves are complete); each arm is evaluated on the test split with the weights of
its lowest validation loss. Writes OUT_DIR/curves.png (validation loss and accuracy
per epoch, both arms) and OUT_DIR/results.json.

    python examples/classification/weight_decay.py [--epochs 15] [--weight-decay 0.5] [--quick]
"""

import _common as C

from minilm.train.text_classifier import NeuralTextClassifier


def main(argv: list[str] | None = None) -> dict:
    ap = C.parser(__doc__, "weight_decay", epochs=15)
    ap.add_argument("--lr", type=float, default=None, help="default 2e-3 (1e-2 with --quick)")
    ap.add_argument("--weight-decay", type=C.nonneg_float, default=0.5)
    ap.add_argument("--dropout", type=float, default=0.3)
    args = ap.parse_args(argv)
    data = C.setup(args)
    lr = args.lr or (1e-2 if args.quick else 2e-3)
    results = {}
    for name, wd in ((f"wd {args.weight_decay:g}", args.weight_decay), ("wd 0", 0.0)):
        clf = NeuralTextClassifier("lstm", len(data["label_names"]), lr=lr, dim=args.dim,
                                   max_len=args.max_len, dropout=args.dropout, weight_decay=wd)
        results[name] = C.fit(name, clf, data, args)
        results[name]["weight_decay"] = wd
        results[name]["weight_norm"] = float(sum(
            float((p.numpy().astype("float64") ** 2).sum()) for n, p in
            clf.model.named_parameters() if clf._decayed(n, p)) ** 0.5)
        print(f"[{name}] L2 norm of the decayed matrices {results[name]['weight_norm']:.2f}")
    C.plot_curves({k: v["history"] for k, v in results.items()}, f"{args.out_dir}/curves.png",
                  "LSTM on BBC News: AdamW weight decay on / off")
    C.write_results(args, {"arms": results})
    return results


if __name__ == "__main__":
    main()
