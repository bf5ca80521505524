"""Speed of the recurrent layers: one forward + backward of an LSTM / GRU layer over a
padded batch, the per-step composed ops vs the fused sequence op, on each backend.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/rnn.py [--batch 32] [--steps 200]

The shape is the text classifier's (``minilm classify --model lstm``: batch 32, up to
200 words, embedding and hidden size 64, float32), with lengths drawn in [T/4, T]. The
rows: ``composed`` runs the module's ``_cell`` (~15 autograd ops per step);
``fused`` runs ``F.lstm_sequence`` / ``F.gru_sequence`` (one op per layer-direction) on
the NumPy backend (a NumPy loop) and on the Numba backend (per step one BLAS product and
one compiled gate kernel). The variants take turns within each round, so load from other
users of the machine falls on them alike; medians over ``--repeats`` rounds after a
warm-up round (which also compiles the Numba kernels).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import minilm as ml  # noqa: E402
from minilm.backends import use_backend  # noqa: E402
from minilm.nn import GRU, LSTM  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    B, T, H = a.batch, a.steps, a.hidden
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((B, T, H)).astype(np.float32)
    lengths = rng.integers(T // 4, T + 1, size=B)
    lengths[0] = T
    variants = [(cell, backend, fused) for cell in ("lstm", "gru")
                for backend, fused in (("numpy", False), ("numpy", True), ("numba", True))]
    times: dict = {v: [] for v in variants}
    for r in range(a.repeats + 1):
        for v in variants:
            cell, backend, fused = v
            use_backend(backend)
            ml.manual_seed(0)
            m = (LSTM if cell == "lstm" else GRU)(H, H, batch_first=True)
            m.fused = fused
            x = ml.tensor(x_np, requires_grad=True)
            t0 = time.perf_counter()
            out, _ = m(x, lengths=lengths)
            t1 = time.perf_counter()
            out.sum().backward()
            t2 = time.perf_counter()
            if r:
                times[v].append((t1 - t0, t2 - t1))
    print(f"B {B}, T {T}, H {H}, float32; median of {a.repeats} rounds (ms)")
    print(f"{'layer':6s} {'path':18s} {'forward':>8s} {'backward':>9s} {'total':>7s} {'speedup':>8s}")
    for cell in ("lstm", "gru"):
        base = None
        for v in [v for v in variants if v[0] == cell]:
            f = statistics.median(t[0] for t in times[v]) * 1e3
            b = statistics.median(t[1] for t in times[v]) * 1e3
            base = base or f + b
            name = ("fused " if v[2] else "composed ") + v[1]
            print(f"{cell:6s} {name:18s} {f:8.1f} {b:9.1f} {f + b:7.1f} {base / (f + b):7.1f}x")


if __name__ == "__main__":
    main()
