"""Exponential moving average (EMA) of model weights, for evaluation.

    ema = EMA(model, decay=0.999)
    for batch in data:
        ...; optimizer.step(); ema.update()
    with ema.apply_to():          # evaluate with the averaged weights
        evaluate(model)
    # leaving the block restores the training weights

The average of the last ~1/(1-decay) iterates sits nearer the bottom of the valley than
any single noisy SGD iterate, so it often evaluates (and generalises) better.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import no_grad
from ..backends import is_device_array, to_host
from ..tensor import Tensor

__all__ = ["EMA"]


class EMA:
    """Shadow copies of parameters, updated as a moving average by :meth:`update`::

        d      = decay                                   (or, with warmup:
        d      = min(decay, (1 + n) / (10 + n))           n = updates done so far)
        shadow = d * shadow + (1 - d) * param

    The shadows start as copies of the parameters. ``warmup`` lowers the decay early on
    so the average is not dominated by the random initial weights. ``model_or_params``
    is a Module (shadows keyed by parameter name) or an iterable of Parameters (keyed
    "0", "1", ...). float16 parameters get float32 shadows."""

    def __init__(self, model_or_params: Any, decay: float = 0.999, warmup: bool = False) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA: decay must be in [0, 1], got {decay}")
        if hasattr(model_or_params, "named_parameters"):
            named = list(model_or_params.named_parameters())
            self._by_name = True
        else:
            if isinstance(model_or_params, Tensor):
                model_or_params = [model_or_params]
            named = [(str(i), p) for i, p in enumerate(model_or_params)]
            self._by_name = False
        for key, p in named:
            if not isinstance(p, Tensor) or p.dtype.kind != "f":
                raise TypeError(f"EMA: {key} is not a floating-point Parameter")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self._params: dict = dict(named)
        self.shadow: dict = {k: _copy(p.data, _shadow_dtype(p.data)) for k, p in named}
        self._backup: dict | None = None
        self._applied_to: dict | None = None

    def current_decay(self) -> float:
        """The d the next :meth:`update` will use."""
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    def update(self) -> None:
        """shadow = d * shadow + (1 - d) * param for every tracked parameter."""
        d = self.current_decay()
        with no_grad():
            for k, p in self._params.items():
                s = self.shadow[k]
                x = p.data if p.data.dtype == s.dtype else p.data.astype(s.dtype)
                s *= d
                s += (1.0 - d) * x
        self.num_updates += 1

    def _targets(self, model: Any) -> dict:
        if model is None:
            return self._params
        if self._by_name:
            targets = dict(model.named_parameters())
        else:
            targets = {str(i): p for i, p in enumerate(model.parameters())}
        if set(targets) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(targets))
            extra = sorted(set(targets) - set(self.shadow))
            raise ValueError(f"EMA: the model's parameters do not match the averaged ones "
                             f"(missing {missing}, unexpected {extra})")
        for k, p in targets.items():
            if p.shape != tuple(self.shadow[k].shape):
                raise ValueError(f"EMA: parameter {k} has shape {p.shape}, its average "
                                 f"{tuple(self.shadow[k].shape)}")
        return targets

    def copy_to(self, model: Any = None) -> None:
        """Overwrite the parameters (of ``model``, default the tracked ones) with the
        averages, for good (e.g. before saving the final model)."""
        with no_grad():
            for k, p in self._targets(model).items():
                p.data[...] = self.shadow[k]
                p._version.value += 1

    def apply_to(self, model: Any = None) -> _Applied:
        """Swap the averages into the parameters, keeping a copy of the current values
        for :meth:`restore`. Returns a context manager that restores on exit::

            with ema.apply_to():
                evaluate(model)
        """
        if self._backup is not None:
            raise RuntimeError("EMA.apply_to: the averages are already applied; restore() first")
        targets = self._targets(model)
        self._backup = {k: _copy(p.data, p.dtype) for k, p in targets.items()}
        self._applied_to = targets
        self.copy_to(model)
        return _Applied(self)

    def restore(self) -> None:
        """Put back the parameter values saved by :meth:`apply_to`."""
        if self._backup is None:
            raise RuntimeError("EMA.restore: nothing to restore; call apply_to() first")
        with no_grad():
            for k, p in self._applied_to.items():
                p.data[...] = self._backup[k]
                p._version.value += 1
        self._backup = None
        self._applied_to = None

    def state_dict(self) -> dict:
        """``{"decay", "warmup", "num_updates", "shadow": {key: array}}`` (arrays are
        the live shadows)."""
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": dict(self.shadow)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore from :meth:`state_dict`; keys and shapes are checked first, so an error
        changes nothing."""
        shadow = state_dict.get("shadow")
        if not isinstance(shadow, dict) or set(shadow) != set(self.shadow):
            got = sorted(shadow) if isinstance(shadow, dict) else shadow
            raise ValueError(f"EMA.load_state_dict: shadow keys {got} do not match "
                             f"{sorted(self.shadow)}")
        new = {}
        for k, v in shadow.items():
            arr = v.data if isinstance(v, Tensor) else v
            if tuple(arr.shape) != tuple(self.shadow[k].shape):
                raise ValueError(f"EMA.load_state_dict: shadow {k} has shape {tuple(arr.shape)}, "
                                 f"expected {tuple(self.shadow[k].shape)}")
            xp = self._params[k].backend.xp
            if xp is np and is_device_array(arr):
                arr = to_host(arr)
            new[k] = xp.array(arr, dtype=self.shadow[k].dtype, copy=True)
        self.shadow = new
        self.decay = float(state_dict.get("decay", self.decay))
        self.warmup = bool(state_dict.get("warmup", self.warmup))
        self.num_updates = int(state_dict.get("num_updates", self.num_updates))


class _Applied:
    """Returned by ``EMA.apply_to``: ``with`` it to restore the weights on exit."""

    def __init__(self, ema: EMA) -> None:
        self.ema = ema

    def __enter__(self) -> EMA:
        return self.ema

    def __exit__(self, *exc: object) -> None:
        self.ema.restore()


def _shadow_dtype(a: Any) -> Any:
    return np.float32 if a.dtype == np.float16 else a.dtype


def _copy(a: Any, dtype: Any) -> Any:
    return a.astype(dtype, copy=True)
