"""Weight initialisation, in place and under no_grad, drawing from the backend's seeded
generator. Fans follow PyTorch: for a weight of shape (out, in, *k),
fan_in = in * prod(k), fan_out = out * prod(k)."""

from __future__ import annotations

import math
from typing import Any

from ..autograd import no_grad
from ..tensor import Tensor

__all__ = [
    "calculate_gain", "constant_", "kaiming_normal_", "kaiming_uniform_", "normal_", "ones_",
    "scaled_residual_std", "trunc_normal_", "uniform_", "xavier_normal_", "xavier_uniform_",
    "zeros_",
]


def _fans(t: Tensor) -> tuple:
    if t.ndim < 2:
        raise ValueError(f"init: fan in/out need a tensor with at least 2 dims, got {t.shape}")
    receptive = 1
    for n in t.shape[2:]:
        receptive *= n
    return t.shape[1] * receptive, t.shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Recommended std gain: linear/sigmoid 1, tanh 5/3, relu sqrt(2),
    leaky_relu sqrt(2 / (1 + slope^2)), selu 3/4."""
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope * slope))
    if nonlinearity == "selu":
        return 0.75
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


def _fill(t: Tensor, values: Any) -> Tensor:
    with no_grad():
        t.data[...] = values
        t._bump()
    return t


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """t ~ U(a, b)."""
    return _fill(t, t.backend.rng.uniform(a, b, t.shape))


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """t ~ N(mean, std^2)."""
    return _fill(t, t.backend.rng.normal(mean, std, t.shape))


def trunc_normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0) -> Tensor:
    """N(mean, std^2) restricted to [a, b] (absolute bounds), by redrawing outliers."""
    rng = t.backend.rng
    xp = t.backend.xp
    v = rng.normal(mean, std, t.shape)
    bad = (v < a) | (v > b)
    while bool(bad.any()):
        v = xp.where(bad, rng.normal(mean, std, t.shape), v)
        bad = (v < a) | (v > b)
    return _fill(t, v)


def constant_(t: Tensor, value: float) -> Tensor:
    return _fill(t, value)


def zeros_(t: Tensor) -> Tensor:
    return _fill(t, 0.0)


def ones_(t: Tensor) -> Tensor:
    return _fill(t, 1.0)


def xavier_uniform_(t: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def xavier_normal_(t: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(t: Tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu") -> Tensor:
    """He: U(-b, b) with b = gain * sqrt(3 / fan)."""
    fan = _fans(t)[0 if mode == "fan_in" else 1]
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(t, -bound, bound)


def kaiming_normal_(t: Tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu") -> Tensor:
    """He: N(0, std^2) with std = gain / sqrt(fan)."""
    fan = _fans(t)[0 if mode == "fan_in" else 1]
    return normal_(t, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))


def scaled_residual_std(std: float, n_layers: int) -> float:
    """GPT-2's init for projections that write into the residual stream:
    std / sqrt(2 * n_layers), since each layer adds two such branches and the
    residual's variance grows with their count."""
    return std / math.sqrt(2 * n_layers)
