"""Pruning: set weights to zero and keep them there.

Unstructured magnitude pruning (Han et al. 2015) at sparsity s over n weights zeroes
the k = round(s * n) weights of smallest |w|:

    mask_i = 0  for the k smallest |w_i|,  1 otherwise;   w <- w * mask

``scope="layer"`` ranks each Linear's weight on its own (every layer ends at sparsity s);
``scope="global"`` ranks all selected weights together (one threshold: layers with many
small weights lose more of them). Ties are broken by position: a stable sort of |w|
(flattened row-major, layers in module order) prunes the earlier of two equal weights.

Structured pruning removes whole units, so that dense kernels could drop them:

- MLP neurons: hidden unit j of ``mlp.fc`` (row j of W_fc, entry j of b_fc) and of
  ``mlp.proj`` (column j of W_proj). Importance ``l2``: sqrt(|W_fc[j,:]|^2 +
  |W_proj[:,j]|^2); ``taylor`` (Molchanov et al. 2017): sum over those weights of
  |w * dL/dw|, the first-order change of the loss when the unit is removed.
- Attention heads: head h owns rows h*d_h .. (h+1)*d_h of each of the q, k and v parts
  of the fused ``qkv`` projection (rows i*d + h*d_h ... for i = 0, 1, 2) and the same
  columns of ``out_proj``. Importance: the L2 norm of those slices, or given scores.

Masks are bool buffers ``<param>_mask`` registered on the module that owns the
parameter (``blocks.0.mlp.fc.weight_mask``), so they are part of ``model.state_dict()``
and of every checkpoint. :class:`PruningMasks` keeps them applied while training:
a post-accumulate-grad hook zeroes the masked gradient entries (so clipping and the
moments never see them), and :meth:`PruningMasks.attach` wraps ``optimizer.step`` to
zero the masked weights and the masked entries of the optimizer's state arrays
(momentum, Adam's m and v) after each step: AdamW's decoupled decay and old moments
cannot revive a pruned weight.

Gradual pruning (Zhu & Gupta 2017) raises the sparsity from s_i to s_f over the steps
t0 .. t0 + n*dt, pruning every dt steps:

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3

fast at first (while many weights are redundant), slowly at the end.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..autograd import no_grad
from ..backends import to_host
from ..nn.attention import MultiHeadAttention
from ..nn.layers import Embedding, Linear
from ..nn.module import Module
from ..nn.transformer import MLP
from ..tensor import Tensor

__all__ = [
    "GradualPruner", "PruningMasks", "format_sparsity", "magnitude_prune",
    "prune_attention_heads", "prune_mlp_neurons", "select_linears", "sparsity_report",
    "zhu_gupta_sparsity",
]

_SUFFIX = "_mask"


def _count(fraction: float, n: int) -> int:
    """round(fraction * n), halves rounded up (a count of weights or units)."""
    return min(n, int(math.floor(fraction * n + 0.5)))


def _check_fraction(op: str, name: str, value: Any, top_open: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    value = float(value) if ok else value
    if not ok or not (0.0 <= value < 1.0 if top_open else 0.0 <= value <= 1.0):
        rng = "[0, 1)" if top_open else "[0, 1]"
        raise ValueError(f"{op}: {name} must be a number in {rng}, got {value!r}")
    return value


# --------------------------------------------------------------------- which layers


def select_linears(model: Module, include: Any = None) -> list[tuple[str, Linear]]:
    """The Linear layers of ``model`` to prune, as (module name, module) in module order.

    ``include``: None (every Linear whose weight is not tied to an Embedding, e.g. a GPT
    head sharing the token embedding), a glob pattern or list of patterns on module
    names (``"blocks.*.mlp.*"``), or a callable ``(name, module) -> bool``."""
    tied = {id(m.weight) for m in model.modules() if isinstance(m, Embedding)}
    if isinstance(include, str):
        include = [include]
    out = []
    for name, m in model.named_modules():
        if not isinstance(m, Linear):
            continue
        if include is None:
            keep = id(m.weight) not in tied
        elif callable(include):
            keep = bool(include(name, m))
        else:
            keep = any(fnmatch.fnmatchcase(name, pat) for pat in include)
        if keep:
            out.append((name, m))
    return out


# --------------------------------------------------------------------- masks


class PruningMasks:
    """The pruning masks of one model: ``{"<module>.<param>": bool array}``, each held
    as the buffer ``<param>_mask`` of its module (True = kept).

    ``set(name, mask)`` installs or replaces a mask and zeroes the pruned weights;
    ``attach(optimizer)`` keeps them zero through ``optimizer.step()``;
    ``state_dict()`` / ``load_state_dict()`` / ``from_state_dict()`` save and restore."""

    def __init__(self, model: Module) -> None:
        self.model = model
        self._owners: dict[str, tuple[Module, str]] = {}
        self._grad_hooks: dict[str, Any] = {}
        self._optimizers: list[tuple[Any, Any]] = []

    # ---------------------------------------------------------------- access
    def names(self) -> list[str]:
        return list(self._owners)

    def __contains__(self, name: str) -> bool:
        return name in self._owners

    def __len__(self) -> int:
        return len(self._owners)

    def _resolve(self, name: str) -> tuple[Module, str]:
        mod_name, _, pname = name.rpartition(".")
        mods = dict(self.model.named_modules())
        mod = mods.get(mod_name)
        if mod is None or getattr(mod, "_parameters", {}).get(pname) is None:
            raise ValueError(f"PruningMasks: the model has no parameter {name!r}")
        return mod, pname

    def param(self, name: str) -> Tensor:
        mod, pname = self._owners[name] if name in self._owners else self._resolve(name)
        return mod._parameters[pname]

    def mask(self, name: str) -> Any:
        """The bool mask array of parameter ``name`` (True = kept)."""
        mod, pname = self._owners[name]
        return mod._buffers[pname + _SUFFIX].data

    # ---------------------------------------------------------------- install
    def set(self, name: str, mask: Any) -> None:
        """Install ``mask`` (bool, the parameter's shape; True = kept) for parameter
        ``name`` and zero the weights it prunes."""
        mod, pname = self._owners.get(name) or self._resolve(name)
        p = mod._parameters[pname]
        xp = p.backend.xp
        m = xp.asarray(to_host(mask.data if isinstance(mask, Tensor) else mask)).astype(bool)
        if tuple(m.shape) != p.shape:
            raise ValueError(f"PruningMasks.set: mask for {name!r} has shape {tuple(m.shape)}, "
                             f"the parameter {p.shape}")
        key = pname + _SUFFIX
        if key in mod._buffers:
            mod._buffers[key].data[...] = m
        else:
            mod.register_buffer(key, Tensor(m))
        self._owners[name] = (mod, pname)
        if name not in self._grad_hooks:
            self._grad_hooks[name] = p.register_post_accumulate_grad_hook(
                lambda t, n=name: self._mask_grad(n, t))
        self.apply([name])

    def _mask_grad(self, name: str, p: Tensor) -> None:
        if p.grad is not None:
            m = self.mask(name)
            p.grad.data[...] = p.grad.backend.xp.where(m, p.grad.data, 0)

    @no_grad()
    def apply(self, names: list[str] | None = None) -> None:
        """w <- w * mask for every mask (or those of ``names``), and the masked entries
        of the state arrays of every attached optimizer; gradients already computed are
        masked too."""
        for name in self._owners if names is None else names:
            mod, pname = self._owners[name]
            p = mod._parameters[pname]
            m = mod._buffers[pname + _SUFFIX].data
            xp = p.backend.xp
            p.data[...] = xp.where(m, p.data, 0)
            p._bump()
            if p.grad is not None:
                self._mask_grad(name, p)
            for opt, _ in self._optimizers:
                for value in opt.state.get(p, {}).values():
                    if hasattr(value, "shape") and tuple(value.shape) == p.shape:
                        value[...] = xp.where(m, value, 0)

    def attach(self, optimizer: Any) -> Any:
        """Wrap ``optimizer.step`` so that the masks are re-applied after every step
        (weights and the masked entries of the optimizer state set to 0). Returns the
        optimizer; :meth:`detach` restores its own ``step``."""
        original = optimizer.step

        def step(closure: Callable | None = None) -> Any:
            for name, (mod, pname) in self._owners.items():
                self._mask_grad(name, mod._parameters[pname])
            loss = original(closure)
            self.apply()
            return loss

        optimizer.step = step
        self._optimizers.append((optimizer, original))
        self.apply()
        return optimizer

    def detach(self) -> None:
        """Undo :meth:`attach` for every optimizer and remove the gradient hooks (the
        masks stay as buffers and the weights stay zero)."""
        for opt, _ in self._optimizers:
            opt.__dict__.pop("step", None)
        self._optimizers.clear()
        for handle in self._grad_hooks.values():
            handle.remove()
        self._grad_hooks.clear()

    # ---------------------------------------------------------------- save / load
    def state_dict(self) -> dict:
        """``{param name: bool ndarray}`` (safetensors stores bool)."""
        return {name: to_host(self.mask(name)).copy() for name in self._owners}

    def load_state_dict(self, state: Mapping) -> None:
        """Install every mask of ``state`` (``{param name: bool/uint8 array}``); all are
        checked against the model before any is installed."""
        checked = []
        for name, m in state.items():
            p = self.param(name)
            arr = to_host(m.data if isinstance(m, Tensor) else m)
            if tuple(arr.shape) != p.shape:
                raise ValueError(f"PruningMasks.load_state_dict: mask for {name!r} has shape "
                                 f"{tuple(arr.shape)}, the parameter {p.shape}")
            checked.append((name, arr != 0))
        for name, arr in checked:
            self.set(name, arr)

    @classmethod
    def from_state_dict(cls, model: Module, state_dict: Mapping) -> PruningMasks:
        """The masks stored in a model state dict (its ``*_mask`` entries, as written by
        ``model.state_dict()`` of a pruned model): registered on ``model`` so that
        ``model.load_state_dict(state_dict)`` then finds every key."""
        masks = cls(model)
        masks.load_state_dict({k[: -len(_SUFFIX)]: v for k, v in state_dict.items()
                               if k.endswith(_SUFFIX)})
        return masks


def _masks_for(model: Module, masks: PruningMasks | None) -> PruningMasks:
    if masks is None:
        return PruningMasks(model)
    if masks.model is not model:
        raise ValueError("pruning: the given PruningMasks belong to another model")
    return masks


# --------------------------------------------------------------------- unstructured


def _scores(masks: PruningMasks, name: str, p: Tensor) -> np.ndarray:
    """|w| flattened (float64), with already-pruned weights at -1 (pruned first)."""
    s = np.abs(to_host(p.data).astype(np.float64)).ravel()
    if name in masks:
        s[~to_host(masks.mask(name)).ravel()] = -1.0
    return s


def magnitude_prune(model: Module, sparsity: float, scope: str = "layer", include: Any = None,
                    masks: PruningMasks | None = None) -> PruningMasks:
    """Zero the fraction ``sparsity`` of smallest-|w| weights of the selected Linear
    layers (see :func:`select_linears`), per layer (``scope="layer"``) or over all of
    them at once (``"global"``). Weights pruned by ``masks`` (if given) stay pruned and
    count towards the new sparsity. Returns the masks."""
    op = "magnitude_prune"
    sparsity = _check_fraction(op, "sparsity", sparsity)
    if scope not in ("layer", "global"):
        raise ValueError(f"{op}: scope must be 'layer' or 'global', got {scope!r}")
    masks = _masks_for(model, masks)
    layers = [(f"{n}.weight" if n else "weight", m.weight) for n, m in select_linears(model, include)]
    if not layers:
        raise ValueError(f"{op}: no Linear layer selected (include={include!r})")
    groups = [[entry] for entry in layers] if scope == "layer" else [layers]
    for group in groups:
        scores = [_scores(masks, n, p) for n, p in group]
        flat = np.concatenate(scores)
        keep = np.ones(flat.size, dtype=bool)
        keep[np.argsort(flat, kind="stable")[:_count(sparsity, flat.size)]] = False
        start = 0
        for (name, p), s in zip(group, scores):
            masks.set(name, keep[start:start + s.size].reshape(p.shape))
            start += s.size
    return masks


# --------------------------------------------------------------------- structured


def _lowest(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k lowest scores (ties: the lower index first)."""
    return np.argsort(scores, kind="stable")[:k]


def _keep(mask: np.ndarray | None, shape: tuple) -> np.ndarray:
    return np.ones(shape, dtype=bool) if mask is None else mask.copy()


def _current(masks: PruningMasks, name: str, shape: tuple) -> np.ndarray:
    return _keep(to_host(masks.mask(name)) if name in masks else None, shape)


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def prune_mlp_neurons(model: Module, fraction: float, score: str = "l2",
                      masks: PruningMasks | None = None) -> PruningMasks:
    """In every :class:`~minilm.nn.transformer.MLP`, zero the round(fraction * d_ff)
    hidden units of lowest importance: row j of ``fc.weight`` and ``fc.bias[j]``, column
    j of ``proj.weight``. ``score``: ``"l2"`` (norm of those weights) or ``"taylor"``
    (sum of |w * grad| over them; needs the gradients of a backward pass)."""
    op = "prune_mlp_neurons"
    fraction = _check_fraction(op, "fraction", fraction)
    if score not in ("l2", "taylor"):
        raise ValueError(f"{op}: score must be 'l2' or 'taylor', got {score!r}")
    masks = _masks_for(model, masks)
    mlps = [(n, m) for n, m in model.named_modules() if isinstance(m, MLP)]
    if not mlps:
        raise ValueError(f"{op}: the model has no MLP module")
    for name, mlp in mlps:
        w_fc, w_proj = to_host(mlp.fc.weight.data), to_host(mlp.proj.weight.data)
        if score == "l2":
            imp = np.sqrt((w_fc.astype(np.float64) ** 2).sum(1)
                          + (w_proj.astype(np.float64) ** 2).sum(0))
        else:
            if mlp.fc.weight.grad is None or mlp.proj.weight.grad is None:
                raise ValueError(f"{op}: score='taylor' needs gradients; {name}.fc.weight or "
                                 f"{name}.proj.weight has none (run a backward pass first)")
            g_fc, g_proj = to_host(mlp.fc.weight.grad.data), to_host(mlp.proj.weight.grad.data)
            imp = np.abs(w_fc * g_fc).sum(1) + np.abs(w_proj * g_proj).sum(0)
        units = _lowest(imp, _count(fraction, imp.size))
        pre = _prefix(name)
        m_fc = _current(masks, pre + "fc.weight", w_fc.shape)
        m_fc[units, :] = False
        m_proj = _current(masks, pre + "proj.weight", w_proj.shape)
        m_proj[:, units] = False
        masks.set(pre + "fc.weight", m_fc)
        masks.set(pre + "proj.weight", m_proj)
        if mlp.fc.bias is not None:
            m_b = _current(masks, pre + "fc.bias", mlp.fc.bias.shape)
            m_b[units] = False
            masks.set(pre + "fc.bias", m_b)
    return masks


def _head_rows(h: int, head_dim: int, d: int) -> np.ndarray:
    """Rows of head h in the fused (3d, d) qkv weight: its q, k and v slices."""
    return np.concatenate([np.arange(i * d + h * head_dim, i * d + (h + 1) * head_dim)
                           for i in range(3)])


def prune_attention_heads(model: Module, fraction: float, scores: Any = None,
                          masks: PruningMasks | None = None) -> PruningMasks:
    """In every self-attention layer, zero the round(fraction * n_heads) heads of lowest
    importance: their q, k, v rows of ``qkv`` (weight and bias) and their columns of
    ``out_proj.weight``. Importance: the L2 norm of those slices, or ``scores`` given as
    an (n_layers, n_heads) array (layers in module order) or a dict ``{module name:
    (n_heads,) scores}``."""
    op = "prune_attention_heads"
    fraction = _check_fraction(op, "fraction", fraction)
    masks = _masks_for(model, masks)
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, MultiHeadAttention) and not m.cross]
    if not layers:
        raise ValueError(f"{op}: the model has no self-attention layer")
    for i, (name, attn) in enumerate(layers):
        H, hd, d = attn.n_heads, attn.head_dim, attn.d_model
        w_qkv, w_out = to_host(attn.qkv.weight.data), to_host(attn.out_proj.weight.data)
        if scores is None:
            imp = np.array([np.sqrt((w_qkv[_head_rows(h, hd, d)].astype(np.float64) ** 2).sum()
                                    + (w_out[:, h * hd:(h + 1) * hd].astype(np.float64) ** 2).sum())
                            for h in range(H)])
        else:
            imp = np.asarray(scores[name] if isinstance(scores, Mapping) else scores[i],
                             dtype=np.float64)
            if imp.shape != (H,):
                raise ValueError(f"{op}: scores for {name!r} must have shape ({H},), got "
                                 f"{imp.shape}")
        heads = _lowest(imp, _count(fraction, H))
        pre = _prefix(name)
        m_qkv = _current(masks, pre + "qkv.weight", w_qkv.shape)
        m_out = _current(masks, pre + "out_proj.weight", w_out.shape)
        m_b = None if attn.qkv.bias is None else _current(masks, pre + "qkv.bias",
                                                          attn.qkv.bias.shape)
        for h in heads:
            rows = _head_rows(int(h), hd, d)
            m_qkv[rows, :] = False
            m_out[:, h * hd:(h + 1) * hd] = False
            if m_b is not None:
                m_b[rows] = False
        masks.set(pre + "qkv.weight", m_qkv)
        masks.set(pre + "out_proj.weight", m_out)
        if m_b is not None:
            masks.set(pre + "qkv.bias", m_b)
    return masks


# --------------------------------------------------------------------- gradual schedule


def zhu_gupta_sparsity(t: int, final_sparsity: float, start: int, end: int,
                       initial_sparsity: float = 0.0) -> float:
    """s_t = s_f + (s_i - s_f) (1 - (t - t0)/(t_end - t0))^3, held at s_i before t0
    and at s_f after t_end."""
    if t <= start:
        return float(initial_sparsity)
    if t >= end:
        return float(final_sparsity)
    frac = (t - start) / (end - start)
    return float(final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - frac) ** 3)


class GradualPruner:
    """Gradual magnitude pruning (Zhu & Gupta 2017): call ``step(t)`` after each
    optimizer step t; at t = start, start + every, ..., end it prunes the selected
    Linears to :func:`zhu_gupta_sparsity` (t). Attach ``pruner.masks`` to the optimizer
    (``pruner.masks.attach(opt)``) so pruned weights stay zero in between."""

    def __init__(self, model: Module, final_sparsity: float, start: int, end: int, every: int,
                 initial_sparsity: float = 0.0, scope: str = "layer", include: Any = None,
                 masks: PruningMasks | None = None) -> None:
        op = "GradualPruner"
        self.final_sparsity = _check_fraction(op, "final_sparsity", final_sparsity)
        self.initial_sparsity = _check_fraction(op, "initial_sparsity", initial_sparsity)
        for key, v in (("start", start), ("end", end), ("every", every)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{op}: {key} must be an integer >= 0, got {v!r}")
        if every < 1:
            raise ValueError(f"{op}: every must be >= 1, got {every}")
        if end <= start or (end - start) % every:
            raise ValueError(f"{op}: end - start must be a positive multiple of every "
                             f"(n * dt), got start={start}, end={end}, every={every}")
        self.model, self.start, self.end, self.every = model, int(start), int(end), int(every)
        self.scope, self.include = scope, include
        self.masks = _masks_for(model, masks)

    def sparsity_at(self, t: int) -> float:
        return zhu_gupta_sparsity(t, self.final_sparsity, self.start, self.end,
                                  self.initial_sparsity)

    def step(self, t: int) -> float | None:
        """Prune at step ``t`` if it is a pruning step; returns the sparsity applied
        (None otherwise)."""
        if t < self.start or t > self.end or (t - self.start) % self.every:
            return None
        s = self.sparsity_at(t)
        magnitude_prune(self.model, s, self.scope, self.include, self.masks)
        return s


# --------------------------------------------------------------------- reports


def sparsity_report(model: Module, include: Any = None) -> dict:
    """Zeros per selected Linear weight and in total: ``{"layers": {name: {"zeros",
    "total", "sparsity"}}, "zeros", "total", "sparsity"}`` (counted on the weights, so
    it also shows zeros that no mask holds)."""
    rows: dict = {}
    zeros = total = 0
    for name, m in select_linears(model, include):
        w = to_host(m.weight.data)
        z = int(w.size - np.count_nonzero(w))
        rows[name] = {"zeros": z, "total": int(w.size), "sparsity": z / max(w.size, 1)}
        zeros += z
        total += int(w.size)
    return {"layers": rows, "zeros": zeros, "total": total,
            "sparsity": zeros / total if total else 0.0}


def format_sparsity(report: dict) -> str:
    """The report of :func:`sparsity_report` as an aligned table."""
    width = max([len(n) for n in report["layers"]] + [5])
    lines = [f"{'layer':<{width}}  {'zeros':>9}  {'total':>9}  sparsity"]
    for name, r in report["layers"].items():
        lines.append(f"{name:<{width}}  {r['zeros']:>9}  {r['total']:>9}  {r['sparsity']:.3f}")
    lines.append(f"{'total':<{width}}  {report['zeros']:>9}  {report['total']:>9}  "
                 f"{report['sparsity']:.3f}")
    return "\n".join(lines)
