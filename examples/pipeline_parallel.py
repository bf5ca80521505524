"""Pipeline parallelism: the GPT's blocks are split into stages (one per rank, balanced
by parameter count); each batch is cut into micro-batches that flow through the stages,
forward then backward, scheduled GPipe-style or 1F1B. The tied embedding lives on the
first and last stage; its two gradients are summed after every step.

    mpiexec -n 2 python examples/pipeline_parallel.py [--steps 30] [--schedule gpipe]

The same with the CLI: ``mpiexec -n 2 python -m minilm train --pp 2 --micro-batches 4``.
"""

import argparse

import numpy as np

import minilm as ml
from minilm import optim
from minilm.data import CharTokenizer, load_corpus, random_windows
from minilm.nn import GPT, GPTConfig
from minilm.parallel import (
    PipelineStage,
    bubble_fraction,
    format_schedule,
    install_abort_handler,
    pipeline_train_step,
    world,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--schedule", choices=("gpipe", "1f1b"), default="1f1b")
    p.add_argument("--micro-batches", type=int, default=4)
    args = p.parse_args()
    install_abort_handler()
    comm = world()
    M = args.micro_batches

    text = load_corpus()
    tok = CharTokenizer.train(text)
    tokens = np.asarray(tok.encode(text), dtype=np.int64)
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=64, n_layers=4,
                          n_heads=2, d_model=64))
    stage = PipelineStage(model, comm)  # keeps only this rank's blocks
    if comm.rank == 0:
        print(f"stages (blocks per rank): {stage.partition}; bubble "
              f"(p-1)/(M+p-1) = {bubble_fraction(comm.size, M):.3f}")
        print(format_schedule(args.schedule, comm.size, M))
    opt = optim.AdamW(stage.parameters(), lr=3e-3)
    rng = np.random.default_rng(123)  # every stage needs the batch's shape (and ids/targets)
    for step in range(args.steps):
        x, y = random_windows(tokens, 16, 64, rng)
        loss = pipeline_train_step(stage, (x, y), opt, args.schedule, M)
        if comm.rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {loss:.4f}  idle share "
                  f"{stage.last_stats['wait_fraction']:.2f}")


if __name__ == "__main__":
    main()
