"""Automatic mixed precision: ``autocast`` and ``GradScaler``.

    scaler = GradScaler()                       # dynamic loss scaling (float16)
    with autocast("float16"):                   # or "bfloat16" (no scaler needed)
        loss = model(x, y)[1]                   # matmuls in low precision, the rest fp32
    scaler.scale(loss).backward()               # d(S * loss)
    scaler.unscale_(optimizer)                  # grads / S; inf or NaN found?
    clip_grad_norm_(params, 1.0)                # on the true gradients
    scaler.step(optimizer)                      # skipped if any gradient was inf/NaN
    scaler.update()                             # S / 2 after a skip, S * 2 after N clean steps

The parameters stay float32 (the "master weights"); only the matrix products see
rounded copies (minilm/functional/autocast.py has the casting rules and the rounding).
The loss-scaling state machine, with S the scale, N = ``growth_interval``::

    step with an inf/NaN gradient:  skip the update;  S <- S * backoff_factor (1/2);  clean = 0
    clean step:                     update;           clean += 1
                                    if clean == N:    S <- S * growth_factor (2);  clean = 0

float16's range ends at 65504 and its smallest subnormal is 2^-24 ~ 6e-8: without a
scale, small gradients become 0; with too large a scale, large ones become inf, the step
is skipped and S halves until they fit. bfloat16 has float32's range, so it needs no
scaling (``GradScaler(enabled=False)`` makes every method a pass-through).
"""

from __future__ import annotations

import math
from typing import Any

from ..functional import autocast as _ac

__all__ = ["GradScaler", "autocast", "is_autocast_enabled"]


class autocast:
    """``with autocast("float16" | "bfloat16"):`` matrix products of this thread run in
    that precision (inputs and result rounded, float32 accumulation); ``enabled=False``
    turns autocast off inside an autocast region. Nests; restores on exit."""

    def __init__(self, dtype: str = "bfloat16", enabled: bool = True) -> None:
        dtype = {"fp16": "float16", "bf16": "bfloat16", "half": "float16"}.get(dtype, dtype)
        if dtype not in _ac.LOW_DTYPES:
            raise ValueError(f"autocast: dtype must be 'float16' or 'bfloat16' (or fp16 / "
                             f"bf16), got {dtype!r}")
        self.dtype = dtype if enabled else None

    def __enter__(self) -> autocast:
        self.prev = _ac._state.dtype
        _ac._state.dtype = self.dtype
        return self

    def __exit__(self, *exc: object) -> None:
        _ac._state.dtype = self.prev

    def __call__(self, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with autocast(self.dtype or "float16", enabled=self.dtype is not None):
                return fn(*args, **kwargs)

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        return wrapper


def is_autocast_enabled() -> bool:
    return _ac.autocast_dtype() is not None


class GradScaler:
    """Dynamic loss scaling for float16 training (see the module docstring).

    ``init_scale`` 2^16, ``growth_factor`` 2, ``backoff_factor`` 1/2,
    ``growth_interval`` 2000 steps, as in PyTorch. Its state (scale, clean-step count)
    goes into checkpoints through ``state_dict`` / ``load_state_dict``."""

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000,
                 enabled: bool = True) -> None:
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"GradScaler: init_scale must be a finite number > 0, got "
                             f"{init_scale}")
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got "
                             f"{backoff_factor}")
        if int(growth_interval) < 1:
            raise ValueError(f"GradScaler: growth_interval must be >= 1, got {growth_interval}")
        self.enabled = bool(enabled)
        self.scale_value = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.clean_steps = 0  # steps since the last change of scale
        self.skipped = 0  # steps skipped in all (for logs)
        self._found_inf: bool | None = None  # of the current step, once unscaled
        self._unscaled: set = set()

    def get_scale(self) -> float:
        return self.scale_value if self.enabled else 1.0

    def scale(self, loss: Any) -> Any:
        """``loss * S`` (the loss itself when disabled)."""
        return loss * self.scale_value if self.enabled else loss

    def unscale_(self, optimizer: Any) -> bool:
        """Divide the gradients of ``optimizer``'s parameters by S, in place, once per
        step; returns whether any of them is inf or NaN (then the step is skipped)."""
        if not self.enabled:
            return False
        if id(optimizer) in self._unscaled:
            raise RuntimeError("GradScaler.unscale_: already called for this optimizer "
                               "since the last update()")
        inv = 1.0 / self.scale_value
        finite: dict = {}  # xp -> per-gradient "all finite" flags (0-d, where they live)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                g *= g.dtype.type(inv)
                xp = p.grad.backend.xp
                finite.setdefault(id(xp), (xp, []))[1].append(xp.isfinite(g).all())
        # one read of the flags per array module (on a GPU, one wait, not one per gradient)
        found = any(not bool(xp.stack(flags).all()) for xp, flags in finite.values())
        self._unscaled.add(id(optimizer))
        self._found_inf = bool(found) or bool(self._found_inf)
        return self._found_inf

    def step(self, optimizer: Any) -> bool:
        """``optimizer.step()`` unless a gradient was inf/NaN (unscaling first if the
        caller did not). Returns whether the step was taken."""
        if not self.enabled:
            optimizer.step()
            return True
        if id(optimizer) not in self._unscaled:
            self.unscale_(optimizer)
        if self._found_inf:
            return False
        optimizer.step()
        return True

    def update(self) -> None:
        """Move the scale after a step: halve it after a skipped one, double it after
        ``growth_interval`` clean ones in a row."""
        if not self.enabled:
            return
        if self._found_inf is None:
            raise RuntimeError("GradScaler.update: call unscale_ or step first")
        if self._found_inf:
            self.scale_value *= self.backoff_factor
            self.clean_steps = 0
            self.skipped += 1
        else:
            self.clean_steps += 1
            if self.clean_steps == self.growth_interval:
                self.scale_value *= self.growth_factor
                self.clean_steps = 0
        self._found_inf = None
        self._unscaled = set()

    def state_dict(self) -> dict:
        return {"scale": self.scale_value, "clean_steps": self.clean_steps,
                "skipped": self.skipped, "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "enabled": self.enabled}

    def load_state_dict(self, state: dict) -> None:
        missing = {"scale", "clean_steps"} - set(state)
        if missing:
            raise ValueError(f"GradScaler.load_state_dict: missing keys {sorted(missing)}")
        self.scale_value = float(state["scale"])
        self.clean_steps = int(state["clean_steps"])
        self.skipped = int(state.get("skipped", 0))
        for k in ("growth_factor", "backoff_factor"):
            if k in state:
                setattr(self, k, float(state[k]))
        if "growth_interval" in state:
            self.growth_interval = int(state["growth_interval"])
        if "enabled" in state:
            self.enabled = bool(state["enabled"])
