"""Hypothesis strategies and checks shared by the op tests (as minitorch has).

Typical use::

    @given(st.data())
    def test_exp(backend, data):          # ``backend``: the fixture of conftest.py
        x = data.draw(tensors(shapes()))  # float64, any layout, requires grad
        check_op(F.exp, [x], np.exp)

What a drawn tensor can be:

- **values**: uniform in ``[lo, hi]`` (default [-3, 3]); tests of ops that must be
  stable at large magnitudes add an offset drawn from :func:`magnitudes`;
- **layout** (:func:`views`): ``contiguous``; ``strided`` (every axis may step over
  elements, as ``a[::2]`` does; the skipped elements are NaN, so a kernel that ignores
  strides reads NaN); ``transposed`` (C-contiguous in a permuted axis order, as
  ``a.T`` is); ``broadcast`` (zero strides on some axes, read-only, as
  ``np.broadcast_to`` gives: values repeat along those axes);
- **dtype**: drawn tensors are float64 (gradcheck needs it); :func:`check_op` runs the
  same case again in float32 (same layout) against the float64 reference.

:func:`check_op` checks, for one case: the float64 forward against an independent NumPy
formula (``ref``), the float64 gradient by central differences (``minilm.gradcheck``),
then the float32 forward against the formula evaluated in float64 on the float32
values, and the float32 gradient against the float64 one at the same points. The
cotangents it feeds to ``backward`` are read-only, strided views, so that a backward
that writes into its incoming gradient, or assumes it contiguous, fails.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.lib.stride_tricks import as_strided

import minilm
from minilm import Tensor

__all__ = [
    "DTYPES", "LAYOUTS", "NO_BROADCAST", "arrays", "astype_like", "broadcastable_pair",
    "check_backward_f32", "check_forward", "check_grad", "check_op", "close", "dims_of",
    "directional_gradcheck", "examples", "kernel_arrays", "magnitudes", "readonly_strided",
    "on_backend", "row_shapes", "shapes", "shifted", "small_floats", "tensors", "unshifted",
    "uses_kernels", "views",
]

DTYPES = (np.float32, np.float64)
LAYOUTS = ("contiguous", "strided", "transposed", "broadcast")
NO_BROADCAST = ("contiguous", "strided", "transposed")  # for ops with a kink at ties


def examples(fraction: float, least: int = 5) -> settings:
    """Per-test settings: ``fraction`` of the active profile's ``max_examples`` (for
    tests whose examples are expensive), so that a campaign profile scales them too."""
    return settings(max_examples=max(least, round(settings().max_examples * fraction)))


# ---------------------------------------------------------------------------- values, shapes


def small_floats(lo: float = -3.0, hi: float = 3.0) -> st.SearchStrategy:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


def magnitudes() -> st.SearchStrategy:
    """An offset for ops that must be stable at large magnitudes (softmax, logsumexp,
    cross-entropy, layer norm …): 0, or ±1e3 … ±1e4."""
    return st.sampled_from([0.0, 1e3, -1e3, 1e4, -1e4, 3e3])


def shapes(min_dims: int = 0, max_dims: int = 4, min_side: int = 1, max_side: int = 4,
           max_size: int = 64) -> st.SearchStrategy:
    """Small array shapes, up to 4 dims and ``max_size`` elements. gradcheck costs two
    forwards per element, and its finite differences of the projected output f = <y, v>
    lose ~1e-16 |f| / eps to rounding, |f| growing with the size: past ~64 elements of
    size ~20 (exp of 3) that nears its atol of 1e-8. Larger cases are checked against
    formulas and by directional gradchecks (``row_shapes``)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side).filter(lambda s: math.prod(s) <= max_size)


def arrays(shape: Any, lo: float = -3.0, hi: float = 3.0, dtype: Any = np.float64
           ) -> st.SearchStrategy:
    """C-contiguous arrays of ``shape`` (a tuple or a strategy) with values in [lo, hi]."""
    return hnp.arrays(dtype, shape, elements=small_floats(lo, hi))


def kernel_arrays(shape: Any, lo: float = -3.0, hi: float = 3.0) -> st.SearchStrategy:
    """float64 arrays for kernel-sized cases: either as :func:`arrays` draws them (for
    large arrays mostly one repeated value and a few others, which Hypothesis shrinks
    well) or dense, every entry uniform in [lo, hi] from a drawn seed (a row's max then
    sits anywhere, e.g. in any lane of a blocked reduction)."""
    seeded = st.integers(0, 2**32 - 1).map(
        lambda seed: np.random.default_rng(seed).uniform(lo, hi, shape))
    return arrays(shape, lo, hi) | seeded


def row_shapes(max_lead_dims: int = 2, max_lead_side: int = 3, many_rows: bool = False
               ) -> st.SearchStrategy:
    """(..., C) shapes for the row-wise kernels (softmax, norms, GELU, cross-entropy).
    The Numba kernels reduce a row in 8 interleaved partial sums / maxima and handle the
    last C % 8 entries apart, so C is drawn small (1..4) or past 8 (8..40, any
    remainder). ``many_rows``: sometimes 65..150 rows, past the 64 chunks in which the
    norm backward kernel splits its rows for the weight gradient."""
    lead = shapes(0, max_lead_dims, max_side=max_lead_side)
    if many_rows:
        lead = lead | st.integers(65, 150).map(lambda r: (r,))
    last = st.integers(1, 4) | st.integers(8, 40)
    return st.tuples(lead, last).map(lambda t: t[0] + (t[1],))


@st.composite
def views(draw: Any, a: np.ndarray, layouts: Sequence[str] = LAYOUTS,
          keep_axes: Sequence[int] = ()) -> np.ndarray:
    """``a`` in a drawn memory layout (see the module docstring). Values are those of
    ``a``, except for ``broadcast``: there ``a``'s first slice along the drawn axes is
    repeated along them (a zero-stride, read-only view); ``keep_axes`` are never
    broadcast (if no other axis can be, the layout is ``strided`` instead)."""
    a = np.asarray(a)
    layout = draw(st.sampled_from(list(layouts)))
    free = [i for i in range(a.ndim) if i not in set(keep_axes)]
    if layout == "broadcast" and keep_axes and not free:
        layout = "strided"
    if layout == "transposed" and a.ndim < 2:
        layout = "strided"
    if layout == "contiguous" or a.ndim == 0 or a.size == 0:
        return np.array(a, order="C")
    if layout == "strided":
        steps = draw(st.lists(st.integers(1, 3), min_size=a.ndim, max_size=a.ndim))
        steps[draw(st.integers(0, a.ndim - 1))] = 2  # at least one axis steps
        buf = np.full([n * s for n, s in zip(a.shape, steps)], _filler(a.dtype), a.dtype)
        v = buf[tuple(slice(None, None, s) for s in steps)]
        v[...] = a
        return v
    if layout == "transposed":
        perm = draw(st.permutations(range(a.ndim)))
        if list(perm) == list(range(a.ndim)):
            perm = list(range(a.ndim))[::-1]
        return np.transpose(np.ascontiguousarray(np.transpose(a, perm)), np.argsort(perm))
    # broadcast: zero strides on a non-empty set of axes
    axes = draw(st.sets(st.sampled_from(free), min_size=1))
    base = a[tuple(slice(0, 1) if i in axes else slice(None) for i in range(a.ndim))]
    return np.broadcast_to(base.copy(), a.shape)


def shifted(a: np.ndarray, offset: float, dtype: Any) -> np.ndarray:
    """``a + offset`` in ``dtype`` (a C-contiguous array), exactly: ``a`` is first
    rounded to the spacing of ``dtype`` at |offset| + max|a| (so that :func:`unshifted`
    gets it back exactly)."""
    a = np.asarray(a, dtype=np.float64)
    top = abs(offset) + float(np.max(np.abs(a), initial=0.0))
    if offset and top:
        # numbers below 2^(e+1) on a grid of 2^(e+1-p) fit in p significant bits
        q = 2.0 ** (math.floor(math.log2(top)) + 1 - (np.finfo(dtype).nmant + 1))
        a = np.round(a / q) * q
    return np.asarray(a + offset).astype(dtype)


def unshifted(big: np.ndarray, offset: float) -> np.ndarray:
    """``big - offset`` in float64, exactly (for ``big`` from :func:`shifted`). An op
    invariant under a shift by ``offset`` (softmax, layer norm …) must give on ``big``
    what a NumPy formula gives on this; only the op's own rounding at large magnitude
    differs."""
    small = np.asarray(big, dtype=np.float64) - offset
    assert np.array_equal(small + offset, np.asarray(big, dtype=np.float64)), "inexact shift"
    return small


def close(got: Any, want: Any, rtol: float | None = None, atol: float = 0.0,
          scale: float | None = None) -> None:
    """``got`` (an array or Tensor, float32 or float64) against the float64 ``want``:
    |got - want| <= rtol * (|want| + scale) + atol elementwise, with ``rtol`` 1e-12 for
    float64 and 1e-5 for float32, and ``scale`` max(1, max|want|) by default (errors
    are relative to the size of what is computed). ``atol`` is for a known condition
    term (e.g. eps * offset / std in a layer norm at a large offset)."""
    got = got.numpy() if isinstance(got, Tensor) else np.asarray(got)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype in (np.float32, np.float64), got.dtype
    if rtol is None:
        rtol = 1e-12 if got.dtype == np.float64 else 1e-5
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    diff = np.abs(got.astype(np.float64) - want)
    allowed = rtol * (np.abs(want) + scale) + atol  # ``atol`` may be elementwise
    bad = ~(diff <= allowed)  # NaN is bad
    if bad.any():
        k = np.unravel_index(int(np.argmax(np.where(bad, diff / allowed, -1.0))), want.shape) \
            if want.ndim else ()
        raise AssertionError(
            f"{int(bad.sum())} of {want.size} entries differ beyond rtol {rtol:g} (scale "
            f"{scale:g}); worst at {tuple(int(i) for i in k)}: got {got[k]!r}, want "
            f"{want[k]!r}, allowed {np.broadcast_to(allowed, want.shape)[k]:.3g}")


def _filler(dtype: np.dtype) -> Any:
    return np.nan if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min


def astype_like(a: np.ndarray, dtype: Any) -> np.ndarray:
    """``a`` cast to ``dtype`` in the same memory layout (strides scaled to the new item
    size; elements outside the view are NaN; read-only stays read-only)."""
    a = np.asarray(a)
    dtype = np.dtype(dtype)
    if a.ndim == 0 or a.size == 0 or (a.flags.c_contiguous and a.flags.writeable):
        return a.astype(dtype)
    if any(s < 0 or s % a.itemsize for s in a.strides):
        return np.ascontiguousarray(a, dtype=dtype)
    steps = [s // a.itemsize for s in a.strides]
    span = 1 + sum((n - 1) * s for n, s in zip(a.shape, steps))
    buf = np.full(span, _filler(dtype), dtype)
    v = as_strided(buf, a.shape, [s * dtype.itemsize for s in steps])
    v[...] = a  # zero-stride axes: the same (equal) value written again
    if not a.flags.writeable:
        v.flags.writeable = False
    return v


def readonly_strided(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only view that steps over every other element (a cotangent that
    a backward must neither write into nor read as if contiguous)."""
    a = np.asarray(a)
    if a.ndim == 0:
        v = a.copy()
    else:
        buf = np.full(a.shape[:-1] + (2 * a.shape[-1],), _filler(a.dtype), a.dtype)
        v = buf[..., ::2]
        v[...] = a
    v.flags.writeable = False
    return v


def on_backend(a: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """A Tensor of the host array ``a`` on the backend under test
    (``minilm.current_backend()``, which the ``backend`` fixture selects): a plain
    ``Tensor(np_array)`` stays on the CPU by design, and an op refuses to mix it with
    the device tensors of a cupy run."""
    return Tensor(a, requires_grad=requires_grad, dtype=dtype, backend=minilm.current_backend())


@st.composite
def tensors(draw: Any, shape: Any, lo: float = -3.0, hi: float = 3.0,
            requires_grad: bool = True, layouts: Sequence[str] = LAYOUTS) -> Tensor:
    """float64 Tensors (requiring grad by default) of ``shape`` with values in
    [lo, hi], in a drawn layout (:func:`views`)."""
    a = draw(arrays(shape, lo, hi))
    return Tensor(draw(views(a, layouts)), requires_grad=requires_grad,
                  backend=minilm.current_backend())


@st.composite
def broadcastable_pair(draw: Any, max_dims: int = 3) -> tuple:
    """Two shapes that broadcast together (either may be the larger)."""
    a = draw(shapes(0, max_dims))
    b = draw(hnp.broadcastable_shapes(a, min_dims=0, max_dims=max_dims, max_side=4))
    return (a, b) if draw(st.booleans()) else (b, a)


def dims_of(ndim: int) -> st.SearchStrategy:
    """A valid dim for a tensor of ``ndim`` dims, possibly negative."""
    n = max(ndim, 1)
    return st.integers(-n, n - 1)


# ---------------------------------------------------------------------------- checks


def _arrays_of(inputs: Sequence[Any]) -> list:
    return [x.numpy() if isinstance(x, Tensor) else x for x in inputs]


def _outputs(out: Any) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_forward(fn: Callable, inputs: Sequence[Any], ref: Callable,
                  rtol: float | None = None, atol: float | None = None,
                  scale32: float | None = None) -> None:
    """``fn(*inputs)`` equals the NumPy formula ``ref(*arrays)``, shape included.
    float64 results must agree to ``rtol`` 1e-10, ``atol`` 1e-12; float32 results
    (from float32 inputs) are compared with ``ref`` evaluated on float64 copies, to
    ``rtol`` 1e-5 of |ref| + ``scale32`` (see :func:`close`), and must stay float32."""
    out = fn(*inputs)
    arrs = _arrays_of(inputs)
    f32 = any(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrs)
    if f32:
        arrs = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32
                else a for a in arrs]
    expected = ref(*arrs)
    outs, exps = _outputs(out), _outputs(expected)
    assert len(outs) == len(exps)
    for o, e in zip(outs, exps):
        assert o.shape == np.shape(e), (o.shape, np.shape(e))
        got = o.numpy()
        if f32 and got.dtype.kind == "f":
            assert got.dtype == np.float32, f"float32 inputs gave a {got.dtype} result"
            close(got, e, 1e-5 if rtol is None else rtol, scale=scale32)
        else:
            np.testing.assert_allclose(got, np.asarray(e), rtol=1e-10 if rtol is None else rtol,
                                       atol=1e-12 if atol is None else atol)


def check_grad(fn: Callable, inputs: Sequence[Any], **kw: Any) -> None:
    """float64 central-difference gradcheck of ``fn`` at ``inputs``."""
    assert minilm.gradcheck(fn, inputs, **kw)


def _grads(fn: Callable, inputs: Sequence[Any], cotangents: Sequence[np.ndarray] | None,
           seed: int = 0) -> tuple[list, list]:
    """The gradients of every input that requires grad after one backward of ``fn``
    with the given cotangents (or standard normal ones, rounded to float32, drawn from
    ``seed``), each fed as a read-only strided view; returns (gradients, cotangents)."""
    from minilm.autograd import backward

    outs = [o for o in _outputs(fn(*inputs)) if o.requires_grad]
    if cotangents is None:
        rng = np.random.default_rng(seed)
        cotangents = [rng.standard_normal(o.shape).astype(np.float32).astype(np.float64)
                      for o in outs]
    for x in inputs:
        if isinstance(x, Tensor):
            x.grad = None
    if outs:
        backward(outs, [Tensor(readonly_strided(v.astype(o.dtype)), backend=o.backend)
                        for o, v in zip(outs, cotangents)])
    grads = [x.grad.numpy() if x.grad is not None else np.zeros(x.shape)
             for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    for x in inputs:
        if isinstance(x, Tensor):
            x.grad = None
    return grads, cotangents


def check_backward_f32(fn: Callable, inputs32: Sequence[Any], inputs64: Sequence[Any],
                       rtol: float = 1e-5) -> None:
    """The float32 gradient of ``fn`` at ``inputs32`` equals the float64 gradient at
    ``inputs64`` (the same values in float64) to float32 accuracy (:func:`close`);
    float32 gradients must stay float32."""
    g32, vs = _grads(fn, inputs32, None)
    g64, _ = _grads(fn, inputs64, vs)
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32, f"float32 inputs got a {a.dtype} gradient"
        close(a, b, rtol)


def _as_float32_case(inputs: Sequence[Any]) -> tuple[list, list] | None:
    """(float32 inputs, float64 inputs holding the same values), layouts kept, for the
    float64 Tensors and NumPy arrays among ``inputs``; None if no Tensor is float64."""
    if not any(isinstance(x, Tensor) and x.dtype == np.float64 for x in inputs):
        return None
    in32, in64 = [], []
    for x in inputs:
        if isinstance(x, Tensor) and x.dtype == np.float64:
            a32 = astype_like(x.numpy(), np.float32)
            in32.append(Tensor(a32, requires_grad=x.requires_grad, backend=x.backend))
            in64.append(Tensor(astype_like(a32, np.float64), requires_grad=x.requires_grad,
                               backend=x.backend))
        elif isinstance(x, np.ndarray) and x.dtype == np.float64:  # a constant operand
            a32 = astype_like(x, np.float32)
            in32.append(a32)
            in64.append(astype_like(a32, np.float64))
        else:
            in32.append(x)
            in64.append(x)
    return in32, in64


def check_op(fn: Callable, inputs: Sequence[Any], ref: Callable | None = None, *,
             f32: bool = True, rtol32: float = 1e-5, grad_rtol32: float = 1e-5,
             **kw: Any) -> None:
    """Forward against ``ref`` (when given) and gradcheck in float64, then (``f32``)
    forward and gradient in float32 against float64 (see the module docstring).
    ``kw`` goes to gradcheck (``eps`` …)."""
    if ref is not None:
        check_forward(fn, inputs, ref)
    check_grad(fn, inputs, **kw)
    case = _as_float32_case(inputs) if f32 else None
    if case is None:
        return
    in32, in64 = case
    if ref is not None:
        check_forward(fn, in32, ref, rtol=rtol32)
    if any(isinstance(x, Tensor) and x.requires_grad for x in in32):
        check_backward_f32(fn, in32, in64, grad_rtol32)


def directional_gradcheck(fn: Callable, inputs: Sequence[Tensor], eps: float = 1e-6,
                          rtol: float = 1e-6, atol: float = 1e-8, seed: int = 0) -> None:
    """gradcheck for inputs too large to perturb one element at a time: with random
    cotangent v and direction u (over every input that requires grad),
    <J^T v, u> must equal (<f(x + eps u), v> - <f(x - eps u), v>) / (2 eps).
    A backward wrong in a single element changes the left side by about that error."""
    grads, vs = _grads(fn, inputs, None, seed)
    rng = np.random.default_rng(seed + 1)
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    us = {i: rng.standard_normal(inputs[i].shape) for i in wrt}
    analytic = sum(float((g * us[i]).sum()) for g, i in zip(grads, wrt))

    def projected(sign: float) -> float:
        args = list(inputs)
        for i in wrt:
            args[i] = Tensor(inputs[i].numpy() + sign * eps * us[i], backend=inputs[i].backend)
        with minilm.no_grad():
            outs = [o for o in _outputs(fn(*args)) if o.dtype.kind == "f"]
        return sum(float((o.numpy() * v).sum()) for o, v in zip(outs, vs))

    numeric = (projected(1.0) - projected(-1.0)) / (2 * eps)
    assert abs(analytic - numeric) <= atol * math.sqrt(sum(u.size for u in us.values())) \
        + rtol * abs(numeric), (analytic, numeric)


# ---------------------------------------------------------------------------- kernel dispatch


@contextlib.contextmanager
def uses_kernels(backend: Any, *names: str) -> Iterator[Counter]:
    """On the Numba backend, count the calls of every Numba kernel inside the block
    (``softmax`` for ``_softmax_kernel`` …) and assert that each named one ran, i.e.
    that the op did not fall back to the NumPy reference; yields the counts. On other
    backends there is nothing to check (the counts stay empty)."""
    calls: Counter = Counter()
    if getattr(backend, "name", backend) != "numba":
        yield calls
        return
    from minilm.backends import numba_backend as mod

    saved = {a[1:-len("_kernel")]: getattr(mod, a) for a in dir(mod)
             if a.startswith("_") and a.endswith("_kernel")}
    unknown = set(names) - set(saved)
    assert not unknown, f"no such Numba kernel: {sorted(unknown)}"

    def spy(name: str, kernel: Callable) -> Callable:
        def run(*args: Any) -> Any:
            calls[name] += 1
            return kernel(*args)
        return run

    for n, k in saved.items():
        setattr(mod, f"_{n}_kernel", spy(n, k))
    try:
        yield calls
    finally:
        for n, k in saved.items():
            setattr(mod, f"_{n}_kernel", k)
    missing = [n for n in names if not calls[n]]
    assert not missing, f"numba backend: kernel(s) {missing} never ran (fell back to NumPy)"


# ------------------------------------------------------------ backend kernels vs the reference
def kernel_shapes(min_dims: int = 1, max_dims: int = 3, max_side: int = 7,
                  wide: Any = None) -> st.SearchStrategy:
    """Small shapes whose last dim is sometimes wide (``wide``, a strategy of ints;
    default 8..40: past the Numba kernels' 8 interleaved partial sums)."""
    small = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side)
    if min_dims == 0:
        return small
    last = st.integers(8, 40) if wide is None else wide
    lead = hnp.array_shapes(min_dims=min_dims - 1, max_dims=max_dims - 1, min_side=1, max_side=5)
    return small | st.tuples(lead, last).map(lambda t: t[0] + (t[1],))


def randn(rng: Any, shape: Any, dtype: Any, scale: float = 2.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


def as64(a: Any) -> Any:
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32 else a


def as32(a: Any) -> Any:
    return a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a


def ref64(fn: Any, *args: Any) -> Any:
    """``fn`` (a reference kernel) on float64 copies of float32 array arguments, its
    results cast to the dtypes the reference gives on the float32 arguments (float32,
    except what the contract makes float64: the attention's lse); float64 arguments
    are passed as they are."""
    if not any(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in args):
        return fn(*args)
    out, low = fn(*(as64(a) for a in args)), fn(*args)

    def cast(o: Any, like: Any) -> Any:
        return o.astype(like.dtype) if isinstance(o, np.ndarray) else o

    if isinstance(out, tuple):
        return tuple(cast(o, lo) for o, lo in zip(out, low, strict=True))
    return cast(out, low)


def attention_case(rng: Any, data: Any, dtype: Any, wide: bool = False) -> tuple:
    """q, k, v, keep, bias of a drawn attention problem: 1..3 batches and heads, short
    and long key lengths (``wide``: up to 140 keys and head size 64, past a GPU block),
    and a mask that is none, causal, padding, an additive bias with -inf entries, or a
    bias and a keep mask together."""
    B, H = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    lq = data.draw(st.integers(1, 9))
    E = data.draw(st.integers(1, 9) | st.just(64) if wide else st.integers(1, 9))
    lk = data.draw(st.integers(1, 9) | (st.integers(10, 140) if wide else st.integers(10, 40)))
    q = randn(rng, (B, H, lq, E), dtype, 1.0)
    k = randn(rng, (B, H, lk, E), dtype, 1.0)
    v = randn(rng, (B, H, lk, E + 1), dtype, 1.0)
    kind = data.draw(st.sampled_from(["none", "causal", "padding", "bias", "bias+keep"]))
    keep = bias = None
    if kind == "causal":
        keep = np.tril(np.ones((lq, lk), dtype=bool))
    elif kind == "padding":
        keep = rng.random((B, 1, 1, lk)) < 0.7
    elif kind == "bias":
        bias = randn(rng, (1, H, lq, lk), dtype)
        bias[rng.random(bias.shape) < 0.2] = -np.inf
    elif kind == "bias+keep":
        bias = randn(rng, (lq, lk), dtype)
        keep = rng.random((B, H, lq, lk)) < 0.7
    return q, k, v, keep, bias


def check_cached_decoding(model: Any, seed: int, vocab: int = 13) -> Any:
    """A GPT decoding token by token with a KV cache (the general path and
    ``decode_step``) gives the full forward's logits at every position (float64,
    1e-10), and greedy generation is the same with and without the cache. Returns the
    general path's cache, for checks of its layout."""
    import minilm as ml
    from minilm import Tensor
    from minilm.nn.attention import KVCache
    from minilm.nn.decode import decode_step
    from minilm.train.generation import generate

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (2, 9))
    with ml.no_grad():
        full = model(Tensor(ids)).numpy()
        slow, fast = KVCache(), KVCache()
        model(Tensor(ids[:, :4]), cache=slow)
        model(Tensor(ids[:, :4]), cache=fast)
        for t in range(4, 9):
            got_slow = model(Tensor(ids[:, t:t + 1]), cache=slow).numpy()[:, -1]
            got_fast = decode_step(model, ids[:, t], fast)
            np.testing.assert_allclose(got_slow, full[:, t], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(got_fast, full[:, t], rtol=1e-10, atol=1e-12)
    prompt = rng.integers(0, vocab, (2, 3))
    np.testing.assert_array_equal(generate(model, prompt, 6, temperature=0.0),
                                  generate(model, prompt, 6, temperature=0.0, use_cache=False))
    return slow
