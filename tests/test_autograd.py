"""The backward pass itself: accumulation, ordering, freeing, grad mode, hooks, version
counters, checkpointing, custom Functions and gradcheck."""

import numpy as np
import pytest

import minilm as ml
import minilm.functional as F
from minilm import Function, Tensor
from minilm.finite_diff import GradcheckError


def leaf(*values, dtype="float64"):
    return ml.tensor(list(values), dtype=dtype, requires_grad=True)


def test_reused_tensor_gradients_add_up():
    x = leaf(1.0, -2.0, 3.0)
    y = x * x + x  # dy/dx = 2x + 1
    y.backward(ml.ones(3, dtype="float64"))
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1)


def test_diamond_graph_and_deep_chain():
    x = leaf(0.5)
    a = x * 3
    b = x.exp()
    z = a * b + a  # dz/dx = 3 e^x + 3 x e^x + 3
    z.backward(ml.ones(1, dtype="float64"))
    v = 0.5
    np.testing.assert_allclose(x.grad.numpy(), [3 * np.exp(v) + 3 * v * np.exp(v) + 3])
    # a long chain must not recurse (no RecursionError): iterative topological order
    t = leaf(1.0)
    y = t
    for _ in range(5000):
        y = y * 1.0001
    y.backward(ml.ones(1, dtype="float64"))
    np.testing.assert_allclose(t.grad.numpy(), [1.0001 ** 5000], rtol=1e-10)


def test_gradients_accumulate_across_backward_calls():
    x = leaf(2.0)
    (x * 3).backward(ml.ones(1, dtype="float64"))
    (x * 4).backward(ml.ones(1, dtype="float64"))
    np.testing.assert_allclose(x.grad.numpy(), [7.0])


def test_leaf_grad_owns_its_storage():
    # add's backward hands the same array to both inputs; the leaves must not share it
    a, b = leaf(1.0), leaf(2.0)
    (a + b).backward(ml.ones(1, dtype="float64"))
    with ml.no_grad():
        a.grad.mul_(10)
    np.testing.assert_allclose(b.grad.numpy(), [1.0])


def test_second_backward_through_freed_graph_raises():
    x = leaf(1.0, 2.0)
    y = (x.exp() * 2).tanh()
    s = y * y
    s.backward(ml.ones(2, dtype="float64"))
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        s.backward(ml.ones(2, dtype="float64"))


def test_retain_graph_allows_a_second_backward():
    x = leaf(1.0, 2.0)
    y = x.exp() * 2
    y.backward(ml.ones(2, dtype="float64"), retain_graph=True)
    y.backward(ml.ones(2, dtype="float64"))
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.exp([1.0, 2.0]))


def test_non_scalar_backward_needs_gradient():
    x = leaf(1.0, 2.0)
    with pytest.raises(RuntimeError, match=r"implicitly created only for scalar.*\(2,\)"):
        (x * 2).backward()


def test_backward_gradient_shape_is_checked():
    x = leaf(1.0, 2.0)
    with pytest.raises(RuntimeError, match=r"gradient has shape \(3,\).*shape \(2,\)"):
        (x * 2).backward(ml.ones(3, dtype="float64"))


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (ml.ones(2) * 2).backward(ml.ones(2))


def test_no_grad_enable_grad_and_decorator():
    x = leaf(1.0)
    with ml.no_grad():
        assert not ml.is_grad_enabled()
        y = x * 2
        with ml.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None

    @ml.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad
    assert ml.is_grad_enabled()
    with ml.set_grad_enabled(False):
        assert not (x * 2).requires_grad


def test_requires_grad_only_for_floats():
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        ml.tensor([1, 2, 3], requires_grad=True)
    with pytest.raises(TypeError, match="int64"):
        ml.arange(3).requires_grad_()
    assert ml.arange(3).float().requires_grad_().requires_grad


def test_cannot_turn_off_requires_grad_of_non_leaf():
    y = leaf(1.0) * 2
    with pytest.raises(RuntimeError, match="non-leaf"):
        y.requires_grad = False
    assert not y.detach().requires_grad


def test_leaf_hook_can_replace_gradient_and_be_removed():
    x = leaf(1.0, 2.0)
    seen = []
    h = x.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 10)
    (x * 3).backward(ml.ones(2, dtype="float64"))
    np.testing.assert_allclose(seen[0], [3.0, 3.0])
    np.testing.assert_allclose(x.grad.numpy(), [30.0, 30.0])
    h.remove()
    x.grad = None
    (x * 3).backward(ml.ones(2, dtype="float64"))
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_non_leaf_hook_sees_total_gradient_and_replaces_it():
    x = leaf(1.0)
    y = x * 2
    seen = []
    y.register_hook(lambda g: seen.append(float(g.item())) or g * 0.5)
    z = y * 3 + y * 4  # y is used twice: its total gradient is 7
    z.backward(ml.ones(1, dtype="float64"))
    assert seen == [7.0]
    np.testing.assert_allclose(x.grad.numpy(), [7.0])  # 7 * 0.5 * 2


def test_post_accumulate_hook_fires_once_with_complete_grad():
    x = leaf(1.0, 2.0)
    calls = []
    x.register_post_accumulate_grad_hook(lambda t: calls.append(t.grad.numpy().copy()))
    (x * 2 + x * 3 + x).backward(ml.ones(2, dtype="float64"))
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], [6.0, 6.0])
    with pytest.raises(RuntimeError, match="only leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_leaf_grads_are_ready_in_reverse_order_of_use():
    # data parallelism starts communication from these hooks: last layer first
    ws = [leaf(1.0) for _ in range(4)]
    order = []
    for i, w in enumerate(ws):
        w.register_post_accumulate_grad_hook(lambda t, i=i: order.append(i))
    h = leaf(1.0)
    for w in ws:
        h = (h * w).tanh()
    h.backward(ml.ones(1, dtype="float64"))
    assert order == [3, 2, 1, 0]


def test_retain_grad_keeps_non_leaf_grad():
    x = leaf(1.0, 2.0)
    y = x * 2
    y.retain_grad()
    (y * y).backward(ml.ones(2, dtype="float64"))
    np.testing.assert_allclose(y.grad.numpy(), 2 * y.numpy())


def test_inplace_change_of_saved_output_is_detected():
    x = leaf(1.0, 2.0)
    y = x.exp()  # exp saves its output
    z = y * 1.0
    with ml.no_grad():
        y.mul_(2)
    with pytest.raises(RuntimeError, match=r"modified in place.*version 1, expected 0"):
        z.backward(ml.ones(2, dtype="float64"))


def test_inplace_change_of_saved_input_is_detected_through_detach():
    a = leaf(1.0, 2.0)
    b = ml.tensor([3.0, 4.0], dtype="float64")
    y = a * b  # mul saves b
    b.detach().add_(1.0)  # detach shares storage and version counter
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward(ml.ones(2, dtype="float64"))


def test_inplace_on_leaf_requiring_grad_refused_under_grad_mode():
    w = leaf(1.0)
    with pytest.raises(RuntimeError, match="add_: in-place change of a tensor that requires grad"):
        w.add_(1.0)
    with ml.no_grad():
        w -= 0.5 * ml.ones(1, dtype="float64")
    np.testing.assert_allclose(w.numpy(), [0.5])


def test_checkpoint_matches_plain_gradients_including_closure_parameters():
    ml.manual_seed(3)
    w = ml.randn(4, 4, dtype="float64", requires_grad=True)
    x = ml.randn(2, 4, dtype="float64", requires_grad=True)

    def block(t):
        # random draws inside are replayed identically in the recomputation
        noise = ml.rand(*t.shape, dtype="float64")
        return ((t @ w).tanh() * noise + t).exp()

    state = ml.current_backend().get_rng_state()
    plain = block(x)
    plain.backward(ml.ones(2, 4, dtype="float64"))
    gx, gw = x.grad.numpy().copy(), w.grad.numpy().copy()
    x.grad = w.grad = None

    ml.current_backend().set_rng_state(state)
    ck = ml.checkpoint(block, x)
    assert ck.grad_fn is not None
    np.testing.assert_allclose(ck.numpy(), plain.numpy())
    ck.backward(ml.ones(2, 4, dtype="float64"))
    np.testing.assert_allclose(x.grad.numpy(), gx, rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), gw, rtol=1e-12)


def test_checkpoint_gradcheck():
    w = ml.randn(3, 3, dtype="float64", requires_grad=True)
    x = ml.randn(2, 3, dtype="float64", requires_grad=True)
    assert ml.gradcheck(lambda a, b: ml.checkpoint(lambda t: (t @ b).sin() * t, a), [x, w])


class Cube(Function):
    """y = x^3;  dx = 3 x^2 g."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return 3 * x * x * g


class WrongCube(Cube):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return 2 * x * x * g


def test_custom_function_and_gradcheck_catching_a_wrong_backward():
    x = ml.randn(3, 2, dtype="float64", requires_grad=True)
    assert ml.gradcheck(Cube.apply, [x])
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(3, 2\)\).*differ"):
        ml.gradcheck(WrongCube.apply, [x])
    assert ml.gradcheck(WrongCube.apply, [x], raise_exception=False) is False


class SlightlyWrongCube(Cube):
    """A backward wrong by one part in 100,000: what a mistyped constant looks like."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return 3 * x * x * g * (1 + 1e-5)


def test_gradcheck_catches_a_backward_wrong_by_one_part_in_1e5():
    """The default tolerances (atol 1e-8, rtol 1e-6 at eps 1e-6) are tight enough that a
    relative error of 1e-5 fails, while the correct backward passes."""
    x = Tensor(np.linspace(0.5, 2.0, 6).reshape(3, 2), requires_grad=True)
    assert ml.gradcheck(Cube.apply, [x])
    assert ml.gradcheck(SlightlyWrongCube.apply, [x], raise_exception=False) is False


def test_gradcheck_requires_float64_inputs():
    with pytest.raises(TypeError, match="float64"):
        ml.gradcheck(Cube.apply, [ml.randn(2, requires_grad=True)])


class SplitHalves(Function):
    """Two outputs: (x[:n], x[n:])."""

    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[0] // 2
        return x[: ctx.n].copy(), x[ctx.n:].copy()

    @staticmethod
    def backward(ctx, ga, gb):
        return ctx.xp.concatenate([ga, gb])


def test_multi_output_function_with_an_unused_output():
    x = leaf(1.0, 2.0, 3.0, 4.0)
    a, b = SplitHalves.apply(x)
    (b * 5).backward(ml.ones(2, dtype="float64"))
    np.testing.assert_allclose(x.grad.numpy(), [0, 0, 5, 5])


def test_backward_returning_wrong_shape_is_reported():
    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g[:1]

    with pytest.raises(RuntimeError, match=r"Bad.backward produced a gradient of shape \(1,\)"):
        Bad.apply(leaf(1.0, 2.0)).backward(ml.ones(2, dtype="float64"))


def test_grad_keeps_leaf_dtype_under_promotion():
    x = ml.tensor([1.0, 2.0], requires_grad=True)  # float32
    y = x * ml.tensor([3.0, 4.0], dtype="float64")
    assert y.dtype == np.float64
    y.backward(ml.ones(2, dtype="float64"))
    assert x.grad.dtype == np.float32


def test_mixing_array_types_is_refused():
    class OtherArray(np.ndarray):  # stands in for a CuPy array
        pass

    a = ml.ones(3)
    b = Tensor._make(np.ones(3, dtype=np.float32).view(OtherArray))
    with pytest.raises(TypeError,
                       match=r"Add: tensors on numpy.ndarray and .*OtherArray; move one with \.to\("):
        F.add(a, b)


def test_inplace_change_through_a_view_is_detected():
    a = leaf(1.0, 2.0, 3.0, 4.0)
    b = ml.tensor([1.0, 2.0, 3.0, 4.0], dtype="float64")
    y = a * b  # saves b
    v = b.view(2, 2)  # shares storage and version counter with b
    v.add_(1.0)
    assert b._version.value == 1
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward(ml.ones(4, dtype="float64"))
