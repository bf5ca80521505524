"""Sequence-length curriculum vs fixed-length training of a small character GPT on the
built-in corpus: validation loss (at the full context) against wall-clock seconds.

    python examples/curriculum.py [--seconds 40] [--quick]

Both runs get the same wall-clock budget, batch size and optimizer; the curriculum run
draws windows of length L(t) = L_min + m * floor(min(t, N)/N * (L_max - L_min) / m)
(linear, minilm.data.curriculum), so its early steps are cheaper and it takes more of them.
"""

import argparse
import time

import numpy as np

import minilm as ml
from minilm import optim
from minilm.autograd import no_grad
from minilm.data import CharTokenizer, RandomWindowBatches, load_corpus, random_windows
from minilm.data.curriculum import LengthCurriculumBatches
from minilm.nn import GPT, GPTConfig

CONTEXT = 64


def val_loss(model, val) -> float:
    model.eval()
    with no_grad():
        _, loss = model(ml.tensor(val[0]), ml.tensor(val[1]))
    model.train()
    return loss.item()


def run(source, seconds: float, vocab: int, val, every: float) -> list:
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, context_length=CONTEXT, n_layers=2, n_heads=2,
                          d_model=64, dropout=0.0))
    opt = optim.AdamW(model.parameters(), lr=3e-3)
    points, spent, step, next_eval = [(0.0, 0, val_loss(model, val))], 0.0, 0, every
    while spent < seconds:
        t0 = time.perf_counter()
        x, y = source.next_batch()
        _, loss = model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
        spent += time.perf_counter() - t0  # training time only: evaluation is not charged
        step += 1
        if spent >= next_eval or spent >= seconds:
            points.append((spent, step, val_loss(model, val)))
            next_eval += every
    return points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=40.0, help="training budget per run")
    p.add_argument("--warmup", type=int, default=300, help="curriculum steps N")
    p.add_argument("--min-length", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="12 s per run, N = 100")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.warmup = 12.0, 100
    text = load_corpus()
    tok = CharTokenizer.train(text)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    cut = int(0.9 * len(ids))
    val = random_windows(ids[cut:], 64, CONTEXT, np.random.default_rng(1))
    every = args.seconds / 6
    runs = {
        "fixed length 64": RandomWindowBatches(ids[:cut], 16, CONTEXT, rng=0),
        f"curriculum {args.min_length}->64": LengthCurriculumBatches(
            ids[:cut], 16, CONTEXT, min_length=args.min_length, warmup_steps=args.warmup,
            schedule="linear", multiple=8, rng=0),
    }
    print(f"char GPT (2 layers, d 64, context {CONTEXT}), batch 16, AdamW 3e-3, "
          f"{args.seconds:.0f} s of training per run; val loss at length {CONTEXT}")
    # warm-up (not timed): the first steps pay one-off costs (kernel compilation, caches)
    for L in (CONTEXT, args.min_length, 24):
        run(RandomWindowBatches(ids[:cut], 16, L, rng=9), 0.5, tok.vocab_size, val, 1.0)
    results = {name: run(src, args.seconds, tok.vocab_size, val, every) for name, src in runs.items()}
    for name, pts in results.items():
        print(f"\n{name}:  {'seconds':>8s} {'steps':>6s} {'val loss':>9s}")
        for s, n, v in pts:
            print(f"{'':{len(name)}s}   {s:8.1f} {n:6d} {v:9.4f}")
    print("\nfinal: " + ", ".join(f"{name} {pts[-1][2]:.4f} after {pts[-1][1]} steps"
                                  for name, pts in results.items()))


if __name__ == "__main__":
    main()
