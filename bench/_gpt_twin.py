"""The PyTorch twin of ``bench/gpt_train.py``: the same GPT written in PyTorch, on the
CPU or (``--backend cupy``) on the CUDA device, eager or ``torch.compile``-d, in float32
or under ``torch.autocast`` (``--amp fp16`` with ``torch.amp.GradScaler``, ``--amp bf16``
without). torch is imported by the worker that uses it, never at module level."""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any


def build_torch_gpt(torch: Any, a: argparse.Namespace) -> Any:
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
            x = self.tok_emb(ids) + self.pos_emb(torch.arange(T, device=ids.device))
            for block in self.blocks:
                x = block(x)
            logits = self.head(self.ln_f(x))
            # under torch.autocast cross_entropy runs in float32, as minilm's does
            return logits, F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))

    return GPT()


class TorchRunner:
    """The twin + AdamW; ``step(i)`` returns (loss, forward s, backward s, optim s),
    each part timed between device synchronisations on CUDA."""

    name = "torch"

    def __init__(self, a: argparse.Namespace, batches: list, weights_in: str | None = None,
                 compiled: bool = False) -> None:
        import numpy as np
        import torch

        torch.set_num_threads(a.threads)
        self.torch = torch
        self.device = "cuda" if a.backend == "cupy" else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("PyTorch sees no CUDA device")
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        dtype = {"float32": torch.float32, "float64": torch.float64}[a.dtype]
        self.model = build_torch_gpt(torch, a).to(dtype)
        if weights_in:
            with np.load(weights_in) as z:
                state = {k: torch.from_numpy(z[k].copy()) for k in z.files}
            self.model.load_state_dict(state)
        self.model.to(self.device)
        self.model.train()
        self.forward = torch.compile(self.model) if compiled else self.model
        decay, rest = [], []
        for _, p in self.model.named_parameters():  # tied head listed once, as in minilm
            (decay if p.ndim >= 2 else rest).append(p)
        groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
        low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(a.amp)
        self.autocast = (lambda: torch.autocast(self.device, dtype=low)) if low is not None \
            else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler(self.device) if a.amp == "fp16" else None
        self.batches = [(torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device))
                        for x, y in batches]
        self.params = sum(p.numel() for p in self.model.parameters())
        self.label = "torch" + (" compile" if compiled else (" eager" if low or
                                                              self.device == "cuda" else ""))
        if low is not None:
            self.label += f", {a.amp}"

    def step(self, i: int) -> tuple:
        ids, targets = self.batches[i % len(self.batches)]
        self.sync()
        t0 = time.perf_counter()
        with self.autocast():
            _, loss = self.forward(ids, targets)
        self.sync()
        t1 = time.perf_counter()
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self.sync()
        t2 = time.perf_counter()
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sync()
        t3 = time.perf_counter()
        return float(loss.item()), t1 - t0, t2 - t1, t3 - t2

    def gpu_memory(self) -> dict:
        """Peak allocated and peak reserved bytes of the CUDA caching allocator (MiB)."""
        if self.device != "cuda":
            return {}
        cuda = self.torch.cuda
        return {"peak_gpu_mib": cuda.max_memory_allocated() / 2**20,
                "reserved_gpu_mib": cuda.max_memory_reserved() / 2**20,
                "gpu_mem_source": "torch.cuda.max_memory_allocated"}
