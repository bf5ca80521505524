"""Training-step throughput of a GPT in minilm (any CPU backend) and, optionally, PyTorch.

    .venv/bin/python bench/gpt_train.py                            # reference config
    .venv/bin/python bench/gpt_train.py --backend numpy --compare-torch
    .venv/bin/python bench/gpt_train.py --large --compare-torch     # the larger config
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

Threads: ``--threads`` sets OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS before NumPy is imported
(in the parent and, inherited, in the workers), calls ``minilm.set_num_threads`` when it
exists, and ``torch.set_num_threads``.

``--profile`` runs minilm alone, in this process, and prints the time of one step by op
category (exclusive wall time of every ``Function.forward/backward`` and backend kernel;
what is left of forward + backward is the autograd engine's own Python, and the
optimizer is timed whole) and the top ops: medians over the ``--steps`` profiled steps.

Timings on a shared machine are noisy: use the medians, compare within one run, and
re-measure final numbers on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REFERENCE = dict(layers=4, heads=4, d_model=256, context=128, batch=16, vocab=96)
LARGE = dict(layers=6, heads=6, d_model=384, context=256, batch=8, vocab=96)
SEED = 1234
N_BATCHES = 4  # distinct batches, cycled through the steps


# ---------------------------------------------------------------------------- arguments


def parse_args(argv: list | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training-step throughput of a GPT (minilm, optionally vs PyTorch).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", default=None,
                   help="minilm CPU backend: numpy | numba (default: minilm's current default)")
    p.add_argument("--large", action="store_true",
                   help="the larger config: 6 layers, 6 heads, d 384, context 256, batch 8")
    p.add_argument("--layers", type=int, default=None, help=f"default {REFERENCE['layers']}")
    p.add_argument("--heads", type=int, default=None, help=f"default {REFERENCE['heads']}")
    p.add_argument("--d-model", type=int, default=None, help=f"default {REFERENCE['d_model']}")
    p.add_argument("--d-ff", type=int, default=None, help="default 4 * d_model")
    p.add_argument("--context", type=int, default=None, help=f"default {REFERENCE['context']}")
    p.add_argument("--batch", type=int, default=None, help=f"default {REFERENCE['batch']}")
    p.add_argument("--vocab", type=int, default=None, help=f"default {REFERENCE['vocab']}")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--steps", type=int, default=20, help="timed steps per framework")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    p.add_argument("--block", type=int, default=5,
                   help="steps per turn when frameworks alternate")
    p.add_argument("--threads", type=int, default=2, help="BLAS / Numba / torch threads")
    p.add_argument("--compare-torch", action="store_true",
                   help="also time the identical PyTorch model (if torch imports)")
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
    p.add_argument("--_worker", choices=["minilm", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--_batch-threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--_weights", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    base = LARGE if args.large else REFERENCE
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.d_ff is None:
        args.d_ff = 4 * args.d_model
    if args.d_model % args.heads:
        p.error(f"--d-model {args.d_model} is not divisible by --heads {args.heads}")
    args.warmup = max(args.warmup, 1)
    return args


def set_thread_env(n: int) -> None:
    """Thread counts of every pool, set before NumPy / Numba / torch are imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)


# ---------------------------------------------------------------------------- FLOPs, memory


def linear_weights(a: argparse.Namespace) -> int:
    """N_lin: the entries of every weight matrix a token is multiplied by."""
    d, f = a.d_model, a.d_ff
    return a.layers * (4 * d * d + 2 * d * f) + a.vocab * d


def flops_per_step(a: argparse.Namespace) -> float:
    """3 x (2 B T N_lin + L * 4 B T^2 d): see the module docstring."""
    tokens = a.batch * a.context
    forward = 2 * tokens * linear_weights(a) + a.layers * 4 * a.batch * a.context ** 2 * a.d_model
    return 3.0 * forward


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


class MinilmRunner:
    """A minilm GPT + AdamW; ``step(i)`` returns (loss, forward s, backward s, optim s)."""

    name = "minilm"

    def __init__(self, a: argparse.Namespace, weights_out: str | None = None) -> None:
        import numpy as np

        import minilm as ml
        from minilm import nn, optim

        if hasattr(ml, "set_num_threads"):
            ml.set_num_threads(a.threads)
        backend = ml.use_backend(a.backend) if a.backend else ml.current_backend()
        self.label = f"minilm[{backend.name}]"
        ml.manual_seed(SEED)
        cfg = nn.GPTConfig(vocab_size=a.vocab, context_length=a.context, n_layers=a.layers,
                           n_heads=a.heads, d_model=a.d_model, d_ff=a.d_ff, dropout=0.0,
                           tie_weights=True)
        self.model = nn.GPT(cfg).to(np.dtype(a.dtype))
        self.model.train()
        if weights_out:  # the initial weights, for the PyTorch twin
            state = {k: t.numpy() for k, t in self.model.state_dict().items()}
            np.savez(weights_out, **state)
        groups = optim.param_groups_for_weight_decay(self.model, weight_decay=0.1)
        self.opt = optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
        self.batches = [(ml.Tensor(x), ml.Tensor(y)) for x, y in make_batches(a)]
        self.params = self.model.num_parameters()
        self.threaded = None  # minilm.train.batch_threads.threaded_backward, if used
        n = a._batch_threads or (ml.get_num_threads() if hasattr(ml, "get_num_threads") else 1)
        if n > 1 and backend.xp is np:
            from minilm.train.batch_threads import threaded_backward

            self.threaded, self.n_threads = threaded_backward, min(n, a.batch)
            self.label = f"minilm[{backend.name}, {self.n_threads} batch threads]"

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
        t0 = time.perf_counter()
        _, loss = self.model(ids, targets)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad()
        t3 = time.perf_counter()
        return float(loss.item()), t1 - t0, t2 - t1, t3 - t2


# ---------------------------------------------------------------------------- PyTorch twin


def build_torch_gpt(torch, a: argparse.Namespace):
    """The same GPT in PyTorch, parameter names matching minilm's state_dict."""
    nn, F = torch.nn, torch.nn.functional

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(a.d_model, 3 * a.d_model)
            self.out_proj = nn.Linear(a.d_model, a.d_model)

        def forward(self, x):
            B, T, D = x.shape
            q, k, v = self.qkv(x).split(D, dim=-1)
            q, k, v = (t.view(B, T, a.heads, D // a.heads).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.out_proj(y.transpose(1, 2).reshape(B, T, D))

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(a.d_model, a.d_ff)
            self.proj = nn.Linear(a.d_ff, a.d_model)

        def forward(self, x):
            return self.proj(F.gelu(self.fc(x)))  # exact GELU, as minilm's default

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(a.d_model)
            self.attn = Attention()
            self.ln2 = nn.LayerNorm(a.d_model)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok_emb = nn.Embedding(a.vocab, a.d_model)
            self.pos_emb = nn.Embedding(a.context, a.d_model)
            self.blocks = nn.ModuleList(Block() for _ in range(a.layers))
            self.ln_f = nn.LayerNorm(a.d_model)
            self.head = nn.Linear(a.d_model, a.vocab, bias=False)
            self.head.weight = self.tok_emb.weight  # tied

        def forward(self, ids, targets):
            B, T = ids.shape
            x = self.tok_emb(ids) + self.pos_emb(torch.arange(T))
            for block in self.blocks:
                x = block(x)
            logits = self.head(self.ln_f(x))
            return logits, F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))

    return GPT()


class TorchRunner:
    name = "torch"

    def __init__(self, a: argparse.Namespace, weights_in: str | None = None) -> None:
        import numpy as np
        import torch

        torch.set_num_threads(a.threads)
        self.torch = torch
        self.label = "torch"
        dtype = {"float32": torch.float32, "float64": torch.float64}[a.dtype]
        self.model = build_torch_gpt(torch, a).to(dtype)
        if weights_in:
            with np.load(weights_in) as z:
                state = {k: torch.from_numpy(z[k].copy()) for k in z.files}
            self.model.load_state_dict(state)
        self.model.train()
        decay, rest = [], []
        for _, p in self.model.named_parameters():  # tied head listed once, as in minilm
            (decay if p.ndim >= 2 else rest).append(p)
        groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
        self.batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in make_batches(a)]
        self.params = sum(p.numel() for p in self.model.parameters())

    def step(self, i: int) -> tuple:
        ids, targets = self.batches[i % len(self.batches)]
        t0 = time.perf_counter()
        _, loss = self.model(ids, targets)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        return float(loss.item()), t1 - t0, t2 - t1, t3 - t2


# ---------------------------------------------------------------------------- worker process


def worker(a: argparse.Namespace) -> None:
    """Line protocol on stdin/stdout: the worker builds its model, answers ``ready``,
    then ``run K`` (K timed steps) until ``quit`` (its peak RSS). One JSON line each."""
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
        runner = TorchRunner(a, weights_in=a._weights)
    build_s = time.perf_counter() - t0
    first = runner.step(0)
    for i in range(1, a.warmup):
        runner.step(i)
    send({"label": runner.label, "params": runner.params, "build_s": build_s,
          "first_step_s": sum(first[1:]), "loss_step1": first[0], "rss_start_mib": rss_start})
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
    send({"peak_rss_mib": peak_rss_mib(), "rss_end_mib": current_rss_mib()})


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


# ---------------------------------------------------------------------------- sgemm peak


class SgemmProbe:
    """GFLOP/s of a 2048^3 matmul in the run's dtype (sgemm for float32, dgemm for
    float64) into a preallocated output, sampled on demand."""

    def __init__(self, dtype: str = "float32", n: int = 2048) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        self.np = np
        self.name = "sgemm" if dtype == "float32" else "dgemm"
        self.a = rng.standard_normal((n, n)).astype(dtype)
        self.b = rng.standard_normal((n, n)).astype(dtype)
        self.c = np.empty((n, n), dtype=dtype)
        self.n = n
        self.samples: list = []
        np.matmul(self.a, self.b, out=self.c)  # warm up (thread pool start, page faults)

    def sample(self, k: int = 2) -> None:
        for _ in range(k):
            t0 = time.perf_counter()
            self.np.matmul(self.a, self.b, out=self.c)
            self.samples.append(2 * self.n ** 3 / (time.perf_counter() - t0) / 1e9)

    @property
    def gflops(self) -> float:
        return statistics.median(self.samples)


# ---------------------------------------------------------------------------- report


def summarize(info: dict, times: list, a: argparse.Namespace, peak: float) -> dict:
    fwd, bwd, opt = (statistics.median(t[j] for t in times) for j in range(3))
    step = statistics.median(sum(t) for t in times)
    gflops = flops_per_step(a) / step / 1e9
    return {
        "label": info["label"], "params": info["params"], "tokens_per_s": a.batch * a.context / step,
        "step_ms": step * 1e3, "forward_ms": fwd * 1e3, "backward_ms": bwd * 1e3,
        "optimizer_ms": opt * 1e3, "first_step_ms": info["first_step_s"] * 1e3,
        "gflops": gflops, "of_peak": gflops / peak, "peak_rss_mib": info.get("peak_rss_mib"),
        "rss_start_mib": info["rss_start_mib"], "loss_step1": info["loss_step1"],
        "loss_last": info.get("loss_last"), "steps": len(times),
        "fastest_step_ms": min(sum(t) for t in times) * 1e3,
    }


def machine_line() -> str:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = ""
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f" ({cfg.get('name', '')} {cfg.get('version', '')})"
    except Exception:  # older NumPy: no dict mode
        pass
    return (f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu}), {platform.system()}; "
            f"python {platform.python_version()}; numpy {np.__version__}{blas}")


def print_report(a: argparse.Namespace, rows: list, probe: SgemmProbe, extra: str) -> None:
    tokens = a.batch * a.context
    print(f"machine: {machine_line()}{extra}")
    print(f"config: {a.layers} layers, {a.heads} heads, d_model {a.d_model}, d_ff {a.d_ff}, "
          f"context {a.context}, batch {a.batch}, vocab {a.vocab}, {a.dtype}, tied head, "
          f"AdamW (wd 0.1 on matrices), {a.threads} threads")
    print(f"params: {rows[0]['params']:,}; linear weights N_lin {linear_weights(a):,}; "
          f"FLOPs/step {flops_per_step(a) / 1e9:.1f} G ({flops_per_step(a) / tokens / 1e6:.1f} "
          "MFLOP/token, full T x T attention)")
    print(f"timed: {a.steps} steps after {a.warmup} warmup, medians; frameworks alternate "
          f"every {a.block} steps, each in its own process")
    lo, hi = min(probe.samples), max(probe.samples)
    print(f"{probe.name} peak: {probe.gflops:.1f} GFLOP/s (2048^3 {a.dtype} np.matmul, median of "
          f"{len(probe.samples)} samples through the run, range {lo:.0f}-{hi:.0f})\n")
    fmt = [("tokens/s", "tokens_per_s", "{:,.0f}"), ("ms / step", "step_ms", "{:.1f}"),
           ("fastest step ms", "fastest_step_ms", "{:.1f}"),
           ("  forward", "forward_ms", "{:.1f}"), ("  backward", "backward_ms", "{:.1f}"),
           ("  optimizer", "optimizer_ms", "{:.1f}"), ("first step ms", "first_step_ms", "{:.0f}"),
           ("GFLOP/s", "gflops", "{:.1f}"), (f"of {probe.name} peak", "of_peak", "{:.0%}"),
           ("peak RSS MiB", "peak_rss_mib", "{:.0f}"), ("RSS at start MiB", "rss_start_mib", "{:.0f}"),
           ("loss at step 1", "loss_step1", "{:.6f}"), ("loss at last step", "loss_last", "{:.6f}")]
    width = max(14, *(len(r["label"]) + 2 for r in rows))
    print(f"{'':20s}" + "".join(f"{r['label']:>{width}s}" for r in rows))
    for title, key, f in fmt:
        cells = "".join(f"{f.format(r[key]) if r[key] is not None else '-':>{width}s}"
                        for r in rows)
        print(f"{title:20s}{cells}")
    if rows[-1]["label"] == "torch":
        t = rows[-1]
        print()
        for m in rows[:-1]:
            print(f"{m['label']} / torch: tokens/s {m['tokens_per_s'] / t['tokens_per_s']:.2f}x, "
                  f"peak RSS {m['peak_rss_mib'] / t['peak_rss_mib']:.2f}x, RSS growth "
                  f"{(m['peak_rss_mib'] - m['rss_start_mib']):.0f} vs "
                  f"{(t['peak_rss_mib'] - t['rss_start_mib']):.0f} MiB")
    base = next((r for r in rows if "@" in r["label"]), None)
    if base is not None:
        print(f"{rows[0]['label']} / {base['label']}: tokens/s "
              f"{rows[0]['tokens_per_s'] / base['tokens_per_s']:.2f}x (medians), "
              f"{base['fastest_step_ms'] / rows[0]['fastest_step_ms']:.2f}x (fastest steps: "
              "the least disturbed on a shared machine)")


def compare(a: argparse.Namespace) -> None:
    kinds = ["minilm"]
    extra = ""
    if a.compare_torch:
        try:
            import torch

            kinds.append("torch")
            extra = f"; torch {torch.__version__}"
        except ImportError:
            print("(PyTorch does not import here: minilm only)")
    probe = SgemmProbe(a.dtype)
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
    rows = [summarize(w.info, w.times, a, probe.gflops) for w in workers]
    print_report(a, rows, probe, extra)
    if a.json:
        Path(a.json).write_text(json.dumps({"config": {k: getattr(a, k) for k in (
            "layers", "heads", "d_model", "d_ff", "context", "batch", "vocab", "dtype",
            "threads", "steps", "warmup")}, f"{probe.name}_gflops": probe.samples, "results": rows},
            indent=2))


# ---------------------------------------------------------------------------- profile


# op category of each timed name (Function class or backend kernel), first match wins
CATEGORIES = [
    ("linear layers (BLAS GEMMs)", ("Linear.", "Matmul.", "Einsum.")),
    ("attention kernels (batched GEMMs)", ("attention",)),
    ("softmax / norm / loss", ("softmax", "Softmax", "norm", "Norm", "cross_entropy",
                               "CrossEntropy", "ScaledDotProductAttention")),
    ("elementwise (GELU, adds, dropout)", ("gelu", "Gelu", "erf", "dropout", "Dropout", "Add.",
                                           "Sub.", "Mul.", "Div.", "Neg.", "Exp.", "Tanh.")),
    ("copies (embedding, split, reshape)", ("mbedding", "Split", "Reshape", "Permute", "Cat.",
                                            "Stack", "Getitem", "Unbind", "Expand")),
]
NOT_KERNELS = {"seed", "get_rng_state", "set_rng_state", "asarray", "to_numpy"}


def category_of(name: str) -> str:
    for cat, keys in CATEGORIES:
        if any(k in name for k in keys):
            return cat
    return "other ops"


class OpProfiler:
    """Exclusive wall time of every Function.forward/backward and backend kernel: each
    timed call subtracts the time of the timed calls nested in it (a kernel called by a
    Function is charged to the kernel, not twice)."""

    def __init__(self) -> None:
        self.excl: dict = defaultdict(float)
        self.calls: dict = defaultdict(int)
        self.stack: list = []
        self.active = False
        self.undo: list = []

    def wrap(self, name: str, fn):
        prof = self

        def timed(*args, **kwargs):
            if not prof.active:
                return fn(*args, **kwargs)
            prof.stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                prof.excl[name] += dt - prof.stack.pop()
                prof.calls[name] += 1
                if prof.stack:
                    prof.stack[-1] += dt

        return timed

    def install(self, backend) -> None:
        from minilm.autograd import Function

        todo, seen = [Function], set()
        while todo:
            cls = todo.pop()
            for sub in cls.__subclasses__():
                if sub not in seen:
                    seen.add(sub)
                    todo.append(sub)
        for cls in seen:
            for kind in ("forward", "backward"):
                raw = cls.__dict__.get(kind)
                if raw is None:
                    continue
                wrapper = type(raw) if isinstance(raw, (staticmethod, classmethod)) else staticmethod
                fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
                setattr(cls, kind, wrapper(self.wrap(f"{cls.__name__}.{kind}", fn)))
                self.undo.append((cls, kind, raw))
        for name in dir(type(backend)):
            attr = getattr(backend, name)
            if name.startswith("_") or name in NOT_KERNELS or not callable(attr):
                continue
            setattr(backend, name, self.wrap(name, attr))  # instance attribute shadows
            self.undo.append((backend, name, None))

    def uninstall(self) -> None:
        for obj, name, raw in reversed(self.undo):
            if raw is None:
                delattr(obj, name)
            else:
                setattr(obj, name, raw)


def profile(a: argparse.Namespace) -> None:
    """Per step: the exclusive time of every timed name, grouped by category; the
    medians over the profiled steps are printed (a burst of load from another process
    spoils a step or two, not the medians)."""
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
        "--threads", str(args.threads)] + (["--backend", args.backend] if args.backend else []) \
        + (["--tune-malloc"] if args.tune_malloc else [])
    if args.profile:
        profile(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
