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


# ---------------------------------------------------------------- data files

import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

from minilm.data import load_corpus  # noqa: E402
from minilm.data._io import DEFAULT_MAX_BYTES, read_json, read_regular_file  # noqa: E402

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")


@posix_only
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_load_corpus_refuses_a_device(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    with pytest.raises(ValueError, match=f"'{device}' is a character device, not a regular file"):
        load_corpus(device)


def _with_watchdog(fn):
    """Run ``fn``; if it blocks for 10 s, fail instead of hanging the test run (a
    writer opening the FIFO unblocks a stuck reader)."""
    result: dict = {}

    def target():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            result["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(10)
    return th.is_alive(), result.get("error")


@posix_only
def test_load_corpus_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "data.txt"
    os.mkfifo(fifo)
    blocked, error = _with_watchdog(lambda: load_corpus(fifo))
    if blocked:  # unblock the reader so the thread ends
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert not blocked, "load_corpus blocked on a FIFO"
    assert isinstance(error, ValueError)
    assert "data.txt' is a FIFO (named pipe), not a regular file" in str(error)


@posix_only
def test_load_corpus_refuses_a_socket(tmp_path):
    path = tmp_path / "s.txt"
    if len(str(path)) > 100:
        pytest.skip("socket path too long")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(path))
        with pytest.raises(ValueError, match="s.txt' is a socket, not a regular file"):
            load_corpus(path)
    finally:
        s.close()


def test_load_corpus_size_limit(tmp_path):
    assert DEFAULT_MAX_BYTES == 2 << 30
    f = tmp_path / "a.txt"
    f.write_text("x" * 100)
    with pytest.raises(ValueError, match=r"a.txt' is 100 bytes, over the limit of 10 bytes; "
                                         "pass a larger max_bytes"):
        load_corpus(f, max_bytes=10)
    assert load_corpus(f, max_bytes=100) == "x" * 100
    assert load_corpus(f, max_bytes=None) == "x" * 100


def test_load_corpus_folder_size_limit_counts_all_files(tmp_path):
    (tmp_path / "a.txt").write_text("a" * 8)
    (tmp_path / "b.txt").write_text("b" * 8)
    with pytest.raises(ValueError, match=r"folder .* holds more than 10 bytes of .*b.txt"):
        load_corpus(tmp_path, max_bytes=10)
    assert load_corpus(tmp_path, max_bytes=16) == "a" * 8 + "\n\n" + "b" * 8


def test_read_regular_file_limits_and_kinds(tmp_path):
    f = tmp_path / "t.json"
    f.write_text('{"a": 1}')
    assert read_json(f) == {"a": 1}
    with pytest.raises(ValueError, match=r"t.json' is 8 bytes, over the limit of 4 bytes"):
        read_json(f, max_bytes=4)
    with pytest.raises(ValueError, match="is a folder, not a regular file"):
        read_regular_file(tmp_path)
    with pytest.raises(ValueError, match="nope' does not exist"):
        read_regular_file(tmp_path / "nope")
    big = 3 << 20
    with pytest.raises(ValueError, match=r"over the limit of 1048576 bytes \(1 MiB\)"):
        read_regular_file(_sized(tmp_path / "big", big), max_bytes=1 << 20)


def _sized(path, n):
    with open(path, "wb") as f:
        f.truncate(n)  # sparse: no disk used
    return path


@posix_only
def test_cli_train_refuses_dev_zero(tmp_path, capsys):
    from minilm.cli import main

    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    blocked, error = _with_watchdog(lambda: main(["train", "--data", "/dev/zero",
                                                  "--out-dir", str(tmp_path / "run")]))
    assert not blocked
    out = capsys.readouterr()
    text = out.out + out.err + (str(error) if error else "")
    assert "'/dev/zero' is a character device" in text
