"""Top-k (hard) attention: a 2-layer char GPT trained on the built-in corpus with each
query attending to its k highest-scoring earlier positions only
(``GPTConfig(attn_top_k=k)``), for several k, against full causal attention. Prints
the validation loss per k and the time of the training run.

    python examples/topk_attention.py [--steps 300] [--ks 1,2,4,8,16] [--quick]

``--quick``: 60 steps and k in 1, 4, 16 (under a minute); the numbers in
docs/transformer.md come from the default.
"""

import argparse
import time

import numpy as np
from _char_lm import char_corpus, train  # noqa: E402 (examples/)

import minilm as ml
from minilm.nn import GPT, GPTConfig
from minilm.train.trainer import evaluate_loss

CONTEXT, BATCH = 64, 16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--ks", default="1,2,4,8,16", help="the k values (full attention is added)")
    p.add_argument("--quick", action="store_true", help="60 steps, k in 1, 4, 16")
    p.add_argument("--eval-batches", type=int, default=16, help="validation batches")
    args = p.parse_args()
    steps = 60 if args.quick else args.steps
    ks = [1, 4, 16] if args.quick else [int(s) for s in args.ks.split(",")]

    tok, train_tokens, val = char_corpus(args.eval_batches, CONTEXT)

    print(f"{steps} steps, batch {BATCH} x {CONTEXT} characters, 2 layers, d_model 64")
    print(f"{'k':>6} {'val loss':>9} {'train s':>8}")
    for k in ks + [None]:
        ml.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=CONTEXT, n_layers=2,
                              n_heads=4, d_model=64, attn_top_k=k))
        t0 = time.perf_counter()
        train(model, train_tokens, steps, np.random.default_rng(0), context=CONTEXT)
        dt = time.perf_counter() - t0
        loss = evaluate_loss(model, val)["loss"]
        print(f"{'full' if k is None else k:>6} {loss:>9.4f} {dt:>8.1f}")


if __name__ == "__main__":
    main()
