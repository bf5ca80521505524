"""device_batches: a passthrough on CPU backends, in order on the CuPy stand-in, and
one batch ahead through pinned memory and a side stream on CuPy, checked here against
a fake CuPy driver that records the stream operations (no GPU needed)."""

import types

import numpy as np
import pytest

import minilm as ml
from minilm.data import DataLoader, RandomWindowBatches
from minilm.data.prefetch import device_batches


class FakeCuda:
    """What _PinnedUploader uses of CuPy: streams, events, pinned memory, empty + set.
    Every operation is logged in order as a tuple."""

    def __init__(self):
        self.log = []
        gpu = self

        class Event:
            def __init__(self, name):
                self.name = name

            def synchronize(self):
                gpu.log.append(("sync", self.name))

        class Stream:
            count = 0

            def __init__(self, non_blocking=False, name=None):
                self.name = name or f"side{Stream.count}"
                Stream.count += 1
                self.non_blocking = non_blocking
                self.events = 0

            def record(self):
                self.events += 1
                e = Event(f"{self.name}.e{self.events}")
                gpu.log.append(("record", e.name))
                return e

            def wait_event(self, e):
                gpu.log.append(("wait", self.name, e.name))

        class DevArray(np.ndarray):
            def set(self, host, stream=None):
                assert isinstance(host.base, (bytearray, memoryview)) or host.base is not None
                gpu.log.append(("copy", stream.name, host.nbytes))
                self[...] = host

        self.compute = Stream(name="compute")
        self.pinned = []

        def alloc_pinned_memory(n):
            buf = bytearray(n)
            self.pinned.append(buf)
            return buf

        self.module = types.SimpleNamespace(
            __name__="cupy",
            cuda=types.SimpleNamespace(Stream=Stream, get_current_stream=lambda: self.compute,
                                       alloc_pinned_memory=alloc_pinned_memory),
            empty=lambda shape, dtype: np.empty(shape, dtype).view(DevArray),
            DevArray=DevArray)


def test_cpu_backend_is_a_passthrough():
    batches = [(np.arange(3), ml.tensor([1, 2]))]
    out = list(device_batches(iter(batches), ml.get_backend("numpy")))
    assert out[0][0] is batches[0][0] and out[0][1] is batches[0][1]


def test_real_cupy_path_uploads_one_ahead_through_pinned_buffers():
    gpu = FakeCuda()
    backend = types.SimpleNamespace(xp=gpu.module)
    loader = DataLoader(RandomWindowBatches(np.arange(200, dtype=np.int64), 2, 5, rng=3),
                        prefetch=0, as_tensor=False)
    want = [next(iter(DataLoader(RandomWindowBatches(np.arange(200, dtype=np.int64), 2, 5,
                                                     rng=3), prefetch=0, as_tensor=False)))]
    it = device_batches(loader, backend)
    start = it.state_dict()
    x0, y0 = next(it)
    assert type(x0) is gpu.module.DevArray and type(y0) is gpu.module.DevArray
    np.testing.assert_array_equal(x0, want[0][0])
    np.testing.assert_array_equal(y0, want[0][1])
    # batch 1 is already uploading: the loader is one ahead, the iterator's state is not
    assert loader.batches_consumed == 2 and it.state_dict()["batches_consumed"] == 1
    assert it.state_dict() not in (start, loader.state_dict())
    consumer = it.state_dict()
    log = gpu.log
    # per upload: wait for the compute stream, two copies on the side stream, an event;
    # before batch 0 is handed out the compute stream waits for its event
    copies = [e for e in log if e[0] == "copy"]
    assert len(copies) == 4 and all(c[1] != "compute" for c in copies)
    side_event_0 = [e for e in log if e[0] == "record" and not e[1].startswith("compute")][0]
    assert ("wait", "compute", side_event_0[1]) in log
    first_wait = log.index(("wait", "compute", side_event_0[1]))
    assert log.index(copies[0]) < first_wait
    for _ in range(3):
        next(it)
    # two pinned slots, reused: a slot's previous copy is waited for before reuse
    assert len(gpu.pinned) == 4 and any(e[0] == "sync" for e in log)
    # close(): the batch read ahead goes back to the loader
    ahead = np.asarray(it._pending[0][0]).copy()  # batch 4, uploaded, not handed out
    it.close()
    assert loader.state_dict() == it.state_dict() != consumer
    assert loader.batches_consumed == 4
    np.testing.assert_array_equal(next(loader)[0], ahead)  # drawn again


def test_state_dict_is_the_consumer_position():
    """Resuming from the iterator's state_dict replays exactly the batches not yet
    handed out, though one more was read ahead."""
    gpu = FakeCuda()
    backend = types.SimpleNamespace(xp=gpu.module)

    def loader():
        return DataLoader(RandomWindowBatches(np.arange(300, dtype=np.int64), 2, 4, rng=1),
                          prefetch=0, as_tensor=False)

    a = loader()
    it = device_batches(a, backend)
    seen = [np.asarray(next(it)[0]).copy() for _ in range(3)]
    state = it.state_dict()
    assert state["batches_consumed"] == 3 and a.batches_consumed == 4
    b = loader()
    b.load_state_dict(state)
    np.testing.assert_array_equal(np.asarray(next(it)[0]), next(b)[0])
    assert len(seen) == 3


@pytest.mark.usefixtures("fake_gpu")
def test_stand_in_backend_converts_in_order_without_look_ahead():
    from fake_cupy import DeviceArray

    loader = DataLoader(RandomWindowBatches(np.arange(100, dtype=np.int64), 2, 4, rng=0),
                        prefetch=0)
    it = device_batches(loader, ml.get_backend("cupy"))
    x, y = next(it)
    assert type(x.data) is DeviceArray and loader.batches_consumed == 1
    assert it.state_dict() == loader.state_dict()


def test_pinned_buffers_are_per_position_and_grow_only_when_needed():
    """A short last batch and a 0-d entry reuse the buffers (no page-locked memory per
    size); a bigger batch grows them; 0-d stays 0-d on the device."""
    gpu = FakeCuda()
    backend = types.SimpleNamespace(xp=gpu.module)
    batches = [(np.ones((4, 8)), np.array(3)), (np.ones((4, 8)), np.array(5)),
               (np.ones((2, 8)), np.array(1)), (np.ones((8, 8)), np.array(2))]
    out = list(device_batches(iter(batches), backend))
    assert [o[0].shape for o in out] == [(4, 8), (4, 8), (2, 8), (8, 8)]
    assert out[1][1].shape == () and int(out[1][1]) == 5
    # two slots x two positions for the first sizes, then one grown buffer for (8, 8)
    assert len(gpu.pinned) == 5 and len(gpu.pinned[-1]) == 8 * 8 * 8


def test_close_makes_the_compute_stream_wait_for_the_copy_in_flight():
    """The batch read ahead was allocated on the compute stream: dropping it must order
    the compute stream after its copy, or the freed memory could be reused under it."""
    gpu = FakeCuda()
    backend = types.SimpleNamespace(xp=gpu.module)
    it = device_batches(iter([np.ones(3), np.ones(3), np.ones(3)]), backend)
    next(it)
    pending_event = it._pending[1].name
    gpu.log.clear()
    it.close()
    assert gpu.log == [("wait", "compute", pending_event)] and it._pending is None
