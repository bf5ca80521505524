"""Compressed models on disk: a GPT some of whose Linear layers were replaced
(quantized: :class:`~minilm.quant.QuantizedLinear`, :class:`~minilm.quant.W8A8Linear`,
:class:`~minilm.quant.LLMInt8Linear`; factorised: :class:`~minilm.quant.LowRankLinear`),
or whose weights were pruned, in one safetensors file.

The file holds the model's ``state_dict()`` as it is: int8 weights, int4 weights
packed two per byte (uint8), float32 scales and int32 zero points, float biases and
the float layers that were not replaced. The JSON metadata holds the model config,
the tokenizer, how it was made (method and arguments, the source checkpoint), and for
each replaced layer its class and the arguments that rebuild an empty one of the same
shapes::

    {"blocks.0.attn.qkv": {"class": "QuantizedLinear", "bits": 4, "group_size": 64,
                           "symmetric": true}, ...}

Loading builds the float GPT from the config, swaps in empty replacements, and loads
the saved tensors into them strictly (every key, shape and dtype must match), so the
reloaded model computes bit for bit what the saved one did. Writes are atomic (the
checkpoint format layer); nothing is unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..nn.module import Module, model_backend
from ..nn.transformer import GPT, GPTConfig
from ..quant import LLMInt8Linear, LowRankLinear, PruningMasks, QuantizedLinear, W8A8Linear
from ..tensor import Tensor
from .checkpoint import checkpoint_error, flatten_state, load_checkpoint, save_checkpoint, unflatten_state

__all__ = ["KIND", "compressed_path", "layer_spec", "layer_specs", "load_compressed",
           "save_compressed"]

KIND = "compressed_model"


def layer_spec(module: Module) -> dict | None:
    """How to rebuild ``module`` empty (None: a plain module, rebuilt by the GPT)."""
    if isinstance(module, LLMInt8Linear):  # before W8A8Linear: a subclass of it
        return {"class": "LLMInt8Linear", "threshold": float(module.threshold),
                "keep_float_weight": bool(module.keep_float_weight)}
    if isinstance(module, W8A8Linear):
        return {"class": "W8A8Linear", "act": module.act}
    if isinstance(module, QuantizedLinear):
        return {"class": "QuantizedLinear", "bits": int(module.bits),
                "symmetric": bool(module.symmetric),
                "group_size": None if module.granularity == "channel" else int(module.group_size)}
    if isinstance(module, LowRankLinear):
        return {"class": "LowRankLinear", "rank": int(module.rank)}
    return None


def layer_specs(model: Module) -> dict[str, dict]:
    """{dotted name: spec} of every replaced layer of ``model``."""
    return {name: spec for name, m in model.named_modules() if (spec := layer_spec(m))}


def _empty(spec: Any, linear: Any, where: str) -> Module:
    """An empty replacement of ``linear`` as ``spec`` says (its values are then loaded)."""
    from ..nn.layers import Linear

    if not isinstance(spec, dict) or not isinstance(linear, Linear):
        raise ValueError(f"{where}: not a replaceable Linear layer of this model")
    cls = spec.get("class")
    if cls == "QuantizedLinear":
        return QuantizedLinear.from_linear(linear, spec["bits"], spec["group_size"],
                                           spec["symmetric"])
    if cls == "W8A8Linear":
        return W8A8Linear.from_linear(linear, spec["act"])
    if cls == "LLMInt8Linear":
        return LLMInt8Linear.from_linear(linear, spec["threshold"],
                                         spec.get("keep_float_weight", False))
    if cls == "LowRankLinear":
        return LowRankLinear(linear.in_features, linear.out_features, spec["rank"],
                             bias=linear.bias is not None, dtype=linear.weight.dtype)
    raise ValueError(f"{where}: unknown layer class {cls!r}")


def _replace(model: Module, modules: dict, name: str, new: Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = modules.get(parent_name) if parent_name else model
    if parent is None or child not in parent._modules:
        raise KeyError(name)
    parent._modules[child] = new


def save_compressed(path: str | os.PathLike, model: Module, extra: dict) -> None:
    """Write ``model`` (with its replaced layers) and ``extra`` (``model_config``,
    ``tokenizer``, how it was made) to ``path`` atomically."""
    extra = dict(extra, layers=layer_specs(model))
    state = {"model": model.state_dict(), "extra": extra}
    tensors, meta = flatten_state(state)
    meta["kind"] = KIND
    save_checkpoint(path, tensors, meta)


def load_compressed(path: str | os.PathLike) -> tuple[GPT, dict]:
    """(model in eval mode, extra) of a file written by :func:`save_compressed`. Every
    problem (not a compressed model, a config or layer list that does not describe the
    tensors) is a ValueError naming the file; nothing is built half."""
    path = os.fspath(path)
    tensors, meta = load_checkpoint(path)
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise checkpoint_error(path, "not a compressed model (written by minilm quantize, "
                               "prune or low-rank)")
    try:
        state = unflatten_state(tensors, meta)
        extra, weights = state["extra"], state["model"]
        model = GPT(GPTConfig.from_dict(extra["model_config"]))
        modules = dict(model.named_modules())  # the float GPT's: parents stay the same
        for name, spec in extra["layers"].items():
            _replace(model, modules, name, _empty(spec, modules.get(name), name))
        _restore_unset_buffers(model, weights)
        if any(k.endswith("_mask") for k in weights):  # a pruned model keeps its masks
            PruningMasks.from_state_dict(model, weights).detach()
        model.load_state_dict(weights, strict=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint_error(path, f"does not hold a consistent compressed model "
                               f"({type(exc).__name__}: {exc})") from None
    model.eval()
    return model, extra


def _restore_unset_buffers(model: Module, weights: dict) -> None:
    """Buffers a fresh layer leaves unset (None, e.g. a W8A8 input scale set only by
    calibration) get a placeholder of the saved shape, which the load then fills."""
    modules = dict(model.named_modules())
    for key, value in weights.items():
        owner, _, buf = key.rpartition(".")
        m = modules.get(owner)
        if m is not None and buf in m._buffers and m._buffers[buf] is None:
            m._buffers[buf] = Tensor(np.zeros_like(np.asarray(value)),
                                     backend=model_backend(m))  # the layer's backend


def compressed_path(out_dir: str | os.PathLike, tag: str) -> Path:
    """Where the compressed model ``tag`` of a run lives."""
    return Path(out_dir) / f"{tag}.safetensors"
