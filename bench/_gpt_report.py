"""The report of ``bench/gpt_train.py``: the GEMM peak probes (NumPy sgemm on the CPU,
cuBLAS through CuPy on the GPU), one summary row per worker, and the printed table."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any


def linear_weights(a: argparse.Namespace) -> int:
    """N_lin: the entries of every weight matrix a token is multiplied by."""
    d, f = a.d_model, a.d_ff
    return a.layers * (4 * d * d + 2 * d * f) + a.vocab * d


def flops_per_step(a: argparse.Namespace) -> float:
    """3 x (2 B T N_lin + L * 4 B T^2 d): see gpt_train.py's docstring."""
    tokens = a.batch * a.context
    forward = 2 * tokens * linear_weights(a) + a.layers * 4 * a.batch * a.context ** 2 * a.d_model
    return 3.0 * forward


# ---------------------------------------------------------------------------- GEMM peaks


class SgemmProbe:
    """GFLOP/s of an n^3 matmul into a preallocated output, sampled on demand: NumPy's
    BLAS in the run's dtype (sgemm / dgemm, n = 2048) on the CPU; with ``device`` a
    cuBLAS GEMM through CuPy (n = 8192), in float16 for the autocast runs (bfloat16
    GEMMs run at the float16 rate on the GPUs this targets; CuPy has no bfloat16)."""

    def __init__(self, dtype: str = "float32", device: bool = False, amp: str = "off") -> None:
        import numpy as np

        self.device = device
        if device:
            import cupy as xp

            n = 8192
            dtype = "float16" if amp != "off" else dtype
            self.name = {"float16": "cuBLAS hgemm", "float32": "cuBLAS sgemm",
                         "float64": "cuBLAS dgemm"}[dtype]
            self.sync = xp.cuda.Device().synchronize
        else:
            xp, n = np, 2048
            self.name = "sgemm" if dtype == "float32" else "dgemm"
            self.sync = lambda: None
        rng = np.random.default_rng(0)
        self.xp, self.n, self.dtype = xp, n, dtype
        self.a = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
        self.b = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
        self.c = xp.empty((n, n), dtype=dtype)
        self.samples: list = []
        xp.matmul(self.a, self.b, out=self.c)  # warm up (thread pool, cuBLAS handle)
        self.sync()

    def sample(self, k: int = 2) -> None:
        for _ in range(k):
            self.sync()
            t0 = time.perf_counter()
            self.xp.matmul(self.a, self.b, out=self.c)
            self.sync()
            self.samples.append(2 * self.n ** 3 / (time.perf_counter() - t0) / 1e9)

    def close(self) -> None:
        """Free the device arrays (the workers' memory figures are their own anyway)."""
        self.a = self.b = self.c = None

    @property
    def gflops(self) -> float:
        return statistics.median(self.samples)


# ---------------------------------------------------------------------------- rows


def summarize(info: dict, times: list, a: argparse.Namespace, peak: float) -> dict:
    fwd, bwd, opt = (statistics.median(t[j] for t in times) for j in range(3))
    step = statistics.median(sum(t) for t in times)
    gflops = flops_per_step(a) / step / 1e9
    return {
        "label": info["label"], "kind": info.get("kind", "minilm"), "params": info["params"],
        "tokens_per_s": a.batch * a.context / step,
        "step_ms": step * 1e3, "forward_ms": fwd * 1e3, "backward_ms": bwd * 1e3,
        "optimizer_ms": opt * 1e3, "first_step_ms": info["first_step_s"] * 1e3,
        "gflops": gflops, "of_peak": gflops / peak, "peak_rss_mib": info.get("peak_rss_mib"),
        "rss_start_mib": info["rss_start_mib"], "loss_step1": info["loss_step1"],
        "loss_last": info.get("loss_last"), "steps": len(times),
        "fastest_step_ms": min(sum(t) for t in times) * 1e3,
        "peak_gpu_mib": info.get("peak_gpu_mib"), "reserved_gpu_mib": info.get("reserved_gpu_mib"),
        "gpu_mem_source": info.get("gpu_mem_source"), "gpu_name": info.get("gpu_name"),
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


def _ratio(x: Any, y: Any) -> str:
    return f"{x / y:.2f}x" if x is not None and y else "-"


def print_report(a: argparse.Namespace, rows: list, probe: SgemmProbe, extra: str) -> None:
    tokens = a.batch * a.context
    gpu = a.backend == "cupy"
    print(f"machine: {machine_line()}{extra}")
    if gpu:
        print(f"GPU: {rows[0].get('gpu_name') or '?'}")
    print(f"config: {a.config}: {a.layers} layers, {a.heads} heads, d_model {a.d_model}, d_ff "
          f"{a.d_ff}, context {a.context}, batch {a.batch}, vocab {a.vocab}, {a.dtype}"
          f"{'' if a.amp == 'off' else f' with {a.amp} autocast'}, tied head, AdamW (wd 0.1 "
          f"on matrices), {a.threads} threads")
    print(f"params: {rows[0]['params']:,}; linear weights N_lin {linear_weights(a):,}; "
          f"FLOPs/step {flops_per_step(a) / 1e9:.1f} G ({flops_per_step(a) / tokens / 1e6:.1f} "
          "MFLOP/token, full T x T attention)")
    print(f"timed: {a.steps} steps after {a.warmup} warmup, medians; frameworks alternate "
          f"every {a.block} steps, each in its own process"
          + ("; every part between device synchronisations" if gpu else ""))
    lo, hi = min(probe.samples), max(probe.samples)
    what = (f"{probe.n}^3 {probe.dtype} cupy.matmul" if probe.device
            else f"2048^3 {a.dtype} np.matmul")
    print(f"{probe.name} peak: {probe.gflops:,.1f} GFLOP/s ({what}, median of "
          f"{len(probe.samples)} samples through the run, range {lo:,.0f}-{hi:,.0f})\n")
    fmt = [("tokens/s", "tokens_per_s", "{:,.0f}"), ("ms / step", "step_ms", "{:.1f}"),
           ("fastest step ms", "fastest_step_ms", "{:.1f}"),
           ("  forward", "forward_ms", "{:.1f}"), ("  backward", "backward_ms", "{:.1f}"),
           ("  optimizer", "optimizer_ms", "{:.1f}"), ("first step ms", "first_step_ms", "{:.0f}"),
           ("GFLOP/s", "gflops", "{:,.1f}"), (f"of {probe.name} peak", "of_peak", "{:.0%}")]
    if gpu:
        fmt += [("peak GPU MiB", "peak_gpu_mib", "{:,.0f}"),
                ("GPU MiB reserved", "reserved_gpu_mib", "{:,.0f}")]
    fmt += [("peak RSS MiB", "peak_rss_mib", "{:.0f}"), ("RSS at start MiB", "rss_start_mib", "{:.0f}"),
            ("loss at step 1", "loss_step1", "{:.6f}"), ("loss at last step", "loss_last", "{:.6f}")]
    width = max(14, *(len(r["label"]) + 2 for r in rows))
    print(f"{'':20s}" + "".join(f"{r['label']:>{width}s}" for r in rows))
    for title, key, f in fmt:
        cells = "".join(f"{f.format(r[key]) if r[key] is not None else '-':>{width}s}"
                        for r in rows)
        print(f"{title:20s}{cells}")
    if gpu:
        print("\npeak GPU memory: " + "; ".join(f"{r['label']}: {r['gpu_mem_source'] or '-'}"
                                                for r in rows))
    torches = [r for r in rows if r["kind"] == "torch"]
    if torches:
        print()
    for m in (r for r in rows if r["kind"] == "minilm"):
        for t in torches:
            mem = (f"peak GPU memory {_ratio(m['peak_gpu_mib'], t['peak_gpu_mib'])}" if gpu else
                   f"peak RSS {_ratio(m['peak_rss_mib'], t['peak_rss_mib'])}, RSS growth "
                   f"{(m['peak_rss_mib'] - m['rss_start_mib']):.0f} vs "
                   f"{(t['peak_rss_mib'] - t['rss_start_mib']):.0f} MiB")
            print(f"{m['label']} / {t['label']}: tokens/s "
                  f"{m['tokens_per_s'] / t['tokens_per_s']:.2f}x, {mem}")
    base = next((r for r in rows if "@" in r["label"]), None)
    if base is not None:
        print(f"{rows[0]['label']} / {base['label']}: tokens/s "
              f"{rows[0]['tokens_per_s'] / base['tokens_per_s']:.2f}x (medians), "
              f"{base['fastest_step_ms'] / rows[0]['fastest_step_ms']:.2f}x (fastest steps: "
              "the least disturbed on a shared machine)")
