"""Exercise (5): Adam + dropout vs plain SGD, on the LSTM of lstm.py.

Arm "adam+dropout": AdamW (lr 2e-3, weight decay 0.01) with dropout --dropout before
the head. Arm "sgd": plain SGD (no momentum unless --sgd-momentum, no dropout, no
weight decay) at --sgd-lr. Same seed, same batches, same epochs (all run; the weights
of each arm's lowest validation loss are tested), gradient clipping at 1 in both.
Writes OUT_DIR/curves.png (both arms' validation loss and accuracy per epoch) and
OUT_DIR/results.json.

    python examples/classification/adam_dropout_vs_sgd.py [--epochs 12] [--sgd-lr 0.5] [--quick]
"""

import _common as C

from minilm.train.text_classifier import NeuralTextClassifier


def main(argv: list[str] | None = None) -> dict:
    ap = C.parser(__doc__, "adam_dropout_vs_sgd", epochs=12)
    ap.add_argument("--lr", type=float, default=None,
                    help="AdamW lr, default 2e-3 (1e-2 with --quick)")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--sgd-lr", type=float, default=0.5)
    ap.add_argument("--sgd-momentum", type=float, default=0.0)
    args = ap.parse_args(argv)
    data = C.setup(args)
    k = len(data["label_names"])
    common = dict(dim=args.dim, max_len=args.max_len)
    arms = {
        "adam+dropout": NeuralTextClassifier(
            "lstm", k, lr=args.lr or (1e-2 if args.quick else 2e-3), dropout=args.dropout,
            optimizer="adamw", **common),
        "sgd": NeuralTextClassifier("lstm", k, lr=args.sgd_lr, dropout=0.0, weight_decay=0.0,
                                    optimizer="sgd", momentum=args.sgd_momentum, **common),
    }
    results = {name: C.fit(name, clf, data, args) for name, clf in arms.items()}
    C.plot_curves({k: v["history"] for k, v in results.items()}, f"{args.out_dir}/curves.png",
                  "LSTM on BBC News: AdamW + dropout vs plain SGD")
    C.write_results(args, {"arms": results})
    return results


if __name__ == "__main__":
    main()
