"""Multi-task learning on code vs prose: a shared embedding + LSTM trunk with a
next-character LM head and a "code or prose?" head, trained four ways.

    python examples/multitask.py [--steps 300] [--quick]

- single-task LM (only L_lm), single-task classifier (only L_cls)
- fixed weights  L = λ_lm L_lm + λ_cls L_cls   (--weights, default 1 1)
- uncertainty weighting  L = Σ_k ½ exp(-s_k) L_k + ½ s_k, s_k = log σ_k² learned

Prints the held-out per-task metrics (LM loss in nats/char, classification loss and
accuracy), the final effective task weights and the training time.
"""

import argparse

from minilm.train.multitask import MultiTaskConfig, code_prose_data, train_multitask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--weights", type=float, nargs=2, default=(1.0, 1.0))
    p.add_argument("--quick", action="store_true", help="60 steps")
    args = p.parse_args()
    steps = 60 if args.quick else args.steps
    cfg = MultiTaskConfig(steps=steps, lr=args.lr, weights=tuple(args.weights))
    data = code_prose_data(cfg.context, cfg.n_eval, seed=cfg.seed)
    print(f"{steps} steps, batch {cfg.batch} windows of {cfg.context} chars, LSTM {cfg.hidden}, "
          f"Adam lr {cfg.lr}; held-out: {cfg.n_eval} windows (half prose, half code)")
    print(f"{'run':22s} {'LM loss':>8s} {'cls loss':>9s} {'cls acc':>8s} {'time s':>7s}  weights")
    names = {"lm": "single-task LM", "cls": "single-task classify", "fixed": "fixed weights",
             "uncertainty": "uncertainty weighting"}
    for mode, name in names.items():
        r = train_multitask(mode, cfg, data)
        e = r["eval"]
        lm = f"{e['lm_loss']:8.4f}" if mode != "cls" else f"{'-':>8s}"
        cl = f"{e['cls_loss']:9.4f} {e['cls_acc']:8.3f}" if mode != "lm" else f"{'-':>9s} {'-':>8s}"
        w = "" if r["weights"] is None else " ".join(f"{v:.3f}" for v in r["weights"])
        print(f"{name:22s} {lm} {cl} {r['time_s']:7.1f}  {w}")


if __name__ == "__main__":
    main()
