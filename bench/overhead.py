"""Per-op Python overhead of minilm's tape: microseconds for a forward+backward of tiny
ops, where the arithmetic is negligible and what is measured is the framework itself
(Function.apply, Node creation, the backward walk, gradient accumulation).

    .venv/bin/python bench/overhead.py [--repeats 7] [--number 2000] [--compare-torch]

Prints the median over ``repeats`` runs of ``number`` iterations each. With
``--compare-torch`` and PyTorch importable, the same loops run in PyTorch side by side.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

import minilm as ml
import minilm.functional as F


def _median_us(fn, number: int, repeats: int) -> float:
    fn()  # warm up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t0) / number * 1e6)
    return statistics.median(runs)


def minilm_cases() -> dict:
    a = ml.randn(4, 4, requires_grad=True)
    b = ml.randn(4, 4, requires_grad=True)
    x = ml.randn(4, 4)

    def add_fwd():
        with ml.no_grad():
            return a + b

    def add_fb():
        a.grad = b.grad = None
        F.add(a, b).backward(ml.ones(4, 4))

    def matmul_fb():
        a.grad = b.grad = None
        (a @ b).backward(ml.ones(4, 4))

    def chain_fb():  # 10 recorded ops, one backward
        a.grad = None
        y = a
        for _ in range(10):
            y = y * 1.0001
        y.backward(ml.ones(4, 4))

    return {
        "numpy add (no framework)": lambda: np.add(x.data, x.data),
        "add forward, no_grad": add_fwd,
        "add forward+backward": add_fb,
        "matmul forward+backward": matmul_fb,
        "10 muls forward+backward (per op)": chain_fb,
    }


def torch_cases(torch) -> dict:
    a = torch.randn(4, 4, requires_grad=True)
    b = torch.randn(4, 4, requires_grad=True)
    ones = torch.ones(4, 4)

    def add_fwd():
        with torch.no_grad():
            return a + b

    def add_fb():
        a.grad = b.grad = None
        (a + b).backward(ones)

    def matmul_fb():
        a.grad = b.grad = None
        (a @ b).backward(ones)

    def chain_fb():
        a.grad = None
        y = a
        for _ in range(10):
            y = y * 1.0001
        y.backward(ones)

    return {
        "add forward, no_grad": add_fwd,
        "add forward+backward": add_fb,
        "matmul forward+backward": matmul_fb,
        "10 muls forward+backward (per op)": chain_fb,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--number", type=int, default=2000)
    p.add_argument("--compare-torch", action="store_true")
    args = p.parse_args()
    ml.use_backend("numpy")
    print(f"machine: {platform.machine()} {platform.processor() or ''}; python "
          f"{platform.python_version()}; numpy {np.__version__}; backend "
          f"{ml.current_backend().name}")
    print(f"median of {args.repeats} runs x {args.number} iterations, 4x4 float32\n")
    ours = {k: _median_us(f, args.number, args.repeats) for k, f in minilm_cases().items()}
    theirs = {}
    if args.compare_torch:
        try:
            import torch

            torch.set_num_threads(1)
            theirs = {k: _median_us(f, args.number, args.repeats)
                      for k, f in torch_cases(torch).items()}
        except ImportError:
            print("(PyTorch not installed: no comparison)\n")
    print(f"{'case':40s} {'minilm us':>10s}" + (f" {'torch us':>10s} {'ratio':>7s}" if theirs else ""))
    for k, v in ours.items():
        if k.startswith("10 muls"):
            v /= 10
        line = f"{k:40s} {v:10.1f}"
        if k in theirs:
            t = theirs[k] / (10 if k.startswith("10 muls") else 1)
            line += f" {t:10.1f} {v / t:7.2f}"
        print(line)


if __name__ == "__main__":
    main()
