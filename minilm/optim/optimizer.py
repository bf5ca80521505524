"""Optimizer: the base class every update rule (SGD, Adam, ...) builds on.

An optimizer holds

- ``param_groups``: a list of dicts, each ``{"params": [Parameter, ...], "lr": ...,
  <other hyperparameters>}``. Every group may override the defaults given to the
  constructor (e.g. no weight decay for biases, a smaller lr for embeddings);
- ``state``: a dict keyed by the Parameter object itself, holding what the update rule
  remembers between steps (momentum buffers, Adam moments, step counts) as backend
  arrays and Python numbers.

``step()`` walks the groups and, for every parameter that has a gradient, calls the
subclass's ``_update(p, grad, state, group)``, which changes ``p.data`` IN PLACE (the
array object stays the same, so views and other references keep seeing it) and bumps
the parameter's version counter. It runs under ``no_grad()``: an update never records a
graph.

``state_dict()`` has PyTorch's layout: parameters are numbered 0, 1, 2, ... over all
groups in order, ``{"state": {index: {name: value}}, "param_groups": [{..., "params":
[indices]}]}``, so a checkpoint never refers to Python objects.
"""

from __future__ import annotations

import numbers
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..autograd import enable_grad, no_grad
from ..backends import is_device_array, to_host
from ..tensor import Tensor

__all__ = ["Optimizer", "param_groups_for_weight_decay", "required"]


class _Required:
    """Sentinel for a hyperparameter that has no default and must be given."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class Optimizer:
    """Base class: ``Optimizer(params, defaults)``.

    ``params`` is an iterable of Parameters (float tensors that are graph leaves) or of
    dicts ``{"params": [...], <hyperparameter>: value}`` (parameter groups); ``defaults``
    fills the hyperparameters a group leaves out. Subclasses define ``_update`` and may
    define ``_check_group`` to validate hyperparameters."""

    def __init__(self, params: Any, defaults: dict) -> None:
        name = type(self).__name__
        if isinstance(params, (Tensor, dict)):
            raise TypeError(
                f"{name}: params must be an iterable of Parameters or of param-group dicts, "
                f"got a single {type(params).__name__}; wrap it in a list"
            )
        if isinstance(params, set):
            raise TypeError(f"{name}: params must be an ordered iterable, not a set")
        self.defaults = dict(defaults)
        self._check_group({k: v for k, v in self.defaults.items() if v is not required})
        self.param_groups: list[dict] = []
        self.state: defaultdict = defaultdict(dict)
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict) -> None:
        """Append a group ``{"params": [...], hyperparameter: value, ...}``; missing
        hyperparameters come from the defaults. Checks everything first, so a bad group
        leaves the optimizer unchanged."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}.add_param_group: expected a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{name}.add_param_group: the group has no 'params' entry")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(f"{name}: a group's params must be an ordered iterable, not a set")
        else:
            params = list(params)
        for i, p in enumerate(params):
            _check_param(name, i, p)
        group = dict(param_group)
        group["params"] = params
        for key, default in self.defaults.items():
            if key not in group:
                if default is required:
                    raise ValueError(f"{name}: parameter group didn't specify a value of "
                                     f"required hyperparameter {key!r}")
                group[key] = default
        self._check_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        new: set = set()
        for p in params:
            if id(p) in seen:
                raise ValueError(f"{name}: a parameter of shape {p.shape} appears in more than "
                                 "one parameter group; each parameter must be in exactly one")
            if id(p) in new:
                raise ValueError(f"{name}: a parameter of shape {p.shape} appears twice in the "
                                 "same parameter group")
            new.add(id(p))
        self.param_groups.append(group)

    def _check_group(self, group: dict) -> None:
        """Raise ValueError for an invalid hyperparameter (overridden by subclasses)."""

    # ------------------------------------------------------------------ the update
    def _update(self, p: Tensor, grad: Any, state: dict, group: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not define _update")

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient (``p.grad is not None``) once.
        ``closure``, if given, re-evaluates the model and returns the loss (it runs
        with grad mode on); its result is returned."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad.data
                    if tuple(grad.shape) != p.shape:
                        raise ValueError(f"{type(self).__name__}.step: a parameter of shape "
                                         f"{p.shape} has a gradient of shape {tuple(grad.shape)}")
                    self._update(p, grad, self.state[p], group)
                    p._version.value += 1
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: ``p.grad = None`` (default, frees the memory) or fill
        them with zeros in place (``set_to_none=False``)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data[...] = 0
                    p.grad._version.value += 1

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """``{"state": {index: {name: array or number}}, "param_groups": [{...,
        "params": [index, ...]}]}`` with parameters numbered over all groups in order.
        The arrays are the optimizer's live buffers (as in PyTorch): serialise them, or
        ``copy.deepcopy`` the dict, before the next ``step()`` if you keep it around."""
        index: dict = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            ids = []
            for p in g["params"]:
                index[id(p)] = len(index)
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                s = self.state.get(p)
                if s:
                    state[index[id(p)]] = dict(s)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what ``state_dict()`` returned (from this or an identically built
        optimizer). The group count, the number of parameters per group and the shape
        of every saved buffer are checked first: on a mismatch a ValueError names it and
        the optimizer is left unchanged. Arrays are copied, cast to each parameter's
        dtype and moved to its backend; 0-d arrays become Python numbers."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError(f"{name}: expected a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}: the state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        id_map: dict = {}
        for gi, (sg, g) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(sg, dict) or "params" not in sg:
                raise ValueError(f"{name}: parameter group {gi} of the state dict is not a dict "
                                 "with a 'params' entry")
            if len(sg["params"]) != len(g["params"]):
                raise ValueError(f"{name}: parameter group {gi} has {len(sg['params'])} parameters "
                                 f"in the state dict and {len(g['params'])} in this optimizer")
            for k, p in zip(sg["params"], g["params"]):
                id_map[int(k)] = p
        new_state: dict = {}
        for k, entries in state_dict["state"].items():
            if int(k) not in id_map:
                raise ValueError(f"{name}: the state dict has state for parameter {k}, which "
                                 "is in none of its parameter groups")
            p = id_map[int(k)]
            new_state[p] = {key: _load_value(name, int(k), key, v, p)
                            for key, v in entries.items() if v is not None}
        groups = []
        for sg, g in zip(saved_groups, self.param_groups):
            ng = {k: _like(v, g.get(k)) for k, v in sg.items() if k != "params"}
            ng["params"] = g["params"]
            groups.append(ng)
        # everything checked and converted: commit
        self.param_groups[:] = [dict(g) for g in groups]
        self.state = defaultdict(dict, new_state)

    # ------------------------------------------------------------------ repr
    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- helpers


def _check_param(opt: str, i: int, p: Any) -> None:
    if not isinstance(p, Tensor):
        raise TypeError(f"{opt}: params[{i}] is a {type(p).__name__}; an optimizer can only "
                        "optimize Parameters (floating-point tensors)")
    if p.dtype.kind not in "fc":
        raise TypeError(f"{opt}: params[{i}] is a {p.dtype} tensor; only floating-point "
                        "tensors can be optimized")
    if not p.is_leaf:
        raise ValueError(f"{opt}: params[{i}] (shape {p.shape}) is not a leaf tensor; an "
                         "optimizer can only optimize leaves (Parameters)")


def _load_value(where: str, index: int, key: str, value: Any, p: Tensor) -> Any:
    """A saved state entry as this optimizer keeps it: a Python number for scalars, a
    fresh array with the parameter's shape, dtype and backend for buffers."""
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, (bool, numbers.Number)) and not hasattr(value, "shape"):
        return value
    shape = tuple(getattr(value, "shape", np.shape(value)))
    if shape == ():
        arr = to_host(value)
        return int(arr) if arr.dtype.kind in "iub" else float(arr)
    if shape != p.shape:
        raise ValueError(f"{where}: state {key!r} of parameter {index} has shape {shape}, "
                         f"the parameter has shape {p.shape}")
    xp = p.backend.xp
    if xp is np and is_device_array(value):  # a device array loaded into a CPU optimizer
        value = to_host(value)
    return xp.array(value, dtype=p.dtype, copy=True)


def _like(value: Any, current: Any) -> Any:
    """JSON turns tuples (``betas``) into lists: give them back their tuple type."""
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _real(opt: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{opt}: {key} must be a real number, got {value!r}")
    return float(value)


def check_nonnegative(opt: str, group: dict, *keys: str) -> None:
    """ValueError unless every ``group[key]`` is a number >= 0 (NaN fails too)."""
    for key in keys:
        if key in group and not _real(opt, key, group[key]) >= 0.0:
            raise ValueError(f"{opt}: invalid {key} {group[key]!r} (must be >= 0)")


def check_betas(opt: str, group: dict) -> None:
    """ValueError unless ``group["betas"]`` is a pair in [0, 1)."""
    if "betas" not in group:
        return
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{opt}: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        if not 0.0 <= _real(opt, f"beta{i + 1}", b) < 1.0:
            raise ValueError(f"{opt}: invalid beta{i + 1} {b!r} (betas must be in [0, 1))")


def param_groups_for_weight_decay(model: Any, weight_decay: float,
                                  no_decay: Iterable[str] = ()) -> list[dict]:
    """Split a model's trainable parameters into two groups:

    ``[{"params": matrices, "weight_decay": weight_decay},
       {"params": the rest, "weight_decay": 0.0}]``

    Weight decay pulls weights towards 0; that is a useful prior for the matrices of
    linear layers and embeddings (``ndim >= 2``) but not for biases or the gains of
    LayerNorm / RMSNorm (1-D), whose natural values are 0 and 1 and which hold few
    numbers. Parameters whose name contains one of the ``no_decay`` substrings also go
    to the second group. ``model`` is a Module or an iterable of ``(name, Parameter)``;
    tied parameters are listed once (``named_parameters()`` yields them once)."""
    if hasattr(model, "named_parameters"):
        named = model.named_parameters()
    else:
        named = model
    no_decay = tuple(no_decay)
    decay, rest = [], []
    seen: set = set()
    for name, p in named:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim >= 2 and not any(s in name for s in no_decay):
            decay.append(p)
        else:
            rest.append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)},
            {"params": rest, "weight_decay": 0.0}]
