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
from collections.abc import Sequence  # noqa: E402

import numpy as np  # noqa: E402

import minilm as ml  # noqa: E402
from minilm.backends import manual_seed  # noqa: E402
from minilm.nn.transformer import GPT, GPTConfig  # noqa: E402
from minilm.parallel import world  # noqa: E402
from minilm.parallel.comm import Communicator  # noqa: E402
from minilm.parallel.pipeline import PipelineStage, bubble_fraction, run_pipeline  # noqa: E402
from minilm.parallel.pipeline_schedule import SCHEDULES  # noqa: E402


def measured_bubble(stats: Sequence[dict]) -> float:
    """Idle share of a step from every stage's ``last_stats`` (started together):
    1 - (sum of busy time) / (n_stages * the slowest stage's time)."""
    span = max(st["time"] for st in stats)
    return 1.0 - sum(st["busy"] for st in stats) / (len(stats) * span) if span > 0 else 0.0


def bench_pipeline(comm: Communicator | None = None, *, config: dict | None = None,
                   batch_size: int = 16, micro_batches: Sequence[int] = (2, 4, 8),
                   schedules: Sequence[str] = SCHEDULES, steps: int = 3, warmup: int = 1,
                   dtype: str = "float32", seed: int = 0) -> list[dict]:
    """Time forward+backward of a GPT split over the stages of ``comm`` (default: the
    world) for each schedule and micro-batch count. Returns on every rank one row per
    run: theoretical bubble, measured bubble (idle share across stages, best of
    ``steps``), mean per-stage recv-wait share, step time, each stage's busy seconds
    (unequal busy times, e.g. the head and loss on the last stage, add to the bubble)."""
    comm = comm if comm is not None else world()
    cfg = dict(vocab_size=256, context_length=64, n_layers=4, n_heads=4, d_model=128,
               dropout=0.0)
    cfg.update(config or {})
    cfg["n_layers"] = max(cfg["n_layers"], comm.size)  # at least one block per stage
    manual_seed(seed)
    model = GPT(GPTConfig(**cfg)).to(dtype)
    stage = PipelineStage(model, comm)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg["vocab_size"], size=(batch_size, cfg["context_length"] + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    rows = []
    for kind in schedules:
        for M in micro_batches:
            best = None
            for it in range(warmup + steps):
                stage.zero_grad()
                comm.barrier()
                run_pipeline(stage, x, y, kind, M)
                stats = comm.allgather_json(stage.last_stats)
                if it >= warmup and (best is None or max(st["time"] for st in stats)
                                     < max(st["time"] for st in best)):
                    best = stats
            rows.append({
                "schedule": kind, "pp": comm.size, "micro_batches": M,
                "bubble_theory": bubble_fraction(comm.size, M),
                "bubble_measured": measured_bubble(best),
                "recv_wait": float(np.mean([st["wait_fraction"] for st in best])),
                "step_time_s": max(st["time"] for st in best),
                "stage_busy_s": [st["busy"] for st in best],
            })
    return rows


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
