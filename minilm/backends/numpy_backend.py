"""The NumPy backend: the reference every other backend is tested against.

It owns the array module (``xp = numpy``) and the seeded generator, and nothing else:
each kernel of the backend interface (minilm/backends/interface.py) is, here, the
reference registered under its name with ``@kernel`` in the file of its algorithm
(softmax in functional/nn.py, Adam's update in optim/adam.py, ...). Faster backends
(Numba) subclass this class and override kernels one by one; an override must return
what the reference returns, to floating-point tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy

from .interface import KERNELS, REFERENCES


class NumpyBackend:
    """Reference backend: ``xp`` is NumPy; its kernels are the registered references."""

    name = "numpy"
    default_seed = 0

    def __init__(self) -> None:
        self.xp = numpy
        self.seed(NumpyBackend.default_seed)

    # ------------------------------------------------------------------ random numbers
    def seed(self, seed: int) -> None:
        """Reset this backend's generator to ``seed``."""
        self.rng = self.xp.random.default_rng(seed)

    def get_rng_state(self) -> dict:
        """A JSON-serialisable snapshot of the generator (restored by set_rng_state)."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    # ------------------------------------------------------------------ arrays
    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, array) -> numpy.ndarray:
        return numpy.asarray(array)

    def __repr__(self) -> str:
        return f"<minilm backend {self.name!r}>"


def _reference_method(name: str) -> Callable[..., Any]:
    """The method ``backend.<name>(*args)``: the reference registered for ``name``."""

    def method(self, *args, **kwargs):
        try:
            reference = REFERENCES[name]
        except KeyError:  # its module not imported: minilm's __init__ imports them all
            raise NotImplementedError(
                f"kernel {name!r} has no registered reference; import minilm first") from None
        return reference(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The reference kernel {name!r} (see minilm/backends/interface.py)."
    return method


for _name in KERNELS:
    setattr(NumpyBackend, _name, _reference_method(_name))
del _name
