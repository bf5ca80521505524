"""minilm.cuda without a GPU: the no-device answers and errors, and the memory
functions and peak tracking driven by a fake CuPy (a pool, a device runtime and the
MemoryHook base class, with allocations run by hand)."""

import contextlib
import types

import pytest

import minilm
import minilm.cuda as mc

FUNCS = ["current_device", "synchronize", "memory_allocated", "max_memory_allocated",
         "reset_peak_memory_stats", "memory_reserved", "empty_cache"]


def _no_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.skipif(not _no_cupy(), reason="CuPy is installed here")
def test_without_cupy_nothing_is_available_and_the_rest_says_why():
    assert minilm.cuda is mc
    assert mc.is_available() is False and mc.device_count() == 0
    assert mc.describe() == "no CUDA device (CuPy is not installed); pip install 'minilm[cuda]'"
    for name in FUNCS:
        with pytest.raises(RuntimeError, match=rf"^minilm\.cuda\.{name}: no CUDA device \(CuPy "
                                               r"is not installed\); pip install 'minilm\[cuda\]'$"):
            getattr(mc, name)()
    with pytest.raises(RuntimeError, match=r"minilm\.cuda\.set_device: no CUDA device"):
        mc.set_device(0)


class FakeGPU:
    """A CuPy-shaped driver: ``alloc(n)`` / ``free(n)`` move the pool's counters and call
    the registered hooks as CuPy's pool does (mem_size: the block's bytes)."""

    def __init__(self, devices=2):
        self.devices, self.current, self.hooks, self.synced = devices, 0, [], 0
        self.used = {d: 0 for d in range(devices)}
        self.cached = {d: 0 for d in range(devices)}
        gpu = self

        class MemoryHook:
            name = "base"

            def __enter__(self):
                gpu.hooks.append(self)
                return self

        class Pool:
            def used_bytes(self):
                return gpu.used[gpu.current]

            def total_bytes(self):
                return gpu.used[gpu.current] + gpu.cached[gpu.current]

            def free_all_blocks(self):
                gpu.cached[gpu.current] = 0

        @contextlib.contextmanager
        def device(d):
            before, gpu.current = gpu.current, d
            try:
                yield
            finally:
                gpu.current = before

        def set_device(d):
            gpu.current = d

        def sync():
            gpu.synced += 1

        runtime = types.SimpleNamespace(getDeviceCount=lambda: gpu.devices,
                                        getDevice=lambda: gpu.current, setDevice=set_device,
                                        deviceSynchronize=sync)
        pool = Pool()
        self.module = types.SimpleNamespace(
            cuda=types.SimpleNamespace(MemoryHook=MemoryHook, runtime=runtime, Device=device),
            get_default_memory_pool=lambda: pool)

    def alloc(self, n, hooked=True):
        d = self.current
        reuse = min(self.cached[d], n)
        self.cached[d] -= reuse
        self.used[d] += n
        for h in self.hooks if hooked else ():
            h.malloc_postprocess(device_id=d, size=n, mem_size=n, mem_ptr=1, pmem_id=1)

    def free(self, n, hooked=True):
        d = self.current
        self.used[d] -= n
        self.cached[d] += n
        for h in self.hooks if hooked else ():
            h.free_postprocess(device_id=d, mem_size=n, mem_ptr=1, pmem_id=1)


@pytest.fixture
def gpu(monkeypatch):
    fake = FakeGPU()
    monkeypatch.setattr(mc, "_load", lambda: fake.module)
    monkeypatch.setattr(mc, "_tracking", {})
    return fake


def test_devices(gpu):
    assert mc.is_available() and mc.device_count() == 2 and mc.current_device() == 0
    assert mc.describe() == "2 CUDA devices (CuPy ?)"
    mc.set_device(1)
    assert mc.current_device() == 1
    for bad in (2, -1, "1", True):
        with pytest.raises(ValueError, match=r"set_device: device must be an int in \[0, 2\)"):
            mc.set_device(bad)
    mc.synchronize()
    assert gpu.synced == 1


def test_peak_follows_mallocs_between_readings(gpu):
    gpu.alloc(100)  # before tracking: seen by the first reading
    assert mc.memory_allocated() == 100 and mc.max_memory_allocated() == 100
    assert len(gpu.hooks) == 1  # installed once
    gpu.alloc(400)
    gpu.alloc(250)  # 750 in use: the peak, never read while it lasted
    gpu.free(650)
    gpu.alloc(50)
    assert mc.memory_allocated() == 150
    assert mc.max_memory_allocated() == 750
    assert mc.memory_reserved() == 150 + 600  # the freed blocks stay cached
    mc.empty_cache()
    assert mc.memory_reserved() == 150 and mc.memory_allocated() == 150
    mc.reset_peak_memory_stats()
    assert mc.max_memory_allocated() == 150
    gpu.alloc(30)
    gpu.free(30)
    assert mc.max_memory_allocated() == 180
    assert len(gpu.hooks) == 1


def test_unhooked_allocations_are_caught_by_the_next_reading(gpu):
    """Another thread's allocations do not run this thread's hook: a reading re-syncs
    with the pool, so they count from then on."""
    assert mc.max_memory_allocated() == 0
    gpu.alloc(500, hooked=False)
    gpu.alloc(100)  # the hook saw only this one: 100 in use by its count
    assert mc.max_memory_allocated() == 600
    gpu.free(500, hooked=False)
    assert mc.memory_allocated() == 100  # a reading re-syncs the count
    gpu.alloc(200)
    gpu.free(300)
    assert mc.memory_allocated() == 0 and mc.max_memory_allocated() == 600


def test_peaks_are_per_device(gpu):
    gpu.alloc(10)
    mc.reset_peak_memory_stats()
    mc.set_device(1)
    gpu.alloc(70)
    gpu.free(70)
    assert mc.max_memory_allocated() == 70 and mc.max_memory_allocated(0) == 10
    assert mc.memory_allocated(0) == 10 and mc.memory_allocated() == 0


def test_peak_tracker_alone():
    used = {0: 5}
    t = mc.PeakTracker(lambda d: used[d])
    t.malloc(0, 99)  # first event of a device: the pool's count (5) already has it
    assert t.used[0] == 5 and t.peak[0] == 5
    t.malloc(0, 10)
    t.free(0, 10)
    t.malloc(0, 3)
    assert t.used[0] == 8 and t.peak[0] == 15
    used[0] = 8
    t.reset(0)
    assert t.peak[0] == 8 and t.sync(0) == 8


def test_hook_only_for_peaks_and_failed_mallocs_do_not_count(gpu):
    """Reading the memory in use or the pool's size installs no hook (no Python call
    per allocation); asking for a peak does. A failed allocation (CuPy reports it with
    mem_ptr 0) is not part of the peak."""
    gpu.alloc(64)
    assert mc.memory_allocated() == 64 and mc.memory_reserved() == 64
    mc.empty_cache()
    assert gpu.hooks == []
    mc.reset_peak_memory_stats()
    assert len(gpu.hooks) == 1
    gpu.hooks[0].malloc_postprocess(device_id=0, size=10**9, mem_size=10**9, mem_ptr=0,
                                    pmem_id=0)  # out of memory, caught by the caller
    gpu.alloc(16)
    assert mc.max_memory_allocated() == 80
