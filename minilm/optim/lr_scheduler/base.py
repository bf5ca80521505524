"""The scheduler base class and the argument checks every schedule shares."""

from __future__ import annotations

from typing import Any

from ..optimizer import Optimizer


def _plain(v: Any) -> Any:
    """``v`` with tuples as lists and NumPy scalars as Python numbers (JSON-friendly)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return v.item()
    return v


def _positive_int(sched: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{sched}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _warmup_min(sched: str, min_lr: float | None, min_lr_ratio: float) -> None:
    if min_lr is not None and min_lr_ratio != 0.0:
        raise ValueError(f"{sched}: give min_lr or min_lr_ratio, not both")
    if min_lr is not None and min_lr < 0 or min_lr_ratio < 0:
        raise ValueError(f"{sched}: min_lr / min_lr_ratio must be >= 0, got {min_lr} / {min_lr_ratio}")


class LRScheduler:
    """Base class. Subclasses define ``_lr(i, base_lr, t)``: the lr of group ``i`` after
    ``t`` steps. ``last_epoch=-1`` starts a new schedule; another value resumes one (the
    groups must then hold ``initial_lr``), though ``load_state_dict`` is the usual way."""

    _not_state: tuple = ("optimizer",)

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: {type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        for i, g in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                g.setdefault("initial_lr", g["lr"])
            elif "initial_lr" not in g:
                raise ValueError(f"{type(self).__name__}: resuming at last_epoch={last_epoch} but "
                                 f"param_groups[{i}] has no 'initial_lr'")
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr: list = []
        self.step()

    def _lr(self, i: int, base_lr: float, t: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not define _lr")

    def _lrs_at(self, t: int) -> list:
        return [float(self._lr(i, base, t)) for i, base in enumerate(self.base_lrs)]

    def get_lr(self) -> list:
        """The lr of every group at the current step ``last_epoch``."""
        return self._lrs_at(self.last_epoch)

    def get_last_lr(self) -> list:
        """The lrs the last ``step()`` set."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one step and set each group's lr to ``lr(t)``."""
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise ValueError(f"{type(self).__name__}: the optimizer has {len(groups)} parameter "
                             f"groups, the scheduler was built for {len(self.base_lrs)}")
        lrs = self._lrs_at(self.last_epoch + 1)  # computed first: an error changes nothing
        self.last_epoch += 1
        for g, lr in zip(groups, lrs):
            g["lr"] = lr
        self._last_lr = lrs

    def state_dict(self) -> dict:
        """The schedule's position and settings as a JSON-serialisable dict."""
        return {k: _plain(v) for k, v in self.__dict__.items()
                if k not in self._not_state and not callable(v)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume from ``state_dict()``: the next ``step()`` continues the same curve.
        Also writes the saved lr (and initial_lr) into the optimizer's groups."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise ValueError(f"{name}: expected a dict, got {type(state_dict).__name__}")
        own = self.state_dict()
        unknown = sorted(set(state_dict) - set(own))
        if unknown:
            raise ValueError(f"{name}: unexpected keys {unknown} (a state dict of another scheduler?)")
        n = len(self.optimizer.param_groups)
        for key in ("base_lrs", "_last_lr"):
            if key in state_dict and len(state_dict[key]) != n:
                raise ValueError(f"{name}: {key} has {len(state_dict[key])} entries, the optimizer "
                                 f"has {n} parameter groups")
        for k, v in state_dict.items():
            cur = self.__dict__.get(k)
            setattr(self, k, tuple(v) if isinstance(cur, tuple) and isinstance(v, list) else v)
        for g, base, lr in zip(self.optimizer.param_groups, self.base_lrs, self._last_lr):
            g["initial_lr"] = base
            g["lr"] = lr
