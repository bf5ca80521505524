"""Quantization-aware training (minilm/quant/qat.py): the straight-through gradient is
exactly the clip-range mask; the LSQ scale gradient is the formula (and finite
differences where the forward is smooth in s); observers freeze; prepare_qat → training
lowers the loss; convert reproduces the QAT model in eval. Float64 where gradients are
compared."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

import minilm as ml
from minilm import optim
from minilm.nn import GPT, GPTConfig, Linear
from minilm.quant.affine import fake_quantize, qrange
from minilm.quant.qat import (
    ActQuantLinear,
    FakeQuantize,
    FakeQuantizeFunction,
    QATLinear,
    convert,
    prepare_qat,
)


def away_from_steps(rng, shape, s, z, lo, hi, margin=1e-3):
    """Values x with x/s + z in [lo, hi], none within margin·s of a rounding boundary
    (a half-integer of x/s) — there the STE mask is unambiguous."""
    x = rng.uniform(lo, hi, size=shape)
    frac = np.abs((x - z) - np.floor(x - z) - 0.5)
    x = np.where(frac < margin, x + 0.25, x)
    return (x - z) * s


@pytest.mark.parametrize("bits,symmetric", [(8, True), (8, False), (4, True), (4, False)])
def test_ste_gradient_is_the_mask(bits, symmetric):
    rng = np.random.default_rng(bits)
    qmin, qmax = qrange(bits, symmetric)
    s, z = 0.37, (0 if symmetric else 3)
    x = away_from_steps(rng, (6, 7), s, z, qmin - 6.0, qmax + 6.0)  # some clip, most not
    xt = ml.tensor(x, dtype="float64", requires_grad=True)
    y = FakeQuantizeFunction.apply(xt, np.float64(s), np.float64(z), qmin, qmax)
    np.testing.assert_array_equal(y.data, fake_quantize(x, np.float64(s), z, bits, symmetric))
    v = rng.standard_normal(x.shape)
    (y * ml.tensor(v)).sum().backward()
    mask = (np.rint(x / s) + z >= qmin) & (np.rint(x / s) + z <= qmax)
    assert 0 < mask.sum() < mask.size
    np.testing.assert_array_equal(xt.grad.data, v * mask)  # exact: 1 inside, 0 outside

    # the same mask is the gradient of the hard clip to the range's rounding edges,
    # checked against central differences by gradcheck
    lo, hi = s * (qmin - z - 0.5), s * (qmax - z + 0.5)
    ml.gradcheck(lambda t: ml.functional.clamp(t, lo, hi), [xt.detach().requires_grad_()])
    c = ml.tensor(x, dtype="float64", requires_grad=True)
    (ml.functional.clamp(c, lo, hi) * ml.tensor(v)).sum().backward()
    np.testing.assert_array_equal(c.grad.data, xt.grad.data)


@examples(0.5)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       bits=st.sampled_from([2, 3, 4, 8]), symmetric=st.booleans(),
       s=st.floats(0.01, 10.0), z=st.integers(-2, 2), seed=st.integers(0, 2**16))
def test_ste_gradient_is_the_mask_drawn(shape, bits, symmetric, s, z, seed):
    rng = np.random.default_rng(seed)
    qmin, qmax = qrange(bits, symmetric)
    z = 0 if symmetric else z
    x = away_from_steps(rng, tuple(shape), s, z, qmin - 3.0, qmax + 3.0)
    xt = ml.tensor(x, dtype="float64", requires_grad=True)
    y = FakeQuantizeFunction.apply(xt, np.float64(s), np.float64(z), qmin, qmax)
    v = rng.standard_normal(x.shape)
    (y * ml.tensor(v)).sum().backward()
    t = np.rint(x / s) + z
    np.testing.assert_array_equal(xt.grad.data, v * ((t >= qmin) & (t <= qmax)))


def test_lsq_scale_gradient():
    rng = np.random.default_rng(1)
    bits, symmetric = 4, False
    qmin, qmax = qrange(bits, symmetric)
    s = rng.uniform(0.2, 0.5, size=(5, 1))
    z = np.array([[0.0], [1.0], [-2.0], [3.0], [0.0]])
    x = away_from_steps(rng, (5, 9), s, z, qmin - 4.0, qmax + 4.0)
    v = rng.standard_normal(x.shape)
    st = ml.tensor(s, dtype="float64", requires_grad=True)
    xt = ml.tensor(x, dtype="float64", requires_grad=True)
    y = FakeQuantizeFunction.apply(xt, st, z, qmin, qmax, 0.5)
    (y * ml.tensor(v)).sum().backward()

    t = np.rint(x / s) + z
    q = np.clip(t, qmin, qmax)
    inside = (t >= qmin) & (t <= qmax)
    d = np.where(inside, (q - z) - x / s, q - z)
    np.testing.assert_allclose(st.grad.data, 0.5 * np.sum(v * d, axis=1, keepdims=True),
                               rtol=1e-12, atol=1e-14)

    # finite differences: at the clamps x̂ = s (qmax − z) is linear in s, the gradient is
    # exact; inside, x̂ = s·rint(x/s) has true slope rint(x/s), which the LSQ estimate
    # differs from by exactly −x/s (rint's straight-through term)
    h = 1e-7

    def fq(sv):
        return sv * (np.clip(np.rint(x / sv) + z, qmin, qmax) - z)
    fd = (fq(s + h) - fq(s - h)) / (2 * h)
    np.testing.assert_allclose(np.where(inside, d + x / s, d), fd, rtol=0, atol=1e-6)


def test_fake_quantize_module_freezes_after_n_steps():
    fq = FakeQuantize(bits=8, symmetric=False, freeze_after=3)
    rng = np.random.default_rng(2)
    for k in range(3):
        fq(ml.tensor(rng.standard_normal((4, 5)) * (k + 1)))
    assert fq.frozen and fq.steps == 3
    obs_min, obs_max = float(fq.observer.min_val), float(fq.observer.max_val)
    scale, zero = fq.scale.data.copy(), fq.zero.data.copy()
    fq(ml.tensor(rng.standard_normal((4, 5)) * 100.0))  # would move the range a lot
    assert float(fq.observer.min_val) == obs_min and float(fq.observer.max_val) == obs_max
    np.testing.assert_array_equal(fq.scale.data, scale)
    np.testing.assert_array_equal(fq.zero.data, zero)

    live = FakeQuantize(bits=8, symmetric=False)  # never frozen: follows the data
    live(ml.tensor(rng.standard_normal((4, 5))))
    s0 = live.scale.data.copy()
    live(ml.tensor(rng.standard_normal((4, 5)) * 100.0))
    assert live.scale.data > s0
    live.eval()
    s1 = live.scale.data.copy()
    live(ml.tensor(rng.standard_normal((4, 5)) * 1e4))  # eval: no updates
    np.testing.assert_array_equal(live.scale.data, s1)


def test_weight_fake_quant_per_channel_and_group():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 8))
    lin = Linear(8, 6, dtype="float64")
    lin.weight.data[...] = w
    qat = QATLinear(lin, bits=4, group_size=4, act_bits=None)
    wq = qat.weight_fake_quant(qat.weight).data
    for r in range(6):
        for g in range(2):
            assert len(np.unique(wq[r, 4 * g:4 * g + 4])) <= 4 + 1
    np.testing.assert_allclose(wq, w, atol=np.abs(w).max() / 7)
    assert qat.weight is lin.weight and qat.bias is lin.bias
    with pytest.raises(ValueError, match="group_size 3 does not divide in_features 8"):
        QATLinear(lin, bits=4, group_size=3)


def tiny_setup(seed=0):
    ml.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=16, context_length=16, n_layers=1, n_heads=2, d_model=16))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 16, size=4)
    ids = np.stack([np.roll(np.tile(base, 5)[:17], k) for k in range(8)])
    return model, ids[:, :16], ids[:, 1:]


@pytest.mark.parametrize("learn_scale", [False, True])
def test_prepare_qat_trains(learn_scale):
    model, x, y = tiny_setup()
    weights = [p for _, p in model.named_parameters()]
    prepare_qat(model, bits=4, group_size=8, learn_scale=learn_scale, freeze_after=5)
    assert isinstance(model.blocks[0].mlp.fc, QATLinear)
    assert type(model.head) is Linear  # tied to the embedding: left alone
    # the same Parameters (plus the learned scales when learn_scale)
    after = [p for _, p in model.named_parameters()]
    assert all(any(p is q for q in after) for p in weights)
    assert (len(after) > len(weights)) == learn_scale
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    fq = model.blocks[0].attn.qkv.weight_fake_quant
    losses = []
    for step in range(12):
        _, loss = model(ml.tensor(x), ml.tensor(y))
        if step == 0:
            s_init = fq.scale.data.copy()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    # learned scales move with their LSQ gradient; observed ones froze at step 5
    if learn_scale:
        assert not np.array_equal(fq.scale.data, s_init)
    assert fq.steps == 12 and fq.frozen


def test_convert_matches_qat_eval():
    model, x, y = tiny_setup(1)
    prepare_qat(model, bits=4, act_bits=8, freeze_after=3)
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(4):
        _, loss = model(ml.tensor(x), ml.tensor(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    ref = model(ml.tensor(x)).data.copy()
    convert(model)
    assert type(model.blocks[0].attn.qkv) is ActQuantLinear
    assert not any(isinstance(m, QATLinear) for m in model.modules())
    np.testing.assert_array_equal(model(ml.tensor(x)).data, ref)
    w = model.blocks[0].mlp.fc.weight.data
    assert all(len(np.unique(row)) <= 15 for row in w)  # int4 symmetric: 15 levels

    model, x, _ = tiny_setup(2)  # weight-only: a plain Linear
    prepare_qat(model, bits=8, act_bits=None)
    model(ml.tensor(x))
    model.eval()
    ref = model(ml.tensor(x)).data.copy()
    convert(model)
    assert type(model.blocks[0].mlp.proj) is Linear
    np.testing.assert_array_equal(model(ml.tensor(x)).data, ref)


def test_prepare_qat_bad_arguments_change_nothing():
    model, _, _ = tiny_setup()
    with pytest.raises(ValueError, match="group_size 48 does not divide in_features 16"):
        prepare_qat(model, bits=4, group_size=48)
    with pytest.raises(ValueError, match="bits=5"):
        prepare_qat(model, bits=5)
    assert not any(isinstance(m, QATLinear) for m in model.modules())


def test_example_runs_reduced():
    """examples/qat.py end to end, reduced (CI form of the example)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "examples/qat.py", "--steps", "2", "--qat-steps", "2",
                        "--eval-batches", "1"],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PTQ int4 (RTN)" in p.stdout and "QAT int4" in p.stdout
