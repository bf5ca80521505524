"""View and layout ops: reshape/view/flatten/unflatten/squeeze/unsqueeze,
permute/transpose/movedim, expand/broadcast_to, repeat, flip, roll.

None of these change a value, they only move values around, so every backward routes
the gradient back to where each value came from: the inverse reshape/permutation, and
a sum where one input value fed several outputs (expand, repeat). Each Function has
its public functions right under it. PyTorch names and semantics throughout (``dim``,
``x.view(2, 3)``). Joining and splitting are in ``join.py``, padding and triangular
masks in ``padding.py``, indexing and gather/scatter in ``indexing.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..autograd import Function
from ..tensor import Tensor
from ._util import int_tuple, norm_dim, norm_dims, unbroadcast

__all__ = [
    "broadcast_to",
    "expand",
    "expand_as",
    "flatten",
    "flip",
    "movedim",
    "permute",
    "repeat",
    "reshape",
    "reshape_as",
    "roll",
    "squeeze",
    "swapaxes",
    "transpose",
    "unflatten",
    "unsqueeze",
    "view",
    "view_as",
]


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
    return Reshape.apply(x, int_tuple("reshape", shape), op="reshape")


def view(x: Tensor, *shape: int | Sequence[int]) -> Tensor:
    """Same as :func:`reshape` (arrays have no contiguity requirement here)."""
    return Reshape.apply(x, int_tuple("view", shape), op="view")


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
    sizes = int_tuple("unflatten", (sizes,))
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


def _check_permutation(x: Tensor, dims: tuple) -> tuple:
    """``dims`` normalised, naming each dim of x once."""
    if len(dims) != x.ndim:
        raise ValueError(
            f"permute: dims {dims} must name each of the {x.ndim} dims of a tensor of "
            f"shape {x.shape} once"
        )
    return norm_dims("permute", dims, x.ndim)


def permute(x: Tensor, *dims: int | Sequence[int]) -> Tensor:
    """Reorder the dims: ``x.permute(2, 0, 1)`` or ``x.permute((2, 0, 1))``."""
    return Permute.apply(x, _check_permutation(x, int_tuple("permute", dims)))


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


# ---------------------------------------------------------------------------- broadcasting and tiling


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
    return Expand.apply(x, int_tuple("expand", sizes), op="expand")


def expand_as(x: Tensor, other: Tensor) -> Tensor:
    return Expand.apply(x, other.shape, op="expand_as")


def broadcast_to(x: Tensor, shape: Sequence[int]) -> Tensor:
    return Expand.apply(x, int_tuple("broadcast_to", (shape,)), op="broadcast_to")


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


def _check_repeats(x: Tensor, repeats: tuple) -> tuple:
    if len(repeats) < x.ndim or any(r < 0 for r in repeats):
        raise ValueError(
            f"repeat: repeats {repeats} must be non-negative and at least one per dim of "
            f"a tensor of shape {x.shape}"
        )
    return repeats


def repeat(x: Tensor, *repeats: int | Sequence[int]) -> Tensor:
    """``torch.Tensor.repeat``: tile ``x``; ``len(repeats)`` may exceed ``x.ndim``."""
    return Repeat.apply(x, _check_repeats(x, int_tuple("repeat", repeats)))


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
    dims = int_tuple("flip", (dims,) + more)
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
    shifts = int_tuple("roll", (shifts,))
    if dims is None:
        if len(shifts) != 1:
            raise ValueError(f"roll: shifts {shifts} need dims (one per shift)")
        return Roll.apply(x, shifts[0], None)
    dims = int_tuple("roll", (dims,))
    if len(shifts) != len(dims):
        raise ValueError(f"roll: shifts {shifts} and dims {dims} differ in length")
    dims = tuple(norm_dim("roll", d, x.ndim) for d in dims)
    if x.ndim == 0:
        return Roll.apply(x, 0, None)
    return Roll.apply(x, shifts, dims)
