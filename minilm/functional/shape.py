"""Shape ops: views and reshapes, broadcasting, joining and splitting, padding,
triangular masks, indexing, gather/scatter.

None of these change a value, they only move values around, so every backward routes
the gradient back to where each value came from: the inverse reshape/permutation,
a sum where one input value fed several outputs (expand, repeat, repeated indices,
which accumulate with ``xp.add.at``), and zeros where an input value was dropped.
PyTorch names and semantics throughout (``dim``, ``x.view(2, 3)``, ``F.pad``'s
last-dim-first pad tuple).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import Any

from ..autograd import Function
from ..tensor import Tensor
from ._util import along, norm_dim, norm_dims, take_backward, unbroadcast
from .indexing import getitem

__all__ = [
    "broadcast_to",
    "cat",
    "chunk",
    "concat",
    "expand",
    "expand_as",
    "flatten",
    "flip",
    "movedim",
    "narrow",
    "pad",
    "permute",
    "repeat",
    "reshape",
    "reshape_as",
    "roll",
    "split",
    "squeeze",
    "stack",
    "swapaxes",
    "transpose",
    "tril",
    "triu",
    "unbind",
    "unflatten",
    "unsqueeze",
    "view",
    "view_as",
]


# ---------------------------------------------------------------------------- helpers


def _int_tuple(op: str, args: Sequence[Any]) -> tuple:
    """``(2, 3)``, ``((2, 3),)`` and ``([2, 3],)`` all give ``(2, 3)``: the forms of
    ``x.view(2, 3)`` and ``x.view((2, 3))``."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    try:
        return tuple(operator.index(a) for a in args)
    except TypeError:
        raise TypeError(f"{op}: expected integers, got {tuple(args)!r}") from None


# ---------------------------------------------------------------------------- reshapes


def _infer_shape(op: str, in_shape: tuple, shape: tuple) -> tuple:
    """``shape`` with its -1 (at most one) replaced so that sizes match, or a ValueError."""
    size = 1
    for n in in_shape:
        size *= n
    known = 1
    for n in shape:
        if n != -1:
            known *= n
    bad = shape.count(-1) > 1 or any(n < -1 for n in shape)
    if not bad and -1 in shape:
        bad = known == 0 or size % known != 0
        if not bad:
            shape = tuple(size // known if n == -1 else n for n in shape)
    elif not bad:
        bad = known != size
    if bad:
        raise ValueError(f"{op}: cannot reshape tensor of shape {in_shape} into {shape}")
    return shape


class Reshape(Function):
    """y = x with a new shape (same elements in row-major order);  dx = g reshaped back.
    Also serves view, flatten, unflatten, squeeze and unsqueeze."""

    is_view = True

    @staticmethod
    def forward(ctx, x, shape, op="reshape"):
        shape = _infer_shape(op, x.shape, tuple(shape))
        ctx.in_shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


def reshape(x: Tensor, *shape: int | Sequence[int]) -> Tensor:
    """``x`` with shape ``shape`` (varargs or one tuple; one size may be -1)."""
    return Reshape.apply(x, _int_tuple("reshape", shape), op="reshape")


def view(x: Tensor, *shape: int | Sequence[int]) -> Tensor:
    """Same as :func:`reshape` (arrays have no contiguity requirement here)."""
    return Reshape.apply(x, _int_tuple("view", shape), op="view")


def reshape_as(x: Tensor, other: Tensor) -> Tensor:
    return Reshape.apply(x, other.shape, op="reshape_as")


def view_as(x: Tensor, other: Tensor) -> Tensor:
    return Reshape.apply(x, other.shape, op="view_as")


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` (inclusive) into one; a 0-d tensor gives (1,)."""
    shape = x.shape
    if not shape:
        norm_dim("flatten", start_dim, 0)
        norm_dim("flatten", end_dim, 0)
        return Reshape.apply(x, (1,), op="flatten")
    s = norm_dim("flatten", start_dim, len(shape))
    e = norm_dim("flatten", end_dim, len(shape))
    if s > e:
        raise ValueError(
            f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for a tensor "
            f"of shape {shape}"
        )
    merged = 1
    for n in shape[s:e + 1]:
        merged *= n
    return Reshape.apply(x, shape[:s] + (merged,) + shape[e + 1:], op="flatten")


def unflatten(x: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    """Split dim ``dim`` into ``sizes`` (one may be -1)."""
    d = norm_dim("unflatten", dim, x.ndim)
    sizes = _int_tuple("unflatten", (sizes,))
    inner = _infer_shape("unflatten", (x.shape[d],), sizes)
    return Reshape.apply(x, x.shape[:d] + inner + x.shape[d + 1:], op="unflatten")


def squeeze(x: Tensor, dim: int | Sequence[int] | None = None) -> Tensor:
    """Drop size-1 dims: all of them, or those among ``dim`` (other dims are kept)."""
    if dim is None:
        shape = tuple(n for n in x.shape if n != 1)
    else:
        dims = norm_dims("squeeze", dim, x.ndim)
        shape = tuple(n for i, n in enumerate(x.shape) if not (i in dims and n == 1))
    return Reshape.apply(x, shape, op="squeeze")


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dim at ``dim`` (in ``[-ndim - 1, ndim]``)."""
    nd = x.ndim
    if not -nd - 1 <= dim <= nd:
        raise ValueError(
            f"unsqueeze: dim {dim} is out of range [{-nd - 1}, {nd}] for a tensor of "
            f"shape {x.shape}"
        )
    d = dim % (nd + 1)
    return Reshape.apply(x, x.shape[:d] + (1,) + x.shape[d:], op="unsqueeze")


# ---------------------------------------------------------------------------- permutations


class Permute(Function):
    """y = x with dims reordered, y.shape[i] = x.shape[dims[i]];  dx = g permuted by
    the inverse permutation."""

    is_view = True

    @staticmethod
    def forward(ctx, x, dims):
        ctx.inverse = tuple(sorted(range(len(dims)), key=lambda i: dims[i]))
        return ctx.xp.transpose(x, dims)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.transpose(g, ctx.inverse), None


def permute(x: Tensor, *dims: int | Sequence[int]) -> Tensor:
    """Reorder the dims: ``x.permute(2, 0, 1)`` or ``x.permute((2, 0, 1))``."""
    dims = _int_tuple("permute", dims)
    if len(dims) != x.ndim:
        raise ValueError(
            f"permute: dims {dims} must name each of the {x.ndim} dims of a tensor of "
            f"shape {x.shape} once"
        )
    return Permute.apply(x, norm_dims("permute", dims, x.ndim))


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap dims ``dim0`` and ``dim1``."""
    a = norm_dim("transpose", dim0, x.ndim)
    b = norm_dim("transpose", dim1, x.ndim)
    dims = list(range(x.ndim))
    if dims:
        dims[a], dims[b] = dims[b], dims[a]
    return Permute.apply(x, tuple(dims))


swapaxes = transpose


def movedim(x: Tensor, source: int | Sequence[int], destination: int | Sequence[int]) -> Tensor:
    """Move dims ``source`` to positions ``destination``; the others keep their order."""
    src = norm_dims("movedim", source, x.ndim)
    dst = norm_dims("movedim", destination, x.ndim)
    if len(src) != len(dst):
        raise ValueError(
            f"movedim: source {source} and destination {destination} differ in length"
        )
    order = [d for d in range(x.ndim) if d not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return Permute.apply(x, tuple(order))


# ---------------------------------------------------------------------------- broadcasting


def _expand_shape(op: str, in_shape: tuple, sizes: tuple) -> tuple:
    """The target shape of expanding ``in_shape`` to ``sizes`` (-1 keeps a dim)."""
    lead = len(sizes) - len(in_shape)
    verb = "broadcast" if op == "broadcast_to" else "expand"
    if lead < 0:
        raise ValueError(
            f"{op}: cannot {verb} tensor of shape {in_shape} to {sizes}: fewer sizes "
            "than dims"
        )
    out = []
    for i, s in enumerate(sizes):
        n = in_shape[i - lead] if i >= lead else None
        if s == -1 and n is not None:
            s = n
        if s < 0 or (n is not None and n != 1 and s != n):
            raise ValueError(
                f"{op}: cannot {verb} tensor of shape {in_shape} to {sizes} "
                f"(dim {i}: {'new' if n is None else n} -> {s})"
            )
        out.append(s)
    return tuple(out)


class Expand(Function):
    """y = x broadcast to ``shape`` (a read-only view);  dx = g summed over the
    broadcast dims (new leading dims and dims that were 1)."""

    is_view = True

    @staticmethod
    def forward(ctx, x, sizes, op="expand"):
        shape = _expand_shape(op, x.shape, tuple(sizes))
        ctx.in_shape = x.shape
        return ctx.xp.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(g, ctx.in_shape), None


def expand(x: Tensor, *sizes: int | Sequence[int]) -> Tensor:
    """Broadcast ``x`` to ``sizes``: -1 keeps a dim, new dims may be added in front."""
    return Expand.apply(x, _int_tuple("expand", sizes), op="expand")


def expand_as(x: Tensor, other: Tensor) -> Tensor:
    return Expand.apply(x, other.shape, op="expand_as")


def broadcast_to(x: Tensor, shape: Sequence[int]) -> Tensor:
    return Expand.apply(x, _int_tuple("broadcast_to", (shape,)), op="broadcast_to")


class Repeat(Function):
    """y = x tiled ``repeats[d]`` times along each dim d (``np.tile``);  dx = g viewed as
    (r_0, n_0, r_1, n_1, ...) and summed over the r axes."""

    @staticmethod
    def forward(ctx, x, repeats):
        shape = (1,) * (len(repeats) - x.ndim) + x.shape
        ctx.in_shape, ctx.shape, ctx.repeats = x.shape, shape, repeats
        return ctx.xp.tile(x.reshape(shape), repeats)

    @staticmethod
    def backward(ctx, g):
        pairs = tuple(v for r, n in zip(ctx.repeats, ctx.shape) for v in (r, n))
        g = g.reshape(pairs).sum(axis=tuple(range(0, len(pairs), 2)))
        return g.reshape(ctx.in_shape), None


def repeat(x: Tensor, *repeats: int | Sequence[int]) -> Tensor:
    """``torch.Tensor.repeat``: tile ``x``; ``len(repeats)`` may exceed ``x.ndim``."""
    repeats = _int_tuple("repeat", repeats)
    if len(repeats) < x.ndim or any(r < 0 for r in repeats):
        raise ValueError(
            f"repeat: repeats {repeats} must be non-negative and at least one per dim of "
            f"a tensor of shape {x.shape}"
        )
    return Repeat.apply(x, repeats)


class Flip(Function):
    """y = x reversed along ``dims``;  dx = g reversed along the same dims."""

    @staticmethod
    def forward(ctx, x, dims):
        ctx.dims = dims
        return ctx.xp.flip(x, axis=dims)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.flip(g, axis=ctx.dims), None


def flip(x: Tensor, dims: int | Sequence[int], *more: int) -> Tensor:
    """Reverse ``x`` along ``dims``: ``flip(x, (0, 1))``, ``x.flip(0, 1)`` or ``x.flip(0)``."""
    dims = _int_tuple("flip", (dims,) + more)
    dims = norm_dims("flip", dims, x.ndim) if x.ndim else ()
    return Flip.apply(x, dims)


class Roll(Function):
    """y = x shifted cyclically by ``shifts`` along ``dims`` (flattened if None);
    dx = g shifted back by -shifts."""

    @staticmethod
    def forward(ctx, x, shifts, dims):
        ctx.shifts, ctx.dims = shifts, dims
        return ctx.xp.roll(x, shifts, axis=dims)

    @staticmethod
    def backward(ctx, g):
        back = tuple(-s for s in ctx.shifts) if isinstance(ctx.shifts, tuple) else -ctx.shifts
        return ctx.xp.roll(g, back, axis=ctx.dims), None, None


def roll(x: Tensor, shifts: int | Sequence[int], dims: int | Sequence[int] | None = None
         ) -> Tensor:
    """Cyclic shift: element i of dim d moves to (i + shift) mod n; ``dims=None`` rolls
    the flattened tensor and restores the shape."""
    shifts = _int_tuple("roll", (shifts,))
    if dims is None:
        if len(shifts) != 1:
            raise ValueError(f"roll: shifts {shifts} need dims (one per shift)")
        return Roll.apply(x, shifts[0], None)
    dims = _int_tuple("roll", (dims,))
    if len(shifts) != len(dims):
        raise ValueError(f"roll: shifts {shifts} and dims {dims} differ in length")
    dims = tuple(norm_dim("roll", d, x.ndim) for d in dims)
    if x.ndim == 0:
        return Roll.apply(x, 0, None)
    return Roll.apply(x, shifts, dims)


# ---------------------------------------------------------------------------- join and split


def _shapes(arrays: Sequence[Any]) -> str:
    return ", ".join(str(tuple(a.shape)) for a in arrays)


class Cat(Function):
    """y = the inputs joined along ``dim``;  dx_i = the slice of g that x_i became."""

    @staticmethod
    def forward(ctx, *xs, dim=0):
        ref = xs[0].shape
        if not ref:
            raise ValueError(f"cat: zero-dim tensors cannot be concatenated, got shapes "
                             f"{_shapes(xs)}")
        d = norm_dim("cat", dim, len(ref))
        for x in xs:
            s = x.shape
            if len(s) != len(ref) or any(a != b for i, (a, b) in enumerate(zip(s, ref)) if i != d):
                raise ValueError(
                    f"cat: tensors must have the same shape except in dim {dim}, got "
                    f"shapes {_shapes(xs)}"
                )
        ctx.dim, ctx.sizes = d, [x.shape[d] for x in xs]
        return ctx.xp.concatenate(xs, axis=d)

    @staticmethod
    def backward(ctx, g):
        grads, start = [], 0
        for n, need in zip(ctx.sizes, ctx.needs_input_grad):
            grads.append(g[along(ctx.dim, slice(start, start + n))] if need else None)
            start += n
        return tuple(grads)


class Stack(Function):
    """y = the inputs stacked along a new dim ``dim``;  dx_i = g[..., i, ...] at dim."""

    @staticmethod
    def forward(ctx, *xs, dim=0):
        ref = xs[0].shape
        if any(x.shape != ref for x in xs):
            raise ValueError(
                f"stack: all tensors must have the same shape, got shapes {_shapes(xs)}"
            )
        nd = len(ref)
        if not -nd - 1 <= dim <= nd:
            raise ValueError(
                f"stack: dim {dim} is out of range [{-nd - 1}, {nd}] for tensors of shape {ref}"
            )
        ctx.dim = dim % (nd + 1)
        return ctx.xp.stack(xs, axis=ctx.dim)

    @staticmethod
    def backward(ctx, g):
        return tuple(g[along(ctx.dim, i)] if need else None
                     for i, need in enumerate(ctx.needs_input_grad))


def _tensor_list(op: str, tensors: Any) -> list:
    if isinstance(tensors, Tensor):
        raise TypeError(f"{op}: expected a sequence of tensors, got a single Tensor")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    like = next((t for t in tensors if isinstance(t, Tensor)), None)
    if like is None:
        raise TypeError(f"{op}: expected a sequence of tensors, got {type(tensors[0]).__name__}")
    return [t if isinstance(t, Tensor) else Tensor(t, backend=like.backend) for t in tensors]


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dim; all other sizes must match."""
    return Cat.apply(*_tensor_list("cat", tensors), dim=dim)


concat = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join same-shape tensors along a new dim ``dim``."""
    return Stack.apply(*_tensor_list("stack", tensors), dim=dim)


class Split(Function):
    """(y_0, y_1, ...) = consecutive slices of x along ``dim`` with sizes ``sections``;
    dx = the gradients concatenated back along dim."""

    is_view = True

    @staticmethod
    def forward(ctx, x, sections, dim):
        ctx.dim = dim
        bounds = [0]
        for n in sections:
            bounds.append(bounds[-1] + n)
        return tuple(x[along(dim, slice(a, b))] for a, b in itertools.pairwise(bounds))

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.concatenate(grads, axis=ctx.dim), None, None


def split(x: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple:
    """``torch.split``: pieces of ``split_size`` along ``dim`` (the last may be smaller),
    or pieces of the given sizes (which must sum to the dim's size)."""
    if x.ndim == 0:
        raise ValueError("split: a 0-dim tensor cannot be split")
    d = norm_dim("split", dim, x.ndim)
    n = x.shape[d]
    if isinstance(split_size_or_sections, (tuple, list)):
        sections = _int_tuple("split", (split_size_or_sections,))
        if sum(sections) != n or any(s < 0 for s in sections):
            raise ValueError(
                f"split: sections {list(sections)} must be non-negative and sum to the size "
                f"{n} of dim {dim} of a tensor of shape {x.shape}"
            )
    else:
        size = operator.index(split_size_or_sections)
        if size < 0 or (size == 0 and n > 0):
            raise ValueError(f"split: split_size must be positive, got {size} for a "
                             f"tensor of shape {x.shape}")
        sections = tuple(min(size, n - i) for i in range(0, n, size)) if n else (0,)
    return Split.apply(x, sections, d)


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple:
    """``torch.chunk``: pieces of size ceil(n / chunks) along ``dim`` (possibly fewer
    than ``chunks`` pieces)."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    if x.ndim == 0:
        raise ValueError("chunk: a 0-dim tensor cannot be chunked")
    d = norm_dim("chunk", dim, x.ndim)
    n = x.shape[d]
    if n == 0:
        return Split.apply(x, (0,) * chunks, d)
    return split(x, -(-n // chunks), d)


class Unbind(Function):
    """(y_0, .., y_{n-1}) = the slices x[..., i, ...] at ``dim``;  dx = the gradients
    stacked along dim."""

    is_view = True

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        return tuple(x[along(dim, i)] for i in range(x.shape[dim]))

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.stack(grads, axis=ctx.dim), None


def unbind(x: Tensor, dim: int = 0) -> tuple:
    """The slices of ``x`` along ``dim``, each without that dim."""
    if x.ndim == 0:
        raise ValueError("unbind: a 0-dim tensor cannot be unbound")
    return Unbind.apply(x, norm_dim("unbind", dim, x.ndim))


def narrow(x: Tensor, dim: int, start: int, length: int) -> Tensor:
    """``x[..., start:start + length, ...]`` along ``dim`` (``start`` may be negative)."""
    d = norm_dim("narrow", dim, x.ndim)
    n = x.shape[d]
    if start < 0:
        start += n
    if not (0 <= start <= n and 0 <= length <= n - start):
        raise ValueError(
            f"narrow: start {start} and length {length} do not fit in dim {dim} of a "
            f"tensor of shape {x.shape}"
        )
    return getitem(x, along(d, slice(start, start + length)))


# ---------------------------------------------------------------------------- padding


def _pad_map(xp: Any, mode: str, n: int, lo: int, hi: int) -> Any:
    """For each output position along a dim, the input position it copies."""
    j = xp.arange(-lo, n + hi)
    if mode == "replicate":
        return xp.clip(j, 0, n - 1)
    if mode == "circular":
        return j % n
    j = xp.abs(j)  # reflect: mirror at 0, then at n - 1 (the edge is not repeated)
    return xp.where(j > n - 1, 2 * (n - 1) - j, j)


class Pad(Function):
    """y = x with ``pads[d] = (lo, hi)`` entries added before/after along each dim d
    (negative values crop); dx = the slice of g at x's entries (constant mode), or g
    summed back onto the entries each padded entry copies (reflect/replicate/circular)."""

    @staticmethod
    def forward(ctx, x, pads, mode, value):
        xp = ctx.xp
        ctx.in_shape, ctx.pads, ctx.mode = x.shape, pads, mode
        if mode == "constant":
            crop = tuple(slice(max(-lo, 0), n - max(-hi, 0))
                         for (lo, hi), n in zip(pads, x.shape))
            widths = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
            return xp.pad(x[crop], widths, mode="constant", constant_values=value)
        ctx.maps = [None if lo == hi == 0 else _pad_map(xp, mode, n, lo, hi)
                    for (lo, hi), n in zip(pads, x.shape)]
        for d, m in enumerate(ctx.maps):
            if m is not None:
                x = xp.take(x, m, axis=d)
        return x

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        if ctx.mode == "constant":
            keep = tuple(slice(max(lo, 0), max(lo, 0) + n - max(-lo, 0) - max(-hi, 0))
                         for (lo, hi), n in zip(ctx.pads, ctx.in_shape))
            widths = [(max(-lo, 0), max(-hi, 0)) for lo, hi in ctx.pads]
            gx = g[keep]
            if any(a or b for a, b in widths):
                gx = xp.pad(gx, widths)
            return gx, None, None, None
        for d, m in enumerate(ctx.maps):
            if m is not None:
                g = take_backward(xp, g, m, ctx.in_shape[d], d)
        return g, None, None, None


def pad(x: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """``torch.nn.functional.pad``: ``pad = (left, right, top, bottom, ...)`` pads the
    last dim first; modes "constant" (with ``value``), "reflect", "replicate", "circular"."""
    pad_t = _int_tuple("pad", (pad,))
    if len(pad_t) % 2 or len(pad_t) // 2 > x.ndim:
        raise ValueError(
            f"pad: pad {pad_t} must have an even length of at most 2 * ndim for a tensor "
            f"of shape {x.shape}"
        )
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise ValueError(
            f"pad: mode must be 'constant', 'reflect', 'replicate' or 'circular', got {mode!r}"
        )
    k = len(pad_t) // 2
    pairs = [(0, 0)] * (x.ndim - k) + [(pad_t[2 * i], pad_t[2 * i + 1]) for i in range(k)][::-1]
    for d, ((lo, hi), n) in enumerate(zip(pairs, x.shape)):
        if lo == hi == 0:
            continue
        limit = {"constant": None, "reflect": n - 1, "replicate": None, "circular": n}[mode]
        if (max(-lo, 0) + max(-hi, 0) > n or (mode != "constant" and n == 0)
                or (limit is not None and max(lo, hi) > limit)):
            raise ValueError(
                f"pad: padding {(lo, hi)} of dim {d} (size {n}) is invalid in mode "
                f"{mode!r} for a tensor of shape {x.shape}"
            )
    return Pad.apply(x, pairs, mode, value)


# ---------------------------------------------------------------------------- triangles


def _tri_keep(op: str, xp: Any, shape: tuple, k: int, upper: bool) -> Any:
    """Bool (rows, cols) mask of the kept entries: col - row >= k (upper) or <= k."""
    if len(shape) < 2:
        raise ValueError(f"{op}: needs a tensor with at least 2 dims, got shape {shape}")
    rows = xp.arange(shape[-2]).reshape(-1, 1)
    cols = xp.arange(shape[-1]).reshape(1, -1)
    return cols - rows >= k if upper else cols - rows <= k


class Triu(Function):
    """y = x where col - row >= k else 0 (on the last two dims);  dx = g masked alike."""

    @staticmethod
    def forward(ctx, x, diagonal):
        ctx.keep = _tri_keep("triu", ctx.xp, x.shape, diagonal, upper=True)
        return ctx.xp.where(ctx.keep, x, ctx.xp.zeros((), dtype=x.dtype))

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.where(ctx.keep, g, ctx.xp.zeros((), dtype=g.dtype)), None


class Tril(Function):
    """y = x where col - row <= k else 0 (on the last two dims);  dx = g masked alike."""

    @staticmethod
    def forward(ctx, x, diagonal):
        ctx.keep = _tri_keep("tril", ctx.xp, x.shape, diagonal, upper=False)
        return ctx.xp.where(ctx.keep, x, ctx.xp.zeros((), dtype=x.dtype))

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.where(ctx.keep, g, ctx.xp.zeros((), dtype=g.dtype)), None


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    """Upper triangle of the last two dims (``diagonal`` > 0 moves it up-right)."""
    return Triu.apply(x, operator.index(diagonal))


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    """Lower triangle of the last two dims (``diagonal`` > 0 moves it up-right)."""
    return Tril.apply(x, operator.index(diagonal))
