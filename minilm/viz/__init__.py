"""Seeing the machinery: pictures of what minilm builds and runs (docs/visualization.md).

- :mod:`.graph`: the autograd graph behind a tensor as Graphviz DOT (``to_dot``,
  ``save_graph``; .svg / .png need the ``dot`` program, package ``graphviz``).
- :mod:`.attention`: every layer's attention probabilities of a GPT for a prompt, via
  forward hooks (``attention_maps``) and their heatmaps (``plot_attention``).
- :mod:`.schedules`: the LR schedules' curves, measured by stepping each scheduler.
- :mod:`.pipeline`: GPipe / 1F1B timelines from minilm's own pipeline planner.

Figures use matplotlib with the Agg backend (no display needed). ``add_viz_parser``
adds the ``minilm viz`` command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .attention import attend, attention_maps, attention_probs, plot_attention
from .graph import GraphvizNotFoundError, graph_structure, render_dot, save_graph, to_dot
from .pipeline import pipeline_timeline, plot_pipeline_schedule
from .schedules import lr_schedule_curves, plot_lr_schedules

__all__ = [
    "GraphvizNotFoundError", "add_viz_parser", "attend", "attention_maps", "attention_probs",
    "graph_structure", "lr_schedule_curves", "pipeline_timeline", "plot_attention",
    "plot_lr_schedules", "plot_pipeline_schedule", "prompt_ids", "render_dot", "save_graph",
    "tiny_gpt", "tiny_gpt_loss", "to_dot",
]


def tiny_gpt(seed: int = 0, n_layers: int = 2, n_heads: int = 2, d_model: int = 16,
             vocab_size: int = 96, context_length: int = 32, init_std: float = 0.02,
             **config: Any) -> Any:
    """A small GPT with random weights (seeded), for pictures of the machinery; a
    larger ``init_std`` (0.3) gives random attention patterns that are not uniform."""
    from ..backends import manual_seed
    from ..nn import GPT, GPTConfig

    manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=context_length, n_layers=n_layers,
                         n_heads=n_heads, d_model=d_model, init_std=init_std, **config))


def tiny_gpt_loss(model: Any = None, batch: int = 2, seq: int = 8, seed: int = 0) -> tuple:
    """(model, loss) of one forward pass of ``model`` (default: ``tiny_gpt()``) on random
    token ids and their shifted targets; ``loss`` carries the whole autograd graph."""
    from ..nn.module import model_backend
    from ..tensor import Tensor

    model = model if model is not None else tiny_gpt(seed)
    rng = np.random.default_rng(seed)
    c = model.config
    seq = min(seq, c.context_length)
    ids = rng.integers(0, c.vocab_size, size=(batch, seq + 1))
    be = model_backend(model)  # the ids go where the model is (a device too)
    _, loss = model(Tensor(ids[:, :-1], backend=be), targets=Tensor(ids[:, 1:], backend=be))
    return model, loss


def prompt_ids(prompt: str, tokenizer: Any = None, vocab_size: int = 96) -> tuple[list[int], list[str]]:
    """Token ids and their texts for ``prompt``: with a tokenizer, its encoding (each id
    decoded alone for the label); without one, one token per character (the code point
    modulo ``vocab_size``; enough for a random-weight model)."""
    if not prompt:
        raise ValueError("the prompt is empty")
    if tokenizer is None:
        return [ord(ch) % vocab_size for ch in prompt], list(prompt)
    ids = [int(i) for i in tokenizer.encode(prompt)]
    if not ids:
        raise ValueError(f"the prompt {prompt!r} encodes to no tokens")
    return ids, [tokenizer.decode([i]) for i in ids]


# ---------------------------------------------------------------------------- CLI


def add_viz_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``minilm viz`` to the subparsers ``sub`` (its handler returns 0)."""
    p = sub.add_parser("viz", help="pictures of the machinery: autograd graph, attention maps, "
                                   "LR schedules, pipeline timelines (docs/visualization.md)")
    p.add_argument("--graph", metavar="OUT", default=None,
                   help="the autograd graph of a tiny GPT's loss: OUT.dot, or .svg/.png (needs "
                        "graphviz's dot)")
    p.add_argument("--lr-schedules", metavar="OUT.png", default=None,
                   help="the curves of minilm's LR schedules")
    p.add_argument("--total-steps", type=int, default=1000, help="steps drawn (--lr-schedules)")
    p.add_argument("--warmup", type=int, default=100, help="warmup steps (--lr-schedules)")
    p.add_argument("--pipeline", metavar="OUT.png", default=None,
                   help="a pipeline-parallel schedule's timeline")
    p.add_argument("--stages", type=int, default=4, help="pipeline stages (--pipeline)")
    p.add_argument("--micro-batches", type=int, default=8, help="micro-batches (--pipeline)")
    p.add_argument("--schedule", default="1f1b", help="1f1b or gpipe (--pipeline)")
    p.add_argument("--attention", metavar="OUT.png", default=None,
                   help="attention heatmaps (layers x heads) for --prompt")
    p.add_argument("--run", metavar="RUNDIR", default=None,
                   help="a finished `minilm train` run to load (--attention; default: a tiny "
                        "random GPT)")
    p.add_argument("--prompt", default="hello world", help="the prompt (--attention)")
    p.add_argument("--layer", type=int, default=None, help="only this layer (--attention)")
    p.set_defaults(func=run_viz)
    return p


def _png_path(opt: str, value: str) -> Path:
    path = Path(value)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"{opt} {value!r}: give a .png, .svg or .pdf file name")
    return path


def run_viz(args: argparse.Namespace) -> int:
    """The ``minilm viz`` command: each given output option writes its figure."""
    if not any((args.graph, args.lr_schedules, args.pipeline, args.attention)):
        raise ValueError("nothing to draw: give --graph, --lr-schedules, --pipeline and/or "
                         "--attention with an output file")
    # every input is checked (and the attention model loaded) before any file is written
    gpath = lpath = ppath = apath = None
    if args.graph:
        gpath = Path(args.graph)
        if gpath.suffix.lower() not in (".dot", ".svg", ".png", ".pdf"):
            raise ValueError(f"--graph {args.graph!r}: give a .dot, .svg, .png or .pdf file name")
    if args.lr_schedules:
        lpath = _png_path("--lr-schedules", args.lr_schedules)
        if args.total_steps < 2 or not 0 <= args.warmup <= args.total_steps:
            raise ValueError(f"--total-steps {args.total_steps} / --warmup {args.warmup}: need "
                             "total >= 2 and 0 <= warmup <= total")
    if args.pipeline:
        ppath = _png_path("--pipeline", args.pipeline)
        pipeline_timeline(args.stages, args.micro_batches, args.schedule)  # checks the numbers
    if args.attention:
        apath = _png_path("--attention", args.attention)
        if args.run is not None and not Path(args.run).is_dir():
            raise ValueError(f"--run {args.run!r}: no such run directory")
        tokenizer = None
        if args.run is not None:
            from ..run import load_run

            model, tokenizer, _ = load_run(args.run)
        else:
            model = tiny_gpt()
        L = model.config.n_layers
        if args.layer is not None and not -L <= args.layer < L:
            raise ValueError(f"--layer {args.layer}: the model has layers 0..{L - 1}")
        ids, tokens = prompt_ids(args.prompt, tokenizer, model.config.vocab_size)
    if gpath is not None:
        graph_model, loss = tiny_gpt_loss()
        for written in save_graph(loss, gpath, params=graph_model):
            print(f"wrote {written}")
    if lpath is not None:
        print(f"wrote {plot_lr_schedules(lpath, args.total_steps, args.warmup)}")
    if ppath is not None:
        print(f"wrote {plot_pipeline_schedule(ppath, args.stages, args.micro_batches, args.schedule)}")
    if apath is not None:
        maps = attention_maps(model, ids)
        print(f"wrote {plot_attention(maps[0], tokens, apath, layer=args.layer)}")
    return 0
