"""Shared pieces of the MPI tests: a tiny float64 GPT, a deterministic global batch per
step, and the one-process reference run every parallel mode is compared against (its
losses, final parameters and, per step, the full gradient before clipping and its norm).

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
SGD_LR = 0.1  # plain SGD (no momentum, no decay): the update is -lr * g, so a gradient
              # off by a constant factor moves the parameters by the wrong amount


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


def make_optimizer(params, kind: str = "adamw") -> optim.Optimizer:
    if kind == "sgd":
        return optim.SGD(params, lr=SGD_LR)
    if kind != "adamw":
        raise ValueError(f"unknown optimizer {kind!r}")
    return optim.AdamW(params, lr=LR, betas=(0.9, 0.95), weight_decay=0.1)


def reference_trace(steps: int = STEPS, grad_clip: float = 0.0, optimizer: str = "adamw",
                    **overrides) -> dict:
    """One process, whole global batch: {"losses": per step, "params": {name: final},
    "grads": per step {name: gradient before clipping}, "norms": per step the 2-norm of
    the whole gradient before clipping (computed here from the gradients, not by the
    clipping code)}."""
    model = make_model(**overrides)
    opt = make_optimizer(model.parameters(), optimizer)
    out: dict = {"losses": [], "grads": [], "norms": []}
    for step in range(steps):
        x, y = global_batch(step)
        _, loss = model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
        out["grads"].append(grads)
        out["norms"].append(float(np.sqrt(sum(float((g * g).sum()) for g in grads.values()))))
        if grad_clip:
            optim.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad()
        out["losses"].append(loss.item())
    out["params"] = {n: p.numpy().copy() for n, p in model.named_parameters()}
    return out


def reference_run(steps: int = STEPS, grad_clip: float = 0.0, **overrides) -> tuple:
    """One process, whole global batch, AdamW: (losses per step, {name: final parameter})."""
    ref = reference_trace(steps, grad_clip, **overrides)
    return ref["losses"], ref["params"]


def max_rel_err(got: dict, ref: dict) -> tuple:
    """(worst error, its name, names missing from ``got``): per tensor, the largest
    absolute difference relative to the reference tensor's largest entry (the key part
    of the qkv bias has an exactly zero gradient: rounding noise there is judged
    against the tensor's scale, not elementwise)."""
    worst, name = 0.0, None
    for k, r in ref.items():
        if k not in got:
            continue
        g = np.asarray(got[k])
        if g.shape != r.shape:
            return float("inf"), f"{k}: shape {g.shape} vs reference {r.shape}", []
        err = float(np.max(np.abs(g - r)) / max(float(np.max(np.abs(r))), 1e-300))
        if not err <= worst:  # NaN counts as the worst
            worst, name = (err if np.isfinite(err) else float("inf")), k
    return worst, name, sorted(set(ref) - set(got))


def compare_trace(run: dict, ref: dict, rtol: float = 1e-9) -> dict:
    """A parallel run's ``losses``, final ``params``, per-step full ``grads`` (before
    clipping) and ``norms`` (the engine's own global norm, or None where it has none)
    against a :func:`reference_trace`; a JSON-able summary, ``ok`` when all agree to
    ``rtol``."""
    res: dict = {"steps": len(run["losses"])}
    res["loss_err"] = float(np.max([abs(a - b) / abs(b)
                                    for a, b in zip(run["losses"], ref["losses"])]))
    res["param_err"], res["param_worst"], missing = max_rel_err(run["params"], ref["params"])
    res["grad_err"], res["grad_worst"], gmiss = 0.0, None, []
    for step, (got, want) in enumerate(zip(run["grads"], ref["grads"])):
        err, name, miss = max_rel_err(got, want)
        gmiss += miss
        if not err <= res["grad_err"]:
            res["grad_err"], res["grad_worst"] = err, f"step {step}: {name}"
    pairs = [(a, b) for a, b in zip(run["norms"], ref["norms"]) if a is not None]
    res["norm_err"] = float(np.max([abs(a - b) / b for a, b in pairs], initial=0.0))
    res["norms_checked"] = len(pairs)
    res["norms"], res["ref_norms"] = run["norms"], ref["norms"]
    res["missing"] = sorted(set(missing) | set(gmiss))
    worst = max(res["loss_err"], res["param_err"], res["grad_err"], res["norm_err"])
    res["ok"] = bool(len(run["losses"]) == len(ref["losses"]) == len(run["grads"])
                     and worst <= rtol and not res["missing"])
    return res


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
