"""Hyperparameter search: Bayesian optimisation against random search.

1. On a cheap analytic objective (the Branin function on [-5, 10] x [0, 15], minimum
   0.397887), 20 trials each, averaged over 5 seeds: the best loss found.
2. On a tiny GPT trained on the built-in corpus (Python's pydoc topics): 8 trials of
   each strategy (learning rate, depth, width), 30 steps per trial; objective = the
   validation loss at the last step. Writes <out-dir>/{bayes,random}/trials.jsonl and
   search.png, prints a table of the trials and the best one.

    python examples/hyperparameter_search.py            # about a minute on 2 cores
    python examples/hyperparameter_search.py --quick    # CI: 4 trials, 10 steps

The command-line equivalent of part 2: ``minilm search --config search.toml``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

import numpy as np

from minilm.search import BayesianOptimization, Float, RandomSearch, Space, trial_record
from minilm.tune import format_table, run_search


def branin(p: dict) -> float:
    x, y = p["x"], p["y"]
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def best_of(strategy) -> float:
    while not strategy.finished:
        spec = strategy.ask()
        strategy.tell(trial_record(spec, branin(spec["params"]), 0.0))
    return strategy.best()["loss"]


def analytic(trials: int, seeds: int) -> None:
    space = Space({"x": Float(-5, 10), "y": Float(0, 15)})
    bo = [best_of(BayesianOptimization(space, trials, seed=s)) for s in range(seeds)]
    rnd = [best_of(RandomSearch(space, trials, seed=s)) for s in range(seeds)]
    print(f"Branin (minimum 0.3979), {trials} trials, mean over {seeds} seeds of the best loss:")
    print(f"  bayes  {np.mean(bo):.4f}   (per seed: {', '.join(f'{v:.3f}' for v in bo)})")
    print(f"  random {np.mean(rnd):.4f}   (per seed: {', '.join(f'{v:.3f}' for v in rnd)})")


def gpt_config(strategy: str, trials: int, steps: int) -> dict:
    return {
        "search": {"strategy": strategy, "trials": trials, "seed": 0, "n_initial": 3},
        "space": {"lr": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True},
                  "n_layers": {"type": "int", "low": 1, "high": 3},
                  "d_model": {"type": "choice", "values": [32, 64]}},
        "model": {"n_heads": 4, "context_length": 32, "dropout": 0.0},
        "train": {"tokenizer": "char", "batch_size": 8, "max_steps": steps,
                  "warmup_steps": 5, "min_lr": 1e-5, "eval_batches": 4, "batch_threads": 1,
                  "seed": 0},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="runs/hyperparameter-search")
    ap.add_argument("--quick", action="store_true", help="4 trials of 10 steps (CI)")
    args = ap.parse_args()
    trials, steps = (4, 10) if args.quick else (8, 30)
    t0 = time.perf_counter()
    analytic(8 if args.quick else 20, 2 if args.quick else 5)
    out = Path(args.out_dir)
    results = {}
    for strategy in ("bayes", "random"):
        if (out / strategy).exists():
            shutil.rmtree(out / strategy)  # the example's own earlier output
        print(f"\n{strategy}: {trials} trials x {steps} steps of a tiny GPT")
        res = run_search(gpt_config(strategy, trials, steps), out / strategy,
                         log=lambda *a, **k: None)
        print(format_table(res["records"]))
        results[strategy] = res["best"]
    print()
    for strategy, best in results.items():
        print(f"best {strategy:<6}: trial {best['trial']}, val loss {best['loss']:.4f}, "
              f"lr {best['params']['lr']:.2e}, n_layers {best['params']['n_layers']}, "
              f"d_model {best['params']['d_model']}")
    print(f"plots: {out / 'bayes' / 'search.png'}, {out / 'random' / 'search.png'}; "
          f"{time.perf_counter() - t0:.0f}s in all")


if __name__ == "__main__":
    main()
