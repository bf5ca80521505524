"""Finite-difference gradient checks: :func:`gradcheck` compares every backward pass
with central differences in float64.

Split from ``autograd.py`` (which defines the tape it checks) to keep both on a few
screens; ``minilm.gradcheck`` is the usual way to reach it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .autograd import backward, no_grad
from .tensor import Tensor

__all__ = ["GradcheckError", "gradcheck", "gradcheck_module"]


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when analytic and numeric gradients disagree."""


def gradcheck(
    fn: Callable,
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-8,
    rtol: float = 1e-6,
    seed: int = 0,
    raise_exception: bool = True,
) -> bool:
    """Compare backward against central finite differences, in float64.

    With a random cotangent ``v`` (one per output), the analytic vector-Jacobian product
    ``J^T v`` from ``backward`` must match, entry by entry,
    ``(<f(x + eps e_k), v> - <f(x - eps e_k), v>) / (2 eps)`` within
    ``atol + rtol * |numeric|``. Every input that requires grad is checked; inputs
    must be float64 so that the differences are meaningful.

    The defaults are tight on purpose: in float64 the central difference is off by
    about ``eps**2 / 6 * |f'''|`` (truncation) plus ``1e-16 * |f| / eps`` (rounding),
    i.e. ~1e-10 for O(1) values at eps 1e-6, so a backward wrong by one part in a
    million fails. Where inputs are large (rounding grows with ``|f|``) pass a larger
    ``eps``; near a kink (relu, abs, max) keep inputs away from it rather than loosen
    the tolerances.
    """
    import numpy as np

    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(
                f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64"
            )

    def outputs_of(args: list) -> list:
        out = fn(*args)
        return [out] if isinstance(out, Tensor) else list(out)

    rng = np.random.default_rng(seed)
    saved_grads = {i: inputs[i].grad for i in checked}  # restored at the end
    outs = outputs_of(inputs)
    diff_outs = [o for o in outs if o.requires_grad]
    vs = [rng.standard_normal(o.shape) for o in diff_outs]
    for i in checked:
        inputs[i].grad = None
    if diff_outs:
        backward(diff_outs, [Tensor(o.backend.asarray(v)) for o, v in zip(diff_outs, vs)])
    analytic = {i: (inputs[i].grad.numpy().copy() if inputs[i].grad is not None
                    else np.zeros(inputs[i].shape)) for i in checked}
    for i in checked:
        inputs[i].grad = saved_grads[i]

    def projected(args: list) -> float:
        with no_grad():
            res = [o for o in outputs_of(args) if o.dtype.kind == "f"]
        return float(sum((o.numpy().astype(np.float64) * v).sum() for o, v in zip(res, vs)))

    for i in checked:
        x = inputs[i]
        base = x.numpy().copy()
        numeric = np.zeros(base.shape)
        flat = numeric.reshape(-1)
        for k in range(base.size):
            args = list(inputs)
            plus = base.copy().reshape(-1)
            plus[k] += eps
            args[i] = Tensor(x.backend.asarray(plus.reshape(base.shape)))
            fp = projected(args)
            minus = base.copy().reshape(-1)
            minus[k] -= eps
            args[i] = Tensor(x.backend.asarray(minus.reshape(base.shape)))
            fm = projected(args)
            flat[k] = (fp - fm) / (2 * eps)
        bad = np.abs(analytic[i] - numeric) > atol + rtol * np.abs(numeric)
        if bad.any():
            if not raise_exception:
                return False
            k = int(np.argmax(np.abs(analytic[i] - numeric) * bad))
            idx = np.unravel_index(k, base.shape) if base.ndim else ()
            raise GradcheckError(
                f"gradcheck: input {i} (shape {base.shape}): analytic and numeric "
                f"gradients differ at {bad.sum()} of {bad.size} entries; worst at index "
                f"{tuple(int(j) for j in idx)}: analytic {analytic[i][idx]!r}, numeric "
                f"{numeric[idx]!r}"
            )
    return True




def gradcheck_module(module: Any, fn: Callable[..., Any], inputs: Sequence[Tensor],
                     **kwargs: Any) -> bool:
    """:func:`gradcheck` of ``fn(*inputs)`` with respect to ``inputs`` *and* every
    parameter of ``module``: the perturbed copies gradcheck passes in are swapped into
    the parameters for one call of ``fn``, then the originals are put back (the
    parameters are among gradcheck's inputs, so they must keep their values)."""
    params = list(module.parameters())
    saved = [p.data for p in params]
    n = len(inputs)

    def wrapped(*args: Tensor) -> Any:
        for p, a in zip(params, args[n:]):
            p.data = a.data
        try:
            return fn(*args[:n])
        finally:
            for p, a in zip(params, saved):
                p.data = a

    return gradcheck(wrapped, [*inputs, *params], **kwargs)
