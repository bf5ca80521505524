"""Date normalisation with sequence-to-sequence models (docs/seq2seq.md): human-written
dates ("Tuesday 3rd of March 1998", "03.03.98", "3/3/1998 (m/d/y)" ...) -> "1998-03-03".

    python examples/seq2seq_dates.py [--model transformer|lstm|both] [--steps 1500]
                                     [--batch 64] [--beam 4] [--out-dir runs/seq2seq_dates]
    python examples/seq2seq_dates.py --quick      # the reduced task CI runs (< 60 s)

Trains a character-level encoder-decoder Transformer and/or an LSTM encoder-decoder with
Bahdanau attention by teacher forcing (cross-entropy of y_t given the true y_<t), then
decodes a held-out set of days that never occur in training (in any format) greedily
and with beam search, and reports exact match and character BLEU. The cross-attention
maps of a few held-out examples are saved to ``--out-dir/attention_<model>.png``.

``--quick``: only the two numeric formats "03.03.98" and "1998/03/03" (a copy and a
reorder), small models and a few hundred steps.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import minilm as ml
import minilm.functional as F
from minilm import nn, optim
from minilm.data import date_splits, date_vocabularies, encode_pairs
from minilm.train.seq_metrics import corpus_bleu, exact_match

QUICK_FORMATS = ["dotted_dmy_short", "year_slash_month_day", "abbr_month_day_year"]


def build(kind: str, src_vocab: int, tgt_vocab: int, args) -> nn.Module:
    if kind == "transformer":
        return nn.TransformerSeq2Seq(src_vocab, tgt_vocab, d_model=args.d_model, n_heads=4,
                                     n_encoder_layers=args.layers, n_decoder_layers=args.layers,
                                     dropout=args.dropout, max_src_len=48, max_tgt_len=12)
    return nn.LSTMSeq2Seq(src_vocab, tgt_vocab, emb_dim=args.d_model // 2,
                          hidden_size=args.hidden, dropout=args.dropout, max_tgt_len=12)


def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``base``."""
    if step <= warmup:
        return base * step / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, train_pairs, sv, tv, args, rng, label: str) -> None:
    opt = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    t0 = time.perf_counter()
    model.train()
    warmup = max(1, args.steps // 20)
    for step in range(1, args.steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup)
        idx = rng.integers(0, len(train_pairs), size=args.batch)
        b = encode_pairs([train_pairs[i] for i in idx], sv, tv)
        logits = model(b["src"], b["src_mask"], b["tgt_in"])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               ml.tensor(b["tgt_out"].reshape(-1)))
        loss.backward()
        optim.clip_grad_norm_(list(model.parameters()), 1.0)
        opt.step()
        opt.zero_grad()
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            print(f"[{label}] step {step:5d}  loss {loss.item():.4f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


def evaluate(model, pairs, sv, tv, beam: int, batch: int = 200) -> dict:
    """Exact match and character BLEU of greedy and beam decoding on ``pairs``."""
    refs = [t for _, t in pairs]
    out = {}
    for mode in ("greedy", f"beam{beam}"):
        hyps = []
        for i in range(0, len(pairs), batch):
            b = encode_pairs(pairs[i:i + batch], sv, tv)
            if mode == "greedy":
                ids = model.greedy_decode(b["src"], max_len=11, src_mask=b["src_mask"])
            else:
                ids = model.beam_decode(b["src"], beam, max_len=11, length_penalty=1.0,
                                        src_mask=b["src_mask"])
            hyps += [tv.decode(row) for row in ids]
        out[mode] = {"exact_match": exact_match(hyps, refs), "bleu": corpus_bleu(hyps, refs)}
        out[mode + "_examples"] = list(zip([s for s, _ in pairs[:3]], hyps[:3]))
    return out


def plot_attention(model, pairs, sv, tv, path: str, title: str) -> None:
    """Heat maps of the attention weights (output character x source character)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 3.6))
    for ax, pair in zip(np.atleast_1d(axes), pairs):
        b = encode_pairs([pair], sv, tv)
        ids, attn = model.greedy_decode(b["src"], max_len=11, src_mask=b["src_mask"],
                                        return_attention=True)
        out = [tv.itos[i] for i in ids[0]]
        n = out.index("<eos>") + 1 if "<eos>" in out else len(out)
        ax.imshow(attn[0, :n], cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(pair[0])), list(pair[0]), fontsize=7)
        ax.set_yticks(range(n), [c if c != "<eos>" else "</s>" for c in out[:n]], fontsize=7)
        ax.set_xlabel("source")
        ax.set_title(repr(pair[0]), fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["transformer", "lstm", "both"], default="both")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps per model (default 1500; --quick: 400)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--d-model", type=int, default=64, help="transformer width (LSTM: "
                   "embedding = d_model / 2)")
    p.add_argument("--hidden", type=int, default=64, help="LSTM hidden size")
    p.add_argument("--layers", type=int, default=2, help="transformer layers per stack")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="runs/seq2seq_dates")
    p.add_argument("--quick", action="store_true", help="the reduced task of the CI test")
    args = p.parse_args(argv)
    formats = None
    if args.quick:
        formats = QUICK_FORMATS
        args.steps = 400 if args.steps is None else args.steps
        args.batch, args.n_test, args.layers = 32, 100, 1
        args.d_model, args.hidden, args.n_train = 32, 32, 4000
    args.steps = 1500 if args.steps is None else args.steps
    for flag in ("steps", "batch", "beam", "n_train", "n_test", "hidden", "layers"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.d_model < 4 or args.d_model % 4:
        p.error(f"--d-model must be a positive multiple of 4 (4 heads), got {args.d_model}")
    if not args.lr > 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    if not 0.0 <= args.dropout < 1.0:
        p.error(f"--dropout must be in [0, 1), got {args.dropout}")
    sv, tv = date_vocabularies()
    if args.beam > len(tv):
        p.error(f"--beam must be <= {len(tv)} (the target vocabulary), got {args.beam}")
    try:
        train_pairs, test_pairs = date_splits(args.n_train, args.n_test, seed=args.seed,
                                              formats=formats)
    except ValueError as e:  # e.g. --n-test above the number of held-out days
        p.error(str(e))
    os.makedirs(args.out_dir, exist_ok=True)
    print(f"{len(train_pairs)} training pairs, {len(test_pairs)} held-out pairs (disjoint "
          f"days), formats: {'all 13' if formats is None else ', '.join(formats)}")
    print("e.g.", "; ".join(f"{s!r} -> {t}" for s, t in train_pairs[:3]))
    kinds = ["transformer", "lstm"] if args.model == "both" else [args.model]
    results = {}
    for kind in kinds:
        ml.manual_seed(args.seed)
        model = build(kind, len(sv), len(tv), args)
        print(f"[{kind}] {model.num_parameters():,} parameters", flush=True)
        t0 = time.perf_counter()
        train(model, train_pairs, sv, tv, args, np.random.default_rng(args.seed + 1), kind)
        train_s = time.perf_counter() - t0
        res = evaluate(model, test_pairs, sv, tv, args.beam)
        res["train_seconds"] = train_s
        for mode in ("greedy", f"beam{args.beam}"):
            r = res[mode]
            print(f"[{kind}] held-out {mode:7s} exact match {r['exact_match']:.3f}  "
                  f"BLEU {r['bleu']:.3f}   e.g. {res[mode + '_examples'][0]}")
        path = os.path.join(args.out_dir, f"attention_{kind}.png")
        plot_attention(model, test_pairs[:3], sv, tv, path, f"{kind}: cross-attention "
                       "(last decoder block, head mean)" if kind == "transformer"
                       else "lstm: Bahdanau attention weights")
        print(f"[{kind}] attention map -> {path}  (trained in {train_s:.0f} s)")
        results[kind] = res
    return results


if __name__ == "__main__":
    main()
