"""Training commands other than ``minilm train`` with ``--backend cupy`` on the CuPy
stand-in (``fake_gpu``): every micro-batch reaches the model on the device, and the run
ends with its files written from host copies."""

import json

import numpy as np
import pytest
from fake_cupy import DeviceArray

import minilm as ml
from minilm.cli import main
from minilm.nn.module import Module
from minilm.pretrain import load_mlm_run

pytestmark = pytest.mark.usefixtures("fake_gpu")

TEXT = ("The quick brown fox jumps over the lazy dog. Python is a programming language "
        "with classes, functions and modules. A function returns a value to its caller.")


@pytest.fixture
def devices(monkeypatch):
    """The device of the first parameter of every module called at top level."""
    seen = set()
    call = Module.__call__

    def spy(self, *args, **kw):
        p = next(iter(self.parameters()), None)
        if p is not None:
            seen.add((type(self).__name__, p.device, type(p.data) is DeviceArray))
        return call(self, *args, **kw)

    monkeypatch.setattr(Module, "__call__", spy)
    return seen


def test_pretrain_mlm_with_backend_cupy(tmp_path, devices):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join([TEXT] * 30))
    out = tmp_path / "mlm"
    assert main(["pretrain-mlm", "--out-dir", str(out), "--data", str(corpus),
                 "--vocab-size", "120", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
                 "--context-length", "16", "--batch-size", "4", "--eval-interval", "3",
                 "--ckpt-interval", "3", "--max-steps", "3", "--no-progress",
                 "--backend", "cupy"]) == 0
    assert {d for _, d, _ in devices} == {"cuda"} and all(ok for *_, ok in devices)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and np.isfinite(rows[-1]["val_loss"])
    model, tok, extra = load_mlm_run(out)
    assert extra["step"] == 3


def _both(build):
    """build(to) on the CPU and on the device, each from seed 0."""
    out = []
    for to in ("cpu", "cuda"):
        ml.manual_seed(0)
        out.append(build(to))
    return out


def test_gan_steps_on_the_device_equal_the_cpu_run():
    from minilm.train.gan import d_step, g_step, make_discriminator, make_generator, sample

    def build(to):
        G, D = make_generator(hidden=8).to(to), make_discriminator(hidden=8).to(to)
        og, od = ml.optim.Adam(G.parameters(), lr=1e-3), ml.optim.Adam(D.parameters(), lr=1e-3)
        rng = np.random.default_rng(0)
        real = rng.standard_normal((16, 2)).astype(np.float32)
        losses = [(d_step(G, D, od, real, rng), g_step(G, D, og, 16, rng)) for _ in range(2)]
        assert all(type(p.data) is DeviceArray for p in G.parameters()) == (to == "cuda")
        return losses, sample(G, 5, 2, rng)

    (cl, cs), (dl, ds) = _both(build)
    np.testing.assert_allclose(dl, cl, rtol=1e-5)
    assert type(ds) is np.ndarray
    np.testing.assert_allclose(ds, cs, rtol=1e-5, atol=1e-6)


def test_ewc_and_multitask_losses_on_the_device_equal_the_cpu_run():
    from minilm.nn import GPT, GPTConfig
    from minilm.train.continual import ewc_penalty, fisher_diagonal, lm_loss
    from minilm.train.multitask import MultiTaskLoss, MultiTaskModel, task_losses

    x = np.random.default_rng(1).integers(0, 11, (2, 6))
    y = np.roll(x, -1, axis=1)

    def ewc(to):
        m = GPT(GPTConfig(vocab_size=11, context_length=8, n_layers=1, n_heads=2,
                          d_model=8)).double().to(to)
        ps = list(m.parameters())
        fisher = fisher_diagonal(ps, lambda s: lm_loss(m, *s), [(x, y), (y, x)])
        star = [p.numpy() + 0.1 for p in ps]
        total = lm_loss(m, x, y) + ewc_penalty(ps, fisher, star, lam=3.0)
        total.backward()
        assert total.device == ("cuda" if to == "cuda" else "cpu")  # computed where m lives
        assert all(p.grad.device == total.device for p in ps)
        return total.item(), [p.grad.numpy() for p in ps]

    (c, cg), (d, dg) = _both(ewc)
    np.testing.assert_allclose(d, c, rtol=1e-10)
    for a, b in zip(dg, cg, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)

    def multi(to):
        m = MultiTaskModel(11, d_embed=4, hidden=5).double().to(to)
        weigh = MultiTaskLoss(2, mode="uncertainty").to(to)
        losses = task_losses(m, x, y, np.array([0, 1]))
        total = weigh([losses["lm"], losses["cls"]])
        assert total.device == ("cuda" if to == "cuda" else "cpu")
        return total.item()

    c, d = _both(multi)
    np.testing.assert_allclose(d, c, rtol=1e-10)
