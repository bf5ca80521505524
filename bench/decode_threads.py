"""Greedy decoding with the KV cache at batch 1 and 8: every op split over the threads
(BLAS and Numba at all threads) against ``minilm.backends.threads.one_thread()`` (both
at one thread), in one process, one mode after the other.

    .venv/bin/python bench/decode_threads.py [--rounds 3] [--new-tokens 256]

The model is bench/generate.py's (4 layers, 4 heads, d 256, vocab 96, random weights,
seed 0) with context 512 and a 16-token prompt. This is the measurement behind
``generate`` running batch 1 under ``one_thread()`` (docs/performance.md §8).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    a = p.parse_args()
    import numpy as np

    import minilm as ml
    import minilm.train.generation as gen
    from minilm.backends.threads import one_thread
    from minilm.nn import GPT, GPTConfig

    ml.use_backend("numba")
    ml.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=96, context_length=512, n_layers=4, n_heads=4,
                      d_model=256)).eval()
    prompt = np.random.default_rng(0).integers(0, 96, (1, 16))
    gen.generate(m, prompt, 20, temperature=0)  # compile / warm up
    real_one_thread = gen.one_thread
    print(f"threads {ml.get_num_threads()}; tokens/s, median of {a.rounds} rounds")
    for B in a.batch_sizes:
        ids = np.repeat(prompt, B, axis=0)
        times: dict = {"ops split over threads": [], "one_thread()": []}
        for label in times:  # one mode at a time (interleaving them left the split
            for _ in range(a.rounds):  # mode's spinning BLAS threads on the other's cores)
                # generate enters one_thread() itself at batch 1: swap in a no-op section
                # to time the split version
                gen.one_thread = real_one_thread if label == "one_thread()" else _Nothing
                t0 = time.perf_counter()
                with one_thread() if label == "one_thread()" else _Nothing():
                    gen.generate(m, ids, a.new_tokens, temperature=0)
                times[label].append(time.perf_counter() - t0)
        gen.one_thread = real_one_thread
        cells = "  ".join(f"{k} {B * a.new_tokens / statistics.median(v):8,.0f}"
                          for k, v in times.items())
        print(f"batch {B:2d}: {cells}")


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
