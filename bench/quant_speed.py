"""Batch-1 greedy decoding speed of a GPT, float32 vs weight-only int8 vs int4.

    MINILM_BACKEND=numba .venv/bin/python bench/quant_speed.py [--threads 2] [--repeats 5]

One GPT with random weights (default d_model 1024, 8 layers, 16 heads, d_ff 4096, vocab
32000: 134 M parameters, 537 MB in float32) is decoded with ``minilm.train.generate``
(temperature 0, KV cache) from a short prompt. Its copies have every Linear replaced by
``QuantizedLinear`` (``minilm.quant.quantize_model``): int8 per channel, int4 in
groups of 64; the tied output head stays float by default (``--quantize-head`` makes
a copy of it int8 too, as a separate row). The variants take turns, one generate each
per round, so that load from other users of the machine falls on them alike; the
table gives the median tokens/s over ``--repeats`` rounds after one warm-up round, the
speedup over float32, the weight bytes, and how many greedy tokens agree with
float32's. With ``--profile`` it also prints the time per layer type of one decode
step. PyTorch's dynamic int8 (``torch.ao.quantization.quantize_dynamic``) on the same
weights is added when torch imports.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--prompt", type=int, default=8, help="prompt tokens")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--quantize-head", action="store_true",
                   help="also time int8 with the output head quantized")
    p.add_argument("--profile", action="store_true", help="time per layer type")
    return p.parse_args()


def torch_dynamic_int8(model, a, prompt):
    """tokens/s of the same weights in PyTorch, float32 and dynamic int8, or None."""
    try:
        import torch
        import torch.nn as tnn
    except ImportError:
        return None
    torch.set_num_threads(a.threads)
    c = model.config

    class Block(tnn.Module):
        def __init__(self, blk):
            super().__init__()
            self.ln1, self.ln2 = tnn.LayerNorm(c.d_model), tnn.LayerNorm(c.d_model)
            self.qkv = tnn.Linear(c.d_model, 3 * c.d_model)
            self.out = tnn.Linear(c.d_model, c.d_model)
            self.fc = tnn.Linear(c.d_model, c.d_ff)
            self.proj = tnn.Linear(c.d_ff, c.d_model)
            src = {"ln1": blk.ln1, "ln2": blk.ln2, "qkv": blk.attn.qkv,
                   "out": blk.attn.out_proj, "fc": blk.mlp.fc, "proj": blk.mlp.proj}
            for name, m in src.items():
                getattr(self, name).weight.data = torch.from_numpy(m.weight.data.copy())
                getattr(self, name).bias.data = torch.from_numpy(m.bias.data.copy())

        def forward(self, x, kv):
            B, T, D = x.shape
            H = c.n_heads
            q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
            q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
            if kv is not None:
                k, v = torch.cat([kv[0], k], 2), torch.cat([kv[1], v], 2)
            y = tnn.functional.scaled_dot_product_attention(q, k, v, is_causal=kv is None)
            x = x + self.out(y.transpose(1, 2).reshape(B, T, D))
            return x + self.proj(tnn.functional.gelu(self.fc(self.ln2(x)))), (k, v)

    class TGPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.from_numpy(model.tok_emb.weight.data.copy())
            self.pos = torch.from_numpy(model.pos_emb.weight.data.copy())
            self.blocks = tnn.ModuleList(Block(b) for b in model.blocks)
            self.lnf = tnn.LayerNorm(c.d_model)
            self.lnf.weight.data = torch.from_numpy(model.ln_f.weight.data.copy())
            self.lnf.bias.data = torch.from_numpy(model.ln_f.bias.data.copy())
            self.head = tnn.Linear(c.d_model, c.vocab_size, bias=False)
            self.head.weight.data = self.emb

        def generate(self, ids, n):
            kvs = [None] * len(self.blocks)
            pos = 0
            x_ids = ids
            for _ in range(n):
                x = self.emb[x_ids] + self.pos[pos:pos + x_ids.shape[1]]
                pos += x_ids.shape[1]
                for i, blk in enumerate(self.blocks):
                    x, kvs[i] = blk(x, kvs[i])
                nxt = self.head(self.lnf(x[:, -1])).argmax(-1)
                x_ids = nxt[:, None]

    tm = TGPT().eval()
    qm = torch.ao.quantization.quantize_dynamic(copy.deepcopy(tm), {tnn.Linear}, torch.qint8)
    ids = torch.from_numpy(prompt[None, :])
    out = {}
    with torch.no_grad():
        for name, m in (("torch float32", tm), ("torch dynamic int8", qm)):
            m.generate(ids, 2)
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                m.generate(ids, a.new_tokens)
                times.append(time.perf_counter() - t0)
            out[name] = a.new_tokens / statistics.median(times)
    return out


def profile_step(model, ids, generate_cache):
    """Seconds per layer type over one cached decode step (forward hooks)."""
    from minilm.nn.module import Module
    from minilm.tensor import Tensor

    totals: dict[str, float] = {}
    originals = {}
    for _, m in model.named_modules():
        if type(m).__name__ in ("Linear", "QuantizedLinear", "MultiHeadAttention", "LayerNorm",
                                "GELU", "Embedding") and id(m) not in originals:
            originals[id(m)] = (m, type(m).forward)

            def timed(self, *args, _f=type(m).forward, **kw):
                t0 = time.perf_counter()
                try:
                    return _f(self, *args, **kw)
                finally:
                    key = type(self).__name__
                    totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0

            object.__setattr__(m, "forward", timed.__get__(m, Module))
    cache = generate_cache()
    model(Tensor(ids), cache=cache)
    totals.clear()
    t0 = time.perf_counter()
    model(Tensor(ids[:, -1:]), cache=cache)
    total = time.perf_counter() - t0
    for m, _ in originals.values():
        del m.__dict__["forward"]
    return total, totals


def main() -> None:
    a = parse_args()
    os.environ.setdefault("MINILM_BACKEND", "numba")
    import numpy as np

    import minilm
    from minilm.nn.transformer import GPT, GPTConfig
    from minilm.quant.linear import quantize_model
    from minilm.train.generation import KVCache, generate

    minilm.set_num_threads(a.threads)
    minilm.manual_seed(0)
    cfg = GPTConfig(vocab_size=a.vocab, context_length=a.context, n_layers=a.layers,
                    n_heads=a.heads, d_model=a.d_model)
    t0 = time.perf_counter()
    base = GPT(cfg)
    base.eval()
    n_params = sum(p.data.size for p in base.parameters())
    print(f"# backend {minilm.current_backend().name}, threads {a.threads}, GPT "
          f"d_model {a.d_model}, {a.layers} layers, vocab {a.vocab}: {n_params / 1e6:.1f} M "
          f"parameters (built in {time.perf_counter() - t0:.1f} s)")

    variants = {"float32": (base, None)}
    specs = [("int8 weight-only", dict(bits=8)), ("int4 group-64", dict(bits=4, group_size=64))]
    if a.quantize_head:
        specs.append(("int8 + int8 head", dict(bits=8, skip=())))
    for name, kw in specs:
        m = copy.deepcopy(base)
        report = quantize_model(m, **kw)
        variants[name] = (m, report)

    prompt = np.random.default_rng(0).integers(0, a.vocab, a.prompt)
    times: dict[str, list] = {k: [] for k in variants}
    outputs = {}
    for rnd in range(a.repeats + 1):  # round 0: warm-up (Numba loads its kernels)
        for name, (m, _) in variants.items():
            t0 = time.perf_counter()
            out = generate(m, prompt, a.new_tokens, temperature=0.0)
            dt = time.perf_counter() - t0
            if rnd:
                times[name].append(dt)
            outputs[name] = out[0, a.prompt:]

    def weight_bytes(m):
        return sum(t.data.nbytes for n, t in m.state_dict().items() if "emb" not in n
                   and n != "head.weight")

    f_tps = a.new_tokens / statistics.median(times["float32"])
    print(f"\n{a.new_tokens} new tokens after a {a.prompt}-token prompt, median of "
          f"{a.repeats} rounds\n")
    print("| variant | tokens/s | vs float32 | block weights MB | same greedy tokens |")
    print("|---|---|---|---|---|")
    for name, (m, _) in variants.items():
        tps = a.new_tokens / statistics.median(times[name])
        same = int((outputs[name] == outputs["float32"]).sum())
        print(f"| {name} | {tps:.2f} | {tps / f_tps:.2f}x | {weight_bytes(m) / 1e6:.0f} "
              f"| {same}/{a.new_tokens} |")
    tt = torch_dynamic_int8(base, a, prompt)
    if tt is None:
        print("| torch dynamic int8 | skipped: torch is not importable here | | | |")
    else:
        for name, tps in tt.items():
            print(f"| {name} | {tps:.2f} | {tps / f_tps:.2f}x (vs minilm float32) | | |")

    if a.profile:
        ids = prompt[None, :]
        for name, (m, _) in variants.items():
            total, parts = profile_step(m, ids, KVCache)
            text = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in sorted(parts.items(),
                                                                    key=lambda kv: -kv[1]))
            print(f"# profile {name}: one decode step {total * 1e3:.1f} ms; by module type "
                  f"(ms, nested types overlap): {text}")


if __name__ == "__main__":
    main()
