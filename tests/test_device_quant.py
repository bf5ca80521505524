"""Quantized layers on the device (the CuPy stand-in, ``fake_gpu``): weight-only int8 /
int4 (per channel and per group), W8A8 (dynamic per-token and calibrated per-tensor
activations) and LLM.int8 (outlier columns in float) give the CPU run's outputs and
input gradients, whether the model is quantized on the device or quantized on the CPU
and moved with ``Module.to``; their integer buffers live on the model's backend."""

import numpy as np
import pytest
from fake_cupy import DeviceArray

import minilm as ml
from minilm import nn
from minilm.quant import W8A8Linear, calibrate, quantize_model
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
