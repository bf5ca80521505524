"""Shared pieces of the MPI tests: a tiny float64 GPT, a deterministic global batch per
step, and the one-process reference run every parallel mode is compared against.

Scripts run under ``mpiexec`` import this module too (``python -m tests.mpi.<script>`` from
the repository root), so the reference is computed with exactly the same code."""

from __future__ import annotations

import json
import sys

import numpy as np

import minilm as ml
from minilm import optim
from minilm.nn import GPT, GPTConfig

CONFIG = dict(vocab_size=16, context_length=8, n_layers=4, n_heads=4, d_model=16, dropout=0.0)
GLOBAL_BATCH = 8
STEPS = 3
LR = 1e-2


def make_model(**overrides) -> GPT:
    """The same float64 GPT on every rank (seeded)."""
    ml.use_backend("numpy")
    ml.manual_seed(1234)
    cfg = dict(CONFIG)
    cfg.update(overrides)
    return GPT(GPTConfig(**cfg)).double()


def global_batch(step: int, batch: int = GLOBAL_BATCH) -> tuple:
    """(x, y) int64 arrays (batch, T): the same on every rank for a given step."""
    rng = np.random.default_rng(1000 + step)
    ids = rng.integers(0, CONFIG["vocab_size"], size=(batch, CONFIG["context_length"] + 1))
    return ids[:, :-1], ids[:, 1:]


def make_optimizer(params) -> optim.AdamW:
    return optim.AdamW(params, lr=LR, betas=(0.9, 0.95), weight_decay=0.1)


def reference_run(steps: int = STEPS, grad_clip: float = 0.0, **overrides) -> tuple:
    """One process, whole global batch: (losses per step, {name: final parameter})."""
    model = make_model(**overrides)
    opt = make_optimizer(model.parameters())
    losses = []
    for step in range(steps):
        x, y = global_batch(step)
        _, loss = model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        if grad_clip:
            optim.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, {n: p.numpy().copy() for n, p in model.named_parameters()}


def report(obj: dict) -> None:
    """Print one JSON line the test parses (only rank 0 should call this)."""
    sys.stdout.write("RESULT " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def compare(losses: list, params: dict, steps: int = STEPS, rtol: float = 1e-9,
            grad_clip: float = 0.0, **overrides) -> dict:
    """Compare a parallel run's losses and (gathered, full) parameters with the reference;
    returns a JSON-able summary with the worst relative errors."""
    ref_losses, ref_params = reference_run(steps, grad_clip, **overrides)
    loss_err = max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(losses, ref_losses))
    missing = sorted(set(ref_params) - set(params))
    param_err = 0.0
    worst = None
    for name, ref in ref_params.items():
        if name not in params:
            continue
        got = np.asarray(params[name])
        if got.shape != ref.shape:
            return {"ok": False, "why": f"{name}: shape {got.shape} vs reference {ref.shape}"}
        # relative to the tensor's scale: the key part of the qkv bias has an exactly zero
        # gradient (softmax ignores a shift shared by all keys), so it holds rounding noise
        # (~1e-15) that another summation order does not reproduce elementwise
        err = float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-300))
        if err > param_err:
            param_err, worst = err, name
    ok = loss_err <= rtol and param_err <= rtol and not missing and len(losses) == steps
    return {"ok": bool(ok), "loss_err": loss_err, "param_err": param_err, "worst": worst,
            "missing": missing, "losses": losses, "ref_losses": ref_losses}
