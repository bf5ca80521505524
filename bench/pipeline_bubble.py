"""Pipeline bubble, measured: a GPT split over the ranks of the job (one stage each),
forward + backward of one batch under GPipe and 1F1B for several micro-batch counts.

    .venv/bin/mpiexec -n 2 .venv/bin/python bench/pipeline_bubble.py [--micro-batches 2 4 8]
        [--batch 16] [--d-model 128] [--layers 4] [--context 64] [--vocab 256] [--steps 3]

For each run it prints the theoretical bubble (pp - 1) / (M + pp - 1), the measured one
(1 - summed busy time of the stages / (pp x the slowest stage's step time); busy = time
not spent blocked in a Recv or waiting for a send), the mean share of each stage's step
spent waiting in Recv, the step time (best of ``--steps`` after one warm-up) and each
stage's busy time (an unequal split, e.g. the head and loss on the last stage, shows up
as extra bubble beyond the formula's).
Each rank runs one thread (set before NumPy loads).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402

import minilm as ml  # noqa: E402
from minilm.parallel import world  # noqa: E402
from minilm.parallel.pipeline import bench_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--micro-batches", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--result", action="store_true",
                    help="also print the rows as one 'RESULT <json>' line (bench/parallel.py)")
    args = ap.parse_args()
    ml.use_backend(os.environ.get("MINILM_BACKEND", "numpy"))
    comm = world()
    config = dict(vocab_size=args.vocab, context_length=args.context, n_layers=args.layers,
                  n_heads=4, d_model=args.d_model, dropout=0.0)
    rows = bench_pipeline(comm, config=config, batch_size=args.batch,
                          micro_batches=args.micro_batches, steps=args.steps, dtype=args.dtype)
    if comm.rank != 0:
        return
    backend = getattr(ml.current_backend(), "name", os.environ.get("MINILM_BACKEND", "numpy"))
    print(f"pp={comm.size} stages (one rank each, 1 thread), GPT d_model={args.d_model} "
          f"layers={args.layers} T={args.context} vocab={args.vocab}, batch {args.batch}, "
          f"{args.dtype}, backend {backend}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; best of {args.steps} steps after 1 warm-up\n")
    print("| schedule | M | bubble (p-1)/(M+p-1) | measured bubble | recv wait | step ms "
          "| busy ms per stage |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['schedule']} | {r['micro_batches']} | {r['bubble_theory']:.3f} | "
              f"{r['bubble_measured']:.3f} | {r['recv_wait']:.3f} | "
              f"{r['step_time_s'] * 1e3:.1f} | "
              + " / ".join(f"{b * 1e3:.1f}" for b in r["stage_busy_s"]) + " |")
    if args.result:
        print("RESULT " + json.dumps(rows))

if __name__ == "__main__":
    main()
