"""The ``fake_gpu`` fixture: the CuPy backend built on the host-memory stand-in
``fake_cupy``, registered as backend ``"cupy"`` for one test (conftest.py imports it).

While it is in force ``Tensor.to("cuda")``, ``Module.to("cuda")``, ``use_backend("cupy")``
and ``--backend cupy`` use ``CupyBackend(xp=fake_cupy)``; afterwards the real factory,
the backend cache, the device-array registry and the selected backend are as before.
"""

from __future__ import annotations

import fake_cupy
import pytest

from minilm import backends
from minilm.backends.cupy_backend import CupyBackend


@pytest.fixture
def fake_gpu():
    """``CupyBackend(xp=fake_cupy)`` as backend ``"cupy"`` (not selected: tests move
    tensors with ``.to("cuda")`` or select it with ``use_backend("cupy")``)."""
    saved = (backends._FACTORIES["cupy"], backends._INSTANCES.pop("cupy", None),
             dict(backends._DEVICE_TYPES), backends._current, backends._cpu, backends._why)
    backend = CupyBackend(xp=fake_cupy)
    backends.register_backend("cupy", lambda: backend)
    backends._INSTANCES["cupy"] = backend
    try:
        with fake_cupy.strict_host_conversion():  # numpy.asarray(device array) raises
            yield backend
    finally:
        factory, instance, types, current, cpu, why = saved
        backends.register_backend("cupy", factory)
        backends._INSTANCES.pop("cupy", None)
        if instance is not None:
            backends._INSTANCES["cupy"] = instance
        backends._DEVICE_TYPES.clear()
        backends._DEVICE_TYPES.update(types)
        backends._current, backends._cpu, backends._why = current, cpu, why
