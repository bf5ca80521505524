"""Recurrent layers: ``RNN`` (tanh or relu), ``LSTM`` and ``GRU``, with PyTorch's
parameter names, gate order, shapes and initialisation, so that weights port by name.

All three share one driver (:class:`_RecurrentBase`): stacked layers, one or two
directions, dropout between layers (never after the last), ``batch_first``, initial
states and final states of shape (num_layers * num_directions, B, H), and padded
variable-length batches (``lengths`` or a bool ``mask``). A subclass only writes its
cell: one time step, composed from differentiable ops, so autograd gives the gradient.

Per layer and direction the input projection ``x W_ih^T + b_ih`` of every time step is
one matrix product over the whole sequence; only ``h W_hh^T`` and the gate arithmetic
run in the Python loop over time.

Padding. A step marked padding (t >= length, or mask False) leaves every state as it
was (``state = where(real, new_state, state)``) and its output is 0. So the forward
direction ends holding each sequence's state at its last real step, and the reverse
direction, walking t = T-1 .. 0, keeps its initial state until it reaches each
sequence's own last real token. Real positions get the same values as when the
sequence runs alone.

Truncated BPTT. Carry the final state of one chunk into the next as its initial state,
detached (:func:`detach_state`): the value carries over, the gradient stops at the
chunk boundary. See docs/recurrent.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from ..backends import to_host
from ..creation import empty
from ..tensor import Tensor
from . import init
from .module import Module, Parameter

__all__ = ["GRU", "LSTM", "RNN", "detach_state"]


def detach_state(state: Any) -> Any:
    """The recurrent state ``h`` or ``(h, c)`` cut from the graph (same values), for
    truncated backpropagation through time: ``state = detach_state(state)`` between
    chunks. ``None`` stays ``None``."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(detach_state(s) for s in state)


def _step_mask(name: str, lengths: Any, mask: Any, T: int, B: int,
               batch_first: bool) -> np.ndarray | None:
    """The (T, B) bool array of real steps from ``lengths`` (B,) or a bool ``mask``
    shaped like the input's first two dims; None when every step is real."""
    if lengths is not None and mask is not None:
        raise ValueError(f"{name}: pass lengths or mask, not both")
    if lengths is not None:
        lens = to_host(lengths)  # checks
        if lens.ndim != 1 or lens.shape[0] != B:
            raise ValueError(f"{name}: lengths must have shape ({B},) (one per sequence "
                             f"of the batch), got {lens.shape}")
        if lens.dtype.kind not in "iu":
            raise TypeError(f"{name}: lengths must be integers, got {lens.dtype}")
        if (lens <= 0).any() or (lens > T).any():
            raise ValueError(f"{name}: lengths must be in [1, {T}] (T = {T} time steps, "
                             f"input time dim), got {lens.tolist()}")
        steps = np.arange(T)[:, None] < lens[None, :]
    elif mask is not None:
        steps = to_host(mask)
        want = (B, T) if batch_first else (T, B)
        if steps.dtype != np.bool_ or steps.shape != want:
            raise ValueError(f"{name}: mask must be bool of shape {want} (the input's "
                             f"first two dims), got {steps.dtype} {steps.shape}")
        if batch_first:
            steps = steps.T
        if not steps.any(axis=0).all():
            empty_rows = np.flatnonzero(~steps.any(axis=0)).tolist()
            raise ValueError(f"{name}: mask has no real step for sequences {empty_rows}")
    else:
        return None
    return None if steps.all() else np.ascontiguousarray(steps)


class _RecurrentBase(Module):
    """The driver shared by RNN, LSTM and GRU. Subclasses set ``gates`` (row blocks of
    W_ih / W_hh), ``state_count`` (1 for h, 2 for h and c) and write ``_cell``."""

    gates = 1
    state_count = 1
    #: run each layer-direction as one fused op (functional/recurrent.py: a NumPy loop
    #: on the reference backend, a compiled one on Numba) instead of composing the
    #: per-step ``_cell`` from autograd ops; both give the same values and gradients
    fused = True

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, dtype: Any = None) -> None:
        super().__init__()
        name = type(self).__name__
        for what, v in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: {what} must be a positive int, got {v!r}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        self.num_directions = 2 if bidirectional else 1
        rows = self.gates * hidden_size
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * self.num_directions
            for d in range(self.num_directions):
                sfx = self._suffix(layer, d)
                setattr(self, "weight_ih" + sfx, Parameter(empty(rows, in_size, dtype=dtype)))
                setattr(self, "weight_hh" + sfx, Parameter(empty(rows, hidden_size, dtype=dtype)))
                if bias:
                    setattr(self, "bias_ih" + sfx, Parameter(empty(rows, dtype=dtype)))
                    setattr(self, "bias_hh" + sfx, Parameter(empty(rows, dtype=dtype)))
        self.reset_parameters()

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction else "")

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), as PyTorch."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _weights(self, layer: int, d: int) -> tuple:
        sfx = self._suffix(layer, d)
        w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, "bias_ih" + sfx), getattr(self, "bias_hh" + sfx)

    # ------------------------------------------------------------------ subclass hooks
    def _project(self, x: Tensor, w_ih: Tensor, b_ih: Any, b_hh: Any) -> Tensor:
        """The input part of the gates for all steps at once: x W_ih^T + b_ih + b_hh.
        (GRU keeps b_hh inside its step: b_hn sits inside r * (...).)"""
        b = b_ih + b_hh if b_ih is not None else None
        return F.linear(x, w_ih, b)

    def _cell(self, gx: Tensor, state: tuple, w_hh: Tensor, b_hh: Any) -> tuple:
        raise NotImplementedError

    def _sequence(self, gx: Tensor, state: tuple, w_hh: Tensor, b_hh: Any, keep: Any,
                  reverse: bool) -> tuple:
        """The fused form of the loop over ``_cell``: (hs (T, B, H), final state)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ checks
    def _check_input(self, x: Any) -> None:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
        layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
        layout += " or unbatched (T, input_size)"
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input of shape {x.shape} does not match "
                             f"{layout} with input_size={self.input_size}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name}: input of shape {x.shape} has an empty batch or time dim")
        if x.dtype != self.weight_ih_l0.dtype:
            raise TypeError(f"{name}: input dtype {x.dtype} does not match the parameters' "
                            f"{self.weight_ih_l0.dtype} (cast one of them)")

    def _initial_states(self, hx: Any, x: Tensor, B: int) -> list:
        """hx → one tuple of state tensors (each (B, H)) per layer and direction."""
        name = type(self).__name__
        L, H = self.num_layers * self.num_directions, self.hidden_size
        if hx is None:
            zero = Tensor(x.backend.xp.zeros((B, H), dtype=x.dtype))
            return [(zero,) * self.state_count] * L
        parts = (hx,) if self.state_count == 1 else hx
        if self.state_count == 1 and not isinstance(hx, Tensor):
            raise TypeError(f"{name}: hx must be a Tensor of shape {(L, B, H)}")
        if self.state_count == 2 and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"{name}: hx must be a tuple (h0, c0), each of shape {(L, B, H)}")
        for label, s in zip(("h0", "c0"), parts):
            if not isinstance(s, Tensor) or s.shape != (L, B, H):
                got = s.shape if isinstance(s, Tensor) else type(s).__name__
                raise ValueError(f"{name}: {label} must have shape (num_layers * "
                                 f"num_directions, B, hidden_size) = {(L, B, H)}, got {got} "
                                 f"(input shape {x.shape})")
            if s.dtype != x.dtype:
                raise TypeError(f"{name}: {label} dtype {s.dtype} does not match the "
                                f"input's {x.dtype}")
        per_state = [F.unbind(s, 0) for s in parts]
        return [tuple(ps[k] for ps in per_state) for k in range(L)]

    # ------------------------------------------------------------------ forward
    def forward(self, input: Tensor, hx: Any = None, lengths: Any = None,  # noqa: A002
                mask: Any = None) -> tuple:
        """Run the sequence ``input`` ((T, B, input_size), or (B, T, input_size) with
        batch_first) from the initial state ``hx`` (zeros if None).

        ``lengths`` (B,) ints in [1, T], or ``mask`` (bool, the input's first two dims,
        True at real steps): padded steps change no state and output 0.

        Returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``): output (T, B, D*H)
        (batch-first: (B, T, D*H)), the last layer's hidden state at every step, the two
        directions concatenated; h_n, c_n (num_layers * D, B, H), each layer's and
        direction's state after its last real step (D = 2 if bidirectional else 1).

        An unbatched sequence (T, input_size) with states (num_layers * D, H) runs as a
        batch of one and comes back without the batch dim, as in PyTorch.
        """
        if isinstance(input, Tensor) and input.ndim == 2:
            return self._forward_unbatched(input, hx, lengths, mask)
        return self._forward_batched(input, hx, lengths, mask)

    def _forward_unbatched(self, x: Tensor, hx: Any, lengths: Any, mask: Any) -> tuple:
        name = type(self).__name__
        if lengths is not None or mask is not None:
            raise ValueError(f"{name}: lengths and mask need a batched input, got an "
                             f"unbatched input of shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: unbatched input of shape {x.shape} does not match "
                             f"(T, input_size) with input_size={self.input_size}")
        want = (self.num_layers * self.num_directions, self.hidden_size)
        if hx is not None:
            parts = (hx,) if self.state_count == 1 else hx
            if self.state_count == 2 and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"{name}: hx must be a tuple (h0, c0), each of shape {want}")
            for label, s in zip(("h0", "c0"), parts):
                if not isinstance(s, Tensor) or s.shape != want:
                    got = s.shape if isinstance(s, Tensor) else type(s).__name__
                    raise ValueError(f"{name}: {label} of an unbatched input of shape "
                                     f"{x.shape} must have shape {want}, got {got}")
            parts = tuple(F.unsqueeze(s, 1) for s in parts)
            hx = parts[0] if self.state_count == 1 else parts
        bdim = 0 if self.batch_first else 1
        out, state = self._forward_batched(F.unsqueeze(x, bdim), hx, None, None)
        if self.state_count == 1:
            return F.squeeze(out, bdim), F.squeeze(state, 1)
        return F.squeeze(out, bdim), tuple(F.squeeze(s, 1) for s in state)

    def _forward_batched(self, input: Tensor, hx: Any, lengths: Any,  # noqa: A002
                         mask: Any) -> tuple:
        self._check_input(input)
        x = F.transpose(input, 0, 1) if self.batch_first else input
        T, B = x.shape[0], x.shape[1]
        steps = _step_mask(type(self).__name__, lengths, mask, T, B, self.batch_first)
        if steps is None:
            masks = keep = step_keep = None
        else:
            step_keep = x.backend.asarray(steps)
            masks = [Tensor(x.backend.asarray(steps[t, :, None])) for t in range(T)]
            keep = Tensor(x.backend.asarray(steps[:, :, None]))
            zero = Tensor(x.backend.xp.zeros((), dtype=x.dtype))
        states = self._initial_states(hx, x, B)
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                out, final = self._run_direction(x, states[k], self._weights(layer, d),
                                                 masks, step_keep, reverse=d == 1)
                outs.append(out)
                finals.append(final)
            x = outs[0] if len(outs) == 1 else F.cat(outs, dim=-1)
            if keep is not None:
                x = F.where(keep, x, zero)  # padded positions output 0
            if layer < self.num_layers - 1 and self.dropout > 0.0:
                x = F.dropout(x, self.dropout, self.training)
        output = F.transpose(x, 0, 1) if self.batch_first else x
        h_n = tuple(F.stack([f[i] for f in finals], dim=0) for i in range(self.state_count))
        return output, (h_n[0] if self.state_count == 1 else h_n)

    def _run_direction(self, x: Tensor, state: tuple, weights: tuple, masks: Any,
                       step_keep: Any, reverse: bool) -> tuple:
        """One layer, one direction: (T, B, H) outputs and the final state tuple."""
        w_ih, w_hh, b_ih, b_hh = weights
        if self.fused:
            gx = self._project(x, w_ih, b_ih, b_hh)  # (T, B, gates*H)
            return self._sequence(gx, state, w_hh, b_hh, step_keep, reverse)
        gx = F.unbind(self._project(x, w_ih, b_ih, b_hh), 0)  # T tensors (B, gates*H)
        T = len(gx)
        outs: list = [None] * T
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            new = self._cell(gx[t], state, w_hh, b_hh)
            if masks is not None:  # padded step: keep the state as it was
                new = tuple(F.where(masks[t], n, s) for n, s in zip(new, state))
            state = new
            outs[t] = state[0]
        return F.stack(outs, dim=0), state

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(_RecurrentBase):
    """Elman RNN, per layer and direction:

        h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu

    Parameters (PyTorch names): ``weight_ih_l{k}`` (H, in), ``weight_hh_l{k}`` (H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (H,), and ``..._reverse`` for the backward
    direction; all ~ U(-1/sqrt(H), 1/sqrt(H)). ``forward`` returns (output, h_n).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype)
        self.nonlinearity = nonlinearity

    def _cell(self, gx: Tensor, state: tuple, w_hh: Tensor, b_hh: Any) -> tuple:
        pre = gx + F.linear(state[0], w_hh)
        return (F.tanh(pre) if self.nonlinearity == "tanh" else F.relu(pre),)

    def _sequence(self, gx, state, w_hh, b_hh, keep, reverse):
        hs, h = F.rnn_sequence(gx, state[0], w_hh, keep, reverse, self.nonlinearity)
        return hs, (h,)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class LSTM(_RecurrentBase):
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with a forget gate),
    per layer and direction, gate rows in PyTorch's order i, f, g, o:

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate
        g_t = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     cell candidate
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    ``weight_ih_l{k}`` = [W_ii; W_if; W_ig; W_io] (4H, in), ``weight_hh_l{k}`` (4H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), ``..._reverse`` for the backward direction.
    ``hx`` is ``(h0, c0)``; ``forward`` returns (output, (h_n, c_n)).
    """

    gates = 4
    state_count = 2

    def _cell(self, gx: Tensor, state: tuple, w_hh: Tensor, b_hh: Any) -> tuple:
        h, c = state
        i, f, g, o = F.chunk(gx + F.linear(h, w_hh), 4, dim=-1)
        c = F.sigmoid(f) * c + F.sigmoid(i) * F.tanh(g)
        return F.sigmoid(o) * F.tanh(c), c

    def _sequence(self, gx, state, w_hh, b_hh, keep, reverse):
        hs, h, c = F.lstm_sequence(gx, state[0], state[1], w_hh, keep, reverse)
        return hs, (h, c)


class GRU(_RecurrentBase):
    """Gated recurrent unit (Cho et al. 2014) in PyTorch's formulation, per layer and
    direction, gate rows in the order r, z, n:

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)         reset gate
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)         update gate
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))    candidate
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    ``weight_ih_l{k}`` = [W_ir; W_iz; W_in] (3H, in), ``weight_hh_l{k}`` (3H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (3H,), ``..._reverse`` for the backward direction.
    ``forward`` returns (output, h_n).
    """

    gates = 3

    def _project(self, x: Tensor, w_ih: Tensor, b_ih: Any, b_hh: Any) -> Tensor:
        return F.linear(x, w_ih, b_ih)  # b_hn is multiplied by r: it stays in the step

    def _cell(self, gx: Tensor, state: tuple, w_hh: Tensor, b_hh: Any) -> tuple:
        h = state[0]
        xr, xz, xn = F.chunk(gx, 3, dim=-1)
        hr, hz, hn = F.chunk(F.linear(h, w_hh, b_hh), 3, dim=-1)
        r, z = F.sigmoid(xr + hr), F.sigmoid(xz + hz)
        n = F.tanh(xn + r * hn)
        return (n + z * (h - n),)  # = (1 - z) * n + z * h, one multiply fewer

    def _sequence(self, gx, state, w_hh, b_hh, keep, reverse):
        hs, h = F.gru_sequence(gx, state[0], w_hh, b_hh, keep, reverse)
        return hs, (h,)
