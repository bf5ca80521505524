"""The ``gpu`` suite: the CuPy backend on a real CUDA device, checked against the NumPy
reference. Every test here is marked ``gpu``; the whole directory is skipped, with the
reason, unless CuPy imports and sees a device (``import_cupy``). Run it on a machine
with a GPU with ``pytest -m gpu tests/gpu`` (tools/gpu_check.sh does, on a lent one).

``MINILM_GPU_REQUIRED=1`` (tools/gpu_check.sh sets it) turns that skip into an error:
on the machine lent for the check, a suite that skipped everything would pass unseen.

Test modules here import nothing from CuPy at module level: they get it from the
``cp`` fixture, so that collecting them on a machine without CuPy is harmless.

``MINILM_GPU_SUITE=fake`` runs the suite on the host-memory stand-in instead
(tests/fake_cupy.py, the ``fake_gpu`` fixture): the CuPy backend's fused kernels are off
there and the references run, so it proves nothing about the kernels, but it checks the
suite itself (and that nothing on the device path falls back to host arrays) on a
machine without a GPU. Tests that need a real device say so and skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FAKE = os.environ.get("MINILM_GPU_SUITE", "") == "fake"


def _why_no_gpu() -> str | None:
    """None when CuPy imports and sees a device, else why not (one line)."""
    try:
        from minilm.backends.cupy_backend import import_cupy

        import_cupy()
    except ImportError as exc:
        return str(exc)
    except Exception as exc:  # a broken driver or toolkit: still a reason, not a crash
        return f"CuPy does not work here ({type(exc).__name__}: {exc})"
    return None


WHY_NO_GPU = None if FAKE else _why_no_gpu()
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if WHY_NO_GPU and os.environ.get("MINILM_GPU_REQUIRED") == "1":
        raise pytest.UsageError(f"gpu suite: MINILM_GPU_REQUIRED=1 but {WHY_NO_GPU}")
    skip = pytest.mark.skip(reason=f"gpu suite: {WHY_NO_GPU}") if WHY_NO_GPU else None
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture
def cp():
    """The CuPy module (the device is there: the suite is skipped otherwise)."""
    if FAKE:
        import fake_cupy

        return fake_cupy
    import cupy

    return cupy


@pytest.fixture
def gpu(request):
    """The CuPy backend (not selected: arrays given to its kernels are device arrays)."""
    if FAKE:
        return request.getfixturevalue("fake_gpu")
    import minilm

    return minilm.get_backend("cupy")


@pytest.fixture
def real_gpu():
    """For a test that needs a real device (memory figures, device pointers)."""
    if FAKE:
        pytest.skip("needs a real CUDA device (MINILM_GPU_SUITE=fake)")


@pytest.fixture(scope="session")
def ref():
    """The NumPy reference backend."""
    import minilm

    return minilm.get_backend("numpy")
