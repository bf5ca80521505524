"""Shape ops: forward against NumPy, float64 gradcheck over Hypothesis shapes (negative
dims, length-1 dims, repeated indices, bool masks), method forms, and the errors."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import check_forward, check_grad, check_op, dims_of, on_backend, shapes, tensors

import minilm as ml
import minilm.functional as F
from minilm import Tensor

# Every test here runs on each backend (numpy, numba, cupy where present): see the
# ``backend`` fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("backend")

# ---------------------------------------------------------------------------- reshapes


@given(data=st.data())
def test_reshape_and_view(data):
    shape = data.draw(shapes(0, 4))
    x = data.draw(tensors(shape))
    size = math.prod(shape)
    target = data.draw(st.sampled_from([(size,), shape[::-1], (1, size, 1), ()]
                                       if size == 1 else [(size,), shape[::-1], (1, size)]))
    if target and data.draw(st.booleans()):  # let one size be inferred
        i = data.draw(st.integers(0, len(target) - 1))
        target = target[:i] + (-1,) + target[i + 1:]
    ref = np.reshape
    check_op(lambda t: F.reshape(t, target), [x], lambda a: ref(a, target))
    check_op(lambda t: t.view(*target), [x], lambda a: ref(a, target))
    check_forward(lambda t: t.view(target), [x], lambda a: ref(a, target))
    check_forward(lambda t: t.reshape(*target), [x], lambda a: ref(a, target))


@given(data=st.data())
def test_reshape_as_and_view_as(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    other = on_backend(np.zeros(shape[::-1]))
    check_op(lambda t: t.reshape_as(other), [x], lambda a: a.reshape(other.shape))
    check_op(lambda t: F.view_as(t, other), [x], lambda a: a.reshape(other.shape))


@given(data=st.data())
def test_flatten(data):
    shape = data.draw(shapes(0, 4))
    x = data.draw(tensors(shape))
    s, e = data.draw(dims_of(len(shape))), data.draw(dims_of(len(shape)))
    if not shape:
        check_op(lambda t: F.flatten(t, s, e), [x], lambda a: a.reshape(1))
        return
    n = len(shape)
    if s % n > e % n:
        with pytest.raises(ValueError, match="flatten"):
            F.flatten(x, s, e)
        return
    a_, b_ = s % n, e % n
    target = shape[:a_] + (math.prod(shape[a_:b_ + 1]),) + shape[b_ + 1:]
    check_op(lambda t: t.flatten(s, e), [x], lambda a: a.reshape(target))


@given(data=st.data())
def test_unflatten(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    d = data.draw(dims_of(len(shape)))
    n = shape[d]
    target = shape[:d % len(shape)] + (1, n) + shape[d % len(shape) + 1:]
    check_op(lambda t: F.unflatten(t, d, (-1, n)), [x], lambda a: a.reshape(target))


@given(data=st.data())
def test_squeeze(data):
    shape = data.draw(shapes(0, 4, max_side=2))  # many length-1 dims
    x = data.draw(tensors(shape))
    check_op(lambda t: t.squeeze(), [x], np.squeeze)
    d = data.draw(dims_of(len(shape)))
    dims = data.draw(st.sets(dims_of(len(shape)).map(lambda i: i % max(len(shape), 1)),
                             max_size=2)) if shape else set()

    def ref(a, dims):
        axes = tuple(i for i in dims if a.shape[i] == 1) if a.ndim else ()
        return np.squeeze(a, axis=axes)

    check_op(lambda t: F.squeeze(t, d), [x], lambda a: ref(a, {d % max(a.ndim, 1)}))
    check_op(lambda t: t.squeeze(tuple(dims)), [x], lambda a: ref(a, dims))


@given(data=st.data())
def test_unsqueeze(data):
    shape = data.draw(shapes(0, 3))
    x = data.draw(tensors(shape))
    d = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check_op(lambda t: t.unsqueeze(d), [x], lambda a: np.expand_dims(a, d))


# ---------------------------------------------------------------------------- permutations


@given(data=st.data())
def test_transpose(data):
    shape = data.draw(shapes(1, 4))
    x = data.draw(tensors(shape))
    a, b = data.draw(dims_of(len(shape))), data.draw(dims_of(len(shape)))
    check_op(lambda t: t.transpose(a, b), [x], lambda v: np.swapaxes(v, a, b))


@given(data=st.data())
def test_permute(data):
    shape = data.draw(shapes(0, 4))
    x = data.draw(tensors(shape))
    perm = data.draw(st.permutations(range(len(shape))))
    neg = tuple(p - len(shape) if data.draw(st.booleans()) else p for p in perm)
    check_op(lambda t: t.permute(*neg), [x], lambda a: np.transpose(a, perm))
    check_forward(lambda t: t.permute(tuple(neg)), [x], lambda a: np.transpose(a, perm))
    check_forward(lambda t: F.permute(t, list(perm)), [x], lambda a: np.transpose(a, perm))


@given(x=tensors(shapes(0, 3)))
def test_T_and_mT(x):
    check_forward(lambda t: t.T, [x], lambda a: a.T)
    if x.ndim >= 2:
        check_op(lambda t: t.mT, [x], lambda a: np.swapaxes(a, -1, -2))


@given(data=st.data())
def test_movedim(data):
    shape = data.draw(shapes(1, 4))
    x = data.draw(tensors(shape))
    src, dst = data.draw(dims_of(len(shape))), data.draw(dims_of(len(shape)))
    check_op(lambda t: F.movedim(t, src, dst), [x], lambda a: np.moveaxis(a, src, dst))


# ---------------------------------------------------------------------------- broadcasting


@given(data=st.data())
def test_expand(data):
    shape = data.draw(shapes(0, 3, max_side=3))
    x = data.draw(tensors(shape))
    lead = data.draw(st.lists(st.integers(1, 3), max_size=2))
    sizes, full = list(lead), list(lead)
    for n in shape:
        s = data.draw(st.integers(1, 3)) if n == 1 else n
        full.append(s)
        sizes.append(-1 if s == n and data.draw(st.booleans()) else s)
    full = tuple(full)
    check_op(lambda t: t.expand(*sizes), [x], lambda a: np.broadcast_to(a, full))
    check_forward(lambda t: t.expand(tuple(sizes)), [x], lambda a: np.broadcast_to(a, full))
    check_op(lambda t: F.broadcast_to(t, full), [x], lambda a: np.broadcast_to(a, full))
    other = on_backend(np.zeros(full))
    check_op(lambda t: t.expand_as(other), [x], lambda a: np.broadcast_to(a, full))


@given(data=st.data())
def test_repeat(data):
    shape = data.draw(shapes(0, 3, max_side=3))
    x = data.draw(tensors(shape))
    reps = data.draw(st.lists(st.integers(0, 3), min_size=len(shape), max_size=len(shape) + 1))
    check_op(lambda t: t.repeat(*reps), [x], lambda a: np.tile(a, reps))
    check_forward(lambda t: t.repeat(tuple(reps)), [x], lambda a: np.tile(a, reps))


@given(data=st.data())
def test_flip(data):
    shape = data.draw(shapes(1, 4))
    x = data.draw(tensors(shape))
    dims = data.draw(st.lists(dims_of(len(shape)), min_size=1, max_size=len(shape),
                              unique_by=lambda d: d % len(shape)))
    check_op(lambda t: F.flip(t, dims), [x], lambda a: np.flip(a, tuple(dims)))
    check_forward(lambda t: t.flip(*dims), [x], lambda a: np.flip(a, tuple(dims)))


@given(data=st.data())
def test_roll(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    shift = data.draw(st.integers(-5, 5))
    check_op(lambda t: F.roll(t, shift), [x], lambda a: np.roll(a, shift))
    dims = data.draw(st.lists(dims_of(len(shape)), min_size=1, max_size=2))
    shifts = data.draw(st.lists(st.integers(-5, 5), min_size=len(dims), max_size=len(dims)))
    check_op(lambda t: t.roll(shifts, dims), [x], lambda a: np.roll(a, shifts, tuple(dims)))


# ---------------------------------------------------------------------------- join and split


@given(data=st.data())
def test_cat(data):
    shape = data.draw(shapes(1, 3))
    d = data.draw(dims_of(len(shape)))
    k = data.draw(st.integers(1, 3))
    xs = []
    for _ in range(k):
        s = list(shape)
        s[d] = data.draw(st.integers(0, 3))  # empty pieces included
        xs.append(data.draw(tensors(tuple(s))))
    check_op(lambda *ts: F.cat(ts, dim=d), xs, lambda *a: np.concatenate(a, axis=d))


@given(data=st.data())
def test_stack(data):
    shape = data.draw(shapes(0, 3))
    d = data.draw(st.integers(-len(shape) - 1, len(shape)))
    xs = [data.draw(tensors(shape)) for _ in range(data.draw(st.integers(1, 3)))]
    check_op(lambda *ts: F.stack(list(ts), d), xs, lambda *a: np.stack(a, axis=d))


def _split_ref(a, sizes, d):
    return np.split(a, np.cumsum(sizes)[:-1], axis=d)


@given(data=st.data())
def test_split(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    d = data.draw(dims_of(len(shape)))
    n = shape[d]
    size = data.draw(st.integers(1, 5))
    sizes = [min(size, n - i) for i in range(0, n, size)]
    check_op(lambda t: t.split(size, d), [x], lambda a: _split_ref(a, sizes, d))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    sections = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    check_op(lambda t: F.split(t, sections, dim=d), [x], lambda a: _split_ref(a, sections, d))
    # only some outputs used: the others get zero gradients
    check_grad(lambda t: F.split(t, sections, dim=d)[-1] * 2, [x])


@given(data=st.data())
def test_chunk(data):
    shape = data.draw(shapes(1, 3, max_side=4))
    x = data.draw(tensors(shape))
    d = data.draw(dims_of(len(shape)))
    chunks = data.draw(st.integers(1, 5))
    n = shape[d]
    size = -(-n // chunks)
    sizes = [min(size, n - i) for i in range(0, n, size)]
    out = F.chunk(x, chunks, d)
    assert isinstance(out, tuple) and len(out) == len(sizes) <= chunks
    check_op(lambda t: t.chunk(chunks, d), [x], lambda a: _split_ref(a, sizes, d))


def test_chunk_counts_follow_torch():
    x = ml.zeros(6)
    assert [t.shape[0] for t in F.chunk(x, 4)] == [2, 2, 2]
    assert [t.shape[0] for t in F.chunk(ml.zeros(5), 3)] == [2, 2, 1]
    assert [t.shape[0] for t in F.split(ml.zeros(5), 2)] == [2, 2, 1]


@given(data=st.data())
def test_unbind_and_narrow(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    d = data.draw(dims_of(len(shape)))
    n = shape[d]
    check_op(lambda t: F.unbind(t, d), [x],
             lambda a: [np.take(a, i, axis=d) for i in range(n)])
    start = data.draw(st.integers(0, n))
    length = data.draw(st.integers(0, n - start))
    check_op(lambda t: F.narrow(t, d, start, length), [x],
             lambda a: np.take(a, range(start, start + length), axis=d))


# ---------------------------------------------------------------------------- padding


@given(data=st.data())
def test_pad_constant(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    k = data.draw(st.integers(1, len(shape)))
    pads = []
    for i in range(k):  # pad[2i], pad[2i+1] belong to dim -1-i; negative values crop
        n = shape[-1 - i]
        lo = data.draw(st.integers(-n, 2))
        hi = data.draw(st.integers(-(n - max(-lo, 0)), 2))
        pads += [lo, hi]
    value = data.draw(st.sampled_from([0.0, -1.5]))

    def ref(a):
        widths = [(0, 0)] * (a.ndim - k) + [(pads[2 * i], pads[2 * i + 1])
                                            for i in range(k)][::-1]
        out = np.pad(a, [(max(lo, 0), max(hi, 0)) for lo, hi in widths], constant_values=value)
        crop = tuple(slice(max(-lo, 0), out.shape[j] - max(-hi, 0))
                     for j, (lo, hi) in enumerate(widths))
        return out[crop]

    check_op(lambda t: F.pad(t, pads, value=value), [x], ref)


@pytest.mark.parametrize("mode,np_mode", [("reflect", "reflect"), ("replicate", "edge"),
                                          ("circular", "wrap")])
@given(data=st.data())
def test_pad_modes(mode, np_mode, data):
    shape = data.draw(shapes(1, 3, min_side=2))
    x = data.draw(tensors(shape))
    k = data.draw(st.integers(1, min(2, len(shape))))
    pads = []
    for i in range(k):
        limit = shape[-1 - i] - (1 if mode == "reflect" else 0)
        pads += [data.draw(st.integers(0, limit)), data.draw(st.integers(0, limit))]
    widths = [(0, 0)] * (len(shape) - k) + [(pads[2 * i], pads[2 * i + 1])
                                             for i in range(k)][::-1]
    check_op(lambda t: F.pad(t, pads, mode=mode), [x], lambda a: np.pad(a, widths, np_mode))


# ---------------------------------------------------------------------------- triangles


@given(data=st.data())
def test_triu_tril(data):
    shape = data.draw(shapes(2, 4))
    x = data.draw(tensors(shape))
    k = data.draw(st.integers(-3, 3))
    check_op(lambda t: t.triu(k), [x], lambda a: np.triu(a, k))
    check_op(lambda t: F.tril(t, diagonal=k), [x], lambda a: np.tril(a, k))


# ---------------------------------------------------------------------------- indexing


@given(data=st.data())
def test_getitem_basic(data):
    shape = data.draw(shapes(0, 4))
    x = data.draw(tensors(shape))
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    check_op(lambda t: t[index], [x], lambda a: a[index])


@given(data=st.data())
def test_getitem_integer_arrays_repeat(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    index = data.draw(hnp.integer_array_indices(shape, result_shape=shapes(1, 2)))
    check_op(lambda t: t[index], [x], lambda a: a[index])
    wrapped = tuple(on_backend(i) for i in index)  # index Tensors are unwrapped
    check_op(lambda t: F.getitem(t, wrapped), [x], lambda a: a[index])


@given(data=st.data())
def test_getitem_bool_mask(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    k = data.draw(st.integers(1, len(shape)))
    mask = data.draw(hnp.arrays(np.bool_, shape[:k]))
    check_op(lambda t: t[on_backend(mask)], [x], lambda a: a[mask])
    check_op(lambda t: t[..., None][mask], [x], lambda a: a[..., None][mask])


@given(data=st.data())
def test_getitem_mixed(data):
    shape = data.draw(shapes(2, 3))
    x = data.draw(tensors(shape))
    rows = data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=1, max_size=5))
    mask = data.draw(hnp.arrays(np.bool_, shape[1:2]))
    cases = [
        (rows,),  # a list is an integer array
        (slice(None), list(range(shape[1]))[::-1]),
        (rows, slice(None, None, -1)),
        (Ellipsis, on_backend(np.array(rows) % shape[-1])),
        (slice(1, None), mask),
        (np.array(rows), mask.nonzero()[0][:1].repeat(len(rows)) if mask.any() else 0),
        (None, rows, None),
    ]
    for index in cases:
        ref_index = tuple(i.numpy() if isinstance(i, Tensor) else i for i in index)
        check_op(lambda t, index=index: t[index], [x], lambda a, r=ref_index: a[r])


def test_getitem_repeated_indices_accumulate():
    x = on_backend(np.arange(4.0), requires_grad=True)
    x[[0, 0, 3, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 0.0, 1.0])
    y = on_backend(np.ones((2, 3)), requires_grad=True)
    y[ml.tensor([1, 1]), ml.tensor([2, 2])].sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [[0, 0, 0], [0, 0, 2]])


def test_getitem_iteration_and_ints():
    x = ml.tensor([[1, 2], [3, 4], [5, 6]])
    assert [r.tolist() for r in x] == [[1, 2], [3, 4], [5, 6]]
    assert x[1, 0].item() == 3 and x[-1].shape == (2,)
    assert x[1:, 1].dtype == x.dtype


def _gather_ref(a, d, idx):
    sub = a[tuple(slice(0, m) if j != d % a.ndim else slice(None)
                  for j, m in enumerate(idx.shape))]
    return np.take_along_axis(sub, idx, axis=d)


def _index_for(data, xshape, d, grow=True):
    """An integer index with x's dims, no larger outside dim d, values in range."""
    d = d % len(xshape)
    ishape = tuple(data.draw(st.integers(1, 4 if grow else n)) if j == d
                   else data.draw(st.integers(1, n)) for j, n in enumerate(xshape))
    return data.draw(hnp.arrays(np.int64, ishape, elements=st.integers(0, xshape[d] - 1)))


@given(data=st.data())
def test_gather(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    d = data.draw(dims_of(len(shape)))
    idx = _index_for(data, shape, d)  # repeated values are likely
    check_op(lambda t: t.gather(d, ml.tensor(idx)), [x], lambda a: _gather_ref(a, d, idx))
    check_forward(lambda t: F.gather(t, d, idx), [x], lambda a: _gather_ref(a, d, idx))


def _scatter_add_ref(a, d, idx, src):
    out = a.copy()
    d = d % a.ndim
    for pos in np.ndindex(*idx.shape):
        target = list(pos)
        target[d] = idx[pos]
        out[tuple(target)] += src[pos]
    return out


@given(data=st.data())
def test_scatter_add(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    d = data.draw(dims_of(len(shape)))
    idx = _index_for(data, shape, d)
    src_shape = tuple(m + data.draw(st.integers(0, 1)) for m in idx.shape)
    src = data.draw(tensors(src_shape))
    check_op(lambda t, s: t.scatter_add(d, idx, s), [x, src],
             lambda a, s: _scatter_add_ref(a, d, idx, s))


def test_scatter_add_repeated_indices():
    x = ml.zeros(3, dtype="float64")
    src = on_backend(np.array([1.0, 2.0, 4.0]), requires_grad=True)
    out = F.scatter_add(x, 0, [2, 2, 0], src)
    np.testing.assert_array_equal(out.numpy(), [4.0, 0.0, 3.0])
    (out * on_backend(np.array([10.0, 20.0, 30.0]))).sum().backward()
    np.testing.assert_array_equal(src.grad.numpy(), [30.0, 30.0, 10.0])


@given(data=st.data())
def test_index_select(data):
    shape = data.draw(shapes(1, 3))
    x = data.draw(tensors(shape))
    d = data.draw(dims_of(len(shape)))
    idx = data.draw(hnp.arrays(np.int64, data.draw(st.integers(0, 5)),
                               elements=st.integers(0, shape[d] - 1)))
    check_op(lambda t: t.index_select(d, ml.tensor(idx)), [x], lambda a: np.take(a, idx, d))
    check_forward(lambda t: F.index_select(t, d, idx.tolist()), [x],
                  lambda a: np.take(a, idx, d))


def test_index_select_repeated_indices_accumulate():
    x = on_backend(np.ones((3, 2)), requires_grad=True)
    F.index_select(x, 0, [1, 1, 1, 0]).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 1], [3, 3], [0, 0]])


# ---------------------------------------------------------------------------- dtypes, no grad


def test_dtype_preserved_and_ints_pass_through():
    x = ml.randn(2, 3)
    assert x.view(3, 2).dtype == np.float32 and F.pad(x, (1, 1)).dtype == np.float32
    i = ml.tensor([[1, 2], [3, 4]])
    assert F.cat([i, i]).tolist() == [[1, 2], [3, 4], [1, 2], [3, 4]]
    assert F.stack([i, i], -1).shape == (2, 2, 2)
    assert i.T.tolist() == [[1, 3], [2, 4]]
    assert F.triu(i).tolist() == [[1, 2], [0, 4]]


def test_gradients_reach_every_cat_input():
    a = on_backend(np.ones((2, 1)), requires_grad=True)
    b = on_backend(np.ones((2, 2)))  # no grad: skipped
    c = on_backend(np.ones((2, 3)), requires_grad=True)
    w = on_backend(np.arange(12.0).reshape(2, 6))
    (F.cat([a, b, c], dim=-1) * w).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [[0], [6]])
    np.testing.assert_array_equal(c.grad.numpy(), [[3, 4, 5], [9, 10, 11]])
    assert b.grad is None


# ---------------------------------------------------------------------------- errors


def test_errors_name_op_and_shapes():
    x = ml.randn(2, 3)
    with pytest.raises(ValueError, match=r"reshape: cannot reshape tensor of shape \(2, 3\) "
                                         r"into \(4, 2\)"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match="view: cannot reshape"):
        x.view(-1, 4)
    with pytest.raises(ValueError, match="reshape"):
        x.reshape(-1, -1)
    with pytest.raises(ValueError, match=r"cat: .*\(2, 3\), \(2, 4\)"):
        F.cat([x, ml.randn(2, 4)])
    with pytest.raises(ValueError, match=r"cat: .*\(2, 3\), \(3,\)"):
        F.cat([x, ml.randn(3)])
    with pytest.raises(ValueError, match=r"stack: .*\(2, 3\), \(3, 2\)"):
        F.stack([x, ml.randn(3, 2)])
    with pytest.raises(ValueError, match="cat: expected a non-empty"):
        F.cat([])
    with pytest.raises(ValueError, match=r"expand: cannot expand tensor of shape \(2, 3\)"):
        x.expand(4, 3)
    with pytest.raises(ValueError, match="broadcast_to"):
        F.broadcast_to(x, (3,))
    with pytest.raises(ValueError, match="split: sections"):
        x.split([1, 1], 1)
    with pytest.raises(ValueError, match="permute"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match="permute"):
        x.permute(0)
    with pytest.raises(ValueError, match="repeat"):
        x.repeat(2)
    with pytest.raises(ValueError, match="pad"):
        F.pad(x, (1,))
    with pytest.raises(ValueError, match="pad"):
        F.pad(x, (3, 0), mode="reflect")
    with pytest.raises(ValueError, match="pad: mode"):
        F.pad(x, (1, 0), mode="mirror")
    with pytest.raises(ValueError, match="triu"):
        F.triu(ml.randn(3))
    with pytest.raises(ValueError, match="gather: index of shape"):
        F.gather(x, 1, [0, 1])
    with pytest.raises(TypeError, match="gather: index must hold integers"):
        F.gather(x, 1, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="reshape: expected integers"):
        x.reshape(2.0, 3)


@pytest.mark.parametrize("call", [
    lambda x: x.transpose(0, 3),
    lambda x: x.squeeze(-4),
    lambda x: x.unsqueeze(4),
    lambda x: x.flatten(0, 5),
    lambda x: x.permute(0, 1, 3),
    lambda x: x.flip(3),
    lambda x: x.roll(1, 3),
    lambda x: F.cat([x, x], 3),
    lambda x: F.stack([x, x], 4),
    lambda x: x.split(1, -4),
    lambda x: x.chunk(2, 3),
    lambda x: F.unbind(x, 3),
    lambda x: x.gather(3, ml.tensor([[[0]]])),
    lambda x: x.index_select(-4, [0]),
])
def test_out_of_range_dim(call):
    x = ml.randn(2, 3, 4)
    with pytest.raises(ValueError, match="out of range"):
        call(x)


@pytest.mark.parametrize("call", [
    lambda x: x[5],
    lambda x: x[[0, 2]],
    lambda x: x.gather(0, ml.tensor([[2, 0, 0]])),
    lambda x: x.index_select(1, [-1]),
    lambda x: F.scatter_add(x, 0, [[0, 2, 0]], ml.ones(1, 3)),
])
def test_index_value_out_of_range(call):
    x = ml.randn(2, 3)
    with pytest.raises(IndexError):
        call(x)
    with pytest.raises(ValueError):
        call(x)

