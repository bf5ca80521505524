"""Tensor creation, attributes, conversion, repr, in-place ops and backends."""

import os
import subprocess
import sys

import numpy as np
import pytest

import minilm as ml
from minilm import Tensor


def test_factories_shapes_and_dtypes():
    assert ml.zeros(2, 3).shape == (2, 3) and ml.zeros(2, 3).dtype == np.float32
    assert ml.ones((4,), dtype="float64").dtype == np.float64
    assert ml.full((2, 2), 7).dtype == np.int64
    np.testing.assert_array_equal(ml.full((2,), 1.5).numpy(), [1.5, 1.5])
    assert ml.arange(5).dtype == np.int64 and ml.arange(0.0, 1.0, 0.25).shape == (4,)
    assert ml.randint(0, 10, (3, 4)).dtype == np.int64
    r = ml.randint(3, 7, (1000,)).numpy()
    assert r.min() >= 3 and r.max() < 7
    assert ml.rand(100).numpy().min() >= 0 and ml.rand(100).numpy().max() < 1
    x = ml.randn(3, 2, dtype="float64")
    for like in (ml.zeros_like, ml.ones_like, ml.randn_like, ml.rand_like, ml.empty_like):
        y = like(x)
        assert y.shape == x.shape and y.dtype == np.float64
    assert ml.full_like(x, 2.0).numpy().sum() == 12.0
    assert ml.eye(3).numpy().trace() == 3


def test_tensor_dtype_inference_follows_pytorch():
    assert ml.tensor([1.0, 2.0]).dtype == np.float32
    assert ml.tensor([1, 2]).dtype == np.int64
    assert ml.tensor([True, False]).dtype == np.bool_
    assert ml.tensor(np.zeros(2, dtype=np.float64)).dtype == np.float64
    assert ml.tensor(np.float64(1.5)).dtype == np.float64
    assert ml.tensor([1, 2], dtype=ml.float16).dtype == np.float16
    for name in ("float16", "float32", "float64", "int32", "int64", "bool"):
        assert ml.zeros(1, dtype=name).dtype == np.dtype(name)
    with pytest.raises(TypeError, match="unknown dtype 'float8'"):
        ml.zeros(1, dtype="float8")


def test_tensor_copies_but_from_numpy_shares():
    a = np.zeros(3, dtype=np.float32)
    t = ml.tensor(a)
    s = ml.from_numpy(a)
    a[0] = 5
    assert t.numpy()[0] == 0 and s.numpy()[0] == 5
    with pytest.raises(TypeError, match="numpy.ndarray"):
        ml.from_numpy([1, 2])


def test_attributes_and_conversions():
    x = ml.randn(2, 3, requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.size() == (2, 3) and x.size(1) == 3
    assert x.numel() == 6 and len(x) == 2 and x.is_leaf and x.requires_grad
    assert x.dtype == ml.float32 and x.device == "cpu"
    assert isinstance(x.numpy(), np.ndarray)
    y = x * 2
    assert not y.is_leaf and y.grad_fn is not None
    assert ml.tensor([[3.5]]).item() == 3.5
    assert float(ml.tensor(2.0)) == 2.0 and int(ml.tensor(3)) == 3
    assert ml.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match=r"only one-element tensors.*\(2, 3\)"):
        x.item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(x)
    d = x.detach()
    assert not d.requires_grad and d.data is x.data
    assert x.double().dtype == np.float64 and x.half().dtype == np.float16
    assert x.long().dtype == np.int64 and x.to("float64").dtype == np.float64
    assert x.to(ml.float64).dtype == np.float64
    assert x.to("numpy") is x


def test_repr_shows_data_dtype_and_grad_fn():
    x = ml.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x) == "tensor([1., 2.], requires_grad=True)"
    assert repr(x * 2) == "tensor([2., 4.], grad_fn=<MulBackward>)"
    assert "dtype=float64" in repr(ml.zeros(2, dtype="float64"))
    assert repr(ml.tensor([1, 2])) == "tensor([1, 2])"


def test_operators_and_matmul():
    a = ml.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = ml.tensor([[0.5], [1.0]])
    np.testing.assert_allclose((a @ b).numpy(), [[2.5], [5.5]])
    np.testing.assert_allclose((np.ones((1, 2), dtype=np.float32) @ a).numpy(), [[4.0, 6.0]])
    np.testing.assert_allclose((-a + 1).numpy(), 1 - a.numpy())
    np.testing.assert_allclose((2 ** a).numpy(), 2 ** a.numpy())
    np.testing.assert_allclose(abs(-a).numpy(), a.numpy())


def test_inplace_ops_bump_the_version():
    x = ml.zeros(3)
    v = x._version.value
    x.add_(1).mul_(3).sub_(1).div_(2)
    np.testing.assert_allclose(x.numpy(), [1.0, 1.0, 1.0])
    assert x._version.value == v + 4
    x[1] = 5.0
    x.clamp_(max=2.0)
    np.testing.assert_allclose(x.numpy(), [1.0, 2.0, 1.0])
    x.masked_fill_(x.numpy() > 1.5, -1.0)
    np.testing.assert_allclose(x.numpy(), [1.0, -1.0, 1.0])
    x.zero_().fill_(2.0)
    assert x.numpy().tolist() == [2.0, 2.0, 2.0]
    x.normal_()
    x.uniform_(0, 1)
    assert 0 <= x.numpy().min() and x.numpy().max() < 1


def test_manual_seed_makes_draws_repeatable():
    ml.manual_seed(123)
    a = ml.randn(5).numpy()
    ml.manual_seed(123)
    np.testing.assert_array_equal(ml.randn(5).numpy(), a)
    ml.manual_seed(124)
    assert not np.array_equal(ml.randn(5).numpy(), a)


def test_rng_state_round_trip():
    state = ml.current_backend().get_rng_state()
    a = ml.rand(4).numpy()
    ml.current_backend().set_rng_state(state)
    np.testing.assert_array_equal(ml.rand(4).numpy(), a)


def test_use_backend_and_unknown_backend():
    assert ml.use_backend("numpy").name == "numpy"
    assert ml.current_backend().name == "numpy"
    assert "numpy" in ml.available_backends()
    with pytest.raises(ValueError, match=r"unknown backend 'tpu'.*registered backends"):
        ml.use_backend("tpu")
    with pytest.raises(ValueError, match="to: 'tpu' is neither a backend"):
        ml.zeros(2).to("tpu")


def _run(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=120)


def test_minilm_backend_environment_variable():
    r = _run("import minilm; print(minilm.current_backend().name)", MINILM_BACKEND="numpy")
    assert r.returncode == 0 and r.stdout.strip() == "numpy"
    r = _run("import minilm; minilm.zeros(1)", MINILM_BACKEND="tpu")
    assert r.returncode != 0 and "unknown backend 'tpu'" in r.stderr


def test_tensor_keeps_the_layout_of_a_numpy_view():
    """Tensor(array) wraps the array as it is: strided, transposed and broadcast (zero
    stride, read-only) views stay views, so the op tests that draw such layouts test
    the ops on them, not on contiguous copies."""
    base = np.arange(24.0).reshape(4, 6)
    for view in (base[::2, 1::2], base.T, np.broadcast_to(base[:1], (5, 6))):
        t = Tensor(view)
        assert np.shares_memory(t.data, base)
        assert t.data.strides == view.strides and t.data.flags.writeable == view.flags.writeable
    y = Tensor(np.broadcast_to(base[:1], (5, 6)), requires_grad=True) * 2  # read-only input
    np.testing.assert_array_equal(y.numpy(), np.broadcast_to(base[:1] * 2, (5, 6)))


def test_tensor_hash_is_identity():
    a, b = ml.zeros(2), ml.zeros(2)
    assert len({a, b}) == 2
    assert isinstance(a, Tensor)


def test_unavailable_backend_says_which():
    """Without CuPy or a CUDA device, asking for the GPU backend is an ImportError
    that says what is missing and how to get it, and changes nothing."""
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here; the message is for machines without it")
    except ImportError:
        pass
    assert "cupy" not in ml.available_backends()
    with pytest.raises(ImportError, match=r"CuPy is not installed.*pip install 'minilm\[cuda\]'"):
        ml.use_backend("cupy")
    assert ml.current_backend().name == "numpy"  # the failed switch changed nothing


def test_set_num_threads_and_tune_allocator():
    n = ml.get_num_threads()
    ml.set_num_threads(1)
    assert ml.get_num_threads() == 1
    ml.set_num_threads(n)
    assert isinstance(ml.backends.tune_allocator(), bool)
    x = ml.randn(512, 512)  # allocation still works afterwards
    assert float((x * 0).sum()) == 0.0


def test_to_host_unwraps_tensors():
    """backends.to_host of a Tensor is its array on the host (not an object array of
    0-d Tensors)."""
    from minilm.backends import to_host

    t = ml.tensor([1.0, 2.0])
    out = to_host(t)
    assert type(out) is np.ndarray and out.dtype == t.dtype
    np.testing.assert_array_equal(out, [1.0, 2.0])
