"""Exercise (4): transfer learning. A GPT pretrained on the unlabelled training texts,
fine-tuned with a new head, vs the same model trained from scratch.

1. Pretraining: a word-level GPT (--layers blocks, --dim wide, context --max-len, the
   --max-vocab most frequent training words) learns next-token prediction on the
   articles of the TRAINING split only, labels unused (``pretrain_gpt``); it is saved
   to OUT_DIR/gpt_pretrained.safetensors.
2. Fine-tuning: ``minilm.nn.GPTClassifier`` = that GPT's final hidden states, their
   mean over the real tokens, dropout and a new Linear head; every weight trained
   with AdamW at --lr on the labelled training split.
3. Scratch: the same classifier (same vocabulary, same shapes, same seed, same
   epochs) from random weights.

Every epoch is run; each arm is tested with the weights of its lowest validation loss.
Writes OUT_DIR/curves.png (validation loss and accuracy per epoch, both arms) and
OUT_DIR/results.json.

    python examples/classification/transfer.py [--pretrain-steps 600] [--epochs 6] [--quick]
"""

import _common as C

from minilm.train.text_classifier import NeuralTextClassifier


def main(argv: list[str] | None = None) -> dict:
    ap = C.parser(__doc__, "transfer", epochs=6)
    C.add_pretrain_args(ap)
    ap.add_argument("--lr", type=float, default=None, help="default 1e-3 (3e-3 with --quick)")
    ap.add_argument("--dropout", type=float, default=0.1)
    args = ap.parse_args(argv)
    data = C.setup(args)
    vocab, trunk, pre_history = C.pretrained_trunk(args, data)
    results = {"pretrain": {"history": pre_history, "steps": args.pretrain_steps}}
    for name, state in (("pretrained + fine-tuned", trunk), ("from scratch", None)):
        clf = NeuralTextClassifier("gpt", len(data["label_names"]),
                                   lr=args.lr or (3e-3 if args.quick else 1e-3), dim=args.dim,
                                   max_len=args.max_len, dropout=args.dropout,
                                   n_layers=args.layers, n_heads=args.heads)
        clf.set_trunk(vocab, state)
        results[name] = C.fit(name, clf, data, args)
    C.plot_curves({k: results[k]["history"] for k in ("pretrained + fine-tuned", "from scratch")},
                  f"{args.out_dir}/curves.png", "GPT classifier on BBC News: pretrained vs scratch")
    C.write_results(args, results)
    return results


if __name__ == "__main__":
    main()
