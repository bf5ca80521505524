"""Continual learning: a small character GPT trained on Python's reference-manual
topics (shard A, prose), then on standard-library source code (shard B), with naive
fine-tuning, rehearsal (a reservoir replay buffer of shard-A windows) and EWC.

    python examples/continual_learning.py [--steps-a 600] [--steps-b 400] [--ewc-lambda 1e4]
    python examples/continual_learning.py --quick

forgetting = loss on A after B - loss on A after A (held-out windows); also the loss
on B after B (minilm.train.continual; docs/workflows.md, "Continual learning").
"""

import argparse
import json
import os
import time

from minilm.train import continual as C


def main() -> None:
    d = C.ContinualConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps-a", type=int, default=600, help="steps on shard A")
    p.add_argument("--steps-b", type=int, default=400, help="steps on shard B (each method)")
    p.add_argument("--ewc-lambda", type=float, default=d.ewc_lambda)
    p.add_argument("--replay-ratio", type=float, default=d.replay_ratio,
                   help="fraction of each shard-B batch replayed from shard A")
    p.add_argument("--replay-capacity", type=int, default=d.replay_capacity)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="150 + 100 steps")
    p.add_argument("--out", default="runs/continual", help="folder for results.json")
    args = p.parse_args()
    if args.quick:
        args.steps_a, args.steps_b = 150, 100
    cfg = C.ContinualConfig(steps_a=args.steps_a, steps_b=args.steps_b, ewc_lambda=args.ewc_lambda,
                            replay_ratio=args.replay_ratio, replay_capacity=args.replay_capacity,
                            seed=args.seed)
    shards = C.text_shards()
    print(f"shard A (docs): {len(shards['docs']):,} chars; shard B (code): "
          f"{len(shards['code']):,} chars; GPT d_model {cfg.d_model}, {cfg.n_layers} layers, "
          f"context {cfg.context}; {cfg.steps_a} + {cfg.steps_b} steps of batch {cfg.batch_size}")
    t0 = time.time()
    r = C.continual_experiment(shards["docs"], shards["code"], cfg,
                               log=lambda s: print(f"  [{time.time() - t0:5.1f} s] {s}", flush=True))
    print(f"\nafter A: loss A {r['loss_a_after_a']:.4f}, loss B {r['loss_b_after_a']:.4f}")
    print(f"{'method':10s} {'loss A':>8s} {'forgetting':>11s} {'loss B':>8s}")
    for m, v in r["methods"].items():
        print(f"{m:10s} {v['loss_a']:8.4f} {v['forgetting']:+11.4f} {v['loss_b']:8.4f}")
    print(f"(rehearsal: ratio {cfg.replay_ratio}, capacity {cfg.replay_capacity}; "
          f"EWC: lambda {cfg.ewc_lambda:g}, Fisher on {cfg.fisher_samples} windows; "
          f"{time.time() - t0:.0f} s)")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"config": vars(cfg), **r}, f, indent=2)
    print(f"results in {args.out}/results.json")


if __name__ == "__main__":
    main()
