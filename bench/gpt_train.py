"""Training-step throughput of a GPT in minilm (any backend, the GPU included) and,
optionally, PyTorch (CPU, or CUDA eager and ``torch.compile``).

    .venv/bin/python bench/gpt_train.py                            # reference config
    .venv/bin/python bench/gpt_train.py --backend numpy --compare-torch
    .venv/bin/python bench/gpt_train.py --large --compare-torch     # the larger config
    python bench/gpt_train.py --backend cupy --config gpt2-small --amp bf16 \
        --compare-torch --torch-compile                             # GPU: see "On the GPU"
    .venv/bin/python bench/gpt_train.py --backend numpy --profile   # where the time goes
    .venv/bin/python bench/gpt_train.py --backend numpy --compare-torch --baseline /tmp/old
                      # + minilm from another source tree, e.g. `git archive OLD | tar -x -C /tmp/old`

One step = forward (logits and the mean cross-entropy of a batch of B x T token ids),
backward, ``AdamW.step()`` and ``zero_grad()``. The model is minilm's ``GPT`` (pre-LN
blocks, exact GELU, learned positions, tied LM head, dropout 0) trained by ``AdamW``
(lr 1e-3, betas (0.9, 0.95), weight decay 0.1 on the matrices, 0 on biases and gains:
``param_groups_for_weight_decay``). The reference config is the issue's: 4 layers,
4 heads, d_model 256, context 128, batch 16, vocab 96, float32, 2 threads.

What is printed, per framework:

- tokens/s = B * T / the median step time over ``--steps`` timed steps (after
  ``--warmup`` untimed ones);
- ms per step: the median of the whole step and of its forward, backward and
  optimizer (step + zero_grad) parts; the medians of the parts need not add up to the
  median of the whole;
- first step: the very first step, alone; with the Numba backend it includes loading
  (or, on a fresh machine, compiling) the kernels;
- achieved GFLOP/s = FLOPs per step / median step time, with the FLOPs counted
  analytically from the shapes (only the matrix products; embedding lookups, norms,
  softmax, GELU, the loss and the optimizer are O(tokens * d) and left out)::

      N_lin    = L (4 d^2 + 2 d d_ff) + V d     every linear weight: qkv 3d^2, out-proj d^2,
                                                MLP 2 d d_ff, and the (tied) LM head V d
      forward  = 2 * B*T * N_lin                one multiply-add per weight per token
               + L * 2 * (2 B H T T d_head)     attention Q K^T and P V (H d_head = d),
                                                counted over the FULL T x T score matrix,
                                                not the causal half: a dense implementation
                                                computes all of it, then masks
      backward = 2 * forward                    a GEMM's two gradients cost two GEMMs
      step     = 3 * forward

  For the reference config: 20.6 MFLOP per token (6 N_lin + 12 L T d), 42.2 GFLOP per step;
- "of sgemm peak" = achieved GFLOP/s / this machine's BLAS sgemm rate: the GFLOP/s of a
  2048 x 2048 float32 ``np.matmul`` (dgemm with ``--dtype float64``) with the same
  thread count, sampled a few times between the timed blocks of the run and reported as
  the median (and range) of the samples;
- peak RSS: ``ru_maxrss`` of the process that ran that framework, and its RSS before the
  model was built (after the imports), so that the growth (parameters, optimizer state,
  activations, allocator caches) is visible too.

How frameworks are compared. Peak RSS is per process, so two frameworks in one process
cannot be told apart: each framework therefore runs in its OWN worker process (this
script, re-run with a hidden ``--_worker`` flag). The parent drives the workers
alternately, ``--block`` steps at a time (minilm 5 steps, torch 5 steps, minilm 5 steps,
...), so that a burst of load from other users of the machine falls on both alike, and
reports ratios of the medians (``--baseline TREE`` adds a third worker that imports
minilm from TREE: before/after comparisons in one run). The PyTorch model is built in the same script from the
same config (same shapes, pre-LN, exact GELU, tied head, AdamW with the same two groups,
float32, ``torch.set_num_threads(--threads)``), starts from minilm's initial weights
(written to a temporary .npz) and sees the same batches, so the losses of the first step
agree to float32 rounding: the printed ``loss at step 1`` shows it. Its attention is
``F.scaled_dot_product_attention(..., is_causal=True)``, what a PyTorch user would write.
(``--torch-compile`` adds a third worker running the same twin through ``torch.compile``.)

Threads: ``--threads`` sets OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS before NumPy is imported
(in the parent and, inherited, in the workers), calls ``minilm.set_num_threads`` when it
exists, and ``torch.set_num_threads``.

``--profile`` runs minilm alone, in this process, and prints the time of one step by op
category (exclusive wall time of every ``Function.forward/backward`` and backend kernel;
what is left of forward + backward is the autograd engine's own Python, and the
optimizer is timed whole) and the top ops: medians over the ``--steps`` profiled steps.

Timings on a shared machine are noisy: use the medians, compare within one run, and
re-measure final numbers on a quiet machine.

On the GPU (``--backend cupy``; docs/gpu.md). ``--config gpt2-small`` is GPT-2 small's
shapes: 12 layers, 12 heads, d_model 768, context 1024, batch 8, vocab 50,304 (124M
parameters with the tied head). minilm runs on the CuPy backend (``use_backend("cupy")``,
batches moved with ``.to("cuda")``); the twin runs on ``cuda`` with the same initial
weights and batches; ``--amp fp16|bf16`` runs minilm under ``minilm.amp.autocast``
(+ ``GradScaler`` for fp16, as ``minilm train --amp`` does) and the twin under
``torch.autocast`` (+ ``torch.amp.GradScaler`` for fp16). Each part of a step is timed
between ``cupy.cuda.Device().synchronize()`` calls (``torch.cuda.synchronize()`` in the
twin), so the times are the device's, not the launch queue's. Extra rows:

- peak GPU MiB: minilm's ``minilm.cuda.max_memory_allocated()`` (CuPy's default memory
  pool, tracked from before the model is built; without ``minilm.cuda``, the largest
  ``pool.used_bytes()`` seen after each part of a step) and PyTorch's
  ``torch.cuda.max_memory_allocated()``: bytes held by live arrays at the peak, weights,
  gradients, optimizer state and activations together; "GPU MiB reserved" is what each
  allocator holds from the driver (CuPy's ``pool.total_bytes()`` at the end,
  ``torch.cuda.max_memory_reserved()``);
- the GEMM peak is a cuBLAS product through CuPy in the parent process (8192^3, float32;
  float16 for the autocast runs) instead of NumPy's sgemm.

Neither side uses TF32 for float32 products (CuPy's and PyTorch's defaults); PyTorch's
SDPA picks its fused attention kernels on the GPU, as a PyTorch user gets them. Without
CuPy or a device, ``--backend cupy`` exits at once with one line saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the _gpt_* helpers
from _gpt_report import SgemmProbe, machine_line, print_report, summarize  # noqa: E402

CONFIGS = {
    "reference": dict(layers=4, heads=4, d_model=256, context=128, batch=16, vocab=96),
    "large": dict(layers=6, heads=6, d_model=384, context=256, batch=8, vocab=96),
    "gpt2-small": dict(layers=12, heads=12, d_model=768, context=1024, batch=8, vocab=50304),
}
REFERENCE, LARGE = CONFIGS["reference"], CONFIGS["large"]
SEED = 1234
N_BATCHES = 4  # distinct batches, cycled through the steps


# ---------------------------------------------------------------------------- arguments


def _dflt(key: str) -> str:
    return "default: the config's (" + ", ".join(f"{n} {c[key]:,}" for n, c in CONFIGS.items()) \
        + ")"


def parse_args(argv: list | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training-step throughput of a GPT (minilm on the CPU or the GPU, "
                    "optionally vs PyTorch).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", default=None,
                   help="minilm backend: numpy | numba | cupy (the GPU; default: minilm's "
                        "current default)")
    p.add_argument("--config", choices=sorted(CONFIGS), default=None,
                   help="shapes: reference (4 layers, d 256, context 128, batch 16), large "
                        "(6 layers, d 384, context 256, batch 8), gpt2-small (12 layers, 12 "
                        "heads, d 768, context 1024, batch 8, vocab 50,304); default reference")
    p.add_argument("--large", action="store_true", help="the same as --config large")
    p.add_argument("--amp", choices=["off", "fp16", "bf16"], default="off",
                   help="mixed precision: minilm.amp.autocast (+ GradScaler for fp16) and, in "
                        "the PyTorch twin, torch.autocast (+ torch.amp.GradScaler)")
    p.add_argument("--layers", type=int, default=None, help=_dflt("layers"))
    p.add_argument("--heads", type=int, default=None, help=_dflt("heads"))
    p.add_argument("--d-model", type=int, default=None, help=_dflt("d_model"))
    p.add_argument("--d-ff", type=int, default=None, help="default 4 * d_model")
    p.add_argument("--context", type=int, default=None, help=_dflt("context"))
    p.add_argument("--batch", type=int, default=None, help=_dflt("batch"))
    p.add_argument("--vocab", type=int, default=None, help=_dflt("vocab"))
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--steps", type=int, default=20, help="timed steps per framework")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    p.add_argument("--block", type=int, default=5,
                   help="steps per turn when frameworks alternate")
    p.add_argument("--threads", type=int, default=2, help="BLAS / Numba / torch threads")
    p.add_argument("--compare-torch", action="store_true",
                   help="also time the identical PyTorch model (if torch imports; on CUDA "
                        "with --backend cupy)")
    p.add_argument("--torch-compile", action="store_true",
                   help="with --compare-torch: also time the twin through torch.compile")
    p.add_argument("--baseline", metavar="TREE",
                   help="also time minilm from another source tree (e.g. a git worktree of "
                        "an older commit), in its own worker: before/after in one run")
    p.add_argument("--profile", action="store_true",
                   help="minilm only, in process: time per op category and top ops")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--tune-malloc", action="store_true",
                   help="minilm worker calls minilm.backends.tune_allocator() (as `minilm "
                        "train` does); PyTorch's worker is left as is")
    p.add_argument("--batch-threads", type=int, nargs="+", default=[0], metavar="N",
                   help="minilm: threads that each take a slice of the batch "
                        "(minilm.train.batch_threads; 0: one per thread, as `minilm train`; "
                        "1: every op split over the threads instead); several values: one "
                        "minilm worker each, side by side")
    p.add_argument("--_worker", choices=["minilm", "torch", "torch-compile"],
                   help=argparse.SUPPRESS)
    p.add_argument("--_batch-threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--_weights", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.large and args.config not in (None, "large"):
        p.error(f"--large and --config {args.config} disagree")
    args.config = "large" if args.large else (args.config or "reference")
    base = CONFIGS[args.config]
    changed = [k for k, v in base.items() if getattr(args, k) not in (None, v)]
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if changed:  # the report says so
        args.config += f" with {', '.join(k.replace('_', '-') for k in changed)} changed"
    if args.d_ff is None:
        args.d_ff = 4 * args.d_model
    if args.d_model % args.heads:
        p.error(f"--d-model {args.d_model} is not divisible by --heads {args.heads}")
    if args.profile and args.backend == "cupy":
        p.error("--profile times host-side calls; on the GPU those are kernel launches "
                "(use Nsight Systems for a device timeline)")
    args.warmup = max(args.warmup, 1)
    return args


def set_thread_env(n: int) -> None:
    """Thread counts of every pool, set before NumPy / Numba / torch are imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)


# ---------------------------------------------------------------------------- memory, batches


def peak_rss_mib() -> float:
    """ru_maxrss of this process (KiB on Linux, bytes on macOS) in MiB."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1 << 20) if sys.platform == "darwin" else r / 1024


def current_rss_mib() -> float:
    """Resident set size now (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except OSError:
        return peak_rss_mib()


def make_batches(a: argparse.Namespace) -> list:
    import numpy as np

    rng = np.random.default_rng(SEED)
    shape = (a.batch, a.context)
    return [(rng.integers(0, a.vocab, shape), rng.integers(0, a.vocab, shape))
            for _ in range(N_BATCHES)]


# ---------------------------------------------------------------------------- minilm


def gpu_problem() -> str | None:
    """Why ``--backend cupy`` cannot run here (one line), or None."""
    try:
        from minilm.backends.cupy_backend import import_cupy

        import_cupy()
    except Exception as exc:  # ImportError (no CuPy, no device), a broken driver
        return str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
    return None


class MinilmRunner:
    """A minilm GPT + AdamW; ``step(i)`` returns (loss, forward s, backward s, optim s)."""

    name = "minilm"

    def __init__(self, a: argparse.Namespace, weights_out: str | None = None) -> None:
        import numpy as np

        import minilm as ml
        from minilm import nn, optim
        from minilm.amp import GradScaler, autocast

        if hasattr(ml, "set_num_threads"):
            ml.set_num_threads(a.threads)
        backend = ml.use_backend(a.backend) if a.backend else ml.current_backend()
        self.gpu = backend.xp is not np
        self.label = f"minilm[{backend.name}]" + ("" if a.amp == "off" else f", {a.amp}")
        self.sync = (lambda: None)
        self.pool = None  # CuPy's pool, when minilm.cuda is not there to track the peak
        self.pool_peak = 0
        if self.gpu:
            self.sync = backend.xp.cuda.Device().synchronize
            try:
                import minilm.cuda as mc

                mc.reset_peak_memory_stats()  # tracking starts before the model exists
            except (ImportError, AttributeError, RuntimeError):
                self.pool = backend.xp.get_default_memory_pool()
        ml.manual_seed(SEED)
        cfg = nn.GPTConfig(vocab_size=a.vocab, context_length=a.context, n_layers=a.layers,
                           n_heads=a.heads, d_model=a.d_model, d_ff=a.d_ff, dropout=0.0,
                           tie_weights=True)
        self.model = nn.GPT(cfg).to(np.dtype(a.dtype))
        if self.gpu:
            self.model.to("cuda")  # a no-op for what use_backend("cupy") built there
        self.model.train()
        if weights_out:  # the initial weights, for the PyTorch twin
            state = {k: t.numpy() for k, t in self.model.state_dict().items()}
            np.savez(weights_out, **state)
        groups = optim.param_groups_for_weight_decay(self.model, weight_decay=0.1)
        self.opt = optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
        self.autocast = (lambda: autocast(a.amp)) if a.amp != "off" else contextlib.nullcontext
        self.scaler = GradScaler() if a.amp == "fp16" else None
        move = (lambda t: t.to("cuda")) if self.gpu else (lambda t: t)
        self.batches = [(move(ml.Tensor(x)), move(ml.Tensor(y))) for x, y in make_batches(a)]
        self.params = self.model.num_parameters()
        self.threaded = None  # minilm.train.batch_threads.threaded_backward, if used
        n = a._batch_threads or (ml.get_num_threads() if hasattr(ml, "get_num_threads") else 1)
        if n > 1 and backend.xp is np and a.amp == "off":
            from minilm.train.batch_threads import threaded_backward

            self.threaded, self.n_threads = threaded_backward, min(n, a.batch)
            self.label = f"minilm[{backend.name}, {self.n_threads} batch threads]"

    def _mark(self) -> float:
        """Wait for the device (and sample the pool without minilm.cuda); the time."""
        self.sync()
        if self.pool is not None:
            self.pool_peak = max(self.pool_peak, self.pool.used_bytes())
        return time.perf_counter()

    def step(self, i: int) -> tuple:
        ids, targets = self.batches[i % len(self.batches)]
        if self.threaded is not None:  # forward + backward in one (reported as forward)
            t0 = time.perf_counter()
            loss = self.threaded(lambda x, y: self.model(x, y)[1], [(ids, targets)],
                                 self.n_threads)
            t2 = time.perf_counter()
            self.opt.step()
            self.opt.zero_grad()
            t3 = time.perf_counter()
            return loss, t2 - t0, 0.0, t3 - t2
        t0 = self._mark()
        with self.autocast():
            _, loss = self.model(ids, targets)
        t1 = self._mark()
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        t2 = self._mark()
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad()
        t3 = self._mark()
        return float(loss.item()), t1 - t0, t2 - t1, t3 - t2

    def gpu_memory(self) -> dict:
        if not self.gpu:
            return {}
        import cupy

        reserved = cupy.get_default_memory_pool().total_bytes() / 2**20
        if self.pool is not None:
            return {"peak_gpu_mib": self.pool_peak / 2**20, "reserved_gpu_mib": reserved,
                    "gpu_mem_source": "CuPy pool.used_bytes(), sampled after each part"}
        import minilm.cuda as mc

        return {"peak_gpu_mib": mc.max_memory_allocated() / 2**20, "reserved_gpu_mib": reserved,
                "gpu_mem_source": "minilm.cuda.max_memory_allocated"}


# ---------------------------------------------------------------------------- worker process


def worker(a: argparse.Namespace) -> None:
    """Line protocol on stdin/stdout: the worker builds its model, answers ``ready``,
    then ``run K`` (K timed steps) until ``quit`` (its peak RSS and GPU memory). One
    JSON line each."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything else printed must not break the protocol

    def send(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    if a._worker == "minilm":
        import minilm

        if a.tune_malloc:
            minilm.backends.tune_allocator()
    else:
        import torch  # noqa: F401
    rss_start = current_rss_mib()  # after the imports, before the model
    t0 = time.perf_counter()
    if a._worker == "minilm":
        runner = MinilmRunner(a, weights_out=a._weights)
    else:
        from _gpt_twin import TorchRunner

        runner = TorchRunner(a, make_batches(a), weights_in=a._weights,
                             compiled=a._worker == "torch-compile")
    build_s = time.perf_counter() - t0
    first = runner.step(0)
    for i in range(1, a.warmup):
        runner.step(i)
    info = {"label": runner.label, "kind": runner.name, "params": runner.params,
            "build_s": build_s, "first_step_s": sum(first[1:]), "loss_step1": first[0],
            "rss_start_mib": rss_start}
    if a.backend == "cupy":
        import cupy

        info["gpu_name"] = cupy.cuda.runtime.getDeviceProperties(
            cupy.cuda.Device().id)["name"].decode()
    send(info)
    i = a.warmup
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        times = []
        for _ in range(int(cmd[1])):
            loss, *parts = runner.step(i)
            times.append(parts)
            i += 1
        send({"times": times, "loss": loss})
    send({"peak_rss_mib": peak_rss_mib(), "rss_end_mib": current_rss_mib(),
          **runner.gpu_memory()})


class Worker:
    """A worker process of one framework; ``source`` runs minilm from another source
    tree (put first on its PYTHONPATH)."""

    def __init__(self, kind: str, a: argparse.Namespace, weights: str,
                 source: str | None = None, batch_threads: int = 1) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), *a.worker_argv,
                "--_worker", kind, "--_weights", weights, "--_batch-threads", str(batch_threads)]
        env = None
        if source:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (source, env.get("PYTHONPATH")) if p)
        self.kind = kind
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, env=env)
        self.info = self._read()
        if source:
            self.info["label"] += f" @{Path(source).name}"
        self.times: list = []

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"the {self.kind} worker exited (status {self.proc.returncode}); "
                               "see its error above")
        return json.loads(line)

    def run(self, k: int) -> None:
        self.proc.stdin.write(f"run {k}\n")
        self.proc.stdin.flush()
        reply = self._read()
        self.times.extend(reply["times"])
        self.info["loss_last"] = reply["loss"]

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.info.update(self._read())
        self.proc.wait()


# ---------------------------------------------------------------------------- compare


def compare(a: argparse.Namespace) -> None:
    gpu = a.backend == "cupy"
    if gpu:
        why = gpu_problem()
        if why is not None:
            sys.exit(f"bench/gpt_train.py --backend cupy: cannot run here: {why}")
    kinds = ["minilm"]
    extra = ""
    if a.compare_torch:
        try:
            import torch

            if gpu and not torch.cuda.is_available():
                print("(PyTorch sees no CUDA device here: minilm only)")
            else:
                kinds += ["torch"] + (["torch-compile"] if a.torch_compile else [])
                extra = f"; torch {torch.__version__}"
        except ImportError:
            print("(PyTorch does not import here: minilm only)")
    elif a.torch_compile:
        print("(--torch-compile needs --compare-torch: minilm only)")
    probe = SgemmProbe(a.dtype, device=gpu, amp=a.amp)
    probe.sample()
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "init.npz")
        # the first writes the initial weights; the others (same seed, same init) write
        # their own copy, unused
        workers = [Worker("minilm", a, weights if k == 0 else os.path.join(tmp, f"m{k}.npz"),
                          batch_threads=n) for k, n in enumerate(a.batch_threads)]
        if a.baseline:
            workers.append(Worker("minilm", a, os.path.join(tmp, "base.npz"), a.baseline,
                                  batch_threads=a.batch_threads[0]))
        workers += [Worker(kind, a, weights) for kind in kinds[1:]]
        done = 0
        while done < a.steps:
            k = min(a.block, a.steps - done)
            for w in workers:
                w.run(k)
            probe.sample(1)
            done += k
        for w in workers:
            w.close()
    probe.sample()
    probe.close()
    rows = [summarize(w.info, w.times, a, probe.gflops) for w in workers]
    print_report(a, rows, probe, extra)
    if a.json:
        Path(a.json).write_text(json.dumps({"config": {k: getattr(a, k) for k in (
            "config", "layers", "heads", "d_model", "d_ff", "context", "batch", "vocab",
            "dtype", "amp", "backend", "threads", "steps", "warmup")},
            f"{probe.name}_gflops": probe.samples, "results": rows}, indent=2))


# ---------------------------------------------------------------------------- profile


def profile(a: argparse.Namespace) -> None:
    """Per step: the exclusive time of every timed name, grouped by category; the
    medians over the profiled steps are printed (a burst of load from another process
    spoils a step or two, not the medians)."""
    from _gpt_profile import OpProfiler, category_of

    import minilm as ml

    runner = MinilmRunner(a)
    for i in range(a.warmup):
        runner.step(i)
    prof = OpProfiler()
    prof.install(ml.current_backend())
    per_step: list = []  # {name or category: ms} for each step
    for i in range(a.steps):
        prof.excl.clear()
        prof.active = True
        _, f, b, o = runner.step(a.warmup + i)
        prof.active = False
        # the optimizer is one row of its own, measured whole: leave its kernels out
        timed = {k: v * 1e3 for k, v in prof.excl.items() if not k.endswith("_step")}
        row: dict = defaultdict(float)
        for name, ms in timed.items():
            row[name] = ms
            row["cat:" + category_of(name)] += ms
        row["cat:autograd engine + module Python"] = (f + b) * 1e3 - sum(timed.values())
        row["cat:optimizer (AdamW step + zero_grad)"] = o * 1e3
        row["step"] = (f + b + o) * 1e3
        per_step.append(row)
    prof.uninstall()
    n = a.steps
    med = {k: statistics.median(r.get(k, 0.0) for r in per_step)
           for k in set().union(*per_step)}
    step_ms = med.pop("step")
    print(f"machine: {machine_line()}")
    print(f"{runner.label}, {a.layers} layers, {a.heads} heads, d_model {a.d_model}, context "
          f"{a.context}, batch {a.batch}, vocab {a.vocab}, {a.dtype}, {a.threads} threads")
    print(f"median over {n} profiled steps: {step_ms:.1f} ms/step "
          f"({a.batch * a.context / step_ms * 1e3:,.0f} tokens/s with the profiler on)\n")
    print(f"{'category':40s} {'ms/step':>9s} {'share':>7s}")
    cats = {k[4:]: v for k, v in med.items() if k.startswith("cat:")}
    for cat, ms in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f"{cat:40s} {ms:9.1f} {ms / step_ms:7.1%}")
    print(f"{'(sum of the category medians)':40s} {sum(cats.values()):9.1f}")
    ops = {k: v for k, v in med.items() if not k.startswith("cat:")}
    print(f"\n{'top ops (exclusive time)':40s} {'ms/step':>9s} {'calls':>7s}  category")
    for name, ms in sorted(ops.items(), key=lambda kv: -kv[1])[:20]:
        print(f"{name:40s} {ms:9.2f} {prof.calls[name] // n:7d}  {category_of(name)}")


# ---------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    set_thread_env(args.threads)  # before anything imports NumPy
    if args._worker:
        worker(args)
        return
    # what a worker needs to rebuild the same benchmark (everything but the parent's flags)
    args.worker_argv = [
        "--layers", str(args.layers), "--heads", str(args.heads), "--d-model", str(args.d_model),
        "--d-ff", str(args.d_ff), "--context", str(args.context), "--batch", str(args.batch),
        "--vocab", str(args.vocab), "--dtype", args.dtype, "--warmup", str(args.warmup),
        "--threads", str(args.threads), "--amp", args.amp] \
        + (["--backend", args.backend] if args.backend else []) \
        + (["--tune-malloc"] if args.tune_malloc else [])
    if args.profile:
        profile(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
