"""Shared pytest setup: Hypothesis profiles, a deterministic seed per test, and the
``backend`` fixture that runs an op test on every backend.

Hypothesis profiles (``HYPOTHESIS_PROFILE=<name>``, or ``--hypothesis-profile=<name>``):

- ``ci`` (default, what ``make test`` runs): 40 examples per property test (tests with
  expensive examples take a fraction of it through ``strategies.examples``), derandomized:
  every run draws the same examples, so a red CI is a change in the code, never the luck
  of the draw (exploring is the job of ``dev`` and ``campaign``);
- ``dev``: 150 examples, for a change to an op or a kernel;
- ``campaign``: 2000 examples and every health check off, for long property-test runs
  (see README.md, "Property-test campaigns").

Backends: every test starts on the NumPy reference backend with seed 0. A test that
takes the ``backend`` fixture (the op tests do, module-wide) runs once per backend:
``numpy``, ``numba`` (a hard test dependency: if it does not load, the test fails, it
is not skipped), and ``cupy`` (marked ``gpu``) where the CuPy backend loads and a GPU
is present; on a machine without one it is simply not among the parameters.

``fake_gpu`` (device_fixture.py) registers the CuPy backend on ``fake_cupy``, a
host-memory CuPy stand-in, for tests of the device path on a machine without a GPU.
With ``MINILM_FAKE_CUPY=1`` the ``backend`` fixture also runs each op test on it
(``fake_cupy``), the way it would run on a GPU.
"""

import os

import pytest
from device_fixture import fake_gpu  # noqa: F401  (the CuPy stand-in fixture)
from hypothesis import HealthCheck, settings

import minilm

# The ``backend`` fixture is function-scoped; it selects a backend once per test, the
# same for every example, which is what Hypothesis's health check warns about.
_SHARED = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=_SHARED,
                          print_blob=True, derandomize=True)
settings.register_profile("dev", max_examples=150, deadline=None, suppress_health_check=_SHARED,
                          print_blob=True)
settings.register_profile("campaign", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cupy_backend_loads() -> bool:
    try:
        import cupy

        minilm.get_backend("cupy")
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no CuPy backend, no driver, no device
        return False


BACKENDS = ["numpy", "numba"] + (
    [pytest.param("cupy", marks=pytest.mark.gpu)] if _cupy_backend_loads() else [])
if os.environ.get("MINILM_FAKE_CUPY") == "1":  # the op tests on the CuPy stand-in too
    BACKENDS.append("fake_cupy")


@pytest.fixture(autouse=True)
def _seed_and_reference_backend():
    """Every test starts on the NumPy reference backend with seed 0."""
    minilm.use_backend("numpy")
    minilm.manual_seed(0)
    yield
    minilm.use_backend("numpy")


@pytest.fixture(params=BACKENDS)
def backend(request, _seed_and_reference_backend):
    """The op under test runs on this backend (``minilm.use_backend``): NumPy arrays
    belong to it (numpy / numba); for cupy, new tensors are created on the GPU."""
    if request.param == "fake_cupy":
        request.getfixturevalue("fake_gpu")
        return minilm.use_backend("cupy")
    try:
        return minilm.use_backend(request.param)
    except ImportError as exc:
        pytest.fail(f"backend {request.param!r} does not load: {exc}. `make test` installs "
                    "numba (the 'test' extra); a broken install must not pass as a skip.",
                    pytrace=False)
