"""Exercise (6): self-supervised pretraining, then a linear probe vs full fine-tuning.

The self-supervised objective is next-token prediction on the articles of the TRAINING
split without their labels (a word-level GPT, ``pretrain_gpt``; see transfer.py; or
--trunk to reuse the GPT transfer.py saved). Then, on the labelled training split:

- linear probe: the GPT frozen (``freeze_trunk=True``: requires_grad off, not in the
  optimizer; its weights are checked unchanged afterwards), only the new head
  (Linear(d, 5) on the mean of the final hidden states over real tokens) trained, lr
  --probe-lr;
- full fine-tuning: the same start, every weight trained, lr --lr.

Writes OUT_DIR/curves.png and OUT_DIR/results.json.

    python examples/classification/self_supervised.py [--quick]
    python examples/classification/self_supervised.py \
        --trunk runs/classification/transfer/gpt_pretrained.safetensors
"""

import _common as C
import numpy as np

from minilm.train.text_classifier import NeuralTextClassifier


def main(argv: list[str] | None = None) -> dict:
    ap = C.parser(__doc__, "self_supervised", epochs=6)
    C.add_pretrain_args(ap)
    ap.add_argument("--lr", type=float, default=None,
                    help="fine-tuning lr, default 1e-3 (3e-3 with --quick)")
    ap.add_argument("--probe-lr", type=float, default=1e-2)
    ap.add_argument("--dropout", type=float, default=0.1)
    args = ap.parse_args(argv)
    data = C.setup(args)
    vocab, trunk, pre_history = C.pretrained_trunk(args, data)
    results = {"pretrain": {"history": pre_history, "trunk": args.trunk}}
    for name, frozen in (("linear probe", True), ("full fine-tuning", False)):
        clf = NeuralTextClassifier(
            "gpt", len(data["label_names"]),
            lr=args.probe_lr if frozen else args.lr or (3e-3 if args.quick else 1e-3),
            dim=args.dim, max_len=args.max_len, dropout=args.dropout, n_layers=args.layers,
            n_heads=args.heads, freeze_trunk=frozen, weight_decay=0.0 if frozen else 0.01)
        clf.set_trunk(vocab, trunk)
        res = results[name] = C.fit(name, clf, data, args)
        after = clf.model.trunk.state_dict()
        res["trunk_max_change"] = float(max(
            np.max(np.abs(np.asarray(after[k].numpy(), np.float64) - np.asarray(v, np.float64)))
            for k, v in trunk.items()))
        res["trainable_parameters"] = int(sum(p.data.size for p in clf.model.parameters()
                                              if p.requires_grad))
        print(f"[{name}] {res['trainable_parameters']:,} trained parameters; largest change of "
              f"a trunk weight {res['trunk_max_change']:.3g}")
    C.plot_curves({k: results[k]["history"] for k in ("linear probe", "full fine-tuning")},
                  f"{args.out_dir}/curves.png",
                  "GPT pretrained by next-token prediction: linear probe vs fine-tuning")
    C.write_results(args, results)
    return results


if __name__ == "__main__":
    main()
