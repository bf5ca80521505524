"""ALBERT-style cross-layer parameter sharing: a 4-layer GPT with one shared block
(``GPTConfig(share_layers=True)``: x <- Block_theta(x), 4 times) against the same GPT
with 4 separate blocks and a 1-layer GPT (the shared one's parameter count), each trained
the same number of steps on the built-in corpus (characters) at two learning rates.
Prints parameters and validation loss. (The shared block's gradient is the sum of its 4
uses and each update moves all 4 layers: it wants the smaller learning rate.)

    python examples/albert_sharing.py [--steps 300] [--quick]

``--quick``: 60 steps (under a minute); the numbers in docs/transformer.md come from
the default.
"""

import argparse

import numpy as np
from _char_lm import BATCH, CONTEXT, char_corpus, train  # noqa: E402 (examples/)

import minilm as ml
from minilm.nn import GPT, GPTConfig
from minilm.train.trainer import evaluate_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--quick", action="store_true", help="60 steps")
    p.add_argument("--eval-batches", type=int, default=16, help="validation batches")
    p.add_argument("--lrs", default="1e-3,3e-3", help="AdamW learning rates to try")
    args = p.parse_args()
    steps = 60 if args.quick else args.steps

    tok, train_tokens, val = char_corpus(args.eval_batches)

    print(f"{steps} steps, batch {BATCH} x {CONTEXT} characters")
    lrs = [float(s) for s in args.lrs.split(",")]
    print(f"{'model':<26} {'params':>8} {'block params':>13} "
          + " ".join(f"{f'val lr={lr:g}':>12}" for lr in lrs))
    for name, layers, shared in (("4 layers, separate", 4, False),
                                 ("4 layers, one shared block", 4, True),
                                 ("1 layer", 1, False)):
        losses = []
        for lr in lrs:
            ml.manual_seed(0)
            model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=CONTEXT,
                                  n_layers=layers, n_heads=4, d_model=64, share_layers=shared))
            train(model, train_tokens, steps, np.random.default_rng(0), lr=lr)
            losses.append(evaluate_loss(model, val)["loss"])
        blocks = sum(p.numel() for p in model.blocks.parameters())
        print(f"{name:<26} {model.num_parameters():>8} {blocks:>13} "
              + " ".join(f"{x:>12.4f}" for x in losses))


if __name__ == "__main__":
    main()
