"""Mixed-precision training of a small GPT, on the GPU when there is one.

    python examples/gpu_mixed_precision.py                 # fp16 + loss scaling vs float32
    python examples/gpu_mixed_precision.py --amp bf16      # bfloat16: no scaler needed
    python examples/gpu_mixed_precision.py --quick         # a few steps (what CI runs)

The same loop runs twice from the same seed, in float32 and under
``minilm.amp.autocast`` with a ``GradScaler`` (docs/gpu.md, "Mixed precision"):

    with autocast("float16"):  loss = model(x, y)[1]       # matmuls in half precision
    scaler.scale(loss).backward()                          # d(S * loss)
    scaler.unscale_(opt); clip_grad_norm_(...)             # gradients / S; inf or NaN?
    scaler.step(opt); scaler.update()                      # skip on overflow; move S

With CuPy and a CUDA device (``pip install 'minilm[cuda]'``) the model lives on the GPU
(``use_backend("cupy")``): linear layers run as cuBLAS half GEMMs and the script prints
the peak GPU memory of each run (``minilm.cuda``). Without one it runs on the CPU, where
the half-precision rounding is emulated (same numbers, no speed-up) and says so.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _char_lm import char_corpus

import minilm as ml
import minilm.cuda as mcuda
from minilm import optim
from minilm.amp import GradScaler, autocast
from minilm.data import random_windows
from minilm.nn import GPT, GPTConfig


def run(tok, tokens, val, steps: int, amp: str | None) -> dict:
    """Train from seed 0 for ``steps`` steps (autocast dtype ``amp`` or float32); the
    validation loss, the scaler's last scale and skipped steps, tokens/s, peak memory."""
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=64, n_layers=2,
                          n_heads=4, d_model=128))
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    scaler = GradScaler(enabled=amp == "float16")
    rng = np.random.default_rng(0)
    gpu = ml.current_backend().name == "cupy"
    if gpu:
        mcuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        x, y = random_windows(tokens, 16, 64, rng)
        with autocast(amp or "float16", enabled=amp is not None):
            _, loss = model(ml.tensor(x), ml.tensor(y))
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        optim.clip_grad_norm_(list(model.parameters()), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    if gpu:
        mcuda.synchronize()
    seconds = time.perf_counter() - start
    model.eval()
    with ml.no_grad():
        val_loss = float(np.mean([model(ml.tensor(vx), ml.tensor(vy))[1].item()
                                  for vx, vy in val]))
    return {"val_loss": val_loss, "scale": scaler.get_scale() if scaler.enabled else None,
            "skipped": scaler.skipped,
            "tokens_per_s": steps * 16 * 64 / seconds,
            "peak_mib": mcuda.max_memory_allocated() / 2**20 if gpu else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--amp", choices=["fp16", "bf16"], default="fp16")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="a few steps (CI)")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps must be at least 1, got {args.steps}")
    steps = 8 if args.quick else args.steps
    if mcuda.is_available():
        ml.use_backend("cupy")
        print(f"on the GPU: {mcuda.describe()}")
    else:
        print(f"no GPU here ({mcuda.describe()}): on the CPU, half precision emulated")
    tok, tokens, val = char_corpus(eval_batches=2 if args.quick else 8, context=64)
    dtype = {"fp16": "float16", "bf16": "bfloat16"}[args.amp]
    results = {"float32": run(tok, tokens, val, steps, None), args.amp: run(tok, tokens, val,
                                                                             steps, dtype)}
    for name, r in results.items():
        extra = (f", loss scale {r['scale']:g}, {r['skipped']} steps skipped"
                 if r["scale"] is not None else "")
        mem = f", peak GPU memory {r['peak_mib']:.0f} MiB" if r["peak_mib"] is not None else ""
        print(f"{name:>8}: validation loss {r['val_loss']:.4f} after {steps} steps, "
              f"{r['tokens_per_s']:,.0f} tokens/s{extra}{mem}")
    ratio = results[args.amp]["val_loss"] / results["float32"]["val_loss"]
    print(f"{args.amp} / float32 validation loss: {ratio:.4f}")


if __name__ == "__main__":
    main()
