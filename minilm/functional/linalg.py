"""Linear algebra: matmul (batched, broadcasting), linear, einsum.

Each Function has its public function right under it and its argument checks in a
``_check_*`` helper above it; the docstring gives the forward formula and the gradient.
"""

from __future__ import annotations

import math
import string
from typing import Any

from ..autograd import Function
from ..tensor import Tensor
from ._util import unbroadcast
from .autocast import autocast_dtype, native_linear, round_to_low_precision

__all__ = ["einsum", "linear", "matmul"]


def _check_matmul(a: Any, b: Any) -> None:
    """Both operands at least 1-D, and a's last dim equal to b's contracted dim."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(
            f"matmul: both operands need at least 1 dim, got shapes {a.shape} and {b.shape}"
        )
    ka = a.shape[-1]
    kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if ka != kb:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                         f"({ka} != {kb})")


class Matmul(Function):
    """y = a @ b (1-D operands promoted as in NumPy; batch dims broadcast);
    da = g @ b^T, db = a^T @ g, summed over broadcast batch dims."""

    @staticmethod
    def forward(ctx, a, b):
        _check_matmul(a, b)
        ctx.save_for_backward(a, b)
        try:
            return ctx.xp.matmul(a, b)
        except ValueError:
            raise ValueError(
                f"matmul: batch dims of shapes {a.shape} and {b.shape} do not broadcast"
            ) from None

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        xp = ctx.xp
        # view 1-D operands as matrices, as the forward did
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # and g as the (..., m, n) product of those matrices (1-D @ 1-D gives a 0-d g)
        g_shape = list(g.shape)
        if b.ndim == 1:
            g_shape.append(1)
        if a.ndim == 1:
            g_shape.insert(len(g_shape) - 1, 1)
        g2 = g.reshape(g_shape)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(xp.matmul(g2, xp.swapaxes(b2, -1, -2)), a2.shape)
            ga = ga.reshape(a.shape)
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(xp.matmul(xp.swapaxes(a2, -1, -2), g2), b2.shape)
            gb = gb.reshape(b.shape)
        return ga, gb


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with NumPy's rules (batched, broadcasting, 1-D promotion)."""
    if not isinstance(a, Tensor):
        a = Tensor(a, backend=b.backend)
    if not isinstance(b, Tensor):
        b = Tensor(b, backend=a.backend)
    if autocast_dtype() is not None:  # minilm.amp.autocast: a low-precision product
        low = round_to_low_precision
        return low(Matmul.apply(low(a), low(b)))
    return Matmul.apply(a, b)


def _check_linear(x: Any, w: Any, b: Any) -> None:
    """W 2-D (out, in), x (..., in), b (out,) or None."""
    if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"linear: input shape {x.shape} does not match weight shape {w.shape} "
            f"(expected input (..., {w.shape[1] if w.ndim == 2 else '?'}))"
        )
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"linear: bias shape {b.shape} does not match weight shape {w.shape}")


#: up to this many rows, ``linear`` computes (W x^T)^T instead of x W^T (see forward)
_FEW_ROWS = 64


class LinearFunction(Function):
    """y = x W^T + b with W of shape (out, in);  dx = g W, dW = g^T x (summed over
    leading dims), db = sum g. Folding the leading dims gives one GEMM each way."""

    @staticmethod
    def forward(ctx, x, w, b=None):
        _check_linear(x, w, b)
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w)
        # One (rows, in) @ (in, out) GEMM over all leading dims: NumPy runs a 3-D
        # x @ W^T as one small GEMM per batch entry, about 1.5-2x slower at GPT
        # sizes. W^T is a view; BLAS reads it transposed without a copy.
        rows = math.prod(x.shape[:-1])
        x2 = x.reshape(rows, x.shape[-1])
        if 1 < rows <= _FEW_ROWS:
            # a few rows (decoding, one sentence): OpenBLAS's kernel for A @ B^T is slow
            # at small M (1.2-2x, bench in docs/performance.md); W x^T is the same
            # product with W read as stored, then the small (rows, out) result is copied
            # back to row-major
            y = ctx.xp.ascontiguousarray((w @ x2.T).T)
        else:
            y = x2 @ w.T
        y = y.reshape(x.shape[:-1] + (w.shape[0],))
        if b is not None:
            if ctx.xp.result_type(y, b) == y.dtype:
                y += b  # in place on the fresh product: no second output-sized array
            else:
                y = y + b  # x W^T has a narrower dtype than the bias: promote
        return y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved
        gx = gw = gb = None
        rows = math.prod(x.shape[:-1])  # explicit: reshape(-1, 0) is ambiguous
        g2 = g.reshape(rows, w.shape[0])
        if ctx.needs_input_grad[0]:
            gx = (g2 @ w).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            gw = g2.T @ x.reshape(rows, x.shape[-1])
        if not ctx.has_bias:
            return gx, gw  # one gradient per input: there are only two
        if ctx.needs_input_grad[2]:
            gb = g2.sum(axis=0)
        return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b (PyTorch's layout: weight is (out_features, in_features)). Inside
    ``minilm.amp.autocast`` x, W, b and y are rounded to its dtype (functional/autocast.py)."""
    if autocast_dtype() is not None:
        y = native_linear(x, weight, bias)  # real half GEMMs where the backend has them
        if y is not None:
            return y
        low = round_to_low_precision
        args = (low(x), low(weight)) if bias is None else (low(x), low(weight), low(bias))
        return low(LinearFunction.apply(*args))
    if bias is None:
        return LinearFunction.apply(x, weight)
    return LinearFunction.apply(x, weight, bias)


def _parse_einsum(op: str, equation: str, ndims: list) -> tuple:
    """(input subscripts, output subscripts) of ``equation``, checked against the
    operands' ranks; implicit mode (no ``->``) outputs the letters used once, sorted."""
    eq = equation.replace(" ", "")
    if "..." in eq:
        raise ValueError(f"{op}: ellipsis is not supported in {equation!r}; spell out the dims")
    if eq.count("->") > 1:
        raise ValueError(f"{op}: equation {equation!r} has more than one '->'")
    if "->" in eq:
        lhs, out = eq.split("->")
    else:
        lhs = eq
        letters = lhs.replace(",", "")
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    bad = sorted(set(lhs.replace(",", "") + out) - set(string.ascii_letters))
    if bad:
        raise ValueError(f"{op}: equation {equation!r} has characters {bad} that are not "
                         "subscript letters")
    ins = lhs.split(",")
    if len(ins) != len(ndims):
        raise ValueError(f"{op}: equation {equation!r} has {len(ins)} operands, got {len(ndims)}")
    for spec, nd in zip(ins, ndims):
        if len(spec) != nd:
            raise ValueError(f"{op}: operand spec {spec!r} has {len(spec)} dims but the tensor "
                             f"has {nd}")
    for c in out:
        if out.count(c) > 1:
            raise ValueError(f"{op}: output subscript {c!r} repeats in {equation!r}")
        if c not in lhs:
            raise ValueError(f"{op}: output subscript {c!r} is in no operand of {equation!r}")
    return ins, out


def _subscript_sizes(equation: str, ins: list, xs: tuple) -> dict:
    """The size of each subscript letter, the same in every operand that has it."""
    sizes: dict = {}
    for spec, x in zip(ins, xs):
        for c, n in zip(spec, x.shape):
            if sizes.setdefault(c, n) != n:
                raise ValueError(
                    f"einsum: subscript {c!r} has size {sizes[c]} and {n} in "
                    f"{equation!r} with shapes {[x.shape for x in xs]}"
                )
    return sizes


def _onto_diagonals(xp: Any, gu: Any, uniq: str, spec: str, ctx: Any) -> Any:
    """The gradient over ``spec`` (with repeated letters) from the one over ``uniq``:
    each repeat of a letter gets a fresh letter tied to the first by an identity matrix,
    so only the diagonal entries receive gradient."""
    used = set("".join(ctx.ins) + ctx.out)
    fresh = iter(c for c in string.ascii_letters if c not in used)
    seen: set = set()
    target, eye_specs, eyes = "", [], []
    for c in spec:
        if c in seen:
            new = next(fresh)
            target += new
            eye_specs.append(c + new)
            eyes.append(xp.eye(ctx.sizes[c], dtype=gu.dtype))
        else:
            seen.add(c)
            target += c
    return xp.einsum(f"{','.join([uniq, *eye_specs])}->{target}", gu, *eyes)


class Einsum(Function):
    """y = einsum(eq, *xs);  the gradient of operand i is einsum of g with the other
    operands, mapped back onto operand i's subscripts (summed over dims it lacks,
    broadcast for dims only it has, placed on the diagonal for a repeated subscript)."""

    @staticmethod
    def forward(ctx, equation, *xs):
        ins, out = _parse_einsum("einsum", equation, [x.ndim for x in xs])
        sizes = _subscript_sizes(equation, ins, xs)
        ctx.ins, ctx.out, ctx.sizes = ins, out, sizes
        ctx.save_for_backward(*xs)
        return ctx.xp.einsum(f"{','.join(ins)}->{out}", *xs, optimize=len(xs) > 2)

    @staticmethod
    def backward(ctx, g):
        xs = ctx.saved
        xp = ctx.xp
        grads: list[Any] = [None]
        for i in range(len(xs)):
            if not ctx.needs_input_grad[i + 1]:
                grads.append(None)
                continue
            spec = ctx.ins[i]
            others = [s for j, s in enumerate(ctx.ins) if j != i]
            ops = [x2 for j, x2 in enumerate(xs) if j != i]
            uniq = "".join(dict.fromkeys(spec))  # spec without repeats ("iij" -> "ij")
            avail = set(ctx.out).union(*others)
            kept = "".join(c for c in uniq if c in avail)
            gx = xp.einsum(f"{','.join([ctx.out, *others])}->{kept}", g, *ops,
                           optimize=len(ops) > 1)
            if kept != uniq:  # dims only this operand had were summed away: broadcast back
                gx = gx.reshape([ctx.sizes[c] if c in kept else 1 for c in uniq])
                gx = xp.broadcast_to(gx, [ctx.sizes[c] for c in uniq])
            if uniq != spec:  # a repeated subscript read a diagonal: write g onto it
                gx = _onto_diagonals(xp, gx, uniq, spec, ctx)
            elif kept != uniq:
                gx = gx.copy()  # own, writeable memory rather than a broadcast view
            grads.append(gx)
        return tuple(grads)


def einsum(equation: str, *operands: Tensor) -> Tensor:
    """Einstein summation, e.g. ``einsum("bhqd,bhkd->bhqk", q, k)``."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if autocast_dtype() is not None:
        low = round_to_low_precision
        return low(Einsum.apply(equation, *(low(t) for t in operands)))
    return Einsum.apply(equation, *operands)
