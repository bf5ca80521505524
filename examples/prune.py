"""Magnitude pruning, then fine-tuning with the masks held: train a tiny GPT on the
built-in corpus, zero half of its Linear weights (the smallest |w|), and recover.

    python examples/prune.py [--steps 150] [--finetune-steps 50] [--sparsity 0.5]
                             [--scope layer|global] [--gradual]

``--gradual`` prunes during fine-tuning instead, on the Zhu & Gupta cubic schedule.
Prints validation perplexity before pruning, right after, and after fine-tuning, and
the sparsity of every layer (docs/compression.md).
"""

import argparse
import copy

import numpy as np
from _char_lm import CONTEXT, char_corpus, train  # noqa: E402 (examples/)

import minilm as ml
from minilm import optim
from minilm.nn import GPT, GPTConfig
from minilm.quant import GradualPruner, format_sparsity, magnitude_prune, sparsity_report
from minilm.train.trainer import evaluate_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150, help="training steps before pruning")
    p.add_argument("--finetune-steps", type=int, default=50)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--scope", choices=("layer", "global"), default="layer")
    p.add_argument("--gradual", action="store_true")
    p.add_argument("--eval-batches", type=int, default=8, help="validation batches")
    args = p.parse_args()

    tok, train_tokens, val = char_corpus(args.eval_batches)

    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=CONTEXT, n_layers=2,
                          n_heads=4, d_model=64))
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rng = np.random.default_rng(0)
    train(model, train_tokens, args.steps, rng, opt=opt)
    dense = evaluate_loss(model, val)["ppl"]
    print(f"dense:            val ppl {dense:7.3f}")

    # the fair reference: the dense model trained for the same extra steps
    ref = GPT(model.config)
    ref.load_state_dict(model.state_dict())
    ref_opt = optim.AdamW(ref.parameters(), lr=3e-3, weight_decay=0.01)
    ref_opt.load_state_dict(opt.state_dict())
    train(ref, train_tokens, args.finetune_steps, copy.deepcopy(rng), opt=ref_opt)
    dense_more = evaluate_loss(ref, val)["ppl"]

    if args.gradual:
        n = max(args.finetune_steps // 2 // 5 * 5, 5)  # prune over the first half
        pruner = GradualPruner(model, args.sparsity, start=1, end=1 + n, every=5)
        pruner.masks.attach(opt)
        train(model, train_tokens, args.finetune_steps, rng, opt=opt, on_step=pruner.step)
    else:
        masks = magnitude_prune(model, args.sparsity, scope=args.scope)
        pruned = evaluate_loss(model, val)["ppl"]
        print(f"pruned {args.sparsity:.0%} ({args.scope}): val ppl {pruned:7.3f}  "
              f"({(pruned / dense - 1):+.1%})")
        masks.attach(opt)  # pruned weights stay exactly zero through AdamW
        train(model, train_tokens, args.finetune_steps, rng, opt=opt)
    tuned = evaluate_loss(model, val)["ppl"]
    print(f"fine-tuned {args.finetune_steps} steps: val ppl {tuned:7.3f}  "
          f"({(tuned / dense_more - 1):+.1%} vs the dense model trained "
          f"{args.finetune_steps} more steps: {dense_more:.3f})")
    print(format_sparsity(sparsity_report(model)))


if __name__ == "__main__":
    main()
