"""Parameter server vs allreduce data parallelism, measured: the same MLP on the same
synthetic classification data, trained three ways on the same ranks.

    mpiexec -n 3 python examples/parameter_server.py [--steps 40] [--hidden 512] [--quick]

- allreduce DP: all W ranks compute on 1/W of the global batch; DataParallel averages
  the gradients with (bucketed, overlapped) allreduce
- sync PS:  rank 0 serves (parameters + optimizer), the W-1 workers compute on 1/(W-1)
  of the global batch, push gradients, pull parameters (point to point)
- async PS: the same workers, no barrier: the server applies each gradient on arrival
  (staleness τ = server version - the version it was computed on)

Printed: time per step, bytes per step sent/received by the busiest rank (the server
for PS: (W-1)·P each way; for allreduce a ring moves 2(W-1)/W·P each way per rank, the
model value: MPI's internal traffic is not counted by minilm), the loss on a held-out
set after the run, and the async staleness histogram. Time per update for async PS is
wall time / number of updates (each update uses 1/(W-1) of a global batch).
"""

import argparse
import time

import numpy as np

import minilm as ml
from minilm import nn, optim
from minilm.functional import cross_entropy
from minilm.parallel import DataParallel, install_abort_handler, world
from minilm.parallel.parameter_server import run_parameter_server, staleness_summary

D_IN, CLASSES = 64, 10


def make_data(n: int, seed: int) -> tuple:
    """Gaussian inputs, labels from a fixed random 2-layer teacher (the same everywhere)."""
    t = np.random.default_rng(0)
    w1, w2 = t.normal(size=(D_IN, 32)), t.normal(size=(32, CLASSES))
    x = np.random.default_rng(seed).normal(size=(n, D_IN)).astype(np.float32)
    return x, np.argmax(np.tanh(x @ w1) @ w2, axis=1).astype(np.int64)


def make_model(hidden: int) -> nn.Module:
    ml.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, CLASSES))


def loss_of(model, x, y):
    return cross_entropy(model(ml.tensor(x)), ml.tensor(y))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch", type=int, default=96, help="global batch")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--quick", action="store_true", help="10 steps, hidden 128")
    args = p.parse_args()
    if args.quick:
        args.steps, args.hidden = 10, 128
    install_abort_handler()
    comm = world()
    W, R = comm.size, comm.rank
    if W < 3:
        raise SystemExit("run with at least 3 ranks: mpiexec -n 3 python examples/parameter_server.py")
    X, Y = make_data(args.batch * args.steps, seed=1)
    Xv, Yv = make_data(2000, seed=2)
    measure(args, comm, X, Y, Xv, Yv, steps=3)  # warm-up: first-call costs, buffers, caches
    rows, nparams = measure(args, comm, X, Y, Xv, Yv, steps=args.steps)
    if R == 0:
        report(args, W, rows, nparams)


def measure(args, comm, X, Y, Xv, Yv, steps: int) -> tuple:
    W, R = comm.size, comm.rank

    def batch(step: int) -> tuple:
        s = slice(step * args.batch, (step + 1) * args.batch)
        return X[s], Y[s]

    rows = {}
    # ---- allreduce data parallelism --------------------------------------------------
    model = make_model(args.hidden)
    nparams = sum(p.numpy().size for p in model.parameters())
    pb = nparams * 4
    dp = DataParallel(model, comm, bucket_size_mb=1.0)
    opt = optim.SGD(model.parameters(), lr=args.lr)
    per = args.batch // W
    comm.barrier()
    t0 = time.perf_counter()
    for step in range(steps):
        x, y = batch(step)
        loss_of(model, x[R * per:(R + 1) * per], y[R * per:(R + 1) * per]).backward()
        dp.finish()
        opt.step()
        opt.zero_grad()
    comm.barrier()
    dt = time.perf_counter() - t0
    ring = 2 * (W - 1) / W * pb
    rows["allreduce DP"] = dict(step_ms=1e3 * dt / steps, sent=ring, recv=ring,
                                loss=loss_of(model, Xv, Yv).item(), stale="-")

    # ---- parameter server, sync and async ---------------------------------------------
    per = args.batch // (W - 1)
    for mode in ("sync", "async"):
        model = make_model(args.hidden)
        opt = optim.SGD(model.parameters(), lr=args.lr) if R == 0 else None
        wrng = np.random.default_rng(R)

        def grad_fn(step: int, model=model, wrng=wrng, mode=mode) -> float:
            x, y = batch(step)
            if mode == "sync":  # my fixed share of the global batch
                x, y = x[(R - 1) * per:R * per], y[(R - 1) * per:R * per]
            else:  # my own sample of it (workers drift apart in steps anyway)
                idx = wrng.choice(args.batch, per, replace=False)
                x, y = x[idx], y[idx]
            loss = loss_of(model, x, y)
            loss.backward()
            return loss.item()

        comm.barrier()
        st = run_parameter_server(model, opt, grad_fn, steps, comm=comm, mode=mode)
        if R == 0:
            updates = st["updates"]
            # per global-batch-equivalent: sync 1 update, async W-1 updates
            per_step = steps if mode == "sync" else updates / (W - 1)
            hist = st["staleness"]
            s = staleness_summary(hist)
            rows[f"{mode} PS"] = dict(
                step_ms=1e3 * st["time_s"] / per_step, sent=st["bytes_sent"] / per_step,
                recv=st["bytes_recv"] / per_step, loss=loss_of(model, Xv, Yv).item(),
                stale=f"mean {s['mean']:.2f} max {s['max']} stale {100 * s['stale_frac']:.0f}% "
                      f"hist {hist}")

    return rows, nparams


def report(args, W: int, rows: dict, nparams: int) -> None:
    pb = nparams * 4
    ring = 2 * (W - 1) / W * pb
    print(f"{W} ranks, MLP {D_IN}-{args.hidden}-{args.hidden}-{CLASSES}: P = {nparams} "
          f"float32 ({pb / 1e6:.2f} MB), global batch {args.batch}, {args.steps} steps "
          f"(async: {args.steps} pushes per worker), SGD lr {args.lr}")
    print(f"traffic model per step: PS server (W-1)P = {(W - 1) * pb / 1e6:.2f} MB each way, "
          f"worker P = {pb / 1e6:.2f} MB, ring allreduce 2(W-1)/W P = {ring / 1e6:.2f} MB")
    print(f"{'method':14s} {'ms/step':>8s} {'MB sent':>8s} {'MB recv':>8s} {'val loss':>9s}"
          "  staleness")
    for name, r in rows.items():
        print(f"{name:14s} {r['step_ms']:8.1f} {r['sent'] / 1e6:8.2f} {r['recv'] / 1e6:8.2f} "
              f"{r['loss']:9.4f}  {r['stale']}")
    print("(busiest rank: the server for PS, any rank for allreduce; ms/step for async PS is "
          "wall time per W-1 updates)")


if __name__ == "__main__":
    main()
