"""The NumPy backend: the reference every other backend is tested against.

It owns the array module (``xp = numpy``) and the seeded generator, and nothing else:
each kernel of the backend interface (minilm/backends/interface.py) is, here, the
reference registered under its name with ``@kernel`` in the file of its algorithm
(softmax in functional/nn.py, Adam's update in optim/adam.py, ...). Faster backends
(Numba) subclass this class and override kernels one by one; an override must return
what the reference returns, to floating-point tolerance.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy

from .interface import KERNELS, REFERENCES


class _ThreadRng(threading.local):
    generator: Any = None


_thread_rng = _ThreadRng()


class thread_rng:
    """``with thread_rng(seed):`` random ops of this thread (on any CPU backend) draw
    from a generator of its own, seeded with ``seed``, instead of the backend's shared
    one: threads that run dropout side by side (``minilm.train.batch_threads``) then
    draw repeatable numbers whatever the order the OS runs them in. (``manual_seed``
    inside reseeds the shared generator, not this one.)"""

    def __init__(self, seed: int) -> None:
        self.generator = numpy.random.default_rng(seed)

    def __enter__(self) -> Any:
        self.prev = _thread_rng.generator
        _thread_rng.generator = self.generator
        return self.generator

    def __exit__(self, *exc: object) -> None:
        _thread_rng.generator = self.prev


class NumpyBackend:
    """Reference backend: ``xp`` is NumPy; its kernels are the registered references."""

    name = "numpy"
    device = "cpu"  # where its arrays live ("cuda" for the CuPy backend)
    #: autocast dtype -> the array dtype this backend computes it in natively (linear
    #: runs real half GEMMs then); empty: the rounding is emulated (functional/autocast.py)
    native_low_precision: dict = {}
    default_seed = 0
    #: scaled_dot_product_attention(is_causal=True) without mask or dropout runs the
    #: ``causal_attention`` kernels (no T x T array kept) for sequences at least this
    #: long; None: never (the reference would build the T x T scores anyway)
    flash_min_len: int | None = None

    def __init__(self) -> None:
        self.xp = numpy
        self.seed(NumpyBackend.default_seed)

    # ------------------------------------------------------------------ random numbers
    @property
    def rng(self) -> Any:
        """The generator every random op draws from: the backend's own, or, in a
        thread inside ``minilm.backends.threads.thread_rng(seed)``, that thread's."""
        own = _thread_rng.generator
        return self._rng if own is None else own

    @rng.setter
    def rng(self, generator: Any) -> None:
        self._rng = generator

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
