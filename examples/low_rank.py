"""Low-rank factorisation by truncated SVD: train a tiny GPT on the built-in corpus,
then replace its Linear layers by rank-r pairs at several energy fractions and compare
parameters, FLOPs and validation perplexity.

    python examples/low_rank.py [--steps 150] [--energies 0.99,0.95,0.9,0.8,0.6]
                                [--finetune-steps 0] [--table]

A layer is factorised only when r (in + out) < in * out (otherwise kept); ``--table``
prints the per-layer report of the last energy (docs/compression.md).
"""

import argparse

import numpy as np
from _char_lm import CONTEXT, char_corpus, train  # noqa: E402 (examples/)

import minilm as ml
from minilm.nn import GPT, GPTConfig
from minilm.quant import format_low_rank, low_rank_model
from minilm.train.trainer import evaluate_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--energies", default="0.99,0.95,0.9,0.8,0.6")
    p.add_argument("--finetune-steps", type=int, default=0,
                   help="train each factorised model this many steps afterwards")
    p.add_argument("--table", action="store_true")
    p.add_argument("--eval-batches", type=int, default=8, help="validation batches")
    args = p.parse_args()

    tok, train_tokens, val = char_corpus(args.eval_batches)

    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=CONTEXT, n_layers=2,
                          n_heads=4, d_model=64))
    train(model, train_tokens, args.steps, np.random.default_rng(0))
    total = model.num_parameters()
    print(f"{'energy':>7}  {'params':>8}  {'linear params':>14}  {'linear FLOPs':>13}  "
          f"{'layers factorised':>17}  val ppl")
    print(f"{'dense':>7}  {total:>8}  {'':>14}  {'':>13}  {'':>17}  "
          f"{evaluate_loss(model, val)['ppl']:.3f}")
    rows = []
    for e in (float(s) for s in args.energies.split(",")):
        small = GPT(model.config)
        small.load_state_dict(model.state_dict())
        rows = low_rank_model(small, energy=e)
        if args.finetune_steps:
            train(small, train_tokens, args.finetune_steps, np.random.default_rng(2), lr=1e-3)
        pb = sum(r["params_before"] for r in rows)
        pa = sum(r["params_after"] for r in rows)
        fb = sum(r["flops_before"] for r in rows)
        fa = sum(r["flops_after"] for r in rows)
        done = sum(r["replaced"] for r in rows)
        print(f"{e:>7.2f}  {small.num_parameters():>8}  {pa / pb:>13.1%}  {fa / fb:>12.1%}  "
              f"{done:>8} of {len(rows):<6}  {evaluate_loss(small, val)['ppl']:.3f}")
    if args.table and rows:
        print(format_low_rank(rows))


if __name__ == "__main__":
    main()
