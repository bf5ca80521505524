"""Affine quantization (minilm/quant/affine.py) and the calibration observers
(minilm/quant/observers.py): round-trip error within s/2 for every scheme, clamping,
an exact zero, bit-exact int4 packing, the storage formula, the observers against NumPy,
exact state round trips, and a clear error for every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minilm import Tensor
from minilm.quant import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    QuantizedTensor,
    dequantize,
    fake_quantize,
    pack_int4,
    qparams_from_range,
    qrange,
    quantize,
    quantize_weight,
    unpack_int4,
)

GROUP_SIZES = (1, 2, 4, 8, 32, 64, 128)


# ---------------------------------------------------------------------------- strategies


@st.composite
def weights(draw, granularity: str) -> tuple[np.ndarray, int | None]:
    """A (out, in) weight (odd sides included) and, for "group", a group size dividing in.
    Values: Hypothesis-drawn (repeats, zeros, constant rows) or dense uniform, at a drawn
    magnitude."""
    out = draw(st.integers(1, 5))
    group_size = None
    if granularity == "group":
        group_size = draw(st.sampled_from(GROUP_SIZES))
        n_in = group_size * draw(st.integers(1, 3 if group_size < 64 else 2))
    else:
        n_in = draw(st.integers(1, 37))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    mag = draw(st.sampled_from([1e-3, 1.0, 50.0, 1e-41, 1e30]))  # 1e-41: float32 subnormals
    dense = st.integers(0, 2**32 - 1).map(
        lambda seed: np.random.default_rng(seed).uniform(-1, 1, (out, n_in)))
    drawn = hnp.arrays(np.float64, (out, n_in),
                       elements=st.floats(-1, 1, allow_nan=False, allow_infinity=False))
    w = draw(dense | drawn)
    shift = draw(st.sampled_from([0.0, 0.5, -0.7]))  # one-sided ranges for asymmetric
    return ((w + shift) * mag).astype(dtype), group_size


def expanded(qt: QuantizedTensor, a: np.ndarray) -> np.ndarray:
    """A per-block parameter broadcast to the weight's shape (the test's own version)."""
    if qt.granularity == "tensor":
        return np.broadcast_to(a, qt.shape)
    if qt.granularity == "channel":
        return np.broadcast_to(a[:, None], qt.shape)
    return np.repeat(a, qt.group_size, axis=1)


schemes = st.tuples(st.sampled_from(["tensor", "channel", "group"]),
                    st.sampled_from([8, 4]), st.booleans())


# ---------------------------------------------------------------------------- the grid


def test_qrange():
    assert qrange(8, True) == (-127, 127) and qrange(8, False) == (-128, 127)
    assert qrange(4, True) == (-7, 7) and qrange(4, False) == (-8, 7)
    assert qrange(3, True) == (-3, 3) and qrange(2, False) == (-2, 1)


def test_qparams_formulas():
    s, z = qparams_from_range(np.float32(-1.0), np.float32(3.0), 8, True)
    assert s.dtype == np.float32 and z.dtype == np.int32
    assert s == np.float32(3.0 / 127) and z == 0
    s, z = qparams_from_range(np.float32(-1.0), np.float32(3.0), 8, False)
    assert s == np.float32(4.0 / 255) and z == np.rint(-128 + 1.0 / np.float64(s))
    # the range is widened to contain 0; float64 in gives float64 scales
    s, z = qparams_from_range(np.array([2.0, -4.0]), np.array([6.0, -1.0]), 4, False)
    assert s.dtype == np.float64
    np.testing.assert_array_equal(s, [6.0 / 15, 4.0 / 15])
    np.testing.assert_array_equal(z, [-8, 7])
    # a zero range: s = 1, z = 0, nothing divides by zero
    for sym in (True, False):
        s, z = qparams_from_range(np.zeros(3, np.float32), np.zeros(3, np.float32), 8, sym)
        np.testing.assert_array_equal(s, 1.0)
        np.testing.assert_array_equal(z, 0)
        np.testing.assert_array_equal(quantize(np.zeros(3, np.float32), s, z, 8, sym), 0)


@given(schemes, st.data())
def test_round_trip_within_half_a_step(scheme, data):
    granularity, bits, symmetric = scheme
    w, group_size = data.draw(weights(granularity))
    qt = quantize_weight(w, bits, symmetric, granularity, group_size)
    qmin, qmax = qrange(bits, symmetric)
    ints = qt.int_values()
    assert ints.dtype == np.int8 and ints.shape == w.shape
    assert ints.min() >= qmin and ints.max() <= qmax
    assert qt.q.dtype == (np.uint8 if bits == 4 else np.int8)
    assert qt.scale.dtype == (np.float64 if w.dtype == np.float64 else np.float32)
    got = qt.dequantize()
    assert got.dtype == w.dtype and got.shape == w.shape
    s = expanded(qt, qt.scale).astype(np.float64)
    eps = np.finfo(w.dtype).eps
    slack = 4 * eps * (np.abs(w) + s * 256)  # the rounding of x / s and of s · (q − z)
    err = np.abs(got.astype(np.float64) - w)
    assert np.all(err <= s / 2 + slack), float(np.max(err / s))
    # the weight's values all lie inside the clip range [s(qmin − z), s(qmax − z)]
    z = expanded(qt, qt.zero)
    assert np.all(w >= s * (qmin - z) - s / 2 - slack)
    assert np.all(w <= s * (qmax - z) + s / 2 + slack)


@given(st.sampled_from([2, 3, 4, 8]), st.booleans(),
       st.floats(-100, 0), st.floats(0, 100), st.integers(0, 2**32 - 1))
def test_values_outside_the_range_clamp_to_its_ends(bits, symmetric, xmin, xmax, seed):
    scale, zero = qparams_from_range(np.float64(xmin), np.float64(xmax), bits, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    lo_end, hi_end = scale * (qmin - zero), scale * (qmax - zero)
    rng = np.random.default_rng(seed)
    span = max(hi_end - lo_end, 1.0)
    above = hi_end + rng.uniform(0, 10 * span, 50)
    below = lo_end - rng.uniform(0, 10 * span, 50)
    np.testing.assert_array_equal(quantize(above, scale, zero, bits, symmetric), qmax)
    np.testing.assert_array_equal(quantize(below, scale, zero, bits, symmetric), qmin)
    np.testing.assert_array_equal(fake_quantize(above, scale, zero, bits, symmetric), hi_end)
    np.testing.assert_array_equal(fake_quantize(below, scale, zero, bits, symmetric), lo_end)


@given(st.sampled_from([2, 3, 4, 8]), st.booleans(), st.sampled_from([np.float32, np.float64]),
       st.floats(-1e4, 0), st.floats(0, 1e4))
def test_zero_is_exact(bits, symmetric, dtype, xmin, xmax):
    scale, zero = qparams_from_range(dtype(xmin), dtype(xmax), bits, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    assert qmin <= zero <= qmax and zero == np.rint(zero)
    q = quantize(np.zeros(4, dtype), scale, zero, bits, symmetric)
    np.testing.assert_array_equal(q, zero)
    back = dequantize(q, scale, zero)
    assert np.all(back == 0.0)


@given(schemes, st.data())
def test_zero_weights_dequantize_to_exactly_zero(scheme, data):
    granularity, bits, symmetric = scheme
    w, group_size = data.draw(weights(granularity))
    w[:, ::3] = 0.0
    got = quantize_weight(w, bits, symmetric, granularity, group_size).dequantize()
    assert np.all(got[:, ::3] == 0.0)


def test_rounding_is_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5], np.float32)
    np.testing.assert_array_equal(quantize(x, np.float32(1), 0, 8, True), [0, 2, 2, 0, -2])


def test_quantize_weight_accepts_a_tensor_and_any_shape_per_tensor():
    w = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    a = quantize_weight(Tensor(w), 8, True, "tensor")
    b = quantize_weight(w, 8, True, "tensor")
    np.testing.assert_array_equal(a.q, b.q)
    assert a.scale.shape == () and a.dequantize().shape == (3, 4, 5)
    c = quantize_weight(w[0, 0], 4, False, "tensor")  # 1-D, odd length, packed
    assert c.q.shape == (3,) and c.dequantize().shape == (5,)


# ---------------------------------------------------------------------------- int4 packing


def test_pack_layout_and_all_sixteen_values():
    values = np.arange(-8, 8, dtype=np.int8)
    packed = pack_int4(values)
    assert packed.dtype == np.uint8 and packed.shape == (8,)
    for i in range(8):
        lo, hi = int(values[2 * i]), int(values[2 * i + 1])
        assert packed[i] == (lo & 0xF) | ((hi & 0xF) << 4)
    np.testing.assert_array_equal(unpack_int4(packed, 16), values)
    # every (low, high) pair
    pairs = np.array([[a, b] for a in range(-8, 8) for b in range(-8, 8)], np.int8)
    np.testing.assert_array_equal(unpack_int4(pack_int4(pairs), 2), pairs)
    assert len(set(pack_int4(pairs)[:, 0].tolist())) == 256


@given(hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(shape, seed):
    q = np.random.default_rng(seed).integers(-8, 8, shape).astype(np.int8)
    packed = pack_int4(q)
    assert packed.shape == shape[:-1] + ((shape[-1] + 1) // 2,)
    if shape[-1] % 2:  # the pad nibble is 0
        assert np.all(packed[..., -1] >> 4 == 0)
    np.testing.assert_array_equal(unpack_int4(packed, shape[-1]), q)


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[-8, 7\].*\[0, 8\]"):
        pack_int4(np.array([0, 8]))
    with pytest.raises(TypeError, match="integer"):
        pack_int4(np.array([0.5]))
    with pytest.raises(TypeError, match="uint8"):
        unpack_int4(np.array([1], np.int8), 2)
    with pytest.raises(ValueError, match="n=5"):
        unpack_int4(np.zeros(2, np.uint8), 5)


# ---------------------------------------------------------------------------- storage


def test_bits_per_weight_counts_the_scales():
    w = np.random.default_rng(0).standard_normal((6, 128)).astype(np.float32)
    assert quantize_weight(w, 4, True, "group", 64).bits_per_weight == 4 + 32 / 64
    assert quantize_weight(w, 4, False, "group", 64).bits_per_weight == 4 + 32 / 64 + 32 / 64
    assert quantize_weight(w, 8, True, "channel").bits_per_weight == 8 + 32 / 128
    qt = quantize_weight(w, 8, True, "tensor")
    assert qt.nbytes == 6 * 128 + 4
    odd = quantize_weight(w[:, :7], 4, True, "channel")  # 7 values → 4 bytes a row
    assert odd.nbytes == 6 * 4 + 6 * 4


@given(schemes, st.data())
def test_state_round_trip_is_exact(scheme, data):
    granularity, bits, symmetric = scheme
    w, group_size = data.draw(weights(granularity))
    qt = quantize_weight(w, bits, symmetric, granularity, group_size)
    state, meta = qt.to_state(), json.loads(json.dumps(qt.meta()))
    assert ("zero" in state) == (not symmetric)
    back = QuantizedTensor.from_state({k: v.copy() for k, v in state.items()}, meta)
    for name in ("q", "scale", "zero"):
        a, b = getattr(qt, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    assert back.meta() == qt.meta() and back.shape == qt.shape and back.dtype == qt.dtype
    assert back.dequantize().tobytes() == qt.dequantize().tobytes()


def test_from_state_rejects_mismatches():
    qt = quantize_weight(np.random.default_rng(0).standard_normal((4, 8)), 4, False, "group", 4)
    state, meta = qt.to_state(), qt.meta()
    cases = [
        ({**state, "q": state["q"].astype(np.int8)}, meta, "'q' is int8"),
        ({**state, "scale": state["scale"][:, :1]}, meta, "'scale' is float64"),
        ({k: v for k, v in state.items() if k != "zero"}, meta, "missing array 'zero'"),
        ({**state, "extra": state["q"]}, meta, "unexpected arrays"),
        (state, {**meta, "format": "other"}, "metadata"),
        (state, {**meta, "bits": 5}, "bits=5"),
        (state, {**meta, "group_size": 3}, "group_size=3"),
        (state, {k: v for k, v in meta.items() if k != "shape"}, "metadata"),
        ({**state, "scale": -state["scale"]}, meta, "positive"),
        ({**state, "zero": state["zero"] + 100}, meta, "zero points"),
    ]
    for st_, me, msg in cases:
        with pytest.raises(ValueError, match=msg):
            QuantizedTensor.from_state(st_, me)


# ---------------------------------------------------------------------------- bad input


def test_bad_input_is_named():
    w = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match="bits=5"):
        qrange(5, True)
    with pytest.raises(ValueError, match="bits=5"):
        quantize_weight(w, bits=5)
    with pytest.raises(ValueError, match="bits=5"):
        quantize(w, 1.0, 0, 5, True)
    with pytest.raises(ValueError, match="bits=5"):
        qparams_from_range(-1.0, 1.0, 5, True)
    with pytest.raises(ValueError, match="bits=5"):
        MSEObserver(bits=5)
    with pytest.raises(ValueError, match=r"group_size=0.*\(4, 6\)"):
        quantize_weight(w, 4, granularity="group", group_size=0)
    with pytest.raises(ValueError, match=r"group_size=4.*\(4, 6\)"):
        quantize_weight(w, 4, granularity="group", group_size=4)
    with pytest.raises(ValueError, match=r"needs a group_size.*\(4, 6\)"):
        quantize_weight(w, 4, granularity="group")
    with pytest.raises(ValueError, match="group_size=2 given with granularity='channel'"):
        quantize_weight(w, 4, granularity="channel", group_size=2)
    with pytest.raises(ValueError, match=r"2-D weight.*\(6,\)"):
        quantize_weight(w[0], 8, granularity="channel")
    with pytest.raises(ValueError, match="granularity='row'"):
        quantize_weight(w, 8, granularity="row")
    with pytest.raises(TypeError, match="int64"):
        quantize_weight(np.ones((4, 6), np.int64))
    with pytest.raises(TypeError, match="list"):
        quantize_weight([[1.0, 2.0]])
    with pytest.raises(TypeError, match="int32"):
        quantize(np.ones(3, np.int32), 1.0, 0, 8, True)
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize_weight(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="positive"):
        quantize(w, 0.0, 0, 8, True)
    with pytest.raises(ValueError, match=r"shape \(2,\) holds NaN"):
        quantize(np.array([np.nan, 1.0]), 1.0, 0, 8, True)
    with pytest.raises(ValueError, match="finite"):
        qparams_from_range(-np.inf, 1.0, 8, True)
    with pytest.raises(ValueError, match="xmin > xmax"):
        qparams_from_range(2.0, 1.0, 8, True)
    with pytest.raises(TypeError, match="int64"):
        MinMaxObserver().observe(np.arange(3))
    with pytest.raises(ValueError, match="granularity='row'"):
        MinMaxObserver(granularity="row")
    with pytest.raises(ValueError, match="no data observed"):
        MinMaxObserver().range()
    with pytest.raises(ValueError, match="momentum=1.5"):
        MovingAverageMinMaxObserver(momentum=1.5)
    with pytest.raises(ValueError, match="percentile=30"):
        PercentileObserver(percentile=30)
    obs = MinMaxObserver(granularity="channel")
    obs.observe(np.ones((3, 2)))
    with pytest.raises(ValueError, match="4 channels"):
        obs.observe(np.ones((4, 2)))
    with pytest.raises(ValueError, match="observer of granularity 'channel'"):
        quantize_weight(w, observer=MinMaxObserver())


# ---------------------------------------------------------------------------- observers


batches = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4).map(
    lambda seeds: [np.random.default_rng(s).standard_normal((3, 5)) * (1 + s % 7) for s in seeds])


@given(batches)
def test_minmax_is_the_min_and_max_seen(xs):
    per_tensor, per_channel = MinMaxObserver(), MinMaxObserver("channel", axis=1)
    for x in xs:
        assert per_tensor.observe(x) is x
        per_channel.observe(x)
    both = np.concatenate(xs)
    assert per_tensor.range() == (both.min(), both.max())
    lo, hi = per_channel.range()
    np.testing.assert_array_equal(lo, both.min(axis=0))
    np.testing.assert_array_equal(hi, both.max(axis=0))
    s, z = per_tensor.qparams(8, False)
    np.testing.assert_array_equal((s, z), qparams_from_range(both.min(), both.max(), 8, False))
    per_tensor.reset()
    with pytest.raises(ValueError, match="no data"):
        per_tensor.range()


@given(batches, st.sampled_from([0.0, 0.5, 0.9]))
def test_moving_average_formula(xs, m):
    obs = MovingAverageMinMaxObserver(momentum=m)
    lo, hi = xs[0].min(), xs[0].max()
    for x in xs[1:]:
        lo, hi = m * lo + (1 - m) * x.min(), m * hi + (1 - m) * x.max()
    for x in xs:
        obs.observe(x)
    np.testing.assert_allclose(obs.range(), (lo, hi), rtol=1e-14)


def test_token_granularity_is_per_row_of_the_latest_batch():
    rng = np.random.default_rng(0)
    obs = MinMaxObserver("token")
    obs.observe(rng.standard_normal((2, 3, 4)))
    x = rng.standard_normal((2, 3, 4))
    obs.observe(x)
    lo, hi = obs.range()
    np.testing.assert_array_equal(lo, x.min(axis=-1))
    np.testing.assert_array_equal(hi, x.max(axis=-1))
    s, _ = obs.qparams(8, True)
    assert s.shape == (2, 3)


@given(batches, st.sampled_from([90.0, 99.0, 99.99, 100.0]))
def test_percentile_matches_numpy(xs, p):
    obs, chan = PercentileObserver(p), PercentileObserver(p, "channel")
    for x in xs:
        obs.observe(x)
        chan.observe(x)
    both = np.concatenate(xs)
    lo, hi = obs.range()
    assert lo == np.percentile(both, 100 - p) and hi == np.percentile(both, p)
    a = np.percentile(np.abs(both), p)
    np.testing.assert_array_equal(obs.qparams(8, True), qparams_from_range(-a, a, 8, True))
    lo, hi = chan.range()
    rows = np.concatenate(xs, axis=1)
    np.testing.assert_array_equal(hi, np.percentile(rows, p, axis=1))


def _error(x, scale, zero, bits, symmetric):
    return float(np.sum((x - fake_quantize(x, scale, zero, bits, symmetric)) ** 2))


@given(st.integers(0, 2**32 - 1), st.sampled_from([4, 8]), st.booleans())
def test_mse_observer_beats_minmax_with_outliers(seed, bits, symmetric):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(2000)
    x[rng.integers(0, 2000, 3)] *= 30.0  # a few outliers
    mse, mm = MSEObserver(bits, symmetric, grid=50), MinMaxObserver()
    mse.observe(x)
    mm.observe(x)
    e_mse = _error(x, *mse.qparams(), bits, symmetric)
    e_mm = _error(x, *mm.qparams(bits, symmetric), bits, symmetric)
    assert e_mse <= e_mm


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_clipping_pays_on_heavy_tails_at_4_bits(symmetric):
    x = np.random.default_rng(0).standard_t(3, 5000)  # heavy tails: a few large values
    mse, mm = MSEObserver(4, symmetric), MinMaxObserver()
    mse.observe(x)
    mm.observe(x)
    e_mse = _error(x, *mse.qparams(), 4, symmetric)
    assert e_mse < 0.7 * _error(x, *mm.qparams(4, symmetric), 4, symmetric)
    assert mse.search(4, symmetric)[2] < 1.0  # the range it chose is clipped


def test_observers_plug_into_quantize_weight():
    w = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)
    plain = quantize_weight(w, 4, False, "group", 8)
    via = quantize_weight(w, 4, False, "group", 8, observer=MinMaxObserver("channel"))
    np.testing.assert_array_equal(plain.q, via.q)
    np.testing.assert_array_equal(plain.scale, via.scale)
    tensor = quantize_weight(w, 8, True, "tensor", observer=MinMaxObserver())
    np.testing.assert_array_equal(tensor.q, quantize_weight(w, 8, True, "tensor").q)
    mse = quantize_weight(w, 4, True, "channel", observer=MSEObserver(4, True, granularity="channel"))
    err = np.sum((mse.dequantize() - w) ** 2, axis=1)
    assert np.all(err <= np.sum((quantize_weight(w, 4, True, "channel").dequantize() - w) ** 2, 1) + 1e-6)


def test_dequantize_never_wraps_int8():
    q, z = np.array([127, -128], np.int8), np.array([-128, 127], np.int8)
    np.testing.assert_array_equal(dequantize(q, np.float32(0.5), z), [127.5, -127.5])


def test_observers_take_tensors_and_keep_float32():
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    for obs in (MinMaxObserver("channel", axis=-1), PercentileObserver(99.0, "channel", axis=-1),
                MSEObserver(8, False, grid=10, granularity="channel", axis=-1)):
        t = Tensor(x)
        assert obs.observe(t) is t
        lo, hi = obs.range()
        assert lo.shape == (6,) and lo.dtype == np.float32
        s, z = obs.qparams(8, False)
        assert s.dtype == np.float32 and z.dtype == np.int32 and s.shape == (6,)
