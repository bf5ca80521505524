"""The hot kernels of a GPT training step, timed on every CPU backend side by side.

    .venv/bin/python bench/ops.py [--threads 2] [--repeats 20] [--backends numpy,numba]

Each row is one backend kernel (what ``minilm.functional`` calls for the op) at the
shapes of the reference GPT config (batch 16, context 128, d_model 256, 4 heads,
d_ff 1024, vocab 96): forward and backward time, the speedup over the NumPy reference,
and the largest difference from the reference's result (a fused kernel must agree to
float32 rounding). Times are medians of ``--repeats`` calls; the backends take turns,
a few calls each, so that load from other users of the machine hits them alike. The
first call of each backend is not timed (Numba loads or compiles its kernels then:
see "first calls" at the end).

Matmul is not here: every backend runs it on the same BLAS (see bench/gpt_train.py
for its share of a step and the machine's sgemm peak).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# The backends take turns (numpy a few calls, numba a few calls, ... TURNS times), so
# that load from other users of the machine falls on them alike; not call by call,
# because the thread pools of BLAS and Numba spin for a while after each parallel call
# and would then slow down each other's next call.
TURNS = 4


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="BLAS / Numba threads")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per kernel")
    p.add_argument("--backends", default=None,
                   help="comma-separated CPU backends (default: every available one)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=96)
    return p.parse_args()


def cases(np, a: argparse.Namespace) -> list:
    """(name, shape text, make_inputs, forward(be, inp), backward(be, inp, fwd) or None).
    ``make_inputs()`` returns the inputs (fresh ones for kernels that update in place);
    ``backward`` gets what the forward returned (saved softmax, mean/rstd, logp)."""
    rng = np.random.default_rng(0)
    B, T, D, H = a.batch, a.context, a.d_model, a.heads
    N, F, V = B * T, 4 * a.d_model, a.vocab
    f32 = np.float32

    def randn(*shape):
        return rng.standard_normal(shape, dtype=f32)

    rows, hidden, scores = randn(N, D), randn(N, F), randn(B, H, T, T)
    g_rows, g_hidden, g_scores = randn(N, D), randn(N, F), randn(B, H, T, T)
    w, b = randn(D), randn(D)
    causal = np.tril(np.ones((T, T), dtype=bool))
    logits, targets = randn(N, V), rng.integers(0, V, N)
    g_loss = np.full(N, 1.0 / N, dtype=f32)
    ids, g_emb = rng.integers(0, V, (B, T)), randn(B, T, D)
    qkv = randn(B, T, 3, H, D // H)  # q, k, v as the strided views the model passes
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    g_att = randn(B, T, H, D // H).transpose(0, 2, 1, 3)
    n_params = 3_216_896  # the reference GPT's parameter count
    scale = 1.0 / (D // H) ** 0.5

    def fixed(*xs):
        return lambda: xs

    def ln_bwd(be, inp, fwd):
        _, mean, rstd = fwd
        return be.layer_norm_backward(inp[1], inp[0], w, mean, rstd)

    def rms_bwd(be, inp, fwd):
        return be.rms_norm_backward(inp[1], inp[0], w, fwd[1])

    def ce_bwd(be, inp, fwd):
        return be.cross_entropy_backward(fwd[2], inp[1], g_loss, -100, 0.0, None)

    def attn_bwd(be, inp, fwd):
        _, p, drop = fwd
        return be.attention_backward(g_att, q, k, v, p, drop, scale)

    def adam_inputs():
        r = np.random.default_rng(1)
        p, g = r.standard_normal(n_params, dtype=f32), r.standard_normal(n_params, dtype=f32)
        return p, g, np.zeros_like(p), np.zeros_like(p)

    def adam(be, inp):
        p, g, m, v2 = inp
        be.adam_step(p, g, m, v2, 1, 1e-3, 0.9, 0.95, 1e-8, 0.1, True)
        return p

    return [
        ("softmax", f"({N}, {D})", fixed(rows, g_rows),
         lambda be, i: be.softmax(i[0], -1),
         lambda be, i, y: be.softmax_backward(y, i[1], -1)),
        ("log_softmax", f"({N}, {D})", fixed(rows, g_rows),
         lambda be, i: be.log_softmax(i[0], -1),
         lambda be, i, y: be.log_softmax_backward(y, i[1], -1)),
        ("cross_entropy (log_softmax + nll)", f"({N}, {V})", fixed(logits, targets),
         lambda be, i: be.cross_entropy(i[0], i[1], -100, 0.0, None), ce_bwd),
        ("layer_norm", f"({N}, {D})", fixed(rows, g_rows),
         lambda be, i: be.layer_norm(i[0], w, b, 1e-5), ln_bwd),
        ("rms_norm", f"({N}, {D})", fixed(rows, g_rows),
         lambda be, i: be.rms_norm(i[0], w, 1e-6), rms_bwd),
        ("gelu (exact)", f"({N}, {F})", fixed(hidden, g_hidden),
         lambda be, i: be.gelu(i[0]), lambda be, i, _: be.gelu_backward(i[0], i[1])),
        ("gelu (tanh)", f"({N}, {F})", fixed(hidden, g_hidden),
         lambda be, i: be.gelu(i[0], "tanh"),
         lambda be, i, _: be.gelu_backward(i[0], i[1], "tanh")),
        ("attention softmax (causal)", f"({B}, {H}, {T}, {T})", fixed(scores, g_scores),
         lambda be, i: be.masked_softmax(i[0], causal, -1),
         lambda be, i, p: be.softmax_backward(p, i[1], -1)),
        ("attention (causal, incl. GEMMs)", f"({B}, {H}, {T}, {D // H})", fixed(),
         lambda be, i: be.attention(q, k, v, causal, None, scale, 0.0), attn_bwd),
        ("dropout mask p=0.1", f"({N}, {F})", fixed(),
         lambda be, i: be.dropout_mask((N, F), 0.1, f32), None),
        ("embedding backward", f"ids ({B}, {T}), V={V}", fixed(ids, g_emb),
         lambda be, i: be.embedding_backward(i[0], i[1], V), None),
        ("adamw step (in place)", f"({n_params:,},)", adam_inputs, adam, None),
    ]


def first_array(r):
    """The main output of a kernel result (tuples: the first array)."""
    while isinstance(r, (tuple, list)):
        r = r[0]
    return r


def main() -> None:
    a = parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    import platform

    import numpy as np

    import minilm as ml

    if hasattr(ml, "set_num_threads"):
        ml.set_num_threads(a.threads)
    names = a.backends.split(",") if a.backends else ml.available_backends()
    backends = {}
    for name in names:
        try:
            be = ml.get_backend(name)
        except ImportError as exc:
            print(f"({name}: {exc})")
            continue
        if be.xp is np:  # CPU backends only: the GPU has bench/ of its own
            backends[name] = be
    if "numpy" not in backends:
        backends = {"numpy": ml.get_backend("numpy"), **backends}
    print(f"python {platform.python_version()}, numpy {np.__version__}, {a.threads} threads, "
          f"backends {', '.join(backends)}; median of {a.repeats} calls, float32\n")

    head = f"{'kernel':34s} {'shape':22s} {'backend':8s} {'fwd us':>10s} {'bwd us':>10s} " \
           f"{'fwd x':>6s} {'bwd x':>6s} {'max |diff|':>10s}"
    print(head)
    print("-" * len(head))
    firsts: dict = {name: 0.0 for name in backends}
    for name, shape, make, fwd, bwd in cases(np, a):
        usable = dict(backends)
        times: dict = {n: ([], []) for n in usable}
        results = {}
        for n, be in usable.items():  # first calls: compile / load, and the results
            t0 = time.perf_counter()
            inp = make()
            r = fwd(be, inp)
            results[n] = first_array(r)
            if bwd is not None:
                bwd(be, inp, r)
            firsts[n] += time.perf_counter() - t0
        per_turn = -(-a.repeats // TURNS)
        for _ in range(TURNS):
            for n, be in usable.items():  # the backends take turns, a few calls each
                for _ in range(per_turn):
                    inp = make()
                    t0 = time.perf_counter()
                    r = fwd(be, inp)
                    t1 = time.perf_counter()
                    times[n][0].append(t1 - t0)
                    if bwd is not None:
                        bwd(be, inp, r)
                        times[n][1].append(time.perf_counter() - t1)
        ref = {j: statistics.median(times["numpy"][j]) if times["numpy"][j] else None
               for j in (0, 1)}
        for n in usable:
            med = [statistics.median(t) * 1e6 if t else None for t in times[n]]
            cells = []
            for j in (0, 1):
                cells.append(f"{med[j]:10.0f}" if med[j] is not None else f"{'-':>10s}")
            for j in (0, 1):
                if med[j] is None or ref[j] is None:
                    cells.append(f"{'-':>6s}")
                else:
                    cells.append(f"{ref[j] * 1e6 / med[j]:6.2f}")
            if n == "numpy":
                diff = ""
            elif "dropout" in name:  # random: each backend draws its own numbers
                diff = "random"
            else:
                err = np.abs(results[n].astype(np.float64) - results["numpy"])
                diff = f"{float(np.max(err)):10.1e}"
            print(f"{name:34s} {shape:22s} {n:8s} {cells[0]} {cells[1]} {cells[2]} {cells[3]} "
                  f"{diff:>10s}")
    print("\nfirst calls (untimed above; Numba loads its cached kernels or compiles them here): "
          + ", ".join(f"{n} {t:.2f} s" for n, t in firsts.items()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
