"""Calibration observers: they watch float arrays (weights, or activations batch after
batch) and turn what they saw into a range [xmin, xmax] and from it the quantization
parameters (scale, zero) of :mod:`minilm.quant.affine`.

Common API: ``observe(x)`` accumulates and returns x unchanged (so an observer can sit
in a forward pass), ``range() -> (xmin, xmax)``, ``qparams(bits, symmetric) -> (scale,
zero)``, ``reset()``.

Granularity (what one range covers):

- ``"tensor"``: one range for everything seen, across all batches; range() gives 0-d
  arrays. For activations calibrated over batches this is the case that matters most.
- ``"channel"``: one range per index along ``axis`` (default 0: the output rows of a
  weight (out, in)); every other axis is reduced. Batches must agree on that axis'
  length; ranges accumulate across batches. range() gives arrays of shape (C,).
- ``"token"``: one range per vector along the last dim (activations (..., d)): each
  row of the *latest* batch, shape x.shape[:-1]. Tokens differ from batch to batch, so
  nothing accumulates: this is dynamic per-token quantization, computed at run time.

Observers:

- :class:`MinMaxObserver`: xmin = min of all x, xmax = max of all x.
- :class:`MovingAverageMinMaxObserver`: the first batch's min/max, then
  xmin ← m·xmin + (1 − m)·min(batch) (and the same for xmax), m = ``momentum``.
- :class:`PercentileObserver`: clips outliers: the ``percentile``-th percentile of |x|
  (symmetric qparams: range (−a, a)), or of both tails (range(), asymmetric qparams:
  xmin = P_{100−p}(x), xmax = P_p(x)), over all values seen (they are kept).
- :class:`MSEObserver`: searches the clipping ratio α ∈ {1/grid, 2/grid, …, 1} of the
  min-max range that minimises ||x − fake_quant(x; α·range)||² over all values seen
  (they are kept). α = 1 is on the grid, so its error is never above min-max's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .affine import _check_bits, _float_array, fake_quantize, qparams_from_range

__all__ = ["Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver",
           "MSEObserver"]

OBSERVER_GRANULARITIES = ("tensor", "channel", "token")


class Observer:
    """Base class: granularity handling, the input checks and qparams from range()."""

    def __init__(self, granularity: str = "tensor", axis: int = 0) -> None:
        name = type(self).__name__
        if granularity not in OBSERVER_GRANULARITIES:
            raise ValueError(f"{name}: granularity={granularity!r} is not one of "
                             f"{OBSERVER_GRANULARITIES}")
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"{name}: axis must be an int, got {axis!r}")
        self.granularity = granularity
        self.axis = int(axis)
        self.reset()

    def reset(self) -> None:
        """Forget everything observed."""
        raise NotImplementedError

    # -- the shared pieces

    def _rows(self, x: Any) -> tuple[np.ndarray, tuple]:
        """x (checked) as a 2-D (units, values) array, and the shape of one range."""
        name = type(self).__name__
        a = _float_array(x, "x", f"{name}.observe")
        if a.size == 0:
            raise ValueError(f"{name}.observe: empty array of shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}.observe: the array of shape {a.shape} holds NaN or inf")
        if self.granularity == "tensor":
            return a.reshape(1, -1), ()
        if a.ndim == 0:
            raise ValueError(f"{name}.observe: {self.granularity} granularity needs at least "
                             f"one dimension, got a 0-d array")
        if self.granularity == "token":
            return a.reshape(-1, a.shape[-1]), a.shape[:-1]
        if not -a.ndim <= self.axis < a.ndim:
            raise ValueError(f"{name}.observe: axis={self.axis} is out of range for shape {a.shape}")
        moved = np.moveaxis(a, self.axis, 0)
        return moved.reshape(moved.shape[0], -1), moved.shape[:1]

    def _check_units(self, old: np.ndarray | None, shape: tuple) -> None:
        if old is not None and self.granularity == "channel" and old.shape != shape:
            raise ValueError(f"{type(self).__name__}.observe: {shape[0]} channels along axis "
                             f"{self.axis}, but earlier batches had {old.shape[0]}")

    def _need_data(self, seen: bool) -> None:
        if not seen:
            raise ValueError(f"{type(self).__name__}: no data observed yet")

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def qparams(self, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero) = qparams_from_range(*range(), bits, symmetric)."""
        xmin, xmax = self.range()
        return qparams_from_range(xmin, xmax, bits, symmetric)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(granularity={self.granularity!r}, axis={self.axis})"


class MinMaxObserver(Observer):
    """xmin = min of every value seen, xmax = max (per unit of the granularity)."""

    def reset(self) -> None:
        self.min_val: np.ndarray | None = None
        self.max_val: np.ndarray | None = None

    def observe(self, x: Any) -> Any:
        rows, shape = self._rows(x)
        lo, hi = rows.min(axis=1).reshape(shape), rows.max(axis=1).reshape(shape)
        self._check_units(self.min_val, shape)
        if self.min_val is None or self.granularity == "token":
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = np.minimum(self.min_val, lo)
            self.max_val = np.maximum(self.max_val, hi)
        return x

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        self._need_data(self.min_val is not None)
        return np.asarray(self.min_val), np.asarray(self.max_val)


class MovingAverageMinMaxObserver(MinMaxObserver):
    """The first batch's min/max, then xmin ← m·xmin + (1 − m)·min(batch),
    xmax ← m·xmax + (1 − m)·max(batch), m = ``momentum`` ∈ [0, 1)."""

    def __init__(self, momentum: float = 0.9, granularity: str = "tensor", axis: int = 0) -> None:
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
                or not 0.0 <= momentum < 1.0:
            raise ValueError(f"MovingAverageMinMaxObserver: momentum={momentum!r} must be in [0, 1)")
        self.momentum = float(momentum)
        super().__init__(granularity, axis)

    def observe(self, x: Any) -> Any:
        rows, shape = self._rows(x)
        lo, hi = rows.min(axis=1).reshape(shape), rows.max(axis=1).reshape(shape)
        self._check_units(self.min_val, shape)
        if self.min_val is None or self.granularity == "token":
            self.min_val, self.max_val = lo, hi
        else:
            m = self.momentum
            self.min_val = m * self.min_val + (1 - m) * lo
            self.max_val = m * self.max_val + (1 - m) * hi
        return x


class _KeepsValues(Observer):
    """An observer that keeps every value seen (as (units, values) rows): percentiles and
    the MSE search need the data itself, not a running summary."""

    def reset(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._shape: tuple = ()

    def observe(self, x: Any) -> Any:
        rows, shape = self._rows(x)
        if self.granularity == "token":
            self._chunks = []
        elif self._chunks and self.granularity == "channel" and rows.shape[0] != self._chunks[0].shape[0]:
            raise ValueError(f"{type(self).__name__}.observe: {rows.shape[0]} channels along axis "
                             f"{self.axis}, but earlier batches had {self._chunks[0].shape[0]}")
        self._chunks.append(np.array(rows))  # a copy: the caller may reuse its buffer
        self._shape = shape
        return x

    def values(self) -> np.ndarray:
        """Everything seen, as (units, values)."""
        self._need_data(bool(self._chunks))
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks, axis=1)]
        return self._chunks[0]


class PercentileObserver(_KeepsValues):
    """Clips the tails: range() is (P_{100−p}(x), P_p(x)) (np.percentile, linear
    interpolation); symmetric qparams use a = P_p(|x|) and the range (−a, a)."""

    def __init__(self, percentile: float = 99.99, granularity: str = "tensor", axis: int = 0) -> None:
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) \
                or not 50.0 < percentile <= 100.0:
            raise ValueError(f"PercentileObserver: percentile={percentile!r} must be in (50, 100]")
        self.percentile = float(percentile)
        super().__init__(granularity, axis)

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        v = self.values()
        lo = np.percentile(v, 100.0 - self.percentile, axis=1).astype(v.dtype)
        hi = np.percentile(v, self.percentile, axis=1).astype(v.dtype)
        return lo.reshape(self._shape), hi.reshape(self._shape)

    def qparams(self, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
        if not symmetric:
            return super().qparams(bits, symmetric)
        v = self.values()
        a = np.percentile(np.abs(v), self.percentile, axis=1).astype(v.dtype).reshape(self._shape)
        return qparams_from_range(-a, a, bits, True)


class MSEObserver(_KeepsValues):
    """The clipping ratio α ∈ {1/grid, …, 1} that minimises ||x − fake_quant(x; α·range)||²
    (per unit), range being the min-max range: (α·xmin, α·xmax), or (−α·a, α·a) with
    a = max|x| when symmetric. ``bits``/``symmetric`` given here are those range() uses;
    qparams(bits, symmetric) runs the search for the ones it is asked for."""

    def __init__(self, bits: int = 8, symmetric: bool = True, grid: int = 100,
                 granularity: str = "tensor", axis: int = 0) -> None:
        self.bits = _check_bits(bits, "MSEObserver")
        self.symmetric = bool(symmetric)
        if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
            raise ValueError(f"MSEObserver: grid={grid!r} must be a positive integer")
        self.grid = int(grid)
        super().__init__(granularity, axis)

    def search(self, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xmin, xmax, alpha): the best clipped range per unit and its ratio."""
        v = self.values()
        lo, hi = v.min(axis=1), v.max(axis=1)
        if symmetric:
            a = np.maximum(-lo, hi)
            lo, hi = -a, a
        best_err = np.full(v.shape[0], np.inf)
        best_alpha = np.ones(v.shape[0], v.dtype)
        # α = 1 first: on ties, the unclipped (min-max) range wins
        for k in range(self.grid, 0, -1):
            alpha = v.dtype.type(k / self.grid)
            scale, zero = qparams_from_range(alpha * lo, alpha * hi, bits, symmetric)
            xq = fake_quantize(v, scale[:, None], zero[:, None], bits, symmetric)
            err = np.sum((v.astype(np.float64) - xq) ** 2, axis=1)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_alpha = np.where(better, alpha, best_alpha)
        return ((best_alpha * lo).reshape(self._shape), (best_alpha * hi).reshape(self._shape),
                best_alpha.reshape(self._shape))

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        xmin, xmax, _ = self.search(self.bits, self.symmetric)
        return xmin, xmax

    def qparams(self, bits: int | None = None, symmetric: bool | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        bits = self.bits if bits is None else _check_bits(bits, "MSEObserver.qparams")
        symmetric = self.symmetric if symmetric is None else bool(symmetric)
        xmin, xmax, _ = self.search(bits, symmetric)
        return qparams_from_range(xmin, xmax, bits, symmetric)

    def __repr__(self) -> str:
        return (f"MSEObserver(bits={self.bits}, symmetric={self.symmetric}, grid={self.grid}, "
                f"granularity={self.granularity!r}, axis={self.axis})")
