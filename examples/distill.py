"""Knowledge distillation: a small student GPT learns from a larger trained teacher
(soft targets at temperature T plus the usual hard-label cross-entropy), compared with
the same student trained on the hard labels alone for the same steps.

    python examples/distill.py [--steps 150] [--teacher-steps 300] [--T 2.0] [--alpha 0.5]

Loss: alpha T^2 KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) CE(z_s, y)
(minilm.functional.distillation_loss; docs/compression.md).
"""

import argparse

import numpy as np

import minilm as ml
from minilm import optim
from minilm.data import CharTokenizer, load_corpus, random_windows
from minilm.nn import GPT, GPTConfig
from minilm.train.distill import distill, teacher_kl
from minilm.train.trainer import evaluate_loss

CONTEXT, BATCH = 32, 16


def batches(tokens, n, seed):
    rng = np.random.default_rng(seed)
    return (random_windows(tokens, BATCH, CONTEXT, rng) for _ in range(n))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150, help="student steps (each run)")
    p.add_argument("--teacher-steps", type=int, default=None,
                   help="teacher training steps (default: 2 x --steps)")
    p.add_argument("--T", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--eval-batches", type=int, default=8, help="validation batches")
    args = p.parse_args()
    teacher_steps = args.teacher_steps if args.teacher_steps is not None else 2 * args.steps

    text = load_corpus()
    tok = CharTokenizer.train(text)
    tokens = np.asarray(tok.encode(text), dtype=np.int64)
    split = int(0.9 * len(tokens))
    train_tokens, val_tokens = tokens[:split], tokens[split:]
    val = list(batches(val_tokens, args.eval_batches, 1))

    def gpt(n_layers, d_model, seed):
        ml.manual_seed(seed)
        return GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=CONTEXT,
                             n_layers=n_layers, n_heads=4, d_model=d_model))

    teacher = gpt(2, 64, 0)
    opt = optim.AdamW(teacher.parameters(), lr=3e-3, weight_decay=0.01)
    for x, y in batches(train_tokens, teacher_steps, 0):
        _, loss = teacher(ml.tensor(x), ml.tensor(y))
        loss.backward()
        optim.clip_grad_norm_(list(teacher.parameters()), 1.0)
        opt.step()
        opt.zero_grad()

    results = {}
    for name, alpha in (("student, hard labels only", 0.0),
                        (f"student, distilled (T={args.T}, alpha={args.alpha})", args.alpha)):
        student = gpt(1, 32, 1)  # the same initial student for both runs
        s_opt = optim.AdamW(student.parameters(), lr=3e-3, weight_decay=0.01)
        distill(teacher, student, batches(train_tokens, args.steps, 2), s_opt, args.steps,
                T=args.T, alpha=alpha)
        results[name] = (student.num_parameters(), evaluate_loss(student, val)["ppl"],
                         teacher_kl(teacher, student, val))
    print(f"{'model':<40}  {'params':>7}  val ppl  KL to teacher")
    print(f"{'teacher (' + str(teacher_steps) + ' steps)':<40}  {teacher.num_parameters():>7}  "
          f"{evaluate_loss(teacher, val)['ppl']:7.3f}  {0.0:13.4f}")
    for name, (n, ppl, kl) in results.items():
        print(f"{name:<40}  {n:>7}  {ppl:7.3f}  {kl:13.4f}")


if __name__ == "__main__":
    main()
