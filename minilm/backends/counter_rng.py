"""A counter-based random generator written against ``xp``: the CuPy backend's ``rng``.

CuPy's own ``Generator`` has no ``normal``, ``permutation``, ``choice`` or ``shuffle`` and
a state that cannot be written to a checkpoint. This one draws every number from its
position in one stream, so it has all of those, its state is two integers, and the
same seed gives the same numbers on the host (NumPy) and on the device (CuPy), which is
what lets its arithmetic be tested on a machine without a GPU.

The i-th 64-bit word of the stream of ``seed`` is SplitMix64's output at that position
(Steele, Lea & Flood, "Fast splittable pseudorandom number generators", 2014)::

    key = mix(seed * G),  G = 0x9E3779B97F4A7C15
    z_i = mix(key + (i + 1) * G)
    mix(z): z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
            z ^= z >> 31                         (all arithmetic modulo 2^64)

and a draw of n numbers takes words ``counter .. counter + n - 1`` and advances the
counter by n. From the words:

    random:          u = (z >> 11) 2^-53                      in [0, 1), 53 random bits
    integers(lo, hi): lo + z mod (hi - lo)          (bias below (hi - lo) / 2^64)
    standard_normal: sqrt(-2 ln(1 - u1)) cos(2 pi u2)          (Box-Muller, one of the pair)
    permutation(n):  the argsort of n uniforms

The fused dropout kernel of the CuPy backend computes ``random`` the same way from the
same counter, so its masks equal ``rng.random(shape) >= p`` on either machine.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy

__all__ = ["CounterRng", "splitmix64"]

GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def _mix_int(z: int) -> int:
    """SplitMix64's finaliser on one Python int (the key; arrays use ``splitmix64``)."""
    z ^= z >> 30
    z = (z * _M1) & _MASK
    z ^= z >> 27
    z = (z * _M2) & _MASK
    return z ^ (z >> 31)


def splitmix64(xp: Any, key: int, index: Any) -> Any:
    """Words ``mix(key + (index + 1) G)`` for a uint64 array ``index`` (of ``xp``)."""
    u = xp.uint64
    z = u(key) + (index + u(1)) * u(GOLDEN)
    z = (z ^ (z >> u(30))) * u(_M1)
    z = (z ^ (z >> u(27))) * u(_M2)
    return z ^ (z >> u(31))


def _shape(size: Any) -> tuple:
    if size is None:
        return ()
    if isinstance(size, int | numpy.integer):
        return (int(size),)
    return tuple(int(s) for s in size)


class CounterRng:
    """A NumPy-``Generator``-like source of random arrays of ``xp`` (see the module
    docstring). ``state`` / ``set_state`` are JSON-serialisable."""

    name = "minilm.CounterRng"

    def __init__(self, xp: Any, seed: int = 0) -> None:
        self.xp = xp
        self.seed(seed)

    def seed(self, seed: int) -> None:
        try:
            seed = operator.index(seed)
        except TypeError:
            raise TypeError(f"CounterRng: seed must be an int, got {type(seed).__name__}") from None
        self._seed = seed & _MASK
        self.key = _mix_int((self._seed * GOLDEN) & _MASK)
        self.counter = 0

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> dict:
        return {"bit_generator": self.name, "seed": self._seed, "counter": self.counter}

    def set_state(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("bit_generator") != self.name:
            raise ValueError(f"CounterRng: not a {self.name} state: {state!r:.120}")
        self.seed(int(state["seed"]))
        self.counter = int(state["counter"])

    def take(self, n: int) -> int:
        """Reserve n words; returns the first one's position (kernels draw them)."""
        start = self.counter
        self.counter += int(n)
        return start

    # ------------------------------------------------------------------ draws
    def _words(self, shape: tuple, xp: Any = None) -> Any:
        xp = self.xp if xp is None else xp
        n = int(numpy.prod(shape, dtype=numpy.int64))
        start = self.take(n)
        index = xp.arange(start, start + n, dtype=xp.uint64)
        return splitmix64(xp, self.key, index).reshape(shape)

    def _module(self, size: Any) -> Any:
        return numpy if size is None else self.xp  # a single number stays on the host

    def random(self, size: Any = None, dtype: Any = numpy.float64) -> Any:
        xp = self._module(size)
        u = (self._words(_shape(size), xp) >> xp.uint64(11)).astype(xp.float64) * 2.0**-53
        u = u.astype(dtype, copy=False)
        return u[()] if size is None else u

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None) -> Any:
        return low + (high - low) * self.random(size)

    def standard_normal(self, size: Any = None, dtype: Any = numpy.float64) -> Any:
        xp = self._module(size)
        shape = _shape(size)
        u = self.random((2, *shape)) if size is not None else \
            numpy.array([self.random(), self.random()])
        z = xp.sqrt(-2.0 * xp.log1p(-u[0])) * xp.cos((2.0 * numpy.pi) * u[1])
        z = z.astype(dtype, copy=False)
        return z[()] if size is None else z

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None) -> Any:
        return loc + scale * self.standard_normal(size)

    def integers(self, low: int, high: int | None = None, size: Any = None,
                 dtype: Any = numpy.int64, endpoint: bool = False) -> Any:
        if high is None:
            low, high = 0, low
        low, high = int(low), int(high) + (1 if endpoint else 0)
        if high <= low:
            raise ValueError(f"integers: high ({high}) must be above low ({low})")
        if high - low > _MASK:
            raise ValueError(f"integers: the range [{low}, {high}) is wider than 2^64")
        xp = self._module(size)
        offset = self._words(_shape(size), xp) % xp.uint64(high - low)
        if low >= 0:
            out = (offset + xp.uint64(low)).astype(dtype)
        else:
            out = offset.astype(xp.int64) + low
            out = out.astype(dtype, copy=False)
        return out[()] if size is None else out

    def permutation(self, x: Any) -> Any:
        if isinstance(x, int | numpy.integer):
            return self.xp.argsort(self.random(int(x)))
        x = self.xp.asarray(x)
        return x[self.xp.argsort(self.random(x.shape[0]))]

    def shuffle(self, x: Any) -> None:
        """Shuffle ``x`` in place along its first axis."""
        x[...] = x[self.xp.argsort(self.random(x.shape[0]))]

    def choice(self, a: Any, size: Any = None, replace: bool = True, p: Any = None) -> Any:
        xp = self.xp
        pool = xp.arange(int(a)) if isinstance(a, int | numpy.integer) else xp.asarray(a)
        n = pool.shape[0]
        shape = _shape(size)
        count = int(numpy.prod(shape, dtype=numpy.int64))
        if not replace:
            if count > n:
                raise ValueError(f"choice: cannot take {count} of {n} without replacement")
            if p is not None:
                raise ValueError("choice: p with replace=False is not supported here")
            picked = self.permutation(n)[:count]
        elif p is not None:
            cdf = xp.cumsum(xp.asarray(p, dtype=xp.float64))
            picked = xp.searchsorted(cdf / cdf[-1], self.random(count), side="right")
            picked = xp.minimum(picked, n - 1)
        else:
            picked = self.integers(0, n, count)
        out = pool[picked].reshape(shape)
        return out[()] if size is None else out
