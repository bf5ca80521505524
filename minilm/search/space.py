"""Search spaces: named dimensions, each sampled at random, mapped to the unit interval
(``encode``) and back (``decode``), so that every strategy works on ``[0, 1]^d``.

    Float(lo, hi)            u = (x - lo) / (hi - lo)
    Float(lo, hi, log=True)  u = (log x - log lo) / (log hi - log lo)
    Int(lo, hi[, log])       as Float, decoded to the nearest integer in [lo, hi]
    Choice([a, b, c])        u = (i + 1/2) / k for the i-th of k values; i = floor(u k)
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

__all__ = ["Choice", "Float", "Int", "Space"]


class Float:
    """A real number in ``[lo, hi]``, uniform in ``x`` (or in ``log x`` with ``log``)."""

    def __init__(self, lo: float, hi: float, log: bool = False) -> None:
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
            raise ValueError(f"{type(self).__name__}: need finite low < high, got [{lo}, {hi}]")
        if log and lo <= 0:
            raise ValueError(f"{type(self).__name__}: log=True needs low > 0, got {lo}")
        self.lo, self.hi, self.log = lo, hi, bool(log)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.lo:g}, {self.hi:g}, log={self.log})"

    def _ends(self) -> tuple[float, float]:
        return (math.log(self.lo), math.log(self.hi)) if self.log else (self.lo, self.hi)

    def encode(self, x: Any) -> float:
        a, b = self._ends()
        v = math.log(float(x)) if self.log else float(x)
        return float(np.clip((v - a) / (b - a), 0.0, 1.0))

    def decode(self, u: float) -> Any:
        a, b = self._ends()
        v = a + float(np.clip(u, 0.0, 1.0)) * (b - a)
        return float(min(max(math.exp(v) if self.log else v, self.lo), self.hi))

    def sample(self, rng: np.random.Generator) -> Any:
        return self.decode(rng.random())

    def grid(self, n: int) -> list:
        """``n`` points evenly spaced in the encoded interval, ends included."""
        return [self.decode(u) for u in (np.linspace(0, 1, n) if n > 1 else [0.5])]


class Int(Float):
    """An integer in ``[lo, hi]`` (both included)."""

    def __init__(self, lo: int, hi: int, log: bool = False) -> None:
        if int(lo) != lo or int(hi) != hi:
            raise ValueError(f"Int: low and high must be integers, got [{lo}, {hi}]")
        super().__init__(int(lo), int(hi), log)

    def __repr__(self) -> str:
        return f"Int({int(self.lo)}, {int(self.hi)}, log={self.log})"

    def decode(self, u: float) -> Any:
        return int(min(max(round(super().decode(u)), int(self.lo)), int(self.hi)))

    def sample(self, rng: np.random.Generator) -> Any:
        if not self.log:
            return int(rng.integers(int(self.lo), int(self.hi) + 1))
        return self.decode(rng.random())

    def grid(self, n: int) -> list:
        return sorted(set(super().grid(n)))


class Choice:
    """One of a list of values (numbers, strings or booleans)."""

    def __init__(self, values: list) -> None:
        values = list(values)
        if not values:
            raise ValueError("Choice: needs at least one value, got []")
        if len({repr(v) for v in values}) != len(values):
            raise ValueError(f"Choice: the values must be distinct, got {values}")
        self.values = values

    def __repr__(self) -> str:
        return f"Choice({self.values!r})"

    def encode(self, x: Any) -> float:
        for i, v in enumerate(self.values):
            if v == x and type(v) is type(x) or repr(v) == repr(x):
                return (i + 0.5) / len(self.values)
        raise ValueError(f"Choice: {x!r} is not one of {self.values}")

    def decode(self, u: float) -> Any:
        k = len(self.values)
        return self.values[min(int(float(np.clip(u, 0.0, 1.0)) * k), k - 1)]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def grid(self, n: int) -> list:
        return list(self.values)


class Space:
    """Named dimensions, in order: ``Space({"lr": Float(1e-4, 1e-2, log=True), ...})``."""

    def __init__(self, dims: dict) -> None:
        if not dims:
            raise ValueError("Space: needs at least one dimension")
        for name, d in dims.items():
            if not isinstance(d, (Float, Choice)):
                raise TypeError(f"Space: {name!r} must be a Float, Int or Choice, got "
                                f"{type(d).__name__}")
        self.dims = dict(dims)
        self.names = list(dims)

    def __len__(self) -> int:
        return len(self.dims)

    def __repr__(self) -> str:
        return f"Space({self.dims!r})"

    def sample(self, rng: np.random.Generator) -> dict:
        return {k: d.sample(rng) for k, d in self.dims.items()}

    def encode(self, params: dict) -> np.ndarray:
        missing = [k for k in self.names if k not in params]
        if missing:
            raise ValueError(f"Space.encode: params lack {missing}")
        return np.array([self.dims[k].encode(params[k]) for k in self.names])

    def decode(self, u: Any) -> dict:
        u = np.asarray(u, dtype=float).reshape(-1)
        if u.size != len(self.names):
            raise ValueError(f"Space.decode: expected {len(self.names)} numbers, got {u.size}")
        return {k: self.dims[k].decode(x) for k, x in zip(self.names, u)}

    def grid(self, points: int | dict = 3) -> list[dict]:
        """The Cartesian product of each dimension's grid (``points`` per Float / Int, or
        a dict name -> points; a Choice gives all its values), the last name fastest."""
        per = {k: points.get(k, 3) if isinstance(points, dict) else points for k in self.names}
        axes = [self.dims[k].grid(int(per[k])) for k in self.names]
        return [dict(zip(self.names, combo)) for combo in itertools.product(*axes)]
