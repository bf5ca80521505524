"""Mixed precision on the CPU backends (minilm/amp, minilm/functional/autocast.py):

- rounding: float16 as NumPy's float16 (overflow to inf past 65504, subnormals), bfloat16
  to nearest even on the top 16 bits (exact values kept, ties to even, NaN kept);
- casting rules: inside autocast the matrix products' results are low-precision values
  and their gradients too; softmax, norms and losses are not rounded; enabled=False and
  nesting restore; another thread is unaffected;
- GradScaler: the skip / halve / grow sequence with planted infs, unscaled gradients,
  its state through a checkpoint of the Trainer (resume bit for bit);
- a tiny GPT trained with fp16 + scaler and with bf16 reaches the float32 run's loss
  within 2%.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import minilm as ml
from minilm import functional as F
from minilm.amp import GradScaler, autocast, is_autocast_enabled
from minilm.functional.autocast import round_array, round_to
from minilm.tensor import Tensor


def _is_fp16(a):
    a = np.asarray(a)
    return np.array_equal(a.astype(np.float16).astype(a.dtype), a, equal_nan=True)


def _is_bf16(a):
    a = np.asarray(a, dtype=np.float32)
    return bool((a.view(np.uint32) & np.uint32(0xFFFF) == 0)[np.isfinite(a)].all())


def test_rounding_formats():
    x = np.array([1.0, 65504.0, 70000.0, 1e-8, 3e-8, -2.5, np.nan], dtype=np.float32)
    r = round_array(np, x, "float16")
    assert r[0] == 1.0 and r[1] == 65504.0 and np.isinf(r[2]) and np.isnan(r[-1])
    assert r[3] == 0.0 and r[4] > 0  # below half the smallest subnormal -> 0; above -> kept
    one_plus = np.float32(1.0) + np.float32(2.0 ** -8)  # halfway between two bf16 numbers
    b = round_array(np, np.array([1.0, one_plus, 1.0 + 3 * 2.0 ** -8, -3.140625, np.nan,
                                  3.0e38], np.float32), "bfloat16")
    assert b[0] == 1.0 and b[1] == 1.0  # tie -> even mantissa
    assert b[2] == np.float32(1.0 + 4 * 2.0 ** -8)  # tie -> even, upwards
    assert b[3] == np.float32(-3.140625) and np.isnan(b[4]) and np.isfinite(b[5])
    assert _is_bf16(b)
    x64 = np.array([1.1, 2.2])
    assert round_array(np, x64, "bfloat16").dtype == np.float64
    with pytest.raises(ValueError, match="float16', 'bfloat16"):
        round_array(np, x, "int8")


@pytest.mark.parametrize("dtype, check", [("float16", _is_fp16), ("bfloat16", _is_bf16)])
def test_matmuls_run_in_low_precision_the_rest_in_float32(backend, dtype, check):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 8)).astype(np.float32), requires_grad=True,
               backend=backend)
    w = Tensor(rng.standard_normal((5, 8)).astype(np.float32), requires_grad=True,
               backend=backend)
    with autocast(dtype):
        assert is_autocast_enabled()
        y = F.linear(x, w)
        z = x @ w.T
        s = F.softmax(y, dim=-1)
        n = F.layer_norm(y, (5,))
        with autocast(dtype, enabled=False):
            plain = F.linear(x, w)
    assert not is_autocast_enabled()
    assert y.dtype == np.float32 and check(y.numpy()) and check(z.numpy())
    assert not check(s.numpy()) and not check(n.numpy())  # fp32 ops: not rounded
    assert not check(plain.numpy())
    np.testing.assert_allclose(y.numpy(), plain.numpy(), rtol=2e-2, atol=2e-2)
    (y * Tensor(rng.standard_normal((4, 5)).astype(np.float32), backend=backend)).sum().backward()
    assert check(x.grad.numpy()) and check(w.grad.numpy())  # low-precision gradients
    x.grad = w.grad = None
    F.linear(x, w).sum().backward()  # outside: full precision again
    assert not check(w.grad.numpy())


def test_autocast_is_per_thread_and_validates():
    seen = []
    with autocast("bfloat16"):
        t = threading.Thread(target=lambda: seen.append(is_autocast_enabled()))
        t.start()
        t.join()
    assert seen == [False]
    with pytest.raises(ValueError, match="dtype must be"):
        autocast("float8")
    assert autocast("fp16").dtype == "float16" and autocast("bf16").dtype == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        round_to(Tensor(np.ones(2)), "float32")


class _Opt:
    """The optimizer surface GradScaler needs, counting steps."""

    def __init__(self, params):
        self.param_groups = [{"params": params}]
        self.steps = 0

    def step(self):
        self.steps += 1


def test_grad_scaler_skips_halves_and_grows():
    p = Tensor(np.zeros(3, np.float32), requires_grad=True)
    opt = _Opt([p])
    s = GradScaler(init_scale=8.0, growth_interval=2)
    assert s.scale(Tensor(np.float32(1.5))).item() == 12.0

    def step(grad):
        p.grad = Tensor(np.asarray(grad, np.float32) * np.float32(s.get_scale()))
        took = s.step(opt)
        s.update()
        return took, s.get_scale()

    assert step([1, 2, 3]) == (True, 8.0)
    np.testing.assert_array_equal(p.grad.numpy(), [1, 2, 3])  # unscaled before the step
    assert step([1, np.inf, 3]) == (False, 4.0)  # skip, halve, count reset
    assert step([1, 1, 1]) == (True, 4.0)
    assert step([np.nan, 1, 1]) == (False, 2.0)
    assert step([1, 1, 1]) == (True, 2.0)
    assert step([1, 1, 1]) == (True, 4.0)  # two clean steps in a row: grow
    assert opt.steps == 4 and s.skipped == 2
    s.unscale_(opt)
    with pytest.raises(RuntimeError, match="already called"):
        s.unscale_(opt)
    state = s.state_dict()
    s2 = GradScaler()
    s2.load_state_dict(state)
    assert (s2.get_scale(), s2.clean_steps, s2.skipped) == (4.0, 0, 2)
    off = GradScaler(enabled=False)
    assert off.scale(3.0) == 3.0 and off.step(opt) and off.get_scale() == 1.0
    with pytest.raises(ValueError, match="backoff_factor"):
        GradScaler(backoff_factor=1.5)


def _train(tmp_path, amp, steps=60):
    from minilm.data import DataLoader, RandomWindowBatches
    from minilm.nn import GPT, GPTConfig
    from minilm.train.config import TrainConfig
    from minilm.train.trainer import Trainer

    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, context_length=16, n_layers=2, n_heads=2,
                          d_model=32))
    base = np.arange(16).repeat(2)
    tokens = np.tile(base, 40).astype(np.uint16)  # a learnable periodic sequence
    cfg = TrainConfig(out_dir=str(tmp_path), batch_size=8, max_steps=steps, warmup_steps=5,
                      eval_interval=1000, ckpt_interval=1000, log_interval=1000,
                      progress=False, plot=False, lr=3e-3, amp=amp, batch_threads=1)
    loader = DataLoader(RandomWindowBatches(tokens[:1000], 8, 16, rng=3), prefetch=0)
    return Trainer(model, loader, tokens[1000:], cfg)


def test_fp16_and_bf16_training_reach_the_float32_loss(tmp_path):
    losses = {}
    for amp in ("off", "bf16", "fp16"):
        t = _train(tmp_path / amp, amp)
        batches = iter(t.loader)
        hist = [t.train_step(batches) for _ in range(60)]
        losses[amp] = float(np.mean(hist[-10:]))
        if amp == "fp16":
            assert t.scaler.enabled and t.scaler.get_scale() >= 1.0
        else:
            assert not t.scaler.enabled
    assert losses["off"] < 1.5  # it learned (from ln 16 = 2.77; the floor is ln 2 = 0.69)
    for amp in ("bf16", "fp16"):
        assert losses[amp] == pytest.approx(losses["off"], rel=0.02, abs=0.02), losses


def test_scaler_state_is_checkpointed_and_resumed(tmp_path):
    t = _train(tmp_path / "a", "fp16", steps=6)
    batches = iter(t.loader)
    for _ in range(3):
        t.train_step(batches)
    t.scaler.scale_value = 1024.0  # a state the default would not have
    t.scaler.clean_steps = 1
    (tmp_path / "a").mkdir()
    t.save(tmp_path / "a" / "ckpt.safetensors")
    u = _train(tmp_path / "b", "fp16", steps=6)
    u.resume(tmp_path / "a" / "ckpt.safetensors")
    assert (u.scaler.get_scale(), u.scaler.clean_steps) == (1024.0, 1)


def test_an_overflowing_scale_skips_the_step_and_halves_without_stopping(tmp_path):
    t = _train(tmp_path, "fp16", steps=4)
    batches = iter(t.loader)
    t.train_step(batches)
    before = {n: p.numpy().copy() for n, p in t.model.named_parameters()}
    t.scaler.scale_value = 2.0 ** 120  # the scaled gradients overflow float16 (and float32)
    loss = t.train_step(batches)
    assert np.isfinite(loss) and t.scaler.skipped == 1 and t.scaler.get_scale() == 2.0 ** 119
    for n, p in t.model.named_parameters():  # the step was skipped: nothing moved
        np.testing.assert_array_equal(p.numpy(), before[n], err_msg=n)
    t.scaler.scale_value = 2.0 ** 10
    t.train_step(batches)
    assert any(not np.array_equal(p.numpy(), before[n]) for n, p in t.model.named_parameters())


def test_cli_amp_flag(tmp_path, capsys):
    from minilm.cli import main as cli

    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    common = ["--data", str(corpus), "--tokenizer", "char", "--n-layers", "1", "--n-heads",
              "2", "--d-model", "16", "--context-length", "16", "--batch-size", "4",
              "--max-steps", "4", "--eval-interval", "2", "--no-progress"]
    assert cli(["train", *common, "--out-dir", str(tmp_path / "r"), "--amp", "fp16"]) == 0
    import json

    rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_scale" in r for r in rows)
    capsys.readouterr()
    assert cli(["train", *common, "--out-dir", str(tmp_path / "r2"), "--amp", "fp8"]) == 2
    assert "amp" in capsys.readouterr().err and not (tmp_path / "r2").exists()
