"""CounterRng, the CuPy backend's generator (minilm/backends/counter_rng.py): the
stream is SplitMix64 at each position, draws advance a counter, the state is two
integers, and every method has the distribution its NumPy namesake has."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minilm.backends.counter_rng import CounterRng, _mix_int, splitmix64


def _splitmix_sequential(seed: int, n: int) -> list:
    """SplitMix64 as its authors write it: a state advanced by the golden gamma."""
    mask = (1 << 64) - 1
    key = _mix_int((seed * 0x9E3779B97F4A7C15) & mask)
    state, out = key, []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & mask
        out.append(_mix_int(state))
    return out


def test_mix_is_splitmix64():
    """SplitMix64's published first outputs for the state 1234567."""
    gamma, mask, state, out = 0x9E3779B97F4A7C15, (1 << 64) - 1, 1234567, []
    for _ in range(3):
        state = (state + gamma) & mask
        out.append(_mix_int(state))
    assert out == [6457827717110365317, 3203168211198807973, 9817491932198370423]


def test_words_are_splitmix64_at_each_position():
    rng = CounterRng(np, 42)
    words = splitmix64(np, rng.key, np.arange(6, dtype=np.uint64))
    assert [int(w) for w in words] == _splitmix_sequential(42, 6)


def test_draws_advance_the_counter_and_split_without_overlap():
    a, b = CounterRng(np, 3), CounterRng(np, 3)
    whole = a.random(10)
    parts = np.concatenate([b.random(4), b.random((2, 3)).ravel()])
    np.testing.assert_array_equal(whole, parts)
    assert a.counter == b.counter == 10


def test_state_round_trips_through_json():
    rng = CounterRng(np, 5)
    rng.random(7)
    state = json.loads(json.dumps(rng.state))
    expected = rng.standard_normal(4)
    other = CounterRng(np, 0)
    other.set_state(state)
    np.testing.assert_array_equal(other.standard_normal(4), expected)
    with pytest.raises(ValueError, match="not a minilm.CounterRng state"):
        other.set_state({"bit_generator": "PCG64"})


def test_distributions():
    rng = CounterRng(np, 1)
    n = 200_000
    u = rng.random(n)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.005
    z = rng.standard_normal(n)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(np.abs(z) < 1.0) - 0.6827) < 0.005
    x = rng.normal(3.0, 2.0, (n,))
    assert abs(x.mean() - 3.0) < 0.02 and abs(x.std() - 2.0) < 0.02
    k = rng.integers(-3, 4, n)
    assert k.dtype == np.int64 and k.min() == -3 and k.max() == 3
    np.testing.assert_allclose(np.bincount(k + 3) / n, 1 / 7, atol=0.005)
    v = rng.uniform(-2.0, 2.0, (n,))
    assert -2.0 <= v.min() and v.max() < 2.0


def test_scalars_permutations_and_choices():
    rng = CounterRng(np, 9)
    assert isinstance(rng.random(), float | np.floating)
    assert 0 <= int(rng.integers(10)) < 10
    assert sorted(rng.permutation(20).tolist()) == list(range(20))
    a = np.arange(12).reshape(6, 2)
    rng.shuffle(a)
    assert sorted(a[:, 0].tolist()) == [0, 2, 4, 6, 8, 10] and (a[:, 1] == a[:, 0] + 1).all()
    picks = rng.choice(5, size=20_000, p=[0.1, 0.2, 0.3, 0.4, 0.0])
    np.testing.assert_allclose(np.bincount(picks, minlength=5) / 20_000,
                               [0.1, 0.2, 0.3, 0.4, 0.0], atol=0.015)
    distinct = rng.choice(10, size=10, replace=False)
    assert sorted(distinct.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="cannot take 11 of 10 without replacement"):
        rng.choice(10, size=11, replace=False)
    with pytest.raises(ValueError, match=r"integers: high \(2\) must be above low \(2\)"):
        rng.integers(2, 2)


def test_seed_must_be_an_int():
    with pytest.raises(TypeError, match="seed must be an int, got float"):
        CounterRng(np, 1.5)
