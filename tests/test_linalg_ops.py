"""matmul, linear and einsum: forward against NumPy and float64 gradcheck over
Hypothesis-drawn shapes (1-D operands, broadcast batch dims, 1-D/2-D/3-D inputs to
linear, the contractions attention needs), and the errors they raise."""

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import arrays, check_grad, check_op, on_backend, shapes, tensors

import minilm as ml
import minilm.functional as F

# Every test here runs on each backend (numpy, numba, cupy where present): see the
# ``backend`` fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("backend")

side = st.integers(1, 4)


# ---------------------------------------------------------------------------- matmul


@given(data=st.data())
def test_matmul_batched_with_broadcast_batch_dims(data):
    batch_a, batch_b = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3)
    ).input_shapes
    m, k, n = data.draw(side), data.draw(side), data.draw(side)
    a = data.draw(tensors(batch_a + (m, k)))
    b = data.draw(tensors(batch_b + (k, n)))
    check_op(F.matmul, [a, b], np.matmul)


@given(data=st.data())
def test_matmul_with_one_dim_operands(data):
    """A 1-D left operand is a row vector, a 1-D right operand a column vector; the
    added dim is removed from the result (NumPy's rules): vector @ vector is 0-d."""
    k = data.draw(side)
    batch = data.draw(shapes(0, 2, max_side=3))
    vec = data.draw(tensors((k,)))
    case = data.draw(st.sampled_from(["vec @ mat", "mat @ vec", "vec @ vec"]))
    if case == "vec @ mat":
        pair = [vec, data.draw(tensors(batch + (k, data.draw(side))))]
    elif case == "mat @ vec":
        pair = [data.draw(tensors(batch + (data.draw(side), k))), vec]
    else:
        pair = [vec, data.draw(tensors((k,)))]
    check_op(F.matmul, pair, np.matmul)


@pytest.mark.parametrize("sa, sb", [
    ((3,), (3,)),
    ((3,), (3, 2)),
    ((2, 3), (3,)),
    ((4,), (2, 4, 3)),
    ((2, 2, 3), (3,)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((1, 4), (3, 4, 1)),
    ((3, 1, 2, 2), (1, 4, 2, 3)),
    ((1, 1), (1, 1)),
])
def test_matmul_shapes(sa, sb):
    rng = np.random.default_rng(0)
    a = on_backend(rng.standard_normal(sa), requires_grad=True)
    b = on_backend(rng.standard_normal(sb), requires_grad=True)
    check_op(F.matmul, [a, b], np.matmul)


def test_matmul_operator_forms_and_partial_grads():
    rng = np.random.default_rng(1)
    an, bn = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    a = on_backend(an, requires_grad=True)
    b = on_backend(bn)
    np.testing.assert_allclose((a @ b).numpy(), an @ bn)
    np.testing.assert_allclose((an @ on_backend(bn)).numpy(), an @ bn)
    np.testing.assert_allclose((a @ bn).numpy(), an @ bn)
    np.testing.assert_allclose(a.matmul(b).numpy(), an @ bn)
    (a @ b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.ones((2, 4)) @ bn.T)
    assert b.grad is None


@pytest.mark.parametrize("sa, sb, msg", [
    ((4, 3), (5, 2), "matmul: shapes (4, 3) and (5, 2) are not aligned (3 != 5)"),
    ((3,), (4,), "matmul: shapes (3,) and (4,) are not aligned (3 != 4)"),
    ((2, 3), (2,), "matmul: shapes (2, 3) and (2,) are not aligned (3 != 2)"),
    ((2, 3, 4), (5, 4, 2), "matmul: batch dims of shapes (2, 3, 4) and (5, 4, 2) do not broadcast"),
    ((), (3,), "matmul: both operands need at least 1 dim, got shapes () and (3,)"),
])
def test_matmul_errors_name_op_and_shapes(sa, sb, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        F.matmul(on_backend(np.ones(sa)), on_backend(np.ones(sb)))


# ---------------------------------------------------------------------------- linear


@given(data=st.data())
def test_linear(data):
    """x of shape (..., in) with 0, 1 or 2 leading dims, with and without a bias."""
    lead = data.draw(shapes(0, 2))
    n_in, n_out = data.draw(side), data.draw(side)
    x = data.draw(tensors(lead + (n_in,)))
    w = data.draw(tensors((n_out, n_in)))
    if data.draw(st.booleans()):
        b = data.draw(tensors((n_out,)))
        check_op(F.linear, [x, w, b], lambda x_, w_, b_: x_ @ w_.T + b_)
    else:
        check_op(F.linear, [x, w], lambda x_, w_: x_ @ w_.T)


@pytest.mark.parametrize("x_shape", [(3,), (2, 3), (2, 4, 3)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_backward_on_1d_2d_3d_inputs(x_shape, with_bias):
    """Regression: without a bias, backward returned three gradients for two inputs."""
    rng = np.random.default_rng(2)
    xn, wn, bn = rng.standard_normal(x_shape), rng.standard_normal((5, 3)), rng.standard_normal(5)
    x = on_backend(xn, requires_grad=True)
    w = on_backend(wn, requires_grad=True)
    b = on_backend(bn, requires_grad=True)
    y = F.linear(x, w, b) if with_bias else F.linear(x, w)
    assert y.shape == x_shape[:-1] + (5,)
    g = rng.standard_normal(y.shape)
    y.backward(on_backend(g))
    g2, x2 = g.reshape(-1, 5), xn.reshape(-1, 3)
    np.testing.assert_allclose(x.grad.numpy(), (g2 @ wn).reshape(x_shape))
    np.testing.assert_allclose(w.grad.numpy(), g2.T @ x2)
    if with_bias:
        np.testing.assert_allclose(b.grad.numpy(), g2.sum(0))
    else:
        assert b.grad is None


def test_linear_partial_grads_and_empty_dims():
    rng = np.random.default_rng(3)
    x = on_backend(rng.standard_normal((2, 3)))
    w = on_backend(rng.standard_normal((4, 3)), requires_grad=True)
    b = on_backend(rng.standard_normal(4))
    F.linear(x, w, b).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), np.ones((2, 4)).T @ x.numpy())
    # zero rows, zero output features: the gradients keep their shapes
    x0 = on_backend(np.ones((0, 3)), requires_grad=True)
    F.linear(x0, w, b).sum().backward()
    assert x0.grad.shape == (0, 3)
    xz = on_backend(np.ones((2, 3)), requires_grad=True)
    wz = on_backend(np.ones((0, 3)), requires_grad=True)
    y = F.linear(xz, wz)
    assert y.shape == (2, 0)
    y.sum().backward()
    np.testing.assert_array_equal(xz.grad.numpy(), np.zeros((2, 3)))
    assert wz.grad.shape == (0, 3)


def test_linear_bias_does_not_narrow_the_dtype():
    x = on_backend(np.ones((2, 3), dtype=np.float32))
    w = on_backend(np.ones((4, 3), dtype=np.float32))
    b = on_backend(np.full(4, 0.1, dtype=np.float64))
    y = F.linear(x, w, b)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.numpy(), np.full((2, 4), 3.1))


@pytest.mark.parametrize("xs, ws, bs, msg", [
    ((2, 3), (4, 2), None,
     "linear: input shape (2, 3) does not match weight shape (4, 2) (expected input (..., 2))"),
    ((), (4, 2), None, "linear: input shape () does not match weight shape (4, 2)"),
    ((2, 3), (3,), None, "linear: input shape (2, 3) does not match weight shape (3,)"),
    ((2, 3), (4, 3), (3,), "linear: bias shape (3,) does not match weight shape (4, 3)"),
    ((2, 3), (4, 3), (1, 4), "linear: bias shape (1, 4) does not match weight shape (4, 3)"),
])
def test_linear_errors_name_op_and_shapes(xs, ws, bs, msg):
    b = None if bs is None else on_backend(np.ones(bs))
    with pytest.raises(ValueError, match=re.escape(msg)):
        F.linear(on_backend(np.ones(xs)), on_backend(np.ones(ws)), b)


# ---------------------------------------------------------------------------- einsum

EQUATIONS = [
    "bhqd,bhkd->bhqk",  # attention scores
    "bhqk,bhkd->bhqd",  # attention-weighted values
    "ij,jk->ik",
    "i,i->",
    "ij->ji",
    "bij,bjk->bik",
    "ij,k->i",  # k only in an operand: summed away, gradient broadcast back
    "ij->",
    "i,j->ij",
    "bi,bi->b",
    "ij,jk,kl->il",
    "ij,jk",  # implicit output: letters used once, sorted
    "ba",
    "ii->i",  # diagonal
    "ii",  # trace
    "iij->j",
    "ij,jj->i",
]


def operand_shapes(equation, sizes):
    lhs = equation.replace(" ", "").split("->")[0]
    return [tuple(sizes[c] for c in spec) for spec in lhs.split(",")]


@pytest.mark.parametrize("equation", EQUATIONS)
@given(data=st.data())
def test_einsum(equation, data):
    letters = sorted(set(equation) - set(",->"))
    max_side = 2 if len(letters) >= 4 else 3  # gradcheck costs two forwards per element
    sizes = {c: data.draw(st.integers(1, max_side)) for c in letters}
    ops = [data.draw(tensors(s)) for s in operand_shapes(equation, sizes)]
    check_op(lambda *t: F.einsum(equation, *t), ops, lambda *a: np.einsum(equation, *a))


def test_einsum_takes_a_list_and_spaces():
    rng = np.random.default_rng(4)
    an, bn = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    a, b = on_backend(an, requires_grad=True), on_backend(bn, requires_grad=True)
    np.testing.assert_allclose(F.einsum("ij, jk -> ik", [a, b]).numpy(), an @ bn)
    check_grad(lambda x, y: F.einsum("ij,jk->ik", (x, y)), [a, b])


@given(data=st.data())
def test_attention_built_from_einsum_and_logsumexp(data):
    """softmax(q k^T / sqrt(d)) v with the two einsums attention uses, against NumPy."""
    b, h, t, s, d = (data.draw(st.integers(1, 2)) for _ in range(5))
    q = data.draw(tensors((b, h, t, d)))
    k = data.draw(tensors((b, h, s, d)))
    v = data.draw(tensors((b, h, s, d)))

    def attention(q, k, v):
        scores = F.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
        weights = F.exp(scores - F.logsumexp(scores, -1, keepdim=True))
        return F.einsum("bhqk,bhkd->bhqd", weights, v)

    def reference(q, k, v):
        scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(d)
        weights = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
        return weights @ v

    check_op(attention, [q, k, v], reference)


@pytest.mark.parametrize("equation, shapes_, msg", [
    ("ij,jk->ik", [(2, 3)], "einsum: equation 'ij,jk->ik' has 2 operands, got 1"),
    ("ijk->i", [(2, 3)], "einsum: operand spec 'ijk' has 3 dims but the tensor has 2"),
    ("ij,jk->ik", [(2, 3), (4, 5)],
     "einsum: subscript 'j' has size 3 and 4 in 'ij,jk->ik' with shapes [(2, 3), (4, 5)]"),
    ("...ij->ij", [(2, 3)], "einsum: ellipsis is not supported"),
    ("ij->ik", [(2, 3)], "einsum: output subscript 'k' is in no operand of 'ij->ik'"),
    ("ij->ii", [(2, 3)], "einsum: output subscript 'i' repeats in 'ij->ii'"),
    ("ij->i->j", [(2, 3)], "einsum: equation 'ij->i->j' has more than one '->'"),
    ("i1->i", [(2, 3)], "einsum: equation 'i1->i' has characters ['1'] that are not"),
])
def test_einsum_errors_name_op_and_shapes(equation, shapes_, msg):
    ops = [on_backend(np.ones(s)) for s in shapes_]
    with pytest.raises(ValueError, match=re.escape(msg)):
        F.einsum(equation, *ops)


def test_einsum_partial_grads():
    rng = np.random.default_rng(5)
    an, bn = rng.standard_normal((2, 3)), rng.standard_normal((3,))
    a, b = on_backend(an), on_backend(bn, requires_grad=True)
    F.einsum("ij,j->i", a, b).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), an.sum(0))
    assert a.grad is None


def test_matmul_and_einsum_agree_in_float32():
    rng = np.random.default_rng(6)
    a = on_backend(rng.standard_normal((2, 3, 4)).astype(np.float32))
    b = on_backend(rng.standard_normal((2, 4, 5)).astype(np.float32))
    y1, y2 = F.matmul(a, b), F.einsum("bij,bjk->bik", a, b)
    assert y1.dtype == y2.dtype == ml.float32
    np.testing.assert_allclose(y1.numpy(), y2.numpy(), rtol=1e-5, atol=1e-6)


@given(data=st.data())
def test_matmul_with_numpy_operand(data):
    """A NumPy array operand is wrapped as a constant on the tensor's backend."""
    m, k = data.draw(side), data.draw(side)
    x = data.draw(tensors((m, k)))
    y = data.draw(arrays((k,)))
    check_op(lambda t, yy: F.matmul(t, yy), [x, y], lambda a, yy: a @ yy)
    check_op(lambda t, yy: F.matmul(yy, t.T), [x, y], lambda a, yy: yy @ a.T)
