"""The op profiler of ``bench/gpt_train.py --profile``: exclusive wall time of every
``Function.forward/backward`` and backend kernel, grouped into categories. Host-side
times: on a GPU backend they would be kernel launch times, so gpt_train.py refuses
``--profile`` with ``--backend cupy``."""

from __future__ import annotations

import time
from collections import defaultdict

# op category of each timed name (Function class or backend kernel), first match wins
CATEGORIES = [
    ("linear layers (BLAS GEMMs)", ("Linear.", "Matmul.", "Einsum.")),
    ("attention kernels (batched GEMMs)", ("attention",)),
    ("softmax / norm / loss", ("softmax", "Softmax", "norm", "Norm", "cross_entropy",
                               "CrossEntropy", "ScaledDotProductAttention")),
    ("elementwise (GELU, adds, dropout)", ("gelu", "Gelu", "erf", "dropout", "Dropout", "Add.",
                                           "Sub.", "Mul.", "Div.", "Neg.", "Exp.", "Tanh.")),
    ("copies (embedding, split, reshape)", ("mbedding", "Split", "Reshape", "Permute", "Cat.",
                                            "Stack", "Getitem", "Unbind", "Expand")),
]
NOT_KERNELS = {"seed", "get_rng_state", "set_rng_state", "asarray", "to_numpy"}


def category_of(name: str) -> str:
    for cat, keys in CATEGORIES:
        if any(k in name for k in keys):
            return cat
    return "other ops"


class OpProfiler:
    """Exclusive wall time of every Function.forward/backward and backend kernel: each
    timed call subtracts the time of the timed calls nested in it (a kernel called by a
    Function is charged to the kernel, not twice)."""

    def __init__(self) -> None:
        self.excl: dict = defaultdict(float)
        self.calls: dict = defaultdict(int)
        self.stack: list = []
        self.active = False
        self.undo: list = []

    def wrap(self, name: str, fn):
        prof = self

        def timed(*args, **kwargs):
            if not prof.active:
                return fn(*args, **kwargs)
            prof.stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                prof.excl[name] += dt - prof.stack.pop()
                prof.calls[name] += 1
                if prof.stack:
                    prof.stack[-1] += dt

        return timed

    def install(self, backend) -> None:
        from minilm.autograd import Function

        todo, seen = [Function], set()
        while todo:
            cls = todo.pop()
            for sub in cls.__subclasses__():
                if sub not in seen:
                    seen.add(sub)
                    todo.append(sub)
        for cls in seen:
            for kind in ("forward", "backward"):
                raw = cls.__dict__.get(kind)
                if raw is None:
                    continue
                wrapper = type(raw) if isinstance(raw, (staticmethod, classmethod)) else staticmethod
                fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
                setattr(cls, kind, wrapper(self.wrap(f"{cls.__name__}.{kind}", fn)))
                self.undo.append((cls, kind, raw))
        for name in dir(type(backend)):
            attr = getattr(backend, name)
            if name.startswith("_") or name in NOT_KERNELS or not callable(attr):
                continue
            setattr(backend, name, self.wrap(name, attr))  # instance attribute shadows
            self.undo.append((backend, name, None))

    def uninstall(self) -> None:
        for obj, name, raw in reversed(self.undo):
            if raw is None:
                delattr(obj, name)
            else:
                setattr(obj, name, raw)

