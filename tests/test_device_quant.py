"""Quantized layers on the device (the CuPy stand-in, ``fake_gpu``): weight-only int8 /
int4 (per channel and per group), W8A8 (dynamic per-token and calibrated per-tensor
activations) and LLM.int8 (outlier columns in float) give the CPU run's outputs and
input gradients, whether the model is quantized on the device or quantized on the CPU
and moved with ``Module.to``; their integer buffers live on the model's backend. Pruning
(magnitude, neurons, heads, gradual), QAT (plain, LSQ per group), GPTQ, round to
nearest and low-rank factorisation of a device GPT equal the CPU run and leave every
parameter and buffer on the device."""

import numpy as np
import pytest
from fake_cupy import DeviceArray

import minilm as ml
from minilm import nn
from minilm.nn import GPT, GPTConfig
from minilm.quant import (
    GradualPruner,
    W8A8Linear,
    calibrate,
    convert,
    gptq_quantize_model,
    low_rank_model,
    magnitude_prune,
    prepare_qat,
    prune_attention_heads,
    prune_mlp_neurons,
    quantize_model,
    rtn_quantize_model,
)
from minilm.quant.llm_int8 import LLMInt8Linear

pytestmark = pytest.mark.usefixtures("fake_gpu")

KINDS = {
    "int8-channel": dict(bits=8),
    "int8-group-asym": dict(bits=8, group_size=4, symmetric=False),
    "int4-group": dict(bits=4, group_size=4),
    "int4-channel-asym": dict(bits=4, symmetric=False),
    "w8a8-token": dict(factory=W8A8Linear.from_linear),
    "w8a8-tensor": dict(factory=lambda lin: W8A8Linear.from_linear(lin, act="tensor")),
    "llm-int8": dict(factory=lambda lin: LLMInt8Linear.from_linear(lin, threshold=1.0)),
    "llm-int8-float": dict(factory=lambda lin: LLMInt8Linear.from_linear(
        lin, threshold=1.0, keep_float_weight=True)),
}


def _model():
    ml.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 12), nn.GELU(), nn.Linear(12, 5)).double()


def _run(kind, to, quantize_first):
    """(output, input gradient, model) of the quantized model placed by ``to``."""
    m = _model()
    if not quantize_first:
        m = m.to(to)
    quantize_model(m, skip=(), **KINDS[kind])
    if quantize_first:
        m = m.to(to)
    x = np.random.default_rng(1).standard_normal((6, 8))
    if kind == "w8a8-tensor":
        calibrate(m, [ml.tensor(x).to(to)])
    xt = ml.tensor(x).to(to).requires_grad_()
    y = m(xt)
    (y * y).sum().backward()
    return y, xt, m


@pytest.mark.parametrize("quantize_first", [False, True], ids=["on-device", "moved"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_quantized_model_on_the_device_equals_the_cpu_run(kind, quantize_first):
    y_cpu, x_cpu, _ = _run(kind, "cpu", quantize_first)
    y_dev, x_dev, m = _run(kind, "cuda", quantize_first)
    assert type(y_dev.data) is DeviceArray and type(x_dev.grad.data) is DeviceArray
    for name, b in m.named_buffers():
        if b is not None:
            assert type(b.data) is DeviceArray, name
    np.testing.assert_allclose(y_dev.numpy(), y_cpu.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x_dev.grad.numpy(), x_cpu.grad.numpy(), rtol=1e-12,
                               atol=1e-12)


def _gpt(to):
    ml.manual_seed(0)
    cfg = GPTConfig(vocab_size=20, context_length=8, n_layers=1, n_heads=2, d_model=8)
    return GPT(cfg).double().to(to)


IDS = np.random.default_rng(0).integers(0, 20, (2, 8))


def _qat(m, steps=1, **kw):
    """QAT on a GPT: a training forward and backward per step (qparams follow the
    data, an LSQ scale gets its gradient), then convert; the last losses."""
    prepare_qat(m, **kw)
    m.train()
    losses = []
    for _ in range(steps):
        _, loss = m(IDS, IDS)
        loss.backward()
        losses.append(loss.item())
    convert(m)
    return losses


METHODS = {
    "magnitude-prune": lambda m: magnitude_prune(m, 0.5),
    "prune-neurons": lambda m: prune_mlp_neurons(m, 0.5),
    "prune-heads": lambda m: prune_attention_heads(m, 0.5),
    "gradual-prune": lambda m: [GradualPruner(m, 0.5, 0, 2, 1).step(s) for s in range(3)],
    "qat": lambda m: _qat(m),
    "qat-lsq-group": lambda m: _qat(m, steps=2, group_size=4, learn_scale=True),
    "gptq": lambda m: gptq_quantize_model(m, [IDS], group_size=4),
    "rtn": lambda m: rtn_quantize_model(m),
    "low-rank": lambda m: low_rank_model(m, rank=2),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_compression_of_a_device_model_equals_the_cpu_run(method):
    """Each method applied to a GPT on the device leaves every parameter and buffer on
    the device (no host qparams, masks or calibration ids) and computes what the same
    method gives on the CPU."""
    out = []
    for to in ("cpu", "cuda"):
        m = _gpt(to)
        report = METHODS[method](m)
        m.eval()
        with ml.no_grad():
            out.append((m(IDS).numpy(), report))
        if to == "cuda":
            for name, t in list(m.named_parameters()) + list(m.named_buffers()):
                if t is not None:
                    assert type(t.data) is DeviceArray, name
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-9, atol=1e-12)
    if method.startswith("qat"):  # the training losses on the way
        np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-9)
