"""Data parallelism by hand: every rank holds the whole model, trains on its own slice
of each batch, and gradients are averaged by allreduce (bucketed, overlapped with
backward) so that all replicas take the same step.

    mpiexec -n 2 python examples/data_parallel.py [--steps 50]

The same run with the CLI: ``mpiexec -n 2 python -m minilm train --dp 2``.
"""

import argparse

import numpy as np

import minilm as ml
from minilm import optim
from minilm.data import CharTokenizer, load_corpus, random_windows
from minilm.nn import GPT, GPTConfig
from minilm.parallel import DataParallel, install_abort_handler, world


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=16, help="global batch (split over ranks)")
    args = p.parse_args()
    install_abort_handler()  # an exception on any rank ends the whole job
    comm = world()

    text = load_corpus()
    tok = CharTokenizer.train(text)
    tokens = np.asarray(tok.encode(text), dtype=np.int64)
    ml.manual_seed(0)  # same initial model everywhere (DataParallel also broadcasts it)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=64, n_layers=2,
                          n_heads=2, d_model=64))
    ddp = DataParallel(model, comm, bucket_size_mb=1.0)  # hooks average the gradients
    opt = optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(123)  # same stream on every rank: the same global batch
    per_rank = args.batch // comm.size
    for step in range(args.steps):
        x, y = random_windows(tokens, args.batch, 64, rng)
        mine = slice(comm.rank * per_rank, (comm.rank + 1) * per_rank)
        _, loss = model(ml.tensor(x[mine]), ml.tensor(y[mine]))
        loss.backward()  # bucket allreduces start while backward is still running
        ddp.finish()  # wait for the last buckets; p.grad now holds the global average
        opt.step()
        opt.zero_grad()
        avg = np.array([loss.item()])
        comm.allreduce(avg)
        if comm.rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {avg[0] / comm.size:.4f}")


if __name__ == "__main__":
    main()
