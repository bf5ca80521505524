"""Shared by the classification exercise scripts: the command line, the BBC News
splits (or a small stratified subset with --quick), test metrics, curve plots and the
results.json each script writes into its --out-dir."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from minilm import functional as F
from minilm.classify import stratified_limit
from minilm.data import load_bbc_news
from minilm.tensor import Tensor
from minilm.train.classification_metrics import classification_metrics
from minilm.train.text_classifier import NeuralTextClassifier

# --quick: this many articles per label in train / val / test, and tiny models
QUICK_LIMITS = {"train": 40, "val": 8, "test": 12}
QUICK = {"dim": 32, "max_len": 64, "epochs": 6}


def positive_int(s: str) -> int:
    """argparse type: an integer >= 1 (``--epochs 0`` is a usage error, not a traceback)."""
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {s}")
    return v


def nonneg_float(s: str) -> float:
    """argparse type: a finite number >= 0 (``--l1 -1`` is a usage error)."""
    v = float(s)
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {s}")
    return v


def parser(doc: str, name: str, epochs: int, dim: int = 64, max_len: int = 200
           ) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a small stratified subset, tiny model, few epochs (for CI)")
    ap.add_argument("--epochs", type=positive_int, default=epochs)
    ap.add_argument("--dim", type=positive_int, default=dim, help="embedding / hidden width")
    ap.add_argument("--max-len", type=positive_int, default=max_len,
                    help="words kept per article")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--group-duplicates", action="store_true")
    ap.add_argument("--out-dir", default=f"runs/classification/{name}")
    return ap


def setup(args: argparse.Namespace) -> dict:
    """Apply --quick to the arguments and return the splits: ``{"train": (texts,
    labels), "val": ..., "test": ..., "label_names": [...]}``."""
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, min(getattr(args, k), v))
    bbc = load_bbc_news(split_seed=args.split_seed, group_duplicates=args.group_duplicates)
    out: dict[str, Any] = {"label_names": bbc.label_names}
    for split, idx in bbc.splits.items():
        if args.quick:
            idx = stratified_limit(bbc.labels, idx, QUICK_LIMITS[split])
        out[split] = ([bbc.texts[i] for i in idx], bbc.labels[idx])
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    sizes = " / ".join(str(len(out[s][1])) for s in ("train", "val", "test"))
    print(f"BBC News{' (--quick subset)' if args.quick else ''}: {sizes} train / val / test "
          f"articles, split seed {args.split_seed}"
          f"{', duplicates grouped' if args.group_duplicates else ''}")
    return out


def test_metrics(clf: NeuralTextClassifier, data: dict) -> dict:
    """Accuracy and macro-F1 (and the rest of classification_metrics) on the test split."""
    texts, y = data["test"]
    logp = F.log_softmax(Tensor(clf.scores(texts)), dim=1).numpy()
    return classification_metrics(y, logp.argmax(1), logp, data["label_names"])


def fit(name: str, clf: NeuralTextClassifier, data: dict, args: argparse.Namespace,
        patience: int | None = None) -> dict:
    """Train ``clf`` (early stopping on val with ``patience``; None: run every epoch,
    keep the best), evaluate on test, print one line per epoch and the result."""
    t0 = time.perf_counter()

    def log(row: dict) -> None:
        extra = f"  zeros {row['sparsity']:.3f}" if "sparsity" in row else ""
        print(f"[{name}] epoch {row['epoch']:3d}  loss {row['loss']:.4f}  val_loss "
              f"{row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}{extra}", flush=True)

    history = clf.fit(*data["train"], *data["val"], epochs=args.epochs,
                      patience=patience or args.epochs + 1, seed=args.seed, log=log)
    seconds = time.perf_counter() - t0
    m = test_metrics(clf, data)
    best = min(history, key=lambda r: r["val_loss"])
    res = {"name": name, "accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"],
           "n_test": m["n"], "epochs_run": len(history), "best_epoch": best["epoch"],
           "seconds": seconds, "history": history}
    print(f"[{name}] test accuracy {res['accuracy']:.4f}  macro-F1 {res['macro_f1']:.4f}  "
          f"({len(history)} epochs, best val loss at epoch {best['epoch']}, {seconds:.0f} s)",
          flush=True)
    return res


def plot_curves(runs: dict[str, list[dict]], path: str | os.PathLike, title: str,
                x: str = "epoch") -> None:
    """Validation loss (left) and validation accuracy (right) per epoch, one line per
    run, training loss dashed in the run's colour; a PNG (matplotlib Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (label, hist) in enumerate(runs.items()):
        c = f"C{i}"
        xs = [r[x] for r in hist]
        a.plot(xs, [r["val_loss"] for r in hist], color=c, marker="o", label=f"{label} (val)")
        a.plot(xs, [r["loss"] for r in hist], color=c, ls="--", label=f"{label} (train)")
        b.plot(xs, [r["val_accuracy"] for r in hist], color=c, marker="o", label=label)
    a.set_xlabel(x)
    a.set_ylabel("cross-entropy")
    a.set_title("loss")
    b.set_xlabel(x)
    b.set_ylabel("validation accuracy")
    b.set_title("validation accuracy")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    print(f"wrote {path}")


def write_results(args: argparse.Namespace, results: dict) -> Path:
    """``--out-dir/results.json``: the arguments and every arm's figures."""
    path = Path(args.out_dir) / "results.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"args": vars(args), **results}, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path


def add_pretrain_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--pretrain-steps", type=positive_int, default=600,
                    help="next-token steps on the training texts (no labels)")
    ap.add_argument("--pretrain-batch", type=positive_int, default=16)
    ap.add_argument("--pretrain-lr", type=float, default=3e-3)
    ap.add_argument("--layers", type=positive_int, default=2)
    ap.add_argument("--heads", type=positive_int, default=4)
    ap.add_argument("--max-vocab", type=positive_int, default=8000,
                    help="vocabulary of the GPT (the most frequent training words)")
    ap.add_argument("--trunk", default=None,
                    help="load the pretrained GPT (and its vocabulary) from this file "
                         "instead of pretraining; transfer.py writes OUT_DIR/gpt_pretrained"
                         ".safetensors")


def pretrained_trunk(args: argparse.Namespace, data: dict) -> tuple:
    """``(vocab, gpt_state, history)``: a GPT pretrained by next-token prediction on the
    TRAINING texts only (labels unused; val and test never seen), or the one in
    ``--trunk``; a pretrained trunk is saved to ``--out-dir/gpt_pretrained.safetensors``."""
    from minilm.data import Vocab
    from minilm.train.checkpoint import load_checkpoint, save_checkpoint
    from minilm.train.text_classifier import pretrain_gpt

    if args.trunk:
        tensors, meta = load_checkpoint(args.trunk)
        c = meta["config"]
        if (c["context_length"], c["d_model"], c["n_layers"], c["n_heads"]) != \
                (args.max_len, args.dim, args.layers, args.heads):
            raise SystemExit(f"error: {args.trunk} holds a GPT with context {c['context_length']}"
                             f", d_model {c['d_model']}, {c['n_layers']} layers, {c['n_heads']} "
                             "heads; pass the same --max-len --dim --layers --heads")
        print(f"pretrained GPT loaded from {args.trunk} ({meta['steps']} next-token steps)")
        return Vocab.from_dict(meta["vocab"]), tensors, meta["history"]
    if args.quick:
        args.pretrain_steps = min(args.pretrain_steps, 60)
    t0 = time.perf_counter()

    def log(row: dict) -> None:
        print(f"[pretrain] step {row['step']:5d}  next-token loss {row['loss']:.4f}  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    texts = data["train"][0]
    vocab, gpt, history = pretrain_gpt(
        texts, max_len=args.max_len, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
        steps=args.pretrain_steps, batch_size=args.pretrain_batch, lr=args.pretrain_lr,
        max_vocab=args.max_vocab, seed=args.seed, log=log,
        log_every=max(1, min(50, args.pretrain_steps // 4)))
    seconds = time.perf_counter() - t0
    print(f"[pretrain] {args.pretrain_steps} steps on {len(texts)} training articles "
          f"(vocabulary {len(vocab)}), {seconds:.0f} s")
    state = {k: np.asarray(v.numpy()) for k, v in gpt.state_dict().items()}
    path = Path(args.out_dir) / "gpt_pretrained.safetensors"
    save_checkpoint(path, state, {"config": gpt.config.to_dict(), "vocab": vocab.to_dict(),
                                  "steps": args.pretrain_steps, "history": history,
                                  "seconds": seconds})
    print(f"wrote {path}")
    return vocab, state, history
