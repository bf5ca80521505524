"""The CuPy stand-in itself: device results stay device arrays, mixing a host array
in is CuPy's TypeError, and the fixture leaves the backend registry as it found it."""

import fake_cupy as cp
import numpy as np
import pytest
from fake_cupy import DeviceArray

import minilm as ml
from minilm import backends


def test_created_and_computed_arrays_are_device_arrays():
    a = cp.arange(6, dtype=cp.float64).reshape(2, 3)
    b = cp.ones((2, 3))
    for x in (a, b, a + b, a * 2.0, np.exp(a), a.sum(axis=0), a @ b.T, a.T, a[0],
              cp.concatenate([a, b]), np.concatenate([a, b]), cp.zeros_like(a),
              cp.where(a > 1, a, b), a.astype(np.float32), cp.asarray(np.ones(3))):
        assert type(x) is DeviceArray, type(x)


def test_reductions_are_zero_d_device_arrays_not_scalars():
    a = cp.asarray([1.0, 2.0, 3.0])
    for s in (a.sum(), cp.sum(a), np.max(a), cp.linalg.norm(a), a.mean()):
        assert type(s) is DeviceArray and s.ndim == 0
    assert float(a.sum()) == 6.0 and a.sum().item() == 6.0


@pytest.mark.parametrize("mix", [
    lambda d, h: d + h, lambda d, h: h + d, lambda d, h: d @ h, lambda d, h: np.maximum(d, h),
    lambda d, h: cp.concatenate([d, h]), lambda d, h: np.concatenate([d, h]),
    lambda d, h: cp.add(h, h), lambda d, h: cp.where(d > 0, d, h),
    lambda d, h: np.add(d, d, out=h),
])
def test_mixing_a_host_array_raises_like_cupy(mix):
    d, h = cp.ones(3), np.ones(3)
    with pytest.raises(TypeError, match=r"Unsupported type <class 'numpy.ndarray'>"):
        mix(d, h)


def test_scalars_and_zero_d_host_arrays_mix_freely():
    d = cp.ones(3)
    for s in (2.0, np.float32(2.0), np.asarray(2.0), 2):
        assert type(d * s) is DeviceArray and float((d * s).sum()) == 6.0


def test_get_and_asnumpy_are_plain_host_copies():
    d = cp.arange(3.0)
    for h in (d.get(), cp.asnumpy(d)):
        assert type(h) is np.ndarray
        h[0] = 99.0
        assert d[0] == 0.0
    assert type(cp.asnumpy(np.ones(2))) is np.ndarray
    assert cp.ndarray is DeviceArray and cp.float32 is np.float32


def test_host_indices_and_assignment_are_accepted():
    """CuPy uploads NumPy index arrays and assigned values itself."""
    d = cp.arange(5.0)
    assert type(d[np.array([0, 2])]) is DeviceArray
    d[np.array([True, False, True, False, False])] = np.array([7.0, 8.0])
    assert d.get().tolist() == [7.0, 1.0, 8.0, 3.0, 4.0]


def test_fixture_registers_and_restores(fake_gpu):
    assert ml.get_backend("cupy") is fake_gpu and fake_gpu.xp is cp
    t = ml.tensor([1.0, 2.0]).to("cuda")
    assert t.device == "cuda" and type(t.data) is DeviceArray
    assert type(fake_gpu.to_numpy(t.data)) is np.ndarray


def test_after_the_fixture_the_real_cupy_backend_is_back():
    assert "cupy" not in backends._INSTANCES
    assert DeviceArray not in backends._DEVICE_TYPES
    assert ml.current_backend().name == "numpy"


def test_ascontiguousarray_refuses_host_data_like_cupy():
    """cupy.ascontiguousarray takes device arrays only (uploading is asarray's job)."""
    import fake_cupy

    with pytest.raises(TypeError, match="Unsupported type"):
        fake_cupy.ascontiguousarray(np.ones(3))
    assert type(fake_cupy.ascontiguousarray(fake_cupy.ones(3))) is fake_cupy.ndarray


def test_strict_mode_refuses_implicit_host_conversion(fake_gpu):
    """Under the fake_gpu fixture, numpy.asarray & co. of a device array raise CuPy's
    TypeError; host data and explicit copies (.get(), to_host) still work."""
    import fake_cupy

    from minilm.backends import to_host

    d = fake_cupy.ones(3)
    for convert in (np.asarray, np.array, np.asanyarray, np.ascontiguousarray):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
            convert(d)
    assert type(np.asarray([1, 2])) is np.ndarray and type(to_host(d)) is np.ndarray
    assert type(d.get()) is np.ndarray
