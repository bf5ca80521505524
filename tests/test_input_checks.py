"""Input that cannot make a sensible run is refused up front, with a message naming it
(issue 10): non-numeric or ragged tensor data, state dicts of the wrong kind or shape."""

from __future__ import annotations

import numpy as np
import pytest

import minilm as ml
from minilm import nn

# ---------------------------------------------------------------- minilm.tensor


@pytest.mark.parametrize("data, named", [
    ([1, "a", 2.0], r"data\[1\] is str 'a'"),
    ([None, 1], r"data\[0\] is NoneType None"),
    (None, r"data is NoneType None"),
    ("abc", r"data is str 'abc'"),
    ([[1, 2], [3, object()]], r"data\[1\]\[1\] is object"),
    ({1: 2}, r"data is dict"),
    (1 + 2j, r"data is complex"),
    (np.array(["x", "y"]), r"dtype <U1"),
    (np.array([1, None], dtype=object), r"dtype object"),
    (np.zeros(2, np.complex64), r"dtype complex64"),
    ([np.array(["x"])], r"data\[0\] has dtype <U1"),
])
def test_tensor_refuses_non_numeric_data(data, named):
    with pytest.raises(TypeError, match=named):
        ml.tensor(data)
    with pytest.raises(TypeError, match=named):
        ml.Tensor(data)


def test_tensor_refuses_non_numeric_dtype():
    with pytest.raises(TypeError, match="dtype object"):
        ml.tensor([1, 2], dtype=object)


@pytest.mark.parametrize("data, shapes", [
    ([[1, 2], [3]], r"data\[0\] has shape \(2,\) but data\[1\] has shape \(1,\)"),
    ([1, [2, 3]], r"data\[0\] has shape \(\) but data\[1\] has shape \(2,\)"),
    ([[[1], [2]], [[1], [2, 3]]], r"data\[1\]\[0\] has shape \(1,\) but data\[1\]\[1\] has shape \(2,\)"),
])
def test_tensor_refuses_ragged_data(data, shapes):
    with pytest.raises(ValueError, match=shapes):
        ml.tensor(data)


def test_tensor_of_zero_d_tensors_copies_their_values_without_grad():
    a = ml.tensor(1.5, requires_grad=True)
    b = ml.tensor(2.5)
    t = ml.tensor([a, b])
    assert t.shape == (2,) and t.dtype == ml.float32
    np.testing.assert_array_equal(t.numpy(), [1.5, 2.5])
    assert not t.requires_grad and t.grad_fn is None
    assert ml.tensor([ml.tensor(1), ml.tensor(2)]).numpy().dtype == np.int64
    np.testing.assert_array_equal(ml.tensor([[a, 1.0], [2.0, b]]).numpy(), [[1.5, 1.0], [2.0, 2.5]])


def test_tensor_refuses_tensors_with_elements_in_a_list():
    with pytest.raises(TypeError, match=r"data\[0\] is a Tensor of shape \(2,\).*minilm.stack"):
        ml.tensor([ml.tensor([1.0, 2.0]), ml.tensor([1.0, 2.0])])


def test_tensor_still_takes_numbers():
    assert ml.tensor([1, 2]).numpy().dtype == np.int64
    assert ml.tensor([1.0, 2]).numpy().dtype == np.float32
    assert ml.tensor([True, False]).numpy().dtype == np.bool_
    assert ml.tensor([np.int32(1), np.int32(2)]).numpy().dtype == np.int32
    assert ml.tensor([[], []]).shape == (2, 0)
    assert ml.tensor(range(3)).numpy().tolist() == [0, 1, 2]
    assert ml.tensor(np.arange(3, dtype=np.uint8)).numpy().dtype == np.uint8
    assert ml.tensor([np.zeros(2), np.ones(2)]).shape == (2, 2)


# ---------------------------------------------------------------- Module.load_state_dict


def _lists(module: nn.Module) -> dict:
    return {k: v.numpy().tolist() for k, v in module.state_dict().items()}


def test_load_state_dict_takes_lists_and_scalars():
    src = nn.Linear(2, 3)
    dst = nn.Linear(2, 3)
    dst.load_state_dict(_lists(src))
    np.testing.assert_array_equal(dst.weight.numpy(), src.weight.numpy())
    np.testing.assert_array_equal(dst.bias.numpy(), src.bias.numpy())
    assert dst.weight.dtype == ml.float32
    dst.load_state_dict({"weight": np.ones((3, 2), np.float64), "bias": (0, 0, 0)})
    np.testing.assert_array_equal(dst.weight.numpy(), np.ones((3, 2), np.float32))
    assert dst.weight.numpy().dtype == np.float32


@pytest.mark.parametrize("bad, error, named", [
    ("abc", TypeError, r"'bias' is str of dtype <U3"),
    (None, TypeError, r"'bias' is NoneType"),
    ([[1, 2], [3]], TypeError, r"'bias' is not an array"),
    ([1.0, 2.0], ValueError, r"bias: checkpoint \(2,\) vs model \(3,\)"),
])
def test_load_state_dict_refuses_bad_values_and_changes_nothing(bad, error, named):
    m = nn.Linear(2, 3)
    before = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    state = {"weight": np.full((3, 2), 7.0, np.float32), "bias": bad}
    with pytest.raises(error, match=named):
        m.load_state_dict(state)
    for k, v in m.state_dict().items():  # weight (valid) was not written either
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_load_state_dict_refuses_a_non_mapping():
    with pytest.raises(TypeError, match="expected a dict.*got list"):
        nn.Linear(2, 3).load_state_dict([("weight", np.zeros((3, 2)))])
