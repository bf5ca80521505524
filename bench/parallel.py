"""Parallel-training benchmarks under mpiexec (issue: MPI parallel training).

    .venv/bin/python bench/parallel.py [--section dp|pipeline|all] [--steps 12]
        [--batch 8] [--d-model 128] [--layers 4] [--context 128] [--bucket-mb 1]
        [--repeats 3] [--fp16] [--json out.json]

Data parallel (``--section dp``): a GPT trained with AdamW in float32 on the NumPy
backend, the same per-rank batch on 1 and 2 ranks (weak scaling), every rank at 1 thread
(OMP/OpenBLAS/MKL/Numba threads = 1). Reported per configuration:

- tokens/s over all ranks (median step time, slowest rank), and the scaling efficiency
  ``tokens/s(2 ranks) / (2 x tokens/s(1 rank, no DataParallel))``;
- the share of step time a rank spends *blocked waiting* for the gradient allreduce in
  ``DataParallel.finish()``, with ``overlap=True`` (buckets start from the backward hooks)
  and ``overlap=False`` (all buckets reduced after backward), plus the share spent in the
  hooks themselves (copying gradients into buckets, starting the allreduce, and polling
  MPI so the started ones progress). The wait includes the time a rank waits for a
  slower one to arrive (load imbalance, another process taking the core);
- ZeRO-1 (``ZeroRedundancyOptimizer`` over AdamW, its own reduce-scatter + allgather):
  throughput and the AdamW state held per rank (half of the unsharded optimizer's).

Each configuration is one ``mpiexec`` job running this file with ``--worker dp``.

Pipeline bubble (``--section pipeline``): ``bench/pipeline_bubble.py`` under
``mpiexec -n 2``: GPipe and 1F1B with 2, 4, 8 micro-batches, the measured idle share of
the two stages next to the formula (p - 1) / (M + p - 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# ---------------------------------------------------------------------------- launching


def _mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    exe = str(here) if here.exists() else shutil.which("mpiexec")
    if exe is None:
        sys.exit("bench/parallel.py: mpiexec not found (pip install mpich mpi4py)")
    return exe


def run_job(n: int, worker: str, args: list[str], timeout: float = 600) -> dict:
    """Run this file as ``--worker <worker>`` on ``n`` ranks; rank 0's RESULT JSON."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINILM_BACKEND=os.environ.get(
        "MINILM_BACKEND", "numpy"), **{v: "1" for v in THREAD_VARS})
    cmd = [_mpiexec(), "-n", str(n), sys.executable, str(Path(__file__).resolve()),
           "--worker", worker, *args]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{(p.stdout + p.stderr)[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ---------------------------------------------------------------------------- data parallel


def dp_worker(args: argparse.Namespace) -> None:
    """One configuration, on every rank of an mpiexec job."""
    import numpy as np

    import minilm as ml
    from minilm import optim
    from minilm.nn import GPT, GPTConfig
    from minilm.parallel import DataParallel, ZeroRedundancyOptimizer, install_abort_handler, world

    install_abort_handler()
    comm = world()
    ml.use_backend(os.environ.get("MINILM_BACKEND", "numpy"))
    ml.manual_seed(0)
    cfg = GPTConfig(vocab_size=args.vocab, context_length=args.context, n_layers=args.layers,
                    n_heads=args.heads, d_model=args.d_model)
    model = GPT(cfg)
    dp = None
    if args.mode not in ("plain", "zero"):
        dp = DataParallel(model, comm, bucket_size_mb=args.bucket_mb,
                          overlap=args.mode == "overlap",
                          compress="fp16" if args.compress else None)
    net = dp if dp is not None else model
    if args.mode == "zero":  # ZeRO-1 reduces (reduce-scatter) the gradients itself
        opt = ZeroRedundancyOptimizer(model.parameters(), optim.AdamW, comm, lr=1e-3)
    else:
        opt = optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(1 + comm.rank)
    times = []
    for step in range(args.warmup + args.steps):
        ids = rng.integers(0, args.vocab, size=(args.batch, args.context + 1))
        x, y = ml.tensor(ids[:, :-1]), ml.tensor(ids[:, 1:])
        if step == args.warmup:
            if dp is not None:
                dp.reset_stats()
            elif args.mode == "zero":
                opt.reset_stats()
        comm.barrier()
        t0 = time.perf_counter()
        _, loss = net(x, y)
        loss.backward()
        if dp is not None:
            dp.finish()
        opt.step()
        opt.zero_grad()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    t = np.array(times)
    comm.allreduce(t, op="max")  # a step lasts as long as its slowest rank
    comm_s = dp.stats["wait_s"] if dp else opt.stats["comm_s"] if args.mode == "zero" else 0.0
    wait = np.array([comm_s, dp.stats["hook_s"] if dp else 0.0, float(np.sum(times))])
    comm.allreduce(wait)
    wait /= comm.size  # mean over ranks
    if args.mode == "zero":
        state = opt.state_bytes()
    else:
        state = sum(v.nbytes for st in opt.state.values() for v in st.values()
                    if hasattr(v, "nbytes"))
    if comm.rank == 0:
        step_s = statistics.median(t.tolist())
        print("RESULT " + json.dumps({
            "ranks": comm.size, "mode": args.mode, "compress": bool(args.compress),
            "params": model.num_parameters(), "step_s": step_s,
            "tokens_per_s": comm.size * args.batch * args.context / step_s,
            "wait_share": wait[0] / wait[2], "hook_share": wait[1] / wait[2],
            "buckets": len(dp.buckets) if dp else 0,
            "grad_mb": sum(p.numel() for p in model.parameters()) * 4 / 2**20,
            "state_mb_rank0": state / 2**20,
        }), flush=True)


def data_parallel_section(args: argparse.Namespace) -> dict:
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch",
              str(args.batch), "--d-model", str(args.d_model), "--layers", str(args.layers),
              "--heads", str(args.heads), "--context", str(args.context), "--vocab",
              str(args.vocab), "--bucket-mb", str(args.bucket_mb)]
    runs = [
        ("1 rank, no DataParallel", 1, ["--mode", "plain"]),
        ("2 ranks, overlap", 2, ["--mode", "overlap"]),
        ("2 ranks, no overlap", 2, ["--mode", "no_overlap"]),
        ("2 ranks, ZeRO-1 (no DataParallel)", 2, ["--mode", "zero"]),
    ]
    if args.fp16:
        runs.append(("2 ranks, overlap, fp16 compression", 2, ["--mode", "overlap",
                                                               "--compress"]))
    results: dict = {}
    for _rep in range(args.repeats):  # interleaved, so that load changes hit every config
        for name, n, extra in runs:
            r = run_job(n, "dp", common + extra)
            r["all_tokens_per_s"] = results.get(name, {}).get("all_tokens_per_s", []) \
                + [round(r["tokens_per_s"])]
            if name not in results or r["tokens_per_s"] > results[name]["tokens_per_s"]:
                results[name] = r
            else:
                results[name]["all_tokens_per_s"] = r["all_tokens_per_s"]
    base = results["1 rank, no DataParallel"]["tokens_per_s"]
    first = next(iter(results.values()))
    print(f"\n## Data parallel: GPT {args.layers} layers, d_model {args.d_model}, context "
          f"{args.context}, vocab {args.vocab} ({first['params']:,} parameters, "
          f"{first['grad_mb']:.1f} MiB of float32 gradients), batch {args.batch} per rank, "
          f"AdamW, 1 thread per rank, bucket {args.bucket_mb} MiB, median of {args.steps} "
          f"steps after {args.warmup} warm-up; best of {args.repeats} interleaved jobs "
          "(every job's tokens/s in the last column)\n")
    print("| configuration | buckets | step ms | tokens/s | scaling efficiency | "
          "comm wait % of step | hooks % of step | AdamW state MiB / rank | all jobs tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        eff = r["tokens_per_s"] / (r["ranks"] * base)
        r["efficiency"] = eff
        print(f"| {name} | {r['buckets'] or '-'} | {r['step_s'] * 1e3:.0f} | "
              f"{r['tokens_per_s']:.0f} | {eff:.2f} | {100 * r['wait_share']:.1f} | "
              f"{100 * r['hook_share']:.1f} | {r['state_mb_rank0']:.2f} | "
              f"{', '.join(map(str, r['all_tokens_per_s']))} |")
    return results


# ---------------------------------------------------------------------------- pipeline
# GPipe and 1F1B on 2 stages: bench/pipeline_bubble.py (its bench_pipeline) under
# mpiexec -n 2, measured bubble vs (p - 1) / (M + p - 1).


def pipeline_bubble_section(args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINILM_BACKEND=os.environ.get(
        "MINILM_BACKEND", "numpy"), **{v: "1" for v in THREAD_VARS})
    cmd = [_mpiexec(), "-n", "2", sys.executable, str(ROOT / "bench" / "pipeline_bubble.py"),
           "--result", "--d-model", str(args.d_model), "--layers", str(args.layers),
           "--context", str(args.context), "--vocab", str(args.vocab),
           "--steps", str(max(args.repeats, 3))]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{(p.stdout + p.stderr)[-4000:]}")
    print("\n## Pipeline bubble\n")
    print("\n".join(x for x in p.stdout.splitlines() if not x.startswith("RESULT ")))
    return {"rows": json.loads(lines[-1][len("RESULT "):])}


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--section", choices=["dp", "pipeline", "all"], default="all")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="sequences per rank and step")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--bucket-mb", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3, help="jobs per configuration (best kept)")
    ap.add_argument("--fp16", action="store_true", help="also time fp16 gradient compression")
    ap.add_argument("--json", help="also write the results to this file")
    # internal: the per-rank part of one configuration
    ap.add_argument("--worker", choices=["dp"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["plain", "overlap", "no_overlap", "zero"], default="overlap",
                    help=argparse.SUPPRESS)
    ap.add_argument("--compress", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "dp":
        dp_worker(args)
        return
    import numpy as np

    print(f"# bench/parallel.py — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}, "
          f"backend {os.environ.get('MINILM_BACKEND', 'numpy')}")
    out = {}
    if args.section in ("dp", "all"):
        out["data_parallel"] = data_parallel_section(args)
    if args.section in ("pipeline", "all"):
        out["pipeline"] = pipeline_bubble_section(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
