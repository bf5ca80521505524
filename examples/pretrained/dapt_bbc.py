"""Domain-adaptive pretraining: continue all-MiniLM-L6-v2's masked-LM training on the
BBC News training articles (no labels), then compare a linear probe on its encoder with
a linear probe on the original encoder.

    python examples/pretrained/dapt_bbc.py [--steps 100] [--out-dir runs/dapt-bbc]
    python examples/pretrained/dapt_bbc.py --quick          # a few steps on a subset (CI)

Step 1 writes the training split's articles (never validation or test) to one text
file and runs ``minilm pretrain-mlm --init all-MiniLM-L6-v2`` on it (dynamic masking,
15%, windows of ``--context-length`` tokens). Step 2 trains the same linear probe
(``minilm classify --model encoder --finetune probe``) on the original encoder and on
the adapted one, and prints both test accuracies and macro-F1 side by side.
sentence-transformers checkpoints carry no MLM head, so its transform starts new: the
first steps mostly train the head, and the encoder moves only as much as the learning
rate (``--lr``, default 5e-5) lets it.
"""

import argparse
import tempfile
import time
from pathlib import Path

from minilm.classify import train_classifier
from minilm.data import load_bbc_news
from minilm.nn.bert import BertConfig
from minilm.pretrain import pretrain_mlm
from minilm.train.config import TrainConfig
from minilm.train.mlm import MLMOptions


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="MLM steps on the articles")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--context-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-len", type=int, default=128, help="tokens per article (probe)")
    ap.add_argument("--out-dir", default=None, help="where the runs go (default: a temp dir)")
    ap.add_argument("--quick", action="store_true",
                    help="2 steps on 20 articles, probes on 3 articles per label (CI)")
    args = ap.parse_args(argv)
    limit = 3 if args.quick else None
    steps = 2 if args.quick else args.steps
    if args.quick:
        args.context_length, args.max_len, args.batch_size = 64, 64, 4
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="dapt-bbc-"))
    out.mkdir(parents=True, exist_ok=True)

    bbc = load_bbc_news()
    train_texts, _ = bbc.subset("train")
    if limit:
        train_texts = train_texts[:20]
    corpus = out / "bbc-train.txt"
    corpus.write_text("\n\n".join(t.strip() for t in train_texts), encoding="utf-8")

    t0 = time.perf_counter()
    cfg = TrainConfig(out_dir=str(out / "mlm"), data=str(corpus), batch_size=args.batch_size,
                      max_steps=steps, lr=args.lr, min_lr=args.lr / 10,
                      warmup_steps=max(1, steps // 10), weight_decay=0.01, beta2=0.999,
                      eval_interval=max(1, steps // 2), ckpt_interval=steps, log_interval=10,
                      progress=False, val_fraction=0.05)
    options = MLMOptions(context_length=args.context_length)
    _, last = pretrain_mlm(BertConfig(), cfg, options, init="all-MiniLM-L6-v2", overwrite=True)
    mlm_s = time.perf_counter() - t0
    print(f"MLM on {len(train_texts)} training articles: {steps} steps in {mlm_s:.0f} s, "
          f"val MLM loss {last.get('val_loss', float('nan')):.4f}")

    rows = {}
    for name, init in (("original", "all-MiniLM-L6-v2"), ("adapted", str(out / "mlm"))):
        t0 = time.perf_counter()
        m = train_classifier("encoder", out / f"probe-{name}", init=init, finetune="probe",
                             max_len=args.max_len, limit=limit, overwrite=True,
                             print_fn=lambda *a, **k: None)
        rows[name] = {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"],
                      "seconds": time.perf_counter() - t0}
    print(f"{'encoder':10s} {'test accuracy':>14s} {'macro-F1':>9s} {'time':>7s}")
    for name, r in rows.items():
        print(f"{name:10s} {r['accuracy']:14.4f} {r['macro_f1']:9.4f} {r['seconds']:6.0f}s")
    return {"mlm_seconds": mlm_s, "val_mlm_loss": last.get("val_loss"), "probes": rows}


if __name__ == "__main__":
    main()
