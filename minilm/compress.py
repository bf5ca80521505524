"""The compression commands on a trained run: ``minilm quantize``, ``minilm prune``,
``minilm low-rank``. Each loads the run's float checkpoint, measures its validation
perplexity, compresses it (``minilm.quant``), measures again, and writes the result
beside the run as ``<out-dir>/<tag>.safetensors`` (``minilm.train.compressed``), which
``minilm sample`` and ``minilm eval`` read with ``--checkpoint <tag>``.

The run itself is never changed: the new file is written atomically under the run's
lock, and an existing compressed file of the same tag is replaced only with
``--overwrite``. Bad arguments (bits, group size, sparsity, rank …) are refused before
anything is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from .run import load_run, run_tokens
from .train.compressed import compressed_path, save_compressed
from .train.run_dir import LOCK_NAME, RunLock

__all__ = ["METHODS", "low_rank_run", "prune_run", "quantize_run"]

METHODS = ("int8", "int4", "w8a8", "llm-int8", "gptq")


# =========================================================================== shared steps
def _source(out_dir: str, checkpoint: str) -> tuple:
    """(float model, tokenizer, extra, train tokens, val tokens) of a run."""
    model, tok, extra = load_run(out_dir, checkpoint)
    if "layers" in extra and "method" in extra:
        raise ValueError(f"--checkpoint {checkpoint!r} is already compressed "
                         f"({extra['method'].get('name')}); compress the run's float "
                         f"checkpoint (best or last)")
    train_tokens, val_tokens = run_tokens(out_dir, extra, tok)
    return model, tok, extra, train_tokens, val_tokens


def _perplexity(model: Any, tokens: Any, batch_size: int, max_batches: int) -> float:
    from .data import iter_windows
    from .train.trainer import evaluate_loss

    T = model.config.context_length
    return evaluate_loss(model, iter_windows(tokens, batch_size, T), max_batches)["ppl"]


def _calibration(tokens: Any, T: int, n: int, batch_size: int) -> list:
    """``n`` batches of (batch_size, T) ids from the training split, evenly spread
    (deterministic: no seed needed to reproduce a compressed model)."""
    tokens = np.asarray(tokens)
    windows = len(tokens) - T
    if windows < 1:
        raise ValueError(f"the training split has {len(tokens)} tokens, too few for one "
                         f"calibration window of {T + 1}")
    starts = np.linspace(0, windows - 1, n * batch_size).astype(np.int64)
    return [np.stack([tokens[s:s + T] for s in starts[i * batch_size:(i + 1) * batch_size]])
            .astype(np.int64) for i in range(n)]


def _model_bytes(model: Any) -> int:
    """Bytes of every parameter and buffer (tied arrays once; pruning masks, kept in
    the file so that fine-tuning can go on, not counted)."""
    seen, total = set(), 0
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t is None or id(t.data) in seen or name.endswith("_mask"):  # pruning masks: not weights
            continue
        seen.add(id(t.data))
        total += int(t.data.nbytes)
    return total


def _write(out_dir: str, tag: str, model: Any, extra: dict, overwrite: bool,
           log: Any) -> Path:
    path = compressed_path(out_dir, tag)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists (a {tag} model of this run); replace it with "
                         "--overwrite")
    lock = RunLock(Path(out_dir) / LOCK_NAME)
    lock.acquire(log)
    try:
        save_compressed(path, model, extra)
    finally:
        lock.release()
    return path


def _finish(out_dir: str, tag: str, model: Any, extra: dict, method: dict, report: dict,
            overwrite: bool, log: Any) -> dict:
    keep = {k: extra[k] for k in ("model_config", "train_config", "tokenizer", "step")
            if k in extra}
    keep["method"] = method
    keep["report"] = {k: v for k, v in report.items() if isinstance(v, (int, float, str))}
    path = _write(out_dir, tag, model, keep, overwrite, log)
    report["path"] = str(path)
    report["file_bytes"] = path.stat().st_size
    return report


def format_report(report: dict) -> str:
    """The before/after lines a command prints."""
    b, a = report["ppl_before"], report["ppl_after"]
    lines = [f"{report['tag']}: {report['bytes_before'] / 2**20:.2f} MiB -> "
             f"{report['bytes_after'] / 2**20:.2f} MiB of weights "
             f"({report['bytes_before'] / max(report['bytes_after'], 1):.2f}x smaller)"]
    if "bits_per_weight" in report:
        lines.append(f"  bits per weight of the compressed layers (scales included): "
                     f"{report['bits_per_weight']:.3f}")
    lines.append(f"  validation perplexity {b:.3f} -> {a:.3f} ({100 * (a - b) / b:+.2f}%), "
                 f"{report['seconds']:.1f} s")
    lines.append(f"  written to {report['path']} (use --checkpoint {report['tag']})")
    return "\n".join(lines)


# =========================================================================== quantize
def _tag(method: str, bits: int, group_size: int | None, act: str) -> str:
    g = f"-g{group_size}" if group_size else ""
    if method == "gptq":
        return f"gptq-int{bits}{g}"
    if method == "w8a8":
        return "w8a8" if act == "token" else "w8a8-static"
    if method == "llm-int8":
        return "llm-int8"
    return f"{method}{g}"


def _check_quant_args(method: str, bits: int | None, group_size: int | None,
                      widths: tuple) -> tuple:
    if method not in METHODS:
        raise ValueError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if method in ("int8", "w8a8", "llm-int8"):
        if bits not in (None, 8):
            raise ValueError(f"--bits {bits}: {method} is 8-bit")
        bits = 8
    elif method == "int4":
        if bits not in (None, 4):
            raise ValueError(f"--bits {bits}: int4 is 4-bit")
        bits = 4
    elif bits is None:
        bits = 4
    elif bits not in (4, 8):
        raise ValueError(f"--bits {bits}: GPTQ here writes 4 or 8 bits")
    if method in ("w8a8", "llm-int8") and group_size is not None:
        raise ValueError(f"--group-size: {method} uses one scale per output channel; drop it")
    if group_size is None and method in ("int4", "gptq") and bits == 4:
        group_size = 64 if all(w % 64 == 0 for w in widths) else None
    if group_size is not None and (group_size < 1 or any(w % group_size for w in widths)):
        raise ValueError(f"--group-size {group_size}: must be >= 1 and divide every layer's "
                         f"input width (d_model, d_ff = {', '.join(map(str, widths))})")
    return bits, group_size


def quantize_run(out_dir: str, method: str, bits: int | None = None,
                 group_size: int | None = None, calib_batches: int = 8,
                 checkpoint: str = "best", act: str = "token", threshold: float = 6.0,
                 batch_size: int = 8, eval_batches: int = 16, overwrite: bool = False,
                 log: Any = print) -> dict:
    """Quantize a run's Linear layers (all but the tied output head) with ``method``:

    - ``int8``: weight-only, per output channel (or per group), round to nearest;
    - ``int4``: weight-only, packed two per byte, per group of ``group_size`` inputs
      (default 64), round to nearest;
    - ``w8a8``: int8 weights and activations (per token at run time, or per tensor
      calibrated on ``calib_batches`` batches with ``act="tensor"``), int32 products;
    - ``llm-int8``: W8A8 with input columns above ``threshold`` kept in float;
    - ``gptq``: GPTQ (``bits`` 4 or 8, groups as int4), calibrated on ``calib_batches``
      batches of the training split, layer by layer.

    Writes ``<out_dir>/<tag>.safetensors``; returns the report (sizes, perplexities,
    time)."""
    from .quant import (
        LLMInt8Linear,
        QuantizedLinear,
        W8A8Linear,
        calibrate,
        gptq_quantize_model,
        quantize_model,
    )

    model, tok, extra, train_tokens, val_tokens = _source(out_dir, checkpoint)
    cfg = model.config
    bits, group_size = _check_quant_args(method, bits, group_size, (cfg.d_model, cfg.d_ff))
    if act not in ("token", "tensor"):
        raise ValueError(f"--act {act!r}: choose token (dynamic) or tensor (calibrated)")
    for name, value in (("--calib-batches", calib_batches), ("--eval-batches", eval_batches),
                        ("--batch-size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} = {value!r}: must be an integer >= 1")
    tag = _tag(method, bits, group_size, act)
    if compressed_path(out_dir, tag).exists() and not overwrite:
        raise ValueError(f"{compressed_path(out_dir, tag)} exists (a {tag} model of this run); "
                         "replace it with --overwrite")
    ppl_before = _perplexity(model, val_tokens, batch_size, eval_batches)
    bytes_before = _model_bytes(model)
    T = cfg.context_length
    t0 = time.perf_counter()
    if method in ("int8", "int4"):
        rep = quantize_model(model, bits, group_size)
    elif method == "w8a8":
        rep = quantize_model(model, factory=lambda lin: W8A8Linear.from_linear(lin, act))
        if act == "tensor":
            calibrate(model, _calibration(train_tokens, T, calib_batches, batch_size))
    elif method == "llm-int8":
        rep = quantize_model(model, factory=lambda lin: LLMInt8Linear.from_linear(lin, threshold))
    else:
        results = gptq_quantize_model(model, _calibration(train_tokens, T, calib_batches,
                                                          batch_size), bits, group_size)
        modules = dict(model.named_modules())
        layers = {id(modules[name]): QuantizedLinear(info["qweight"], modules[name])
                  for name, info in results.items()}  # keyed by the Linear they replace
        rep = quantize_model(model, factory=lambda lin: layers[id(lin)])
    seconds = time.perf_counter() - t0
    model.eval()
    ppl_after = _perplexity(model, val_tokens, batch_size, eval_batches)
    q_layers = [m for n, m in model.named_modules() if n in set(rep["layers"])]
    weights = sum(m.in_features * m.out_features for m in q_layers)
    report = {"tag": tag, "method": method, "bits": bits, "group_size": group_size,
              "ppl_before": ppl_before, "ppl_after": ppl_after, "seconds": seconds,
              "bytes_before": bytes_before, "bytes_after": _model_bytes(model),
              "layers": len(q_layers)}
    if method in ("int8", "int4", "gptq") and weights:
        report["bits_per_weight"] = sum(m.quantized_tensor().bits_per_weight
                                        * m.in_features * m.out_features
                                        for m in q_layers) / weights
    if method == "llm-int8":
        report["outlier_fraction"] = float(np.mean([m.outlier_fraction_running
                                                    for m in q_layers]))
    method_doc = {"name": method, "bits": bits, "group_size": group_size, "act": act,
                  "threshold": threshold, "calib_batches": calib_batches,
                  "source": checkpoint}
    return _finish(out_dir, tag, model, extra, method_doc, report, overwrite, log)


# =========================================================================== prune, low rank
def prune_run(out_dir: str, sparsity: float, scope: str = "global", fine_tune_steps: int = 0,
              lr: float = 1e-4, checkpoint: str = "best", batch_size: int = 8,
              eval_batches: int = 16, overwrite: bool = False, log: Any = print) -> dict:
    """Magnitude-prune the run's Linear layers (not the tied head) to ``sparsity``
    (per layer or global), then optionally fine-tune ``fine_tune_steps`` AdamW steps on
    the training split with the masks held. Writes ``pruned-<percent>``."""
    from . import optim
    from .data import RandomWindowBatches
    from .quant import magnitude_prune

    if not isinstance(fine_tune_steps, int) or isinstance(fine_tune_steps, bool) \
            or fine_tune_steps < 0:
        raise ValueError(f"--fine-tune-steps = {fine_tune_steps!r}: must be an integer >= 0")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) \
            or not 0.0 <= sparsity <= 1.0:  # NaN fails too
        raise ValueError(f"--sparsity = {sparsity!r}: must be a number in [0, 1]")
    model, tok, extra, train_tokens, val_tokens = _source(out_dir, checkpoint)
    tag = f"pruned-{round(100 * float(sparsity))}"
    ppl_before = _perplexity(model, val_tokens, batch_size, eval_batches)
    bytes_before = _model_bytes(model)
    masks = magnitude_prune(model, sparsity, scope)  # checks scope
    model.eval()
    ppl_before_tune = None
    t0 = time.perf_counter()
    if fine_tune_steps:
        ppl_before_tune = _perplexity(model, val_tokens, batch_size, eval_batches)
        opt = masks.attach(optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0))
        batches = RandomWindowBatches(train_tokens, batch_size, model.config.context_length,
                                      rng=0)
        model.train()
        for _ in range(fine_tune_steps):
            x, y = batches.next_batch()
            _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
        masks.detach()
    seconds = time.perf_counter() - t0
    report = {"tag": tag, "method": "prune", "sparsity": float(sparsity), "scope": scope,
              "ppl_before": ppl_before,
              "ppl_after": _perplexity(model, val_tokens, batch_size, eval_batches),
              "seconds": seconds, "bytes_before": bytes_before,
              "bytes_after": _model_bytes(model), "fine_tune_steps": fine_tune_steps}
    if ppl_before_tune is not None:
        report["ppl_before_fine_tune"] = ppl_before_tune
    method = {"name": "prune", "sparsity": float(sparsity), "scope": scope,
              "fine_tune_steps": fine_tune_steps, "lr": lr, "source": checkpoint}
    return _finish(out_dir, tag, model, extra, method, report, overwrite, log)


def low_rank_run(out_dir: str, rank: int | None = None, energy: float | None = None,
                 checkpoint: str = "best", batch_size: int = 8, eval_batches: int = 16,
                 overwrite: bool = False, log: Any = print) -> dict:
    """Replace the run's Linear layers (not the tied head) by truncated-SVD pairs at
    ``rank`` or ``energy`` where that saves parameters. Writes ``low-rank-r<rank>`` or
    ``low-rank-e<energy>``."""
    from .quant import low_rank_model

    model, tok, extra, _, val_tokens = _source(out_dir, checkpoint)
    tag = f"low-rank-r{rank}" if rank is not None else f"low-rank-e{energy}"
    ppl_before = _perplexity(model, val_tokens, batch_size, eval_batches)
    bytes_before = _model_bytes(model)
    t0 = time.perf_counter()
    rows = low_rank_model(model, rank=rank, energy=energy)  # checks rank / energy
    if not any(r.get("replaced") for r in rows):
        what = f"--rank {rank}" if rank is not None else f"--energy {energy}"
        raise ValueError(f"{what}: no layer gets smaller (a rank r saves parameters only "
                         f"when r (in + out) < in x out); give a smaller rank or energy")
    seconds = time.perf_counter() - t0
    model.eval()
    report = {"tag": tag, "method": "low-rank", "ppl_before": ppl_before,
              "ppl_after": _perplexity(model, val_tokens, batch_size, eval_batches),
              "seconds": seconds, "bytes_before": bytes_before,
              "bytes_after": _model_bytes(model),
              "layers_replaced": sum(1 for r in rows if r.get("replaced"))}
    method = {"name": "low-rank", "rank": rank, "energy": energy, "source": checkpoint}
    return _finish(out_dir, tag, model, extra, method, report, overwrite, log)


# ---------------------------------------------------------------------------- the commands


def _compress_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", required=True, help="the trained run")
    p.add_argument("--checkpoint", default="best", help="best or last (the float model)")
    p.add_argument("--batch-size", type=int, default=8, help="validation batch size")
    p.add_argument("--eval-batches", type=int, default=16,
                   help="validation batches for the perplexity before and after")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing compressed model of the same name")


def add_compress_parsers(sub: Any) -> None:
    """The quantize, prune and low-rank subcommands of ``minilm`` (minilm/cli.py)."""
    p = sub.add_parser("quantize", help="quantize a trained run (writes <out-dir>/<tag>."
                                        "safetensors; sample/eval it with --checkpoint <tag>)")
    _compress_common(p)
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--bits", type=int, default=None, help="gptq: 4 (default) or 8")
    p.add_argument("--group-size", type=int, default=None,
                   help="inputs per scale (int4/gptq default 64; default for int8: one "
                        "scale per output channel)")
    p.add_argument("--calib-batches", type=int, default=8,
                   help="training batches for gptq and w8a8 --act tensor")
    p.add_argument("--act", choices=("token", "tensor"), default="token",
                   help="w8a8 activation scales: per token at run time, or per tensor "
                        "from calibration")
    p.add_argument("--threshold", type=float, default=6.0,
                   help="llm-int8: input columns above this magnitude stay float")
    p.set_defaults(func=_quantize)

    p = sub.add_parser("prune", help="magnitude-prune a trained run (writes pruned-<pct>)")
    _compress_common(p)
    p.add_argument("--sparsity", type=float, required=True, help="fraction of weights zeroed")
    p.add_argument("--scope", choices=("global", "layer"), default="global")
    p.add_argument("--fine-tune-steps", type=int, default=0,
                   help="AdamW steps on the training split with the masks held")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate")
    p.set_defaults(func=_prune)

    p = sub.add_parser("low-rank", help="factorise a trained run's layers by truncated SVD")
    _compress_common(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--rank", type=int, help="rank of every factorised layer")
    g.add_argument("--energy", type=float,
                   help="keep the smallest rank holding this fraction of sum(sigma^2)")
    p.set_defaults(func=_low_rank)


def _compress_kwargs(args: argparse.Namespace) -> dict:
    return {"checkpoint": args.checkpoint, "batch_size": args.batch_size,
            "eval_batches": args.eval_batches, "overwrite": args.overwrite}


def _quantize(args: argparse.Namespace) -> int:
    report = quantize_run(args.out_dir, args.method, args.bits, args.group_size,
                          args.calib_batches, act=args.act, threshold=args.threshold,
                          **_compress_kwargs(args))
    print(format_report(report))
    if "outlier_fraction" in report:
        print(f"  outlier input columns (float path): {100 * report['outlier_fraction']:.2f}%")
    return 0


def _prune(args: argparse.Namespace) -> int:
    report = prune_run(args.out_dir, args.sparsity, args.scope, args.fine_tune_steps, args.lr,
                       **_compress_kwargs(args))
    if "ppl_before_fine_tune" in report:
        print(f"  right after pruning: perplexity {report['ppl_before_fine_tune']:.3f}")
    print(format_report(report))
    return 0


def _low_rank(args: argparse.Namespace) -> int:
    report = low_rank_run(args.out_dir, args.rank, args.energy, **_compress_kwargs(args))
    print(format_report(report))
    return 0
