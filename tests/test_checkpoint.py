"""Tests of minilm.train.checkpoint: exact round trips (every dtype, nested state,
tied weights, RNG states), atomic writes (a failing writer, a SIGKILL-ed saver), clear
errors for missing / truncated / corrupted / foreign files and for a checkpoint of a
different model, which must leave model, optimizer and scheduler untouched."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections import OrderedDict

import numpy as np
import pytest
import safetensors
import safetensors.numpy as stnp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minilm
from minilm import nn
from minilm.train import checkpoint
from minilm.train.checkpoint import (
    CheckpointError,
    flatten_state,
    load_checkpoint,
    save_checkpoint,
    unflatten_state,
)
from minilm.train.training_state import (
    load_model_weights,
    load_training_state,
    save_training_state,
)

DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
          np.uint64, np.float16, np.float32, np.float64, np.complex64]


def same(a, b):
    """Exact equality: same types (int is not float, OrderedDict is not dict, tuple is
    not list), same key order and key types, bit-identical arrays with equal dtype/shape."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (len(a) == len(b)
                and all(type(ka) is type(kb) and ka == kb and same(va, vb)
                        for (ka, va), (kb, vb) in zip(a.items(), b.items())))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (np.ndarray, np.generic)):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b


def files_in(directory):
    return sorted(os.listdir(directory))


# --------------------------------------------------------------------------- flat round trips


def test_round_trip_every_dtype_and_shape(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {}
    for dt in DTYPES:
        name = np.dtype(dt).name
        tensors[name] = (rng.random((3, 4)) * 100).astype(dt)
        tensors[name + ".scalar"] = np.array(7, dtype=dt)  # 0-d
        tensors[name + ".empty"] = np.zeros((0, 5), dtype=dt)
    base = rng.random((6, 5))
    tensors["transposed"] = base.T  # not contiguous
    tensors["strided"] = base[::2, 1::2]
    tensors["bigendian"] = np.arange(5, dtype=">f4")
    tensors["tensor"] = minilm.tensor([[1.0, 2.0]])
    tensors["npscalar"] = np.float16(1.5)
    meta = {"step": 12, "lr": 3e-4, "name": "run", "nested": {"a": [1, 2, None]}}
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, tensors, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta
    assert set(loaded) == set(tensors)
    for name, value in tensors.items():
        expected = np.asarray(value.numpy() if isinstance(value, minilm.Tensor) else value)
        got = loaded[name]
        assert got.shape == expected.shape, name
        assert got.dtype == expected.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(got, expected)
        assert got.flags.writeable
    assert files_in(tmp_path) == ["ckpt.safetensors"]


def test_tied_arrays_are_stored_once(tmp_path):
    w = np.arange(12.0).reshape(3, 4)
    path = tmp_path / "tied.safetensors"
    save_checkpoint(path, {"a": w, "b": w, "c": w.T, "d": w.copy()}, {})
    with safetensors.safe_open(str(path), framework="np") as f:
        stored = set(f.keys())
        aliases = json.loads(f.metadata()[checkpoint.ALIAS_KEY])
    assert stored == {"a", "c", "d"} and aliases == {"b": "a"}  # w.T is a different view
    loaded, _ = load_checkpoint(path)
    assert loaded["b"] is loaded["a"]
    np.testing.assert_array_equal(loaded["c"], w.T)


def test_save_errors_leave_nothing_behind(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="'bad'.*complex128"):
        save_checkpoint(path, {"ok": np.zeros(2), "bad": np.zeros(2, np.complex128)}, {})
    with pytest.raises(TypeError, match="'obj'"):
        save_checkpoint(path, {"obj": np.array([object()])}, {})
    with pytest.raises(ValueError, match="__metadata__"):
        save_checkpoint(path, {"__metadata__": np.zeros(2)}, {})
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(path, {}, {"array": np.zeros(2)})
    with pytest.raises(FileNotFoundError):
        save_checkpoint(tmp_path / "no" / "such" / "dir.safetensors", {}, {})
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------- nested state

keys = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b.c", "", "1", "__metadata__", "é"]),
                 st.text(max_size=4))
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)))
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 130), 2 ** 130), st.floats(), st.text(max_size=6),
    arrays, arrays.filter(lambda a: a.ndim == 0).map(lambda a: a[()]),  # NumPy scalars
    st.binary(max_size=6),
)
structures = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.lists(kids, max_size=3).map(tuple),
        st.dictionaries(keys, kids, max_size=3),
        st.dictionaries(keys, kids, max_size=3).map(OrderedDict),
    ),
    max_leaves=12,
)


@given(structures)
def test_flatten_unflatten_round_trip(state):
    tensors, meta = flatten_state(state)
    assert all(isinstance(v, np.ndarray) for v in tensors.values())
    json.dumps(meta)  # everything that is not a tensor is JSON
    assert same(unflatten_state(tensors, meta), state)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "state.safetensors")
        save_checkpoint(path, tensors, meta)
        assert same(unflatten_state(*load_checkpoint(path)), state)


def test_flatten_names_and_key_types():
    state = {"optimizer": {"state": {3: {"exp_avg": np.ones(2), "step": 5}},
                           "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [3]}]},
             "model": OrderedDict([("w", minilm.tensor([1.0]))]),
             "x.y": np.zeros(1), "x": {"y": np.ones(1)}}  # two leaves with path x.y
    tensors, meta = flatten_state(state)
    assert set(tensors) == {"optimizer.state.3.exp_avg", "model.w", "x.y", "x.y#1"}
    back = unflatten_state(tensors, meta)
    assert list(back["optimizer"]["state"]) == [3]  # int key stays int
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert type(back["model"]) is OrderedDict and isinstance(back["model"]["w"], np.ndarray)
    with pytest.raises(TypeError, match="set"):
        flatten_state({"a": {1, 2}})
    with pytest.raises(TypeError, match="key"):
        flatten_state({(1, 2): 3})
    with pytest.raises(ValueError, match="missing"):
        unflatten_state({}, meta)


# --------------------------------------------------------------------------- atomicity


def test_failure_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, {"w": np.full(1000, 1.0)}, {"step": 1})

    def crash_half_way(tmp, arrays, metadata):
        stnp.save_file(arrays, tmp, metadata=metadata)
        with open(tmp, "r+b") as f:
            f.truncate(os.path.getsize(tmp) // 2)
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "_write_safetensors", crash_half_way)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"w": np.full(1000, 2.0)}, {"step": 2})

    def interrupted(tmp, arrays, metadata):
        with open(tmp, "wb") as f:
            f.write(b"\x00" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_write_safetensors", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": np.full(1000, 3.0)}, {"step": 3})
    monkeypatch.undo()

    def replace_fails(src, dst):
        raise PermissionError("replace refused")

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(PermissionError):
        save_checkpoint(path, {"w": np.full(1000, 4.0)}, {"step": 4})
    monkeypatch.undo()

    assert files_in(tmp_path) == ["ckpt.safetensors"]  # no temp file left
    tensors, meta = load_checkpoint(path)
    assert meta == {"step": 1} and np.all(tensors["w"] == 1.0)


SAVER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import safetensors.numpy as stnp
    from minilm.train import checkpoint

    path, point = sys.argv[1], sys.argv[2]
    big = np.arange(50_000, dtype=np.float64)
    checkpoint.save_checkpoint(path, {"big": big, "small": np.array([0])}, {"i": 0})
    print(os.getpid(), flush=True)

    def die():  # SIGKILL: no exception, no finally, no cleanup of any kind
        os.kill(os.getpid(), signal.SIGKILL)

    real_replace = os.replace

    def write_part(tmp, arrays, metadata):
        data = stnp.save(arrays, metadata=metadata)
        header_end = 8 + int.from_bytes(data[:8], "little")
        n = {"empty": 0, "header": header_end // 2, "half": len(data) // 2,
             "last_byte": len(data) - 1}[point]
        with open(tmp, "wb") as f:
            f.write(data[:n])
            f.flush()
            os.fsync(f.fileno())
        die()

    def die_instead_of_fsync(p, directory=False):
        die()

    def replace_then_die(src, dst):
        real_replace(src, dst)
        die()

    if point in ("empty", "header", "half", "last_byte"):
        checkpoint._write_safetensors = write_part
    elif point == "before_fsync":
        checkpoint._fsync_path = die_instead_of_fsync
    elif point == "before_replace":
        os.replace = lambda src, dst: die()
    elif point == "after_replace":
        os.replace = replace_then_die
    else:
        raise SystemExit("unknown point " + point)
    checkpoint.save_checkpoint(path, {"big": big + 1, "small": np.array([1])}, {"i": 1})
    print("the saver was not killed", flush=True)
""")

# where the saver dies during its second save: part-way through the bytes of the file
# (none, half the header, half the file, all but the last byte), with the file written
# but not yet fsync-ed, just before the rename, and just after it
KILL_POINTS = ["empty", "header", "half", "last_byte", "before_fsync", "before_replace",
               "after_replace"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_during_save_leaves_a_loadable_checkpoint(tmp_path, point):
    """A saver killed (SIGKILL) at a fixed point of a save leaves the previous
    checkpoint intact, or the new one complete once the rename happened; never a
    mixture. The interruption points are fixed, so every run checks the same thing."""
    path = tmp_path / "ckpt.safetensors"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    proc = subprocess.run([sys.executable, str(script), str(path), point], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    pid = int(proc.stdout.split()[0])
    tensors, meta = load_checkpoint(path)
    i = 1 if point == "after_replace" else 0
    assert meta == {"i": i}
    np.testing.assert_array_equal(tensors["big"], np.arange(50_000, dtype=np.float64) + i)
    assert tensors["small"].tolist() == [i]
    # the killed saver's temporary directory is left over, clearly named ...
    others = set(files_in(tmp_path)) - {"ckpt.safetensors", "saver.py"}
    assert len(others) == 1 and others.pop().startswith(f".ckpt.safetensors.{socket.gethostname()}.{pid}.")
    # ... and the next save to that path removes it (its process is gone)
    live = tmp_path / f".ckpt.safetensors.{socket.gethostname()}.{os.getpid()}.abc.tmp"
    live.mkdir()  # a save in progress in a live process is left alone
    save_checkpoint(path, {"big": np.zeros(1)}, {"i": -1})
    assert files_in(tmp_path) == sorted([live.name, "ckpt.safetensors", "saver.py"])
    assert load_checkpoint(path)[1] == {"i": -1}


# --------------------------------------------------------------------------- bad files


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.safetensors"
    save_checkpoint(path, {"a": np.arange(100.0), "b": np.ones((3, 3), np.float32)}, {"k": 1})
    return path


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    for loader in (load_checkpoint, load_model_weights, load_training_state):
        with pytest.raises(CheckpointError, match="nope.safetensors"):
            loader(path)
        with pytest.raises(FileNotFoundError, match="nope.safetensors"):
            loader(path)
        with pytest.raises(ValueError, match="nope.safetensors"):
            loader(path)


@pytest.mark.parametrize("cut", ["half", "header", "last_byte", "tiny"])
def test_truncated_file_is_a_value_error_naming_the_path(saved, cut):
    data = saved.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    keep = {"half": len(data) // 2, "header": 8 + header_len // 2, "last_byte": len(data) - 1,
            "tiny": 5}[cut]
    bad = saved.with_name("cut.safetensors")
    bad.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="cut.safetensors") as info:
        load_checkpoint(bad)
    assert "truncated" in str(info.value)


def test_garbage_and_corruption_are_value_errors(saved, tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ValueError, match="garbage.bin"):
        load_checkpoint(garbage)
    # a plausible header length but no JSON after it
    garbage.write_bytes((16).to_bytes(8, "little") + b"definitely{not}json" + b"\0" * 40)
    with pytest.raises(ValueError, match="JSON"):
        load_checkpoint(garbage)
    # valid JSON that contradicts the data: a shape changed in place, same header length
    data = saved.read_bytes()
    corrupted = data.replace(b'"shape":[3,3]', b'"shape":[3,4]')
    assert corrupted != data
    garbage.write_bytes(corrupted)
    with pytest.raises(ValueError, match="garbage.bin.*corrupted"):
        load_checkpoint(garbage)
    # trailing bytes after the data
    garbage.write_bytes(data + b"extra")
    with pytest.raises(ValueError, match="unexpected bytes"):
        load_checkpoint(garbage)
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path)  # a directory


def test_foreign_safetensors_and_versions(tmp_path):
    plain = tmp_path / "plain.safetensors"
    stnp.save_file({"wte": np.ones((4, 2), np.float32), "lm_head": np.zeros(4)}, str(plain))
    with pytest.raises(ValueError, match="not a minilm checkpoint"):
        load_checkpoint(plain)
    weights = load_model_weights(plain)  # plain weight files load directly
    assert set(weights) == {"wte", "lm_head"}
    future = tmp_path / "future.safetensors"
    stnp.save_file({"w": np.ones(2)}, str(future),
                   metadata={"minilm": "{}", "minilm_format_version": "99"})
    with pytest.raises(ValueError, match="future.safetensors.*version '99'"):
        load_checkpoint(future)
    save_checkpoint(tmp_path / "flat.safetensors", {"w": np.ones(2)}, {})
    with pytest.raises(ValueError, match="not a training state"):
        load_training_state(tmp_path / "flat.safetensors")


# --------------------------------------------------------------------------- training state


class FakeOptimizer:
    """The PyTorch optimizer ``state_dict`` layout, without an optimizer behind it."""

    def __init__(self, params, lr=1e-3):
        self.params = list(params)
        self.param_groups = [{"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
                              "params": list(range(len(self.params)))}]
        self.state = {}

    def step(self):
        for i, p in enumerate(self.params):
            s = self.state.setdefault(i, {"step": 0, "exp_avg": np.zeros(p.shape, np.float32),
                                          "exp_avg_sq": np.zeros(p.shape, np.float32)})
            s["step"] += 1
            s["exp_avg"] += 0.5 * s["step"]
            s["exp_avg_sq"] += 0.25

    def state_dict(self):
        return {"state": {i: dict(s) for i, s in self.state.items()},
                "param_groups": [dict(g) for g in self.param_groups]}

    def load_state_dict(self, sd):
        if len(sd["param_groups"]) != len(self.param_groups):
            raise ValueError("different number of parameter groups")
        self.state = {int(k): {n: np.array(v) if isinstance(v, np.ndarray) else v for n, v in s.items()}
                      for k, s in sd["state"].items()}
        self.param_groups = [dict(g) for g in sd["param_groups"]]


class FakeScheduler:
    def __init__(self):
        self.last_epoch, self.base_lrs = 0, [1e-3]

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, sd):
        self.last_epoch, self.base_lrs = sd["last_epoch"], list(sd["base_lrs"])


def make_model(hidden=8):
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def model_arrays(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def trained_setup():
    model = make_model()
    opt = FakeOptimizer(model.parameters())
    opt.step()
    opt.step()
    sched = FakeScheduler()
    sched.last_epoch = 2
    return model, opt, sched


def test_training_state_round_trip(tmp_path):
    model, opt, sched = trained_setup()
    gen = np.random.default_rng(1234)
    gen.random(3)
    legacy = np.random.RandomState(5)
    extra = {
        "step": 2,
        "config": {"n_layer": 2, "lr": 3e-4, "name": "tiny", "dropout": None},
        "rng": gen.bit_generator.state,  # PCG64: 128-bit integers
        "mt19937": np.random.MT19937(3).state,  # a uint32 key array inside
        "legacy": legacy.get_state(),  # a tuple with an array
        "tokenizer": {"vocab": {"<pad>": 0, "a": 1}, "merges": [["a", "b"]], "specials": {0: "<pad>"}},
    }
    path = tmp_path / "train.safetensors"
    save_training_state(path, model, opt, sched, extra)

    with safetensors.safe_open(str(path), framework="np") as f:
        names = set(f.keys())
    assert {"model.0.weight", "model.2.bias", "optimizer.state.1.exp_avg"} <= names

    model2 = make_model()
    opt2 = FakeOptimizer(model2.parameters())
    sched2 = FakeScheduler()
    extra2 = load_training_state(path, model2, opt2, sched2)
    for k, v in model_arrays(model).items():
        np.testing.assert_array_equal(model2.state_dict()[k].numpy(), v)
    assert same(opt2.state_dict(), opt.state_dict())
    assert sched2.state_dict() == sched.state_dict()
    assert same(extra2, extra)
    assert isinstance(extra2["rng"]["state"]["state"], int) and extra2["rng"]["state"]["state"] > 2 ** 64
    # the restored RNG states continue the same streams
    gen2 = np.random.default_rng()
    gen2.bit_generator.state = extra2["rng"]
    np.testing.assert_array_equal(gen2.random(5), gen.random(5))
    legacy2 = np.random.RandomState()
    legacy2.set_state(extra2["legacy"])
    np.testing.assert_array_equal(legacy2.randint(0, 1000, 5), legacy.randint(0, 1000, 5))

    weights = load_model_weights(path)
    assert list(weights) == list(model.state_dict())
    fresh = make_model()
    fresh.load_state_dict(weights)
    np.testing.assert_array_equal(fresh[0].weight.numpy(), model[0].weight.numpy())


class TiedLM(nn.Module):
    def __init__(self, vocab=10, dim=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight  # tied: one Parameter under two names


def test_tied_weights_save_and_load(tmp_path):
    model = TiedLM()
    assert set(model.state_dict()) == {"emb.weight", "head.weight"}
    path = tmp_path / "tied.safetensors"
    save_training_state(path, model, extra={"step": 1})
    with safetensors.safe_open(str(path), framework="np") as f:
        assert len(list(f.keys())) == 1  # stored once, the other name an alias
    model2 = TiedLM()
    assert load_training_state(path, model2) == {"step": 1}
    np.testing.assert_array_equal(model2.emb.weight.numpy(), model.emb.weight.numpy())
    assert model2.head.weight is model2.emb.weight
    assert set(load_model_weights(path)) == {"emb.weight", "head.weight"}


def test_mismatched_model_is_rejected_and_nothing_changes(tmp_path):
    model, opt, sched = trained_setup()
    path = tmp_path / "train.safetensors"
    save_training_state(path, model, opt, sched, {"step": 2})

    other = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.Linear(3, 3))
    opt2, sched2 = FakeOptimizer(other.parameters()), FakeScheduler()
    opt2.step()
    before = model_arrays(other)
    opt_before, sched_before = opt2.state_dict(), sched2.state_dict()
    with pytest.raises(ValueError) as info:
        load_training_state(path, other, opt2, sched2)
    msg = str(info.value)
    assert "train.safetensors" in msg
    assert "0.weight: checkpoint (8, 4) vs model (6, 4)" in msg
    assert "2.weight: checkpoint (3, 8) vs model (3, 6)" in msg
    assert "missing keys: 3.weight, 3.bias" in msg
    for k, v in before.items():
        np.testing.assert_array_equal(other.state_dict()[k].numpy(), v)
    assert same(opt2.state_dict(), opt_before) and sched2.state_dict() == sched_before


def test_failed_load_is_rolled_back(tmp_path, monkeypatch):
    model, opt, sched = trained_setup()
    path = tmp_path / "train.safetensors"
    save_training_state(path, model, opt, sched)

    class BrokenOptimizer(FakeOptimizer):
        def load_state_dict(self, sd):
            self.state = {"half": "written"}
            raise RuntimeError("optimizer refused the state")

    model2 = make_model()
    before = model_arrays(model2)
    opt2, sched2 = BrokenOptimizer(model2.parameters()), FakeScheduler()
    with pytest.raises(ValueError, match="train.safetensors.*optimizer refused"):
        load_training_state(path, model2, opt2, sched2)
    assert sched2.last_epoch == 0  # the scheduler, loaded first, was restored
    for k, v in before.items():  # the model, loaded last, was never touched
        np.testing.assert_array_equal(model2.state_dict()[k].numpy(), v)

    # a failure in the last step (the model) restores optimizer and scheduler
    opt3, sched3 = FakeOptimizer(model2.parameters()), FakeScheduler()

    def refuse(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(model2, "load_state_dict", refuse)
    with pytest.raises(ValueError, match="device lost"):
        load_training_state(path, model2, opt3, sched3)
    assert opt3.state == {} and sched3.last_epoch == 0

    # asking for a part the checkpoint does not have changes nothing either
    save_training_state(path, model, extra={"step": 5})
    opt4 = FakeOptimizer(model2.parameters())
    with pytest.raises(ValueError, match="no optimizer state"):
        load_training_state(path, make_model(), opt4)
    # optimizer parameter groups of a different size
    save_training_state(path, model, opt)
    small = FakeOptimizer(list(model2.parameters())[:2])
    with pytest.raises(ValueError, match="parameter groups"):
        load_training_state(path, optimizer=small)
    assert small.state == {}


def _named_optimizer_state(model, opt):
    """The optimizer's param groups and per-parameter state keyed by parameter name."""
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [{**{k: v for k, v in g.items() if k != "params"},
               "params": [names[id(p)] for p in g["params"]]} for g in opt.param_groups]
    state = {names[id(p)]: {k: (np.array(v) if hasattr(v, "shape") else v) for k, v in s.items()}
             for p, s in opt.state.items() if s}
    return groups, dict(sorted(state.items()))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_resume_real_gpt_adamw_scheduler_is_exact(tmp_path, backend):
    """With the real model (dropout on), optimizer and schedule: train 3 steps, save
    (the backend RNG in ``extra``), train 3 more; fresh objects resumed from the file
    reproduce the same losses and end in the same parameters (by name), Adam moments
    and step counts (by parameter name), schedule and RNG state, bit for bit."""
    import minilm.functional as F
    from minilm import optim

    minilm.use_backend(backend)
    minilm.manual_seed(0)
    cfg = nn.GPTConfig(vocab_size=20, context_length=8, n_layers=1, n_heads=2, d_model=16,
                       dropout=0.2)

    def build():
        model = nn.GPT(cfg)
        opt = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1), lr=1e-2,
                          betas=(0.9, 0.95))
        return model, opt, optim.lr_scheduler.CosineWithWarmup(opt, warmup_steps=2, total_steps=20)

    ids = minilm.tensor(np.random.default_rng(0).integers(0, 20, (2, 8)))
    rng = minilm.get_backend(backend)

    def step(model, opt, sched):
        loss = F.cross_entropy(model(ids).reshape(-1, 20), ids.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        return loss.item()

    def state(model, opt, sched):
        groups, opt_state = _named_optimizer_state(model, opt)
        return {"params": {n: p.numpy().copy() for n, p in model.named_parameters()},
                "groups": groups, "opt_state": opt_state, "sched": sched.state_dict(),
                "rng": rng.get_rng_state()}

    model, opt, sched = build()
    for _ in range(3):
        step(model, opt, sched)
    path = tmp_path / "gpt.safetensors"
    save_training_state(path, model, opt, sched, {"step": 3, "rng": rng.get_rng_state()})
    expected = [step(model, opt, sched) for _ in range(3)]
    want = state(model, opt, sched)

    minilm.manual_seed(1)  # a different RNG stream until the checkpoint's is restored
    model2, opt2, sched2 = build()
    extra = load_training_state(path, model2, opt2, sched2)
    assert extra["step"] == 3
    rng.set_rng_state(extra["rng"])
    assert [step(model2, opt2, sched2) for _ in range(3)] == expected
    got = state(model2, opt2, sched2)
    assert list(got["params"]) == list(want["params"])  # same names, same count
    assert same(got["params"], want["params"])
    assert same(got["groups"], want["groups"])
    assert list(got["opt_state"]) == list(want["opt_state"]) == sorted(want["params"])
    assert all(s["step"] == 6 for s in want["opt_state"].values())
    assert same(got["opt_state"], want["opt_state"])
    assert same(got["sched"], want["sched"]) and got["sched"]["last_epoch"] == 6
    assert same(got["rng"], want["rng"])
