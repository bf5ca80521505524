"""What a training checkpoint contains, in one safetensors file, built on
:mod:`minilm.train.checkpoint`'s file format (:func:`~minilm.train.checkpoint.save_checkpoint` /
:func:`~minilm.train.checkpoint.load_checkpoint`) and nested-state encoding
(:func:`~minilm.train.checkpoint.flatten_state` /
:func:`~minilm.train.checkpoint.unflatten_state`).

:func:`save_training_state` / :func:`load_training_state` / :func:`load_model_weights`:
model, optimizer and scheduler ``state_dict()``s plus an ``extra`` dict (step, config,
RNG states, tokenizer). Loading checks the model's keys and shapes before touching
anything, and undoes a partial load if a later part fails.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from .checkpoint import (
    META_KEY,
    checkpoint_error,
    decode_checkpoint,
    flatten_state,
    load_checkpoint,
    read_safetensors,
    save_checkpoint,
    unflatten_state,
)

__all__ = ["load_model_weights", "load_training_state", "save_training_state"]


# =========================================================================== training state
_KIND = "training_state"


def save_training_state(path: str | os.PathLike, model: Any, optimizer: Any = None,
                        scheduler: Any = None, extra: dict | None = None) -> None:
    """Save everything needed to resume training into one safetensors file.

    ``model.state_dict()`` (tensors ``model.<name>``), ``optimizer.state_dict()`` (the
    PyTorch layout ``{"state": {int: {name: array | number}}, "param_groups": [...]}``,
    tensors ``optimizer.state.<i>.<name>``), ``scheduler.state_dict()`` (JSON-able), and
    ``extra``: step, config, RNG states (``np.random.Generator.bit_generator.state``),
    tokenizer — any structure :func:`flatten_state` accepts. Atomic, as
    :func:`save_checkpoint`.
    """
    state: dict = {}
    if model is not None:
        state["model"] = model.state_dict()
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    state["extra"] = {} if extra is None else extra
    tensors, meta = flatten_state(state)
    meta["kind"] = _KIND
    save_checkpoint(path, tensors, meta)


def _is_training_state(meta: Any) -> bool:
    return isinstance(meta, dict) and meta.get("kind") == _KIND


def _load_state(path: str, tensors: dict, meta: Any) -> dict:
    """The nested training state of a decoded checkpoint."""
    if not _is_training_state(meta):
        raise checkpoint_error(path, "not a training state (written by save_checkpoint, not "
                               "save_training_state)")
    try:
        state = unflatten_state(tensors, meta)
    except (ValueError, TypeError) as exc:
        raise checkpoint_error(path, str(exc)) from exc
    if not isinstance(state, dict):
        raise checkpoint_error(path, "malformed training state")
    return state


def _check_model(path: str, model: Any, weights: Mapping) -> None:
    """Raise a CheckpointError listing missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(np.shape(weights[k]))} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in weights and tuple(np.shape(weights[k])) != tuple(v.shape)]
    problems = []
    if mismatched:
        problems.append("shape mismatch for " + "; ".join(mismatched))
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if problems:
        raise checkpoint_error(path, f"does not match {type(model).__name__}: " + ". ".join(problems))


def _check_optimizer(path: str, optimizer: Any, saved: Any) -> None:
    """The saved optimizer state has the PyTorch layout and the same parameter groups."""
    if not isinstance(saved, Mapping) or "param_groups" not in saved or "state" not in saved:
        raise checkpoint_error(path, "optimizer state is not {'state': ..., 'param_groups': [...]}")
    current = optimizer.state_dict()
    cur_groups = current.get("param_groups", []) if isinstance(current, Mapping) else []
    groups = saved["param_groups"]
    cur_sizes = [len(g.get("params", [])) for g in cur_groups]
    sizes = [len(g.get("params", [])) for g in groups]
    if cur_sizes != sizes:
        raise checkpoint_error(path, f"optimizer parameter groups of sizes {sizes} do not match the "
                               f"optimizer's {cur_sizes}")


def load_training_state(path: str | os.PathLike, model: Any = None, optimizer: Any = None,
                        scheduler: Any = None) -> dict:
    """Restore what :func:`save_training_state` wrote into the given objects (each
    optional) and return ``extra``.

    Everything is checked before anything changes: the file (as
    :func:`load_checkpoint`), the model's keys and shapes (a ``ValueError`` lists the
    missing and unexpected keys and the mismatched shapes), the presence and parameter
    groups of the optimizer and scheduler state. The loads then run scheduler,
    optimizer, model; if one of them still fails, the ones already done are restored
    to their previous state, and a ``ValueError`` naming the file is raised.
    """
    path = os.fspath(path)
    state = _load_state(path, *load_checkpoint(path))
    for obj, part in ((model, "model"), (optimizer, "optimizer"), (scheduler, "scheduler")):
        if obj is not None and part not in state:
            raise checkpoint_error(path, f"has no {part} state")
    if model is not None:
        _check_model(path, model, state["model"])
    if optimizer is not None:
        _check_optimizer(path, optimizer, state["optimizer"])

    undo: list = []
    try:
        if scheduler is not None:
            before = copy.deepcopy(scheduler.state_dict())
            scheduler.load_state_dict(state["scheduler"])
            undo.append((scheduler, before))
        if optimizer is not None:
            before = copy.deepcopy(optimizer.state_dict()) if model is not None else None
            optimizer.load_state_dict(state["optimizer"])
            undo.append((optimizer, before))
        if model is not None:
            model.load_state_dict(state["model"], strict=True)
    except Exception as exc:
        for obj, before in reversed(undo):
            if before is not None:
                with contextlib.suppress(Exception):
                    obj.load_state_dict(before)
        raise checkpoint_error(path, f"could not be loaded ({type(exc).__name__}: {exc})") from exc
    extra = state.get("extra", {})
    return {} if extra is None else extra


def load_model_weights(path: str | os.PathLike) -> OrderedDict:
    """Just the model's state dict (name -> ndarray), for sampling or evaluation.

    Reads a training state (its ``model.*`` tensors, prefix removed), any other minilm
    checkpoint (the ``model.*`` tensors if there are some, else all), or a plain
    safetensors weight file without minilm metadata (all tensors, e.g. Hugging Face
    weights in a dtype NumPy knows).
    """
    path = os.fspath(path)
    tensors, metadata = read_safetensors(path)
    if META_KEY in metadata:
        tensors, meta = decode_checkpoint(path, tensors, metadata)
        if _is_training_state(meta):
            state = _load_state(path, tensors, meta)
            if "model" not in state:
                raise checkpoint_error(path, "has no model state")
            return OrderedDict(state["model"])
    prefixed = OrderedDict((k[len("model."):], v) for k, v in sorted(tensors.items())
                           if k.startswith("model."))
    return prefixed if prefixed else OrderedDict(sorted(tensors.items()))
