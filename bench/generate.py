"""Decoding and evaluation tokens/s of a GPT: minilm vs a plain PyTorch loop.

    .venv/bin/python bench/generate.py [--contexts 128 1024] [--batch-sizes 1 8]
        [--rounds 5] [--threads 2] [--torch-python /tmp/torchvenv/bin/python]

The model is the issue's decoding benchmark: 4 layers, 4 heads, d_model 256, vocab 96,
learned positions, tied head, random weights (seed 0); its context length is each
``--contexts`` value C. Per (C, batch B):

- **generate**: greedy decoding with the KV cache of B copies of a 16-token prompt up to
  C tokens (C - 16 new tokens per row), ``minilm.train.generation.generate(model,
  prompt, C - 16, temperature=0)``; tokens/s = B (C - 16) / seconds. PyTorch: the same
  weights in a GPT written here with a preallocated KV cache and
  ``F.scaled_dot_product_attention`` (causal for the prompt, unmasked for each new
  token), greedy argmax, ``torch.inference_mode()`` — the loop a PyTorch user writes.
  The first 32 generated ids of both must agree (same weights, same arithmetic up to
  float32 rounding; greedy decoding of random weights can flip a near-tie later).
- **eval**: a no-grad forward + mean cross-entropy of 4 batches of 8 x C tokens,
  ``minilm.train.trainer.evaluate_loss`` (what ``minilm eval`` runs) vs
  ``torch.no_grad()`` forward; tokens/s = 32 C / seconds.

minilm's worker calls ``tune_allocator()`` first, as every ``minilm`` command does.
Each engine runs in its own worker process with the same thread count (OPENBLAS / OMP /
MKL / NUMBA_NUM_THREADS, ``torch.set_num_threads``); they warm up once, then take turns
for ``--rounds`` rounds; medians. minilm never imports torch: PyTorch runs in
``--torch-python``'s interpreter (skipped if it does not exist).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from embed_speed import Worker  # noqa: E402  (one worker protocol for the benches)

PROMPT = 16
LAYERS, HEADS, D_MODEL, VOCAB = 4, 4, 256, 96
EVAL_BATCHES, EVAL_ROWS = 4, 8

TORCH_WORKER = r"""
import sys, json, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
threads, weights_dir = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(threads)
L, H, D, V, PROMPT = (int(v) for v in sys.argv[3:8])

class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D)
        self.out_proj = nn.Linear(D, D)
    def forward(self, x, kc, vc, pos):
        B, T, _ = x.shape
        q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in self.qkv(x).split(D, -1))
        if kc is not None:  # decoding: the preallocated cache holds every position
            kc[:B, :, pos:pos + T] = k
            vc[:B, :, pos:pos + T] = v
            k, v = kc[:B, :, :pos + T], vc[:B, :, :pos + T]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, 4 * D)
        self.proj = nn.Linear(4 * D, D)
    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(D), Attn()
        self.ln2, self.mlp = nn.LayerNorm(D), MLP()
    def forward(self, x, kc, vc, pos):
        x = x + self.attn(self.ln1(x), kc, vc, pos)
        return x + self.mlp(self.ln2(x))

class GPT(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.tok_emb, self.pos_emb = nn.Embedding(V, D), nn.Embedding(C, D)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.ln_f = nn.LayerNorm(D)
    def forward(self, ids, caches, pos):
        T = ids.shape[1]
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(pos, pos + T))
        for blk, (kc, vc) in zip(self.blocks, caches):
            x = blk(x, kc, vc, pos)
        return self.ln_f(x) @ self.tok_emb.weight.T

models = {}
def model_for(C):
    if C not in models:
        m = GPT(C)
        w = np.load(f"{weights_dir}/gpt{C}.npz")
        sd = {k: torch.from_numpy(w[k]) for k in w.files if k != "head.weight"}
        missing, unexpected = m.load_state_dict(sd, strict=False)
        assert not missing and not unexpected, (missing, unexpected)
        models[C] = m.eval()
    return models[C]

@torch.inference_mode()
def generate(B, C):
    m = model_for(C)
    caches = [(torch.zeros(B, H, C, D // H), torch.zeros(B, H, C, D // H)) for _ in range(L)]
    ids = torch.from_numpy(np.load(f"{weights_dir}/prompt.npy")).repeat(B, 1)
    out = [ids]
    logits = m(ids, caches, 0)[:, -1]
    for pos in range(PROMPT, C):
        nxt = logits.argmax(-1, keepdim=True)
        out.append(nxt)
        if pos == C - 1:
            break
        logits = m(nxt, caches, pos)[:, -1]
    return torch.cat(out, 1).numpy()

@torch.no_grad()
def evaluate(C):
    m = model_for(C)
    data = np.load(f"{weights_dir}/eval{C}.npy")
    total = 0.0
    for x in data:
        x = torch.from_numpy(x)
        logits = m(x[:, :-1], [(None, None)] * L, 0)
        total += F.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1)).item()
    return total / len(data)

print("ready " + torch.__version__, flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "quit":
        break
    if cmd[0] == "ids":
        np.save(cmd[3], generate(int(cmd[1]), int(cmd[2])))
        print("ok", flush=True)
        continue
    t0 = time.perf_counter()
    res = generate(int(cmd[1]), int(cmd[2])) if cmd[0] == "gen" else evaluate(int(cmd[2]))
    print(json.dumps({"s": time.perf_counter() - t0,
                      "loss": None if cmd[0] == "gen" else res}), flush=True)
"""


def minilm_worker(backend: str, weights_dir: str) -> None:
    """The minilm side: builds GPT(C) with seed 0 (writing its weights for the torch
    worker: 'init C'), then 'gen B C' / 'eval B C' -> seconds, 'ids B C PATH'."""
    import numpy as np

    import minilm as ml
    from minilm.nn import GPT, GPTConfig
    from minilm.train.generation import generate
    from minilm.train.trainer import evaluate_loss

    ml.use_backend(backend)
    ml.backends.tune_allocator()  # as every `minilm` command does (minilm/cli.py main)
    models: dict = {}

    def model_for(C: int) -> GPT:
        if C not in models:
            ml.manual_seed(0)
            m = GPT(GPTConfig(vocab_size=VOCAB, context_length=C, n_layers=LAYERS,
                              n_heads=HEADS, d_model=D_MODEL))
            models[C] = m.eval()
        return models[C]

    def gen(B: int, C: int) -> np.ndarray:
        prompt = np.repeat(np.load(f"{weights_dir}/prompt.npy"), B, axis=0)
        return generate(model_for(C), prompt, C - PROMPT, temperature=0.0)

    def evaluate(C: int) -> float:
        data = np.load(f"{weights_dir}/eval{C}.npy")  # (batches, rows, C + 1)
        return evaluate_loss(model_for(C), ((x[:, :-1], x[:, 1:]) for x in data))["loss"]

    print(f"ready {backend}", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "quit":
            break
        if cmd[0] == "init":
            C = int(cmd[1])
            state = {k: t.numpy() for k, t in model_for(C).state_dict().items()}
            np.savez(f"{weights_dir}/gpt{C}.npz", **state)
            print("ok", flush=True)
            continue
        if cmd[0] == "ids":
            np.save(cmd[3], gen(int(cmd[1]), int(cmd[2])))
            print("ok", flush=True)
            continue
        t0 = time.perf_counter()
        res = gen(int(cmd[1]), int(cmd[2])) if cmd[0] == "gen" else evaluate(int(cmd[2]))
        print(json.dumps({"s": time.perf_counter() - t0,
                          "loss": None if cmd[0] == "gen" else float(res)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="numba")
    p.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        minilm_worker(a.worker, a.dir)
        return
    import numpy as np

    if any(c <= PROMPT for c in a.contexts):
        p.error(f"--contexts must be > the {PROMPT}-token prompt")
    tmp = tempfile.mkdtemp(prefix="generate_bench_")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # weights, prompt, ids
    rng = np.random.default_rng(0)
    np.save(f"{tmp}/prompt.npy", rng.integers(0, VOCAB, (1, PROMPT)))
    for C in a.contexts:  # evaluation data: EVAL_BATCHES batches of EVAL_ROWS x (C + 1)
        np.save(f"{tmp}/eval{C}.npy", rng.integers(0, VOCAB, (EVAL_BATCHES, EVAL_ROWS, C + 1)))
    have_torch = bool(a.torch_python) and os.path.exists(a.torch_python)
    print(f"GPT {LAYERS} layers, {HEADS} heads, d_model {D_MODEL}, vocab {VOCAB}, random "
          f"weights; {PROMPT}-token prompt; {a.threads} threads; rounds {a.rounds}; torch "
          f"{'via ' + a.torch_python if have_torch else 'not available'}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs")
    workers = {}
    rows = []
    try:
        workers["minilm " + a.backend] = Worker(
            "minilm", [sys.executable, os.path.abspath(__file__), "--worker", a.backend,
                       "--dir", tmp], a.threads)
        for C in a.contexts:
            workers["minilm " + a.backend].ask(f"init {C}")
        if have_torch:
            w = Worker("torch", [a.torch_python, "-c", TORCH_WORKER, str(a.threads), tmp,
                                 str(LAYERS), str(HEADS), str(D_MODEL), str(VOCAB),
                                 str(PROMPT)], a.threads)
            workers[f"torch {w.info.split()[1]}"] = w
        tasks = [("generate", B, C) for C in a.contexts for B in a.batch_sizes]
        tasks += [("eval", EVAL_ROWS, C) for C in a.contexts]
        for what, B, C in tasks:
            cmd = f"{'gen' if what == 'generate' else 'eval'} {B} {C}"
            for w in workers.values():
                w.ask(cmd)  # warm-up: kernels compile, caches fill
            times: dict = {k: [] for k in workers}
            losses: dict = {}
            for _ in range(a.rounds):
                for k, w in workers.items():
                    r = json.loads(w.ask(cmd))
                    times[k].append(r["s"])
                    losses[k] = r["loss"]
            agree = ""
            if what == "generate" and have_torch:
                ids = []
                for i, w in enumerate(workers.values()):
                    w.ask(f"ids {B} {C} {tmp}/ids{i}.npy")
                    ids.append(np.load(f"{tmp}/ids{i}.npy"))
                n = min(32, C - PROMPT)
                agree = bool((ids[0][:, PROMPT:PROMPT + n] == ids[1][:, PROMPT:PROMPT + n]).all())
            new = B * (C - PROMPT) if what == "generate" else EVAL_BATCHES * EVAL_ROWS * C
            tps = {k: new / statistics.median(v) for k, v in times.items()}
            keys = list(workers)
            ratio = tps[keys[0]] / tps[keys[1]] if len(keys) > 1 else None
            rows.append({"what": what, "batch": B, "context": C, "tps": tps, "ratio": ratio,
                         "agree": agree, "losses": losses})
            cells = "  ".join(f"{k} {v:9,.0f}" for k, v in tps.items())
            extra = f"  minilm/torch {ratio:.2f}x" if ratio else ""
            if what == "eval" and len(keys) > 1:
                extra += f"  (losses {losses[keys[0]]:.6f} / {losses[keys[1]]:.6f})"
            elif agree != "":
                extra += f"  (first 32 ids agree: {agree})"
            print(f"{what:8s} batch {B:2d} context {C:5d}  tokens/s  {cells}{extra}", flush=True)
    finally:
        for w in workers.values():
            w.close()
    keys = list(workers)
    print(f"\n| task | batch | context | {' | '.join(keys)} | ratio |")
    print("|---|---:|---:|" + "---:|" * len(keys) + "---:|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] else "n/a"
        print(f"| {r['what']} | {r['batch']} | {r['context']} | "
              + " | ".join(f"{r['tps'][k]:,.0f}" for k in keys) + f" | {ratio} |")


if __name__ == "__main__":
    main()
