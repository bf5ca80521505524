"""A GAN on a 2-D ring of 8 Gaussians: per epoch the discriminator / generator losses,
the number of modes the generator covers, and a scatter plot of its samples.

    python examples/gan_2d.py [--epochs 20] [--steps 100] [--seed 0] [--out runs/gan_2d]
    python examples/gan_2d.py --quick

D minimises BCE(D(x), 1) + BCE(D(G(z)), 0); G the non-saturating BCE(D(G(z)), 1).
A mode is covered if >= 1/32 of 1000 samples lie within 3 sigma of its centre
(minilm.train.gan; docs/workflows.md, "GAN").
"""

import argparse
import os
import time

import numpy as np

from minilm.train import gan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps", type=int, default=100, help="alternations per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam lr of both nets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="6 epochs of 100 steps, lr 5e-3")
    p.add_argument("--out", default="runs/gan_2d", help="folder for the PNG plots")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.batch_size, args.lr = 6, 64, 5e-3

    plt = None
    if not args.no_plots:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        os.makedirs(args.out, exist_ok=True)
    centres = gan.ring_centres()
    real = gan.ring_of_gaussians(1000, rng=np.random.default_rng(args.seed + 1))

    def report(epoch: int, h: gan.GANHistory) -> None:
        print(f"{epoch:5d}  {h.loss_d[-1]:7.3f}  {h.loss_g[-1]:7.3f}  {h.covered[-1]:5d}/8  "
              f"{h.quality[-1]:7.3f}", flush=True)
        if plt is not None:
            fig, ax = plt.subplots(figsize=(4, 4))
            ax.scatter(real[:, 0], real[:, 1], s=2, c="0.75", label="data")
            xs = h.samples[-1]
            ax.scatter(xs[:, 0], xs[:, 1], s=2, c="C3", label="G(z)")
            ax.scatter(centres[:, 0], centres[:, 1], marker="x", c="k", s=30)
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_title(f"epoch {epoch}: {h.covered[-1]}/8 modes")
            ax.legend(loc="upper right", fontsize=7)
            fig.savefig(os.path.join(args.out, f"samples_epoch{epoch:03d}.png"), dpi=80)
            plt.close(fig)

    print("epoch      L_D      L_G  modes  quality")
    t0 = time.time()
    _, _, h = gan.train_gan(epochs=args.epochs, steps_per_epoch=args.steps,
                            batch_size=args.batch_size, lr_g=args.lr, lr_d=args.lr,
                            seed=args.seed, callback=report)
    print(f"final: {h.covered[-1]}/8 modes covered, quality {h.quality[-1]:.3f}, "
          f"best {max(h.covered)}/8 at epoch {int(np.argmax(h.covered)) + 1}; "
          f"{time.time() - t0:.1f} s")
    if plt is not None:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(range(1, args.epochs + 1), h.loss_d, label="L_D")
        ax.plot(range(1, args.epochs + 1), h.loss_g, label="L_G")
        ax2 = ax.twinx()
        ax2.plot(range(1, args.epochs + 1), h.covered, "k--", label="modes")
        ax.set_xlabel("epoch")
        ax.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "losses.png"), dpi=80)
        plt.close(fig)
        print(f"plots in {args.out}/")


if __name__ == "__main__":
    main()
