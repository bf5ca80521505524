"""Post-training quantization end to end: train a small GPT (or load a run), then
quantize its Linear layers four ways and compare size and validation perplexity.

    python examples/quantize_ptq.py [--steps 200] [--eval-batches 8]
    python examples/quantize_ptq.py --run runs/demo      # a trained run instead

Methods (minilm/quant, docs/quantization.md), each applied to a fresh copy of the
float weights with ``quantize_model``; the output head, tied to the token embedding,
stays float:

- int8: weight-only, one scale per output channel (``QuantizedLinear``);
- int4 g64: weight-only, packed two per byte, one scale per group of 64 inputs;
- W8A8: int8 weights and int8 activations with one scale per token, int32 products;
- LLM.int8: W8A8 plus a float path for input columns whose |x| exceeds 6.

No calibration data is needed for any of them (the activation scales are computed per
token at run time). For GPTQ, which does use calibration data, see
examples/quantize_gptq.py.
"""

import argparse
import copy
import time

import numpy as np

import minilm as ml
from minilm import optim
from minilm.data import CharTokenizer, iter_windows, load_corpus, random_windows, split_tokens
from minilm.nn import GPT, GPTConfig
from minilm.quant import LLMInt8Linear, W8A8Linear, quantize_model
from minilm.train.trainer import evaluate_loss


def train_small(steps: int, seed: int) -> tuple:
    """A 2-layer character-level GPT trained ``steps`` AdamW steps on the built-in
    corpus; returns (model, validation tokens)."""
    text = load_corpus()
    tok = CharTokenizer.train(text)
    train, val = split_tokens(np.asarray(tok.encode(text), dtype=np.int64), 0.1)
    ml.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=64, n_layers=2,
                          n_heads=2, d_model=64))
    opt = optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for step in range(steps):
        x, y = random_windows(train, 16, 64, rng)
        _, loss = model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"train step {step:4d}  loss {loss.item():.4f}")
    model.eval()
    return model, val


def load(run: str) -> tuple:
    from minilm.run import load_run, validation_tokens

    model, tok, extra = load_run(run, "best")
    return model, validation_tokens(run, extra, tok)


def model_bytes(model) -> int:
    """Bytes of every parameter and buffer, tied arrays counted once."""
    seen, total = set(), 0
    for _, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t is not None and id(t.data) not in seen:
            seen.add(id(t.data))
            total += t.data.nbytes
    return total


METHODS = {
    "int8": dict(bits=8),
    "int4 g64": dict(bits=4, group_size=64),
    "W8A8 per-token": dict(factory=lambda lin: W8A8Linear.from_linear(lin, "token")),
    "LLM.int8": dict(factory=lambda lin: LLMInt8Linear.from_linear(lin, 6.0)),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="training steps (without --run)")
    p.add_argument("--run", help="quantize this trained run's best checkpoint instead")
    p.add_argument("--eval-batches", type=int, default=8, help="validation batches of 8")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    t_start = time.perf_counter()
    model, val = load(args.run) if args.run else train_small(args.steps, args.seed)
    T = model.config.context_length
    batches = list(iter_windows(val, 8, T))[:args.eval_batches]

    def perplexity(m) -> float:
        return evaluate_loss(m, batches)["ppl"]

    base_bytes, base_ppl = model_bytes(model), perplexity(model)
    print(f"\n{'method':16s} {'size KB':>9s} {'smaller':>8s} {'val ppl':>9s} {'vs float':>9s}"
          f" {'time s':>7s}")
    print(f"{'float32':16s} {base_bytes / 1e3:9.1f} {1:7.2f}x {base_ppl:9.4f} {0:+8.2f}%"
          f" {0:7.2f}")
    for name, kw in METHODS.items():
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        quantize_model(m, **kw)
        seconds = time.perf_counter() - t0
        ppl = perplexity(m)
        size = model_bytes(m)
        extra = ""
        if name == "LLM.int8":
            fr = [x.outlier_fraction_running for x in m.modules() if isinstance(x, LLMInt8Linear)]
            extra = f"  ({100 * float(np.mean(fr)):.2f}% outlier input columns)"
        print(f"{name:16s} {size / 1e3:9.1f} {base_bytes / size:7.2f}x {ppl:9.4f} "
              f"{100 * (ppl / base_ppl - 1):+8.2f}% {seconds:7.2f}{extra}")
    print(f"\n(sizes: every weight, embeddings included; {len(batches)} validation batches; "
          f"{time.perf_counter() - t_start:.0f} s in all)")


if __name__ == "__main__":
    main()
