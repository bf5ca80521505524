"""The whole model on the GPU against the CPU: a GPT's loss and gradients (float64 to
1e-10, float32 to 1e-4) at shapes past the kernels' blocks, AdamW training steps,
checkpoints written from the device and read on either side (bit-exact), the Trainer
end to end (with fp16 and bf16 autocast), and the memory figures of ``minilm.cuda``.

The same properties are checked on the host-memory stand-in in tests/test_device_path.py;
here they run on a real device, with the CuPy backend's fused kernels."""

from __future__ import annotations

import numpy as np
import pytest

import minilm as ml
from minilm import optim
from minilm.nn import GPT, GPTConfig
from minilm.train.training_state import load_training_state, save_training_state

V = 97  # vocabulary: not a multiple of a warp


def gpt(dtype="float64", seed=0, dropout=0.0, **kw):
    ml.manual_seed(seed)
    cfg = dict(vocab_size=V, context_length=64, n_layers=2, n_heads=4, d_model=64,
               dropout=dropout)
    cfg.update(kw)
    m = GPT(GPTConfig(**cfg))
    return m.double() if dtype == "float64" else m


def batch(seed, shape=(3, 40)):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, V, shape), rng.integers(0, V, shape)
    y[0, :5] = -100  # ignored targets
    return ml.tensor(x), ml.tensor(y)


def on_device(cp, t):
    data = t.data if isinstance(t, ml.Tensor) else t
    return type(data) is cp.ndarray


def grads(m):
    return {n: p.grad.numpy() for n, p in m.named_parameters()}


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_gpt_loss_and_gradients_equal_the_cpu_run(cp, gpu, dtype, tol, positional):
    x, y = batch(1)
    cpu = gpt(dtype, positional=positional)
    _, loss = cpu(x, y)
    loss.backward()
    dev = gpt(dtype, positional=positional).to("cuda")
    _, dloss = dev(x.to("cuda"), y.to("cuda"))
    assert on_device(cp, dloss) and dloss.dtype == loss.dtype
    dloss.backward()
    np.testing.assert_allclose(dloss.item(), loss.item(), rtol=tol)
    want, got = grads(cpu), grads(dev)
    for name, p in dev.named_parameters():
        assert on_device(cp, p.grad), name
        scale = max(1.0, float(np.abs(want[name]).max()))
        np.testing.assert_allclose(got[name], want[name], rtol=tol, atol=tol * scale,
                                   err_msg=name)


def steps(m, opt, x, y, n=3, clip=None):
    losses = []
    for _ in range(n):
        _, loss = m(x, y)
        loss.backward()
        if clip:
            optim.clip_grad_norm_(m.parameters(), clip)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def adamw(m):
    return optim.AdamW(optim.param_groups_for_weight_decay(m, 0.1), lr=1e-2)


@pytest.mark.parametrize("clip", [None, 0.05])
def test_adamw_steps_equal_the_cpu_run(cp, gpu, clip):
    x, y = batch(1)
    cpu, dev = gpt(), gpt().to("cuda")
    want = steps(cpu, adamw(cpu), x, y, clip=clip)
    opt = adamw(dev)
    got = steps(dev, opt, x.to("cuda"), y.to("cuda"), clip=clip)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    for (name, p), q in zip(dev.named_parameters(), cpu.parameters(), strict=True):
        assert on_device(cp, p)
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    assert all(on_device(cp, v) for s in opt.state.values() for v in s.values()
               if hasattr(v, "ndim") and v.ndim)


# The embedding backward sums rows with atomic adds, whose order is not fixed: two runs
# of the same steps may differ in the last bits of the embedding gradient. Float64 runs
# are compared to REPEAT instead of bit for bit; everything else is deterministic.
REPEAT = 1e-12


def test_training_on_the_device_is_repeatable(cp, gpu):
    """Same seed, same steps, dropout drawn on the device: the same masks, hence the
    same losses and parameters (to the order of the atomic adds)."""
    x, y = batch(1)
    runs = []
    for _ in range(2):
        m = gpt("float64", dropout=0.1).to("cuda")
        ml.manual_seed(5)
        runs.append((steps(m, adamw(m), x.to("cuda"), y.to("cuda")),
                     [p.numpy() for p in m.parameters()]))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=REPEAT)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=REPEAT, atol=REPEAT)


def test_checkpoint_round_trip_cpu_and_device_is_exact(cp, gpu, tmp_path):
    """Device -> file -> CPU and CPU -> file -> device give the very same bits (weights
    and optimizer moments); the device run resumed from its checkpoint continues as the
    run that never stopped (to the order of the atomic adds, REPEAT)."""
    x, y = batch(1)
    dx, dy = x.to("cuda"), y.to("cuda")
    dev = gpt("float64").to("cuda")
    opt = adamw(dev)
    steps(dev, opt, dx, dy, n=2)
    save_training_state(tmp_path / "d.safetensors", dev, opt, extra={"step": 2})
    cpu = gpt("float64", seed=9)
    cpu_opt = adamw(cpu)
    assert load_training_state(tmp_path / "d.safetensors", cpu, cpu_opt)["step"] == 2
    for (name, p), q in zip(dev.named_parameters(), cpu.parameters(), strict=True):
        assert type(q.data) is np.ndarray
        np.testing.assert_array_equal(q.numpy(), p.numpy(), err_msg=name)
    dev_state, cpu_state = opt.state_dict()["state"], cpu_opt.state_dict()["state"]
    assert dev_state.keys() == cpu_state.keys()
    for i, s in dev_state.items():
        for k, v in s.items():
            if hasattr(v, "ndim") and v.ndim:
                assert type(cpu_state[i][k]) is np.ndarray
                np.testing.assert_array_equal(cp.asnumpy(v), cpu_state[i][k], err_msg=k)
    save_training_state(tmp_path / "h.safetensors", cpu, cpu_opt)
    back = gpt("float64", seed=7).to("cuda")
    back_opt = adamw(back)
    load_training_state(tmp_path / "h.safetensors", back, back_opt)
    for p, q in zip(back.parameters(), dev.parameters(), strict=True):
        assert on_device(cp, p)
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    np.testing.assert_allclose(steps(back, back_opt, dx, dy, n=2),
                               steps(dev, opt, dx, dy, n=2), rtol=REPEAT)
    for p, q in zip(back.parameters(), dev.parameters(), strict=True):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=REPEAT, atol=REPEAT)


TEXT = "the quick brown fox jumps over the lazy dog. " * 60


@pytest.mark.parametrize("amp", ["off", "fp16", "bf16"])
def test_trainer_runs_end_to_end_on_the_device(cp, gpu, tmp_path, amp):
    from minilm.data import CharTokenizer, DataLoader, RandomWindowBatches, split_tokens
    from minilm.train.config import TrainConfig
    from minilm.train.trainer import Trainer

    def make():
        ml.manual_seed(0)
        tok = CharTokenizer.train(TEXT)
        train, val = split_tokens(np.asarray(tok.encode(TEXT), dtype=np.uint16), 0.1)
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=32, n_layers=2,
                              n_heads=2, d_model=32, dropout=0.1)).to("cuda")
        cfg = TrainConfig(out_dir=str(tmp_path), batch_size=4, grad_accum_steps=2, max_steps=6,
                          warmup_steps=1, eval_interval=3, eval_batches=2, ckpt_interval=3,
                          log_interval=1, progress=False, plot=False, lr=3e-3, grad_clip=1.0,
                          amp=amp)
        loader = DataLoader(RandomWindowBatches(train, 4, 32, rng=7), prefetch=2)
        return Trainer(model, loader, val, cfg, tokenizer=tok)

    t = make()
    last = t.fit()
    assert last["step"] == 6 and np.isfinite(last["val_loss"])
    assert all(on_device(cp, p) for p in t.model.parameters())
    t2 = make()
    t2.resume(tmp_path / "ckpt.safetensors")
    assert t2.step == 6
    for p, q in zip(t.model.parameters(), t2.model.parameters(), strict=True):
        assert on_device(cp, q)
        np.testing.assert_array_equal(q.numpy(), p.numpy())


def test_memory_figures_move(cp, gpu, real_gpu):
    """Allocating raises memory_allocated and the peak; freeing lowers the first, not
    the second; empty_cache hands the cached blocks back (reserved falls to allocated)."""
    import minilm.cuda as mc

    assert mc.is_available() and mc.device_count() >= 1
    mc.synchronize()
    mc.empty_cache()
    mc.reset_peak_memory_stats()
    base = mc.memory_allocated()
    assert mc.max_memory_allocated() == base
    a = cp.ones(64 << 20, dtype=cp.uint8)  # 64 MiB
    assert mc.memory_allocated() >= base + (64 << 20)
    peak = mc.max_memory_allocated()
    assert peak >= base + (64 << 20)
    del a
    assert mc.memory_allocated() < base + (64 << 20)
    assert mc.max_memory_allocated() == peak
    assert mc.memory_reserved() >= mc.memory_allocated()
    mc.empty_cache()
    assert mc.memory_reserved() == mc.memory_allocated()
    mc.reset_peak_memory_stats()
    assert mc.max_memory_allocated() == mc.memory_allocated()


def test_a_training_step_shows_in_the_peak(cp, gpu, real_gpu):
    """A GPT step's activations and optimizer state raise the peak above the weights."""
    import minilm.cuda as mc

    m = gpt("float32", d_model=128, n_layers=2, context_length=64).to("cuda")
    mc.synchronize()
    mc.reset_peak_memory_stats()
    weights = sum(p.data.nbytes for p in m.parameters())
    x, y = batch(2, (8, 64))
    steps(m, adamw(m), x.to("cuda"), y.to("cuda"), n=1)
    mc.synchronize()
    assert mc.max_memory_allocated() > 3 * weights  # weights, grads, two moments + more
