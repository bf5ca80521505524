"""Quality and size of every compression method on a trained GPT run: one table.

    MINILM_BACKEND=numba .venv/bin/python bench/quant.py --run runs/demo [--md out.md]
    MINILM_BACKEND=numba .venv/bin/python bench/quant.py --train DIR [-- train flags]
    .venv/bin/python bench/quant.py --quick          # tiny run, 1 eval batch (CI)

``--run DIR`` uses a finished ``minilm train`` run (its best checkpoint); ``--train DIR``
first trains one there with ``python -m minilm train --config minilm/configs/demo.toml``
(the demo run of ``make demo``; flags after ``--`` go to ``minilm train``). Every row
starts from the same float checkpoint and is evaluated on the same validation windows
(all of them by default, non-overlapping, batch 8), so the perplexities compare:

- float32: the checkpoint itself;
- int8 weight-only per output channel, int4 round-to-nearest (RTN) in groups of 64,
  GPTQ int4 g64 and GPTQ int8 per channel (calibrated on ``--calib-batches`` batches of
  the training split), all stored as ``QuantizedLinear``;
- W8A8 with per-token (dynamic) and per-tensor (static, calibrated) activation scales,
  LLM.int8 (threshold 6, with the fraction of outlier columns seen);
- the same fine-tuning budget (``--ft-steps`` AdamW steps at ``--ft-lr`` on the same
  random training windows) three ways: float then RTN int4 per channel (PTQ),
  ``prepare_qat`` int4 per channel then ``convert`` (QAT), and 50 % global magnitude
  pruning with the masks held; the fine-tuned float model is shown as their reference;
- low-rank (truncated SVD) at energy 0.9 and 0.95.

The output head (tied to the token embedding) stays float everywhere. Columns: bits
per weight of the compressed Linear layers (integers, scales, zero points where the
format has them; bias excluded; in parentheses what the layers hold when that is
more, which no layer does now that a symmetric ``QuantizedLinear`` stores no zero
points), the
bytes they hold, the size of the model written with
``minilm.train.compressed.save_compressed`` (embeddings included), validation
perplexity, its change vs float32, and the compression time (calibration, GPTQ,
fine-tuning included).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUICK_TRAIN = ["--tokenizer", "char", "--n-layers", "1", "--n-heads", "2", "--d-model", "64",
               "--context-length", "32", "--batch-size", "8", "--max-steps", "20",
               "--warmup-steps", "5", "--eval-interval", "20", "--eval-batches", "1",
               "--ckpt-interval", "20", "--log-interval", "10"]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="a trained run directory (its best checkpoint)")
    src.add_argument("--train", metavar="DIR", help="train the demo run in DIR first")
    p.add_argument("--config", default=str(ROOT / "minilm/configs/demo.toml"),
                   help="config for --train")
    p.add_argument("--quick", action="store_true",
                   help="reduced form: a tiny run trained in a temporary folder (unless "
                        "--run), 1 eval batch, few calibration and fine-tuning steps")
    p.add_argument("--eval-batches", type=int, default=None,
                   help="validation batches (default: all non-overlapping windows)")
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--calib-batches", type=int, default=8, help="batches of 8 for GPTQ, W8A8")
    p.add_argument("--ft-steps", type=int, default=200, help="fine-tuning budget (QAT/PTQ/prune)")
    p.add_argument("--ft-lr", type=float, default=2e-4)
    p.add_argument("--ft-batch-size", type=int, default=16)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=None, help="minilm.set_num_threads")
    p.add_argument("--only", default=None,
                   help="comma-separated row keys to run (see ROWS), e.g. int8,gptq4")
    p.add_argument("--md", help="also write the markdown table here")
    p.add_argument("--json", help="also write the rows as JSON here")
    a = p.parse_args(argv)
    if a.quick:
        a.eval_batches = a.eval_batches or 1
        a.calib_batches = min(a.calib_batches, 2)
        a.ft_steps = min(a.ft_steps, 3)
    return a, extra


def train_run(out_dir: str, config: str, flags: list[str]) -> None:
    cmd = [sys.executable, "-m", "minilm", "train", "--config", config, "--out-dir", out_dir,
           "--no-progress", *flags]
    print("# training:", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    print(f"# trained in {time.perf_counter() - t0:.0f} s", flush=True)


# ============================================================================ measuring
class Bench:
    """The run's data and helpers shared by every row."""

    def __init__(self, run: str, a: argparse.Namespace) -> None:
        from minilm.data import iter_windows
        from minilm.run import load_run, run_tokens

        self.run, self.a = run, a
        model, self.tok, self.extra = load_run(run, "best")
        self.config = model.config
        self.train_tokens, self.val_tokens = run_tokens(run, self.extra, self.tok)
        T = self.config.context_length
        batches = list(iter_windows(self.val_tokens, a.eval_batch_size, T))
        self.val_batches = batches[:a.eval_batches] if a.eval_batches else batches
        self.eval_tokens = sum(int(y.size) for _, y in self.val_batches)
        self.calib = self._calibration(a.calib_batches, 8)
        self.tmp = tempfile.mkdtemp(prefix="quant-bench-")
        names = [n for n, _ in self.linears(model)]
        self.linear_names = names

    def fresh(self):
        from minilm.run import load_run

        model = load_run(self.run, "best")[0]
        model.eval()
        return model

    @staticmethod
    def linears(model):
        from minilm.quant import quantizable_linears

        return quantizable_linears(model)

    def _calibration(self, n: int, batch_size: int) -> list:
        """``n`` batches of windows evenly spread over the training split."""
        import numpy as np

        T = self.config.context_length
        tokens = np.asarray(self.train_tokens)
        starts = np.linspace(0, len(tokens) - T - 1, n * batch_size).astype(np.int64)
        return [np.stack([tokens[s:s + T] for s in starts[i * batch_size:(i + 1) * batch_size]])
                .astype(np.int64) for i in range(n)]

    def perplexity(self, model) -> float:
        from minilm.train.trainer import evaluate_loss

        return evaluate_loss(model, self.val_batches)["ppl"]

    def fine_tune(self, model, steps: int, masks=None) -> None:
        """``steps`` AdamW steps, the same windows for every caller (seed 0)."""
        from minilm import optim
        from minilm.data import RandomWindowBatches

        opt = optim.AdamW(model.parameters(), lr=self.a.ft_lr, weight_decay=0.0)
        if masks is not None:
            masks.attach(opt)
        batches = RandomWindowBatches(self.train_tokens, self.a.ft_batch_size,
                                      self.config.context_length, rng=0)
        model.train()
        for _ in range(steps):
            x, y = batches.next_batch()
            _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
        if masks is not None:
            masks.detach()

    def layer_bytes(self, model) -> tuple[int, int, int]:
        """(bytes held, bytes of the format, weights) of the compressed layers: what they
        hold but the bias and pruning masks, against the in x out weights they stand
        for. They would differ if a layer held more than its QuantizedTensor counts (a
        symmetric QuantizedLinear once kept all-zero zero points; it stores none now)."""
        from minilm.quant import QuantizedLinear

        modules = dict(model.named_modules())
        total = weights = fmt = 0
        for name in self.linear_names:
            m = modules[name]
            weights += m.in_features * m.out_features
            held = total
            seen = set()
            for n, t in list(m.named_parameters()) + list(m.named_buffers()):
                last = n.rsplit(".", 1)[-1]
                if t is None or last == "bias" or last.endswith("_mask") or id(t.data) in seen:
                    continue
                seen.add(id(t.data))
                total += int(t.data.nbytes)
            fmt += (m.quantized_tensor().nbytes if isinstance(m, QuantizedLinear)
                    else total - held)
        return total, fmt, weights

    def file_bytes(self, model, tag: str) -> int:
        from minilm.train.compressed import save_compressed

        keep = {k: self.extra[k] for k in ("model_config", "train_config", "tokenizer", "step")
                if k in self.extra}
        keep["method"] = {"name": tag}
        path = Path(self.tmp) / f"{tag}.safetensors"
        save_compressed(path, model, keep)
        size = path.stat().st_size
        path.unlink()
        return size


# ============================================================================ the rows
def row_float(b: Bench) -> dict:
    return {"model": b.fresh()}


def _weight_only(bits: int, group: int | None):
    def row(b: Bench) -> dict:
        from minilm.quant import quantize_model

        m = b.fresh()
        quantize_model(m, bits, group)
        return {"model": m}
    return row


def _gptq(bits: int, group: int | None):
    def row(b: Bench) -> dict:
        from minilm.quant import QuantizedLinear, gptq_quantize_model, quantize_model

        m = b.fresh()
        results = gptq_quantize_model(m, b.calib, bits, group)
        by_id = {id(mod): name for name, mod in m.named_modules()}
        quantize_model(m, factory=lambda lin: QuantizedLinear(results[by_id[id(lin)]]["qweight"],
                                                              lin))
        return {"model": m}
    return row


def _w8a8(act: str):
    def row(b: Bench) -> dict:
        from minilm.quant import W8A8Linear, calibrate, quantize_model

        m = b.fresh()
        quantize_model(m, factory=lambda lin: W8A8Linear.from_linear(lin, act))
        if act == "tensor":
            calibrate(m, b.calib)
        return {"model": m}
    return row


def row_llm_int8(b: Bench) -> dict:
    from minilm.quant import LLMInt8Linear, quantize_model

    m = b.fresh()
    quantize_model(m, factory=lambda lin: LLMInt8Linear.from_linear(lin, 6.0))

    def after(model) -> str:
        fr = [x.outlier_fraction_running for x in model.modules() if isinstance(x, LLMInt8Linear)]
        return f"outlier columns {100 * sum(fr) / len(fr):.2f}% (mean over layers and calls)"
    return {"model": m, "after": after}


def row_float_ft(b: Bench) -> dict:
    m = b.fresh()
    b.fine_tune(m, b.a.ft_steps)
    return {"model": m, "note": f"reference for the next three: {b.a.ft_steps} steps in float"}


def row_ptq4(b: Bench) -> dict:
    from minilm.quant import quantize_model

    m = b.fresh()
    b.fine_tune(m, b.a.ft_steps)
    quantize_model(m, 4, None)
    return {"model": m, "note": "fine-tuned in float, then RTN int4 per channel"}


def row_qat4(b: Bench) -> dict:
    from minilm.quant import convert, prepare_qat, quantize_model

    m = b.fresh()
    prepare_qat(m, bits=4, group_size=None, act_bits=None)
    b.fine_tune(m, b.a.ft_steps)
    convert(m)
    # the converted weights lie on each row's int4 grid; store them as int4 to count
    # the size (the perplexity is measured on the converted model, below)
    sized = b.fresh()
    sized.load_state_dict(m.state_dict())
    quantize_model(sized, 4, None)
    return {"model": m, "sized": sized,
            "note": "prepare_qat int4 per channel + same steps, convert"}


def row_prune(b: Bench) -> dict:
    from minilm.quant import magnitude_prune

    m = b.fresh()
    masks = magnitude_prune(m, b.a.sparsity, "global")
    before = b.perplexity(m)
    b.fine_tune(m, b.a.ft_steps, masks)
    return {"model": m, "note": f"global magnitude; before fine-tuning ppl {before:.3f}; "
                                f"stored dense (a bitmask + values would be "
                                f"{32 * (1 - b.a.sparsity) + 1:.0f} bits)"}


def _low_rank(energy: float):
    def row(b: Bench) -> dict:
        from minilm.quant import low_rank_model

        m = b.fresh()
        rows = low_rank_model(m, energy=energy)
        kept = sum(1 for r in rows if not r.get("replaced"))
        ranks = sorted({r["rank"] for r in rows if r.get("replaced")})
        return {"model": m, "note": f"{len(rows) - kept} layers replaced (ranks "
                                    f"{ranks[0] if ranks else '-'}..{ranks[-1] if ranks else '-'}),"
                                    f" {kept} kept (no saving)"}
    return row


ROWS = [
    ("float", "float32", row_float),
    ("int8", "int8 weight-only, per channel", _weight_only(8, None)),
    ("int4", "int4 RTN, group 64", _weight_only(4, 64)),
    ("gptq4", "GPTQ int4, group 64", _gptq(4, 64)),
    ("gptq8", "GPTQ int8, per channel", _gptq(8, None)),
    ("w8a8", "W8A8, per-token activations", _w8a8("token")),
    ("w8a8s", "W8A8, per-tensor static activations", _w8a8("tensor")),
    ("llmint8", "LLM.int8 (threshold 6)", row_llm_int8),
    ("floatft", "float32 + fine-tune", row_float_ft),
    ("ptq4", "PTQ int4 per channel (after float fine-tune)", row_ptq4),
    ("qat4", "QAT int4 per channel", row_qat4),
    ("prune", "50% unstructured pruning + fine-tune", row_prune),
    ("lr90", "low-rank, energy 0.90", _low_rank(0.90)),
    ("lr95", "low-rank, energy 0.95", _low_rank(0.95)),
]


def measure(b: Bench, keys: list[str] | None) -> list[dict]:
    out = []
    ref = ft_ref = None
    for key, label, fn in ROWS:
        if keys and key not in keys and key != "float":
            continue
        if key == "prune":
            label = f"{round(100 * b.a.sparsity)}% unstructured pruning + fine-tune"
        t0 = time.perf_counter()
        r = fn(b)
        seconds = time.perf_counter() - t0
        m = r["model"]
        ppl = b.perplexity(m)
        note = r.get("note", "")
        if "after" in r:
            note = r["after"](m)
        sized = r.get("sized", m)
        nbytes, fmt, weights = b.layer_bytes(sized)
        row = {"key": key, "method": label, "bits_per_weight": 8 * fmt / weights,
               "held_bits_per_weight": 8 * nbytes / weights, "layer_bytes": nbytes,
               "file_bytes": b.file_bytes(sized, key), "ppl": ppl,
               "seconds": 0.0 if key == "float" else seconds, "note": note}
        if ref is None:
            ref = ppl
        row["delta_pct"] = 100 * (ppl / ref - 1)
        if key == "floatft":
            ft_ref = ppl
        elif key in ("ptq4", "qat4", "prune") and ft_ref is not None:
            row["delta_ft_pct"] = 100 * (ppl / ft_ref - 1)
            row["note"] = f"{row['delta_ft_pct']:+.2f}% vs float32 + fine-tune; " + row["note"]
        out.append(row)
        print(f"# {label}: ppl {ppl:.4f} ({row['delta_pct']:+.2f}%), "
              f"{row['bits_per_weight']:.2f} bits/weight, {seconds:.1f} s", flush=True)
    return out


def table(rows: list[dict]) -> str:
    lines = ["| method | bits/weight (held) | Linear weights MB | file MB | val ppl "
             "| Δ vs float32 | time s | notes |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        held = r["held_bits_per_weight"]
        bits = f"{r['bits_per_weight']:.2f}" + (f" ({held:.2f})"
                                                if abs(held - r["bits_per_weight"]) > 1e-9 else "")
        lines.append(f"| {r['method']} | {bits} | "
                     f"{r['layer_bytes'] / 1e6:.3f} | {r['file_bytes'] / 1e6:.3f} | "
                     f"{r['ppl']:.4f} | {r['delta_pct']:+.2f}% | {r['seconds']:.1f} | "
                     f"{r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    a, train_flags = parse_args(argv)
    import minilm

    if a.threads:
        minilm.set_num_threads(a.threads)
    run = a.run
    if run is None:
        if a.train:
            run = a.train
            train_run(run, a.config, train_flags)
        elif a.quick:
            run = os.path.join(tempfile.mkdtemp(prefix="quant-bench-run-"), "run")
            train_run(run, a.config, QUICK_TRAIN + train_flags)
        else:
            sys.exit("give --run DIR, --train DIR or --quick")
    b = Bench(run, a)
    c = b.config
    n_params = sum(p.data.size for p in b.fresh().parameters())
    head = (f"run {run}: GPT d_model {c.d_model}, {c.n_layers} layers, {c.n_heads} heads, "
            f"context {c.context_length}, vocab {c.vocab_size}, {n_params / 1e6:.2f} M parameters "
            f"(step {b.extra.get('step')}); backend {minilm.current_backend().name}; "
            f"validation: {len(b.val_batches)} batches, {b.eval_tokens} target tokens; "
            f"calibration {a.calib_batches} x 8 windows; fine-tuning {a.ft_steps} steps at lr "
            f"{a.ft_lr}, batch {a.ft_batch_size}")
    print("#", head, flush=True)
    keys = a.only.split(",") if a.only else None
    rows = measure(b, keys)
    text = table(rows)
    print()
    print(text)
    if a.md:
        Path(a.md).write_text(head + "\n\n" + text + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps({"header": head, "rows": rows}, indent=1))
    for r in rows:
        if not math.isfinite(r["ppl"]):
            sys.exit(f"{r['method']}: perplexity is not finite")
    return rows


if __name__ == "__main__":
    os.environ.setdefault("MINILM_BACKEND", "numba")  # before minilm is imported
    main()
