"""Exercise (2): an LSTM classifier on BBC News.

Words of each article (lower-cased, the first --max-len kept) -> ids in a vocabulary of
the training texts (words seen twice or more) -> embedding (--dim) -> a bidirectional
LSTM (--dim per direction) -> the mean of its outputs over the real tokens -> dropout
-> a linear head over the 5 topics. AdamW (lr 2e-3, weight decay 0.01), gradient
clipping at 1, batches of similar-length articles; the weights of the epoch with the
lowest validation loss are kept (early stopping, patience 3).

    python examples/classification/lstm.py [--epochs 10] [--dim 64] [--max-len 200] [--quick]
"""

import _common as C

from minilm.train.text_classifier import NeuralTextClassifier


def main(argv: list[str] | None = None) -> dict:
    ap = C.parser(__doc__, "lstm", epochs=10)
    ap.add_argument("--lr", type=float, default=None, help="default 2e-3 (1e-2 with --quick)")
    ap.add_argument("--dropout", type=float, default=0.3)
    args = ap.parse_args(argv)
    data = C.setup(args)
    lr = args.lr or (1e-2 if args.quick else 2e-3)
    clf = NeuralTextClassifier("lstm", len(data["label_names"]), lr=lr, dim=args.dim,
                               max_len=args.max_len, dropout=args.dropout)
    res = C.fit("lstm", clf, data, args, patience=3)
    C.plot_curves({"lstm": res["history"]}, f"{args.out_dir}/curves.png", "LSTM on BBC News")
    C.write_results(args, {"lstm": res})
    return res


if __name__ == "__main__":
    main()
