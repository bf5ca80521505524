"""GELU and the error function: the reference arithmetic of the ``gelu``,
``gelu_backward`` and ``erf`` kernels, written against ``xp`` as the formulas read.

The GELU op (``F.gelu``, with the other activations) calls
``ctx.backend.gelu(...)``: these functions on the NumPy backend, one fused loop per
call on the Numba backend (minilm/backends/interface.py).
"""

from __future__ import annotations

import math

import numpy as np

from ..backends.interface import kernel

__all__: list[str] = []


@kernel("gelu")
def gelu_kernel(be, x, approximate="none"):
    """Exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
    Tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    xp = be.xp
    if approximate == "tanh":
        k = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + xp.tanh(k * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1.0 + be.erf(x / math.sqrt(2.0)))


@kernel("gelu_backward")
def gelu_backward_kernel(be, x, gy, approximate="none"):
    """Exact: dx = gy * (Phi(x) + x phi(x)).  Tanh, with t = tanh(k (x + 0.044715 x^3)):
    dx = gy * (0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2)), k = sqrt(2/pi)."""
    xp = be.xp
    if approximate == "tanh":
        k = math.sqrt(2.0 / math.pi)
        t = xp.tanh(k * (x + 0.044715 * x * x * x))
        return gy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3 * 0.044715 * x * x))
    cdf = 0.5 * (1.0 + be.erf(x / math.sqrt(2.0)))
    pdf = xp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return gy * (cdf + x * pdf)


@kernel("erf")
def erf_kernel(be, x):
    """Error function, elementwise. float64 uses libm's ``math.erf`` (exact to the
    last ulp, which gradcheck needs); lower precisions use Abramowitz & Stegun
    7.1.26, |error| < 1.5e-7, below float32's resolution and fully vectorised.
    A device array in float64 makes the round trip to the host for ``math.erf`` (the
    CuPy backend overrides this kernel with CUDA's ``erf``)."""
    xp = be.xp
    if x.dtype == xp.float64:
        y = np.vectorize(math.erf, otypes=[np.float64])(be.to_numpy(x))
        return y if xp is np else be.asarray(y)
    s = xp.sign(x)
    a = xp.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
                + t * (-1.453152027 + t * 1.061405429))))
    return (s * (1.0 - poly * xp.exp(-a * a))).astype(x.dtype, copy=False)
