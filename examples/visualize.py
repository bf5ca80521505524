"""Seeing the machinery: write the pictures of minilm.viz into one folder.

    python examples/visualize.py                 # runs/viz: all figures
    python examples/visualize.py --quick         # smaller figures, a few seconds
    python examples/visualize.py --run runs/my-run --prompt "The cat"   # a `minilm train` run

Writes into --out (default runs/viz):
  graph.dot (+ graph.svg when graphviz's ``dot`` is installed)  autograd graph of a tiny
                                                                GPT's loss
  attention.png       attention heatmaps (layers x heads) for the prompt
  lr_schedules.png    minilm's LR schedules, measured by stepping each scheduler
  pipeline_gpipe.png, pipeline_1f1b.png   pipeline-parallel timelines with their bubble
Nothing is trained. See docs/visualization.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from minilm.viz import (
    attention_maps,
    plot_attention,
    plot_lr_schedules,
    plot_pipeline_schedule,
    prompt_ids,
    save_graph,
    tiny_gpt,
    tiny_gpt_loss,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/viz", help="output folder (default runs/viz)")
    ap.add_argument("--quick", action="store_true", help="smaller model and figures")
    ap.add_argument("--run", default=None, help="a finished `minilm train` run for the attention maps")
    ap.add_argument("--prompt", default="the machinery", help="prompt of the attention maps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # 1. the autograd graph of one loss: one layer keeps it readable
    model = tiny_gpt(args.seed, n_layers=1 if args.quick else 2, n_heads=2, d_model=16)
    model, loss = tiny_gpt_loss(model, batch=2, seq=8, seed=args.seed)
    target = out / ("graph.svg" if shutil.which("dot") else "graph.dot")
    for p in save_graph(loss, target, params=model):
        print(f"wrote {p}")
    if target.suffix == ".dot":
        print("  (no graphviz `dot` here: sudo apt-get install graphviz, then "
              f"dot -Tsvg {target} -o {target.with_suffix('.svg')})")

    # 2. attention maps for a prompt: a trained run, or random weights large enough to
    #    give patterns (init_std 0.3; GPT's own 0.02 makes every row nearly uniform)
    tokenizer = None
    if args.run:
        from minilm.run import load_run

        att_model, tokenizer, _ = load_run(args.run)
    else:
        att_model = tiny_gpt(args.seed, n_layers=2, n_heads=2 if args.quick else 4, d_model=32,
                             init_std=0.3)
    prompt = args.prompt[:12] if args.quick else args.prompt
    ids, tokens = prompt_ids(prompt, tokenizer, att_model.config.vocab_size)
    ids, tokens = ids[-att_model.config.context_length:], tokens[-att_model.config.context_length:]
    maps = attention_maps(att_model, ids)  # checked against each attention module's output
    print(f"wrote {plot_attention(maps[0], tokens, out / 'attention.png')}  "
          f"({maps[0].shape[0]} layers x {maps[0].shape[1]} heads, {len(ids)} tokens)")

    # 3. LR schedules
    total, warmup = (200, 20) if args.quick else (1000, 100)
    print(f"wrote {plot_lr_schedules(out / 'lr_schedules.png', total_steps=total, warmup=warmup)}")

    # 4. pipeline timelines
    stages, mbs = (4, 4) if args.quick else (4, 8)
    for schedule in ("gpipe", "1f1b"):
        p = plot_pipeline_schedule(out / f"pipeline_{schedule}.png", stages, mbs, schedule)
        print(f"wrote {p}")
    print(f"done in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
