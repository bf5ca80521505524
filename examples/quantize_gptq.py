"""GPTQ vs round-to-nearest: int4 weights with group size 64 on a small GPT, compared by
validation perplexity (and the layer-output error GPTQ minimises).

    python examples/quantize_gptq.py [--steps 300] [--run RUN_DIR] [--bits 4] [--group-size 64]

Without ``--run`` it first trains a small character-level GPT on the built-in corpus for
``--steps`` steps; with ``--run`` it loads that trained run (``minilm train --out-dir``).
Then from the same float weights: RTN (each weight rounded to its group's grid) and GPTQ
(minilm/quant/gptq.py: column by column, the rounding error of each column pushed onto
the columns not yet quantized through the inverse Hessian of the layer's calibration
inputs, layer after layer). The token embedding / tied head stays in float.
"""

import argparse
import time

import numpy as np

import minilm as ml
from minilm import optim
from minilm.data import CharTokenizer, iter_windows, load_corpus, random_windows, split_tokens
from minilm.nn import GPT, GPTConfig
from minilm.quant.gptq import gptq_quantize_model, rtn_quantize_model
from minilm.train.trainer import evaluate_loss


def perplexity(model, tokens, context, batches=16, batch_size=16):
    """exp(mean next-token cross-entropy) over the first ``batches`` validation batches."""
    return evaluate_loss(model, iter_windows(tokens, batch_size, context), batches)["ppl"]


def trained_model(args):
    """(model, train tokens, val tokens, context): a loaded run, or one trained here."""
    if args.run:
        from minilm.run import load_run
        model, tok, _ = load_run(args.run)
        text = load_corpus()
        tokens = np.asarray(tok.encode(text), dtype=np.int64)
        train, val = split_tokens(tokens, 0.1)
        return model, train, val, model.config.context_length
    text = load_corpus()
    tok = CharTokenizer.train(text)
    tokens = np.asarray(tok.encode(text), dtype=np.int64)
    train, val = split_tokens(tokens, 0.1)
    ml.manual_seed(args.seed)
    context = 64
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=context, n_layers=2,
                          n_heads=2, d_model=64))
    opt = optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for step in range(args.steps):
        x, y = random_windows(train, 16, context, rng)
        _, loss = model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    print(f"trained {args.steps} steps in {time.perf_counter() - t0:.1f}s")
    return model, train, val, context


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="training steps (without --run)")
    p.add_argument("--run", default=None, help="a trained run directory to load instead")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--calib-batches", type=int, default=8, help="batches of 8 windows")
    p.add_argument("--act-order", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=16, help="validation batches of 16")
    args = p.parse_args()

    model, train, val, context = trained_model(args)
    float_state = {k: v.data.copy() for k, v in model.state_dict().items()}
    ppl_float = perplexity(model, val, context, args.eval_batches)
    rng = np.random.default_rng(args.seed + 1)
    calib = [random_windows(train, 8, context, rng)[0] for _ in range(args.calib_batches)]
    g = args.group_size

    rtn_quantize_model(model, bits=args.bits, group_size=g)
    ppl_rtn = perplexity(model, val, context, args.eval_batches)

    model.load_state_dict(float_state)
    t0 = time.perf_counter()
    infos = gptq_quantize_model(model, calib, bits=args.bits, group_size=g,
                                act_order=args.act_order)
    seconds = time.perf_counter() - t0
    ppl_gptq = perplexity(model, val, context, args.eval_batches)

    print(f"\nlayer-output error ||XΔWᵀ||²/n on the calibration inputs (int{args.bits}, g{g}):")
    for name, info in infos.items():
        print(f"  {name:24s} gptq {info['error']:.3e}   rtn {info['rtn_error']:.3e}   "
              f"ratio {info['error'] / info['rtn_error']:.2f}")
    print(f"\nvalidation perplexity (GPTQ calibration {seconds:.1f}s)")
    print(f"  float32         {ppl_float:8.4f}")
    for name, ppl in ((f"RTN  int{args.bits} g{g}", ppl_rtn), (f"GPTQ int{args.bits} g{g}", ppl_gptq)):
        print(f"  {name:15s} {ppl:8.4f}   ({100 * (ppl / ppl_float - 1):+.2f}% vs float)")


if __name__ == "__main__":
    main()
