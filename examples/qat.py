"""Quantization-aware training vs post-training quantization: int4 weights (per output
channel) on a small GPT, after the same fine-tuning budget.

    python examples/qat.py [--steps 250] [--qat-steps 60] [--bits 4]

A small character-level GPT is trained in float for ``--steps`` steps on the built-in
corpus. From those weights, two branches get ``--qat-steps`` more steps each:

- PTQ: fine-tune in float, then round every weight to the int4 grid (RTN per channel);
- QAT: ``prepare_qat`` (minilm/quant/qat.py) puts fake quantization in the forward pass
  (straight-through gradients), fine-tune, then ``convert`` to plain Linears holding the
  dequantized int4 weights.

Both are evaluated by validation perplexity against the fine-tuned float model. The
token embedding / tied head stays in float in both.
"""

import argparse
import time

import numpy as np

import minilm as ml
from minilm import optim
from minilm.data import CharTokenizer, iter_windows, load_corpus, random_windows, split_tokens
from minilm.nn import GPT, GPTConfig
from minilm.quant.gptq import rtn_quantize_model
from minilm.quant.qat import convert, prepare_qat
from minilm.train.trainer import evaluate_loss

CONTEXT = 64


def perplexity(model, tokens, batches=16, batch_size=16):
    """exp(mean next-token cross-entropy) over the first ``batches`` validation batches."""
    return evaluate_loss(model, iter_windows(tokens, batch_size, CONTEXT), batches)["ppl"]


def fit(model, tokens, steps, lr, seed, label):
    """``steps`` AdamW steps on random windows (the same windows for the same seed)."""
    model.train()
    opt = optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        x, y = random_windows(tokens, 16, CONTEXT, rng)
        _, loss = model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            print(f"{label} step {step:4d}  loss {loss.item():.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=250, help="float pre-training steps")
    p.add_argument("--qat-steps", type=int, default=60, help="fine-tuning steps per branch")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (both)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=16, help="validation batches of 16")
    args = p.parse_args()

    text = load_corpus()
    tok = CharTokenizer.train(text)
    tokens = np.asarray(tok.encode(text), dtype=np.int64)
    train, val = split_tokens(tokens, 0.1)
    ml.manual_seed(args.seed)
    config = GPTConfig(vocab_size=tok.vocab_size, context_length=CONTEXT, n_layers=2,
                       n_heads=2, d_model=64)
    model = GPT(config)
    t0 = time.perf_counter()
    fit(model, train, args.steps, 3e-3, args.seed, "float")
    base = {k: v.data.copy() for k, v in model.state_dict().items()}

    # PTQ branch: the same fine-tuning budget in float, then round to the grid
    fit(model, train, args.qat_steps, args.lr, args.seed + 1, "float ft")
    ppl_float = perplexity(model, val, args.eval_batches)
    rtn_quantize_model(model, bits=args.bits)
    ppl_ptq = perplexity(model, val, args.eval_batches)

    # QAT branch: from the same weights, fine-tune through the fake quantization
    qat = GPT(config)
    qat.load_state_dict(base)
    prepare_qat(qat, bits=args.bits, act_bits=None)
    fit(qat, train, args.qat_steps, args.lr, args.seed + 1, "qat")
    convert(qat)
    ppl_qat = perplexity(qat, val, args.eval_batches)

    print(f"\nvalidation perplexity, int{args.bits} weights per channel "
          f"({time.perf_counter() - t0:.0f}s in all)")
    print(f"  float32 (fine-tuned)   {ppl_float:8.4f}")
    for name, ppl in ((f"PTQ int{args.bits} (RTN)", ppl_ptq), (f"QAT int{args.bits}", ppl_qat)):
        print(f"  {name:22s} {ppl:8.4f}   ({100 * (ppl / ppl_float - 1):+.2f}% vs float)")


if __name__ == "__main__":
    main()
