"""Quantization-aware training (QAT): train with the quantization in the forward pass so
that the weights learn to live on the grid.

Fake quantization rounds a float tensor to the affine grid and maps it straight back
(minilm/quant/affine.py), in float:

    x̂ = s · (clamp(rint(x / s) + z, qmin, qmax) − z)

Its true derivative is 0 almost everywhere (rint is a staircase). The straight-through
estimator (STE; Bengio et al. 2013) treats rint as the identity inside the clip range:

    ∂x̂/∂x = 1   where qmin ≤ rint(x/s) + z ≤ qmax,      0 outside (clipped values)

Learned step size (LSQ; Esser et al. 2020, "Learned Step Size Quantization") also
trains the scale s, with rint's derivative taken as 1 the same way:

    ∂x̂/∂s = (q − z) − x/s        inside the range  (= rint(x/s) − x/s)
    ∂x̂/∂s = qmin − z  or  qmax − z   at the clamps

and LSQ's gradient scale g = 1 / sqrt(N · qmax) multiplied onto ∂L/∂s, N the number of
elements that share one scale (the weights of one row or group, or every element of an
activation tensor), so that the scale's step stays in proportion to the weights' steps.

Layers. :class:`FakeQuantize` is the module around :class:`FakeQuantizeFunction`: its
(s, z) come, for each training step until ``freeze_after`` steps, from the range of the
tensor (weights: the min/max of the current rows or groups; activations: an observer,
a moving-average min/max by default); then they stay fixed (or, with
``learn_scale=True``, s is a Parameter initialised from the first range and trained).
:class:`QATLinear` fake-quantizes its weight per output channel (or per group of input
columns) and, optionally, its input activation per tensor. :func:`prepare_qat` swaps a
model's Linear layers for QATLinear in place, keeping the same weight and bias
Parameters, so an optimizer built before still updates them; a learned scale is a new
Parameter, so with ``learn_scale=True`` build the optimizer after prepare_qat.
:func:`convert` turns each QATLinear back into a plain Linear holding the dequantized
weight (a :class:`ActQuantLinear` when the activations were fake-quantized too), which
computes exactly what the QAT model computes in eval mode.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import Function, no_grad
from ..backends import to_host
from ..nn.layers import Linear
from ..nn.module import Module, Parameter, model_backend
from ..tensor import Tensor
from .affine import BITS, qparams_from_range, qrange
from .observers import MovingAverageMinMaxObserver, _KeepsValues

__all__ = ["ActQuantLinear", "FakeQuantize", "FakeQuantizeFunction", "QATLinear", "convert",
           "fake_quantize_ste", "prepare_qat"]


def _sum_to(g: Any, shape: tuple) -> Any:
    """Sum ``g`` over the axes along which an operand of ``shape`` was broadcast."""
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


class FakeQuantizeFunction(Function):
    """x̂ = s·(clamp(rint(x/s) + z, qmin, qmax) − z); s (and z) broadcast against x.

    Backward (straight-through): ∂x̂/∂x = 1 inside the clip range, 0 outside;
    ∂x̂/∂s (LSQ) = (q − z) − x/s inside, qmin − z / qmax − z at the clamps, times
    ``grad_scale``, summed to s's shape. z gets no gradient."""

    @staticmethod
    def forward(ctx: Any, x: Any, scale: Any, zero: Any, qmin: int, qmax: int,
                grad_scale: float = 1.0) -> Any:
        xp = ctx.xp
        s = xp.asarray(scale).astype(x.dtype)
        z = xp.asarray(zero).astype(x.dtype)
        v = xp.rint(x / s) + z
        q = xp.clip(v, qmin, qmax)
        ctx.inside = (v >= qmin) & (v <= qmax)
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(x, s, q, z)
            ctx.scale_shape, ctx.scale_dtype = xp.asarray(scale).shape, xp.asarray(scale).dtype
            ctx.grad_scale = grad_scale
        return s * (q - z)

    @staticmethod
    def backward(ctx: Any, gy: Any) -> Any:
        gx = gy * ctx.inside if ctx.needs_input_grad[0] else None
        gs = None
        if ctx.needs_input_grad[1]:
            x, s, q, z = ctx.saved
            d = ctx.xp.where(ctx.inside, (q - z) - x / s, q - z)
            gs = _sum_to(gy * d, ctx.scale_shape) * ctx.grad_scale
            gs = gs.reshape(ctx.scale_shape).astype(ctx.scale_dtype)
        # one gradient per positional argument given (grad_scale may be left out)
        return (gx, gs, None, None, None, None)[:len(ctx.needs_input_grad)]


def fake_quantize_ste(x: Tensor, scale: Any, zero: Any, bits: int, symmetric: bool,
                      grad_scale: float = 1.0) -> Tensor:
    """Differentiable fake quantization of ``x`` on the ``bits``-bit grid (straight-through
    gradient for x; LSQ gradient for ``scale`` when it is a Tensor that requires grad)."""
    qmin, qmax = qrange(bits, symmetric)
    return FakeQuantizeFunction.apply(x, scale, zero, qmin, qmax, grad_scale)


_GRANULARITIES = ("tensor", "channel", "group")


class FakeQuantize(Module):
    """Fake quantization with straight-through gradients and (s, z) that track the data.

    granularity "tensor": one (s, z) for the whole tensor, from ``observer`` (default a
    moving-average min/max, momentum 0.9) fed on every training forward; "channel": one
    per row of a 2-D (out, in) tensor, "group": one per row and per ``group_size``
    consecutive columns, both from the min/max of the current tensor (weights; they
    follow it in eval mode too, so the last optimizer step is seen).
    ``freeze_after``: after that many training forwards the qparams stay fixed (None:
    never). ``learn_scale``: s is a Parameter (LSQ), initialised from the first range
    and then trained (the observer is no longer consulted); z stays fixed. ``shape``:
    the shape of the tensor to quantize (needed for "channel" and "group")."""

    def __init__(self, bits: int = 8, symmetric: bool = False, granularity: str = "tensor",
                 group_size: int | None = None, shape: tuple | None = None,
                 observer: Any = None, learn_scale: bool = False,
                 freeze_after: int | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        if isinstance(bits, bool) or bits not in BITS:
            raise ValueError(f"FakeQuantize: bits={bits!r} is not supported (choose one of {BITS})")
        if granularity not in _GRANULARITIES:
            raise ValueError(f"FakeQuantize: granularity={granularity!r} is not one of "
                             f"{_GRANULARITIES}")
        if freeze_after is not None and (isinstance(freeze_after, bool)
                                         or not isinstance(freeze_after, int) or freeze_after < 0):
            raise ValueError(f"FakeQuantize: freeze_after={freeze_after!r} must be an integer "
                             f">= 0 or None")
        self.bits, self.symmetric, self.granularity = int(bits), bool(symmetric), granularity
        self.group_size = group_size
        self.learn_scale, self.freeze_after = bool(learn_scale), freeze_after
        self.steps = 0  # training forwards seen
        self.initialized = False
        self.observer = (observer if observer is not None or granularity != "tensor"
                         else MovingAverageMinMaxObserver(momentum=0.9))
        pshape = self._param_shape(shape)
        self.qmin, self.qmax = qrange(self.bits, self.symmetric)
        n_per_scale = (int(np.prod(shape)) // max(int(np.prod(pshape)), 1)) if shape else 1
        self.n_per_scale = n_per_scale  # LSQ's N; for "tensor" set from the first input
        if learn_scale:
            self.scale = Parameter(np.ones(pshape, dtype))
        else:
            self.register_buffer("scale", Tensor(np.ones(pshape, dtype)))
        self.register_buffer("zero", Tensor(np.zeros(pshape, dtype)))

    def _param_shape(self, shape: tuple | None) -> tuple:
        if self.granularity == "tensor":
            return ()
        if shape is None or len(shape) != 2:
            raise ValueError(f"FakeQuantize: {self.granularity} granularity needs the 2-D "
                             f"(out, in) shape of the tensor, got {shape!r}")
        out, n = shape
        if self.granularity == "channel":
            if self.group_size is not None:
                raise ValueError("FakeQuantize: group_size is only for granularity 'group'")
            return (out, 1)
        G = self.group_size
        if isinstance(G, bool) or not isinstance(G, int) or G < 1 or n % G:
            raise ValueError(f"FakeQuantize: group_size {G!r} does not divide in_features {n}")
        return (out, n // G, 1)

    @property
    def frozen(self) -> bool:
        """Whether the qparams no longer follow the data."""
        return (self.freeze_after is not None and self.steps >= self.freeze_after) or \
            (self.learn_scale and self.initialized)

    def _blocks(self, a: Any) -> Any:
        """``a`` shaped so that the (s, z) of shape ``scale.shape`` broadcast onto it."""
        if self.granularity == "group":
            return a.reshape(a.shape[0], -1, self.group_size)
        return a

    def _update_qparams(self, x: Tensor) -> None:
        # the ranges are reduced where x lives and only they reach the host (the qparams
        # are computed there), except for an observer that keeps the values themselves
        blocks = self._blocks(x.data)
        xp = x.backend.xp
        if self.granularity == "tensor":
            keeps = isinstance(self.observer, _KeepsValues)
            self.observer.observe(to_host(blocks if keeps else
                                          xp.stack([blocks.min(), blocks.max()])))
            s, z = self.observer.qparams(self.bits, self.symmetric)
            if self.n_per_scale == 1:
                self.n_per_scale = blocks.size
        else:
            lo_hi = to_host(xp.stack([blocks.min(axis=-1, keepdims=True),
                                      blocks.max(axis=-1, keepdims=True)]))
            s, z = qparams_from_range(lo_hi[0], lo_hi[1], self.bits, self.symmetric)
        # written into the buffers where they live (the device for a device layer)
        self.scale.data[...] = self.scale.backend.asarray(np.asarray(s).reshape(self.scale.shape))
        self.zero.data[...] = self.zero.backend.asarray(np.asarray(z).reshape(self.zero.shape))
        self.initialized = True

    def forward(self, x: Tensor) -> Tensor:
        # activation ranges are learned in training only; weight ranges (channel,
        # group) follow the current weight in eval too, until frozen
        follow = self.training or self.granularity != "tensor"
        if (follow and not self.frozen) or not self.initialized:
            self._update_qparams(x)
        if self.training:
            self.steps += 1
        grad_scale = 1.0
        if self.learn_scale:
            grad_scale = 1.0 / math.sqrt(self.n_per_scale * self.qmax)
            xp = self.scale.backend.xp
            self.scale.data[...] = xp.maximum(self.scale.data, np.finfo(self.scale.dtype).tiny)
        shape = x.shape
        scale = self.scale if self.learn_scale else self.scale.data
        y = FakeQuantizeFunction.apply(self._blocks(x), scale, self.zero.data, self.qmin,
                                       self.qmax, grad_scale)
        return y.reshape(shape) if self.granularity == "group" else y

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.group_size else ""
        return (f"bits={self.bits}, symmetric={self.symmetric}, granularity={self.granularity!r}"
                f"{g}, learn_scale={self.learn_scale}, freeze_after={self.freeze_after}")


class QATLinear(Module):
    """y = fq_a(x) fq_w(W)ᵀ + b: a Linear whose weight is fake-quantized per output
    channel (or per group of ``group_size`` input columns, symmetric by default) and whose
    input is fake-quantized per tensor (asymmetric, ``act_bits``; None: not at all).
    ``weight`` and ``bias`` are the Parameters of the Linear it wraps."""

    def __init__(self, linear: Linear, bits: int = 8, group_size: int | None = None,
                 act_bits: int | None = 8, symmetric: bool = True, learn_scale: bool = False,
                 freeze_after: int | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        dtype = linear.weight.dtype
        self.weight_fake_quant = FakeQuantize(
            bits, symmetric, "channel" if group_size is None else "group", group_size,
            shape=tuple(linear.weight.shape), learn_scale=learn_scale,
            freeze_after=freeze_after, dtype=dtype)
        self.act_fake_quant = None if act_bits is None else FakeQuantize(
            act_bits, False, "tensor", learn_scale=learn_scale, freeze_after=freeze_after,
            dtype=dtype)
        be = model_backend(linear)  # the qparams live where the weight does
        if be.xp is not np:
            for fq in (self.weight_fake_quant, self.act_fake_quant):
                if fq is not None:
                    fq.to(be.name)

    def forward(self, x: Tensor) -> Tensor:
        if self.act_fake_quant is not None:
            x = self.act_fake_quant(x)
        return F.linear(x, self.weight_fake_quant(self.weight), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class ActQuantLinear(Linear):
    """What :func:`convert` makes of a QATLinear with activation fake-quantization: a
    Linear (the dequantized weight) whose input goes through a frozen FakeQuantize."""

    def __init__(self, in_features: int, out_features: int, act_fake_quant: FakeQuantize,
                 bias: bool = True, dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias=bias, dtype=dtype)
        act_fake_quant.freeze_after = 0  # fixed from now on, even in training mode
        self.act_fake_quant = act_fake_quant

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.act_fake_quant(x))


def _skipped(name: str, skip: Any) -> bool:
    return any(name == s or name.endswith("." + s) for s in skip)


def _swap(model: Module, kind: type, make: Any, skip: Any = ()) -> list[str]:
    """Replace every submodule of exactly type ``kind`` (not in ``skip``) by
    ``make(module)``."""
    done = []
    for name, module in list(model.named_modules()):
        if type(module) is not kind or not name or _skipped(name, skip):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model
        for part in parent_name.split(".") if parent_name else ():
            parent = parent._modules[part]
        parent._modules[attr] = make(module)
        done.append(name)
    return done


def prepare_qat(model: Module, bits: int = 8, group_size: int | None = None,
                act_bits: int | None = 8, symmetric: bool = True, learn_scale: bool = False,
                freeze_after: int | None = None, skip: Any = ("head",)) -> Module:
    """Swap every Linear of ``model`` (but those named in ``skip``; the GPT ``head`` is
    tied to the token embedding) for a :class:`QATLinear`, in place, and return the model.
    The weight and bias Parameters are kept (an optimizer built before still holds
    them); with ``learn_scale`` the new scale Parameters need an optimizer built after."""
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"prepare_qat: bits={bits!r} is not supported (choose one of {BITS})")
    if act_bits is not None and (isinstance(act_bits, bool) or act_bits not in BITS):
        raise ValueError(f"prepare_qat: act_bits={act_bits!r} is not supported "
                         f"(choose one of {BITS} or None)")
    targets = [(n, m) for n, m in model.named_modules()
               if type(m) is Linear and n and not _skipped(n, skip)]
    for name, lin in targets:  # check every layer before changing any
        if group_size is not None and (isinstance(group_size, bool) or
                                       not isinstance(group_size, int) or group_size < 1
                                       or lin.in_features % group_size):
            raise ValueError(f"prepare_qat: group_size {group_size!r} does not divide "
                             f"in_features {lin.in_features} of layer {name}")
    _swap(model, Linear, lambda lin: QATLinear(lin, bits, group_size, act_bits, symmetric,
                                               learn_scale, freeze_after), skip)
    return model


def _converted(m: QATLinear) -> Linear:
    wfq = m.weight_fake_quant
    was = wfq.training
    wfq.eval()
    with no_grad():
        w = wfq(m.weight).data
    wfq.train(was)
    bias = m.bias is not None
    if m.act_fake_quant is None:
        lin = Linear(m.in_features, m.out_features, bias=bias, dtype=m.weight.dtype)
    else:
        lin = ActQuantLinear(m.in_features, m.out_features, m.act_fake_quant, bias=bias,
                             dtype=m.weight.dtype)
    lin.weight = Parameter(w.copy())
    if bias:
        lin.bias = m.bias
    return lin


def convert(model: Module) -> Module:
    """Replace every :class:`QATLinear` of ``model`` by a Linear whose weight is the
    fake-quantized (dequantized) weight with the current qparams (an
    :class:`ActQuantLinear` when its input was fake-quantized too), in place; the
    result computes what the QAT model computes in eval mode. Returns the model."""
    _swap(model, QATLinear, _converted)
    return model
