"""autocast("float16") on a backend with real half GEMMs (the CuPy backend) runs
``linear`` as NativeLowLinear: the same numbers as the emulated rounding, to half
precision. Checked here by giving the CPU backend NumPy's float16 for the test."""

from __future__ import annotations

import numpy as np
import pytest

import minilm as ml
import minilm.functional as F
from minilm.amp import autocast
from minilm.functional.autocast import NativeLowLinear


@pytest.fixture
def native_half(monkeypatch):
    backend = ml.current_backend()
    monkeypatch.setattr(backend, "native_low_precision", {"float16": np.float16}, raising=False)
    return backend


def _run(seed, bias):
    rng = np.random.default_rng(seed)
    x = ml.tensor(rng.standard_normal((2, 5, 24)).astype(np.float32), requires_grad=True)
    w = ml.tensor(rng.standard_normal((16, 24)).astype(np.float32) * 0.2, requires_grad=True)
    b = ml.tensor(rng.standard_normal(16).astype(np.float32), requires_grad=True) if bias else None
    with autocast("float16"):
        y = F.linear(x, w, b)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(ml.tensor(g))
    return y, [t.grad.numpy() for t in (x, w, b) if t is not None]


@pytest.mark.parametrize("bias", [False, True])
def test_native_half_linear_equals_the_emulation(native_half, bias):
    y, grads = _run(0, bias)
    assert y.grad_fn.fn is NativeLowLinear  # the native path was taken
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native_half, "native_low_precision", {}, raising=False)
        y_ref, grads_ref = _run(0, bias)
    assert y_ref.grad_fn.fn is not NativeLowLinear
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), y.numpy().astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=2e-3, atol=2e-3)
    for a, r in zip(grads, grads_ref, strict=True):
        np.testing.assert_array_equal(a, a.astype(np.float16).astype(np.float32))  # half values
        np.testing.assert_allclose(a, r, rtol=2e-3, atol=2e-3)


def test_bfloat16_has_no_native_path(native_half):
    """Only the dtypes the backend names go native: bfloat16 stays emulated."""
    x = ml.tensor(np.ones((3, 4), np.float32))
    w = ml.tensor(np.ones((2, 4), np.float32), requires_grad=True)
    with autocast("bfloat16"):
        y = F.linear(x, w)
    assert y.grad_fn.fn is not NativeLowLinear


def test_native_half_linear_checks_shapes(native_half):
    x = ml.tensor(np.ones((3, 4), np.float32))
    w = ml.tensor(np.ones((2, 5), np.float32))
    with autocast("float16"), pytest.raises(ValueError, match=r"linear: input shape \(3, 4\) "
                                            r"does not match weight shape \(2, 5\)"):
        F.linear(x, w)
