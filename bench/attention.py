"""Causal attention on the Numba backend: the unfused kernels against the flash ones.

    .venv/bin/python bench/attention.py [--threads 1 2] [--repeats 7]

Unfused: ``NumbaBackend.attention`` (two batched BLAS products around a fused masked
softmax; the T x T probabilities kept) and ``attention_backward``. Flash:
``causal_attention`` and ``causal_attention_backward``
(minilm/backends/_numba_attention_kernels.py: key blocks, online softmax, only the row
log-sum-exp kept). 4 heads of 64, float32, shapes (batch x T) 8 x 128, 4 x 512,
2 x 1024; medians of ``--repeats`` calls after one warm-up, with BLAS and Numba at
``--threads``; the largest difference between the two outputs is printed as a check.
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
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    import numba
    import numpy as np
    from threadpoolctl import threadpool_limits

    import minilm as ml

    be = ml.use_backend("numba")
    rng = np.random.default_rng(0)

    def ms(f) -> float:
        f()
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    print("threads  B x T      unfused fwd / bwd ms    flash fwd / bwd ms    max |diff|")
    for threads in a.threads:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        with threadpool_limits(threads, user_api="blas"):
            for B, T in ((8, 128), (4, 512), (2, 1024)):
                q, k, v, g = (rng.standard_normal((B, 4, T, 64)).astype(np.float32)
                              for _ in range(4))
                keep = np.tril(np.ones((T, T), dtype=bool))
                out, p_, _ = be.attention(q, k, v, keep, None, 0.125)
                f_out, lse = be.causal_attention(q, k, v, 0.125)
                uf = ms(lambda a=(q, k, v, keep): be.attention(*a, None, 0.125))
                ub = ms(lambda a=(g, q, k, v, p_): be.attention_backward(*a, None, 0.125))
                ff = ms(lambda a=(q, k, v): be.causal_attention(*a, 0.125))
                fb = ms(lambda a=(g, q, k, v, f_out, lse):
                        be.causal_attention_backward(*a, 0.125))
                print(f"{threads:7d}  {B} x {T:<5d}  {uf:8.2f} / {ub:7.2f}       "
                      f"{ff:8.2f} / {fb:7.2f}      {float(np.abs(out - f_out).max()):.1e}")


if __name__ == "__main__":
    main()
