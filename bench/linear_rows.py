"""Why ``linear`` computes (W x^T)^T for a few rows: OpenBLAS's kernel for ``x @ W.T``
(W stored (out, in), read transposed) is slow when x has few rows.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/linear_rows.py

For each shape (rows, in, out), float32: the median over 7 rounds of 20 calls of
``x @ w.T`` (the general path of minilm/functional/linalg.py) and of
``ascontiguousarray((w @ x.T).T)`` (the path taken for 2..128 rows), and their ratio.
"""

import statistics
import time

import numpy as np

SHAPES = [(1, 384, 1152), (8, 384, 384), (28, 384, 1152), (64, 384, 1536), (128, 384, 1536),
          (256, 256, 768), (512, 256, 1024), (1024, 256, 768), (2048, 128, 512)]


def median_us(f, rounds: int = 7, calls: int = 20) -> float:
    f()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            f()
        times.append((time.perf_counter() - t) / calls)
    return statistics.median(times) * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'rows':>5} {'in':>5} {'out':>5} {'x @ w.T':>10} {'(w @ x.T).T':>12} {'ratio':>6}")
    for m, k, n in SHAPES:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((n, k)).astype(np.float32)
        a = median_us(lambda x=x, w=w: x @ w.T)
        b = median_us(lambda x=x, w=w: np.ascontiguousarray((w @ x.T).T))
        print(f"{m:5d} {k:5d} {n:5d} {a:9.0f}us {b:11.0f}us {a / b:6.2f}")


if __name__ == "__main__":
    main()
