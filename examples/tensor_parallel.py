"""Tensor parallelism (Megatron-style): every layer's weights are split over the ranks —
attention heads and the MLP's hidden units column-parallel then row-parallel, the
vocabulary of the embedding and of the tied output head split too — and one allreduce
per sublayer joins the partial results. Each rank sees the whole batch.

    mpiexec -n 2 python examples/tensor_parallel.py [--steps 50]

The same with the CLI: ``mpiexec -n 2 python -m minilm train --tp 2``.
"""

import argparse

import numpy as np

import minilm as ml
from minilm import optim
from minilm.data import CharTokenizer, load_corpus, random_windows
from minilm.nn import GPT, GPTConfig
from minilm.parallel import install_abort_handler, tensor_parallel_gpt, world


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    install_abort_handler()
    comm = world()

    text = load_corpus()
    tok = CharTokenizer.train(text)
    tokens = np.asarray(tok.encode(text), dtype=np.int64)
    vocab = -(-tok.vocab_size // comm.size) * comm.size  # pad the vocab to split it evenly
    ml.manual_seed(0)  # build the same full model on every rank, then keep my shard
    full = GPT(GPTConfig(vocab_size=vocab, context_length=64, n_layers=2, n_heads=4,
                         d_model=64))
    n_full = full.num_parameters()
    model = tensor_parallel_gpt(full, comm)  # converts the blocks in place: use `model`
    if comm.rank == 0:
        print(f"{n_full:,} parameters in all; "
              f"{sum(q.numel() for q in model.parameters()):,} on each rank")
    opt = optim.AdamW(model.parameters(), lr=3e-3)  # elementwise: works on shards as is
    rng = np.random.default_rng(123)
    for step in range(args.steps):
        x, y = random_windows(tokens, 16, 64, rng)
        # the loss is a vocab-parallel cross-entropy: the full logits are never gathered
        _, loss = model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if comm.rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
