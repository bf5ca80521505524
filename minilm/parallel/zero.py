"""ZeRO stage 1: the optimizer state is sharded over the data-parallel ranks.

Adam keeps two numbers per parameter (m and v): with plain data parallelism every rank
holds all of them. ZeRO-1 (Rajbhandari et al., 2020) lays all parameters end to end in one
flat vector, pads it to a multiple of the world size W and gives rank r the r-th of W
equal slices; rank r keeps optimizer state, and updates parameters, only in its slice::

    flat parameters   [ tok_emb ....... | blocks.0.ln1.w | ... | ln_f.b | pad ]
    shards              rank 0 ........... | rank 1 ..................... |
                        (a shard may cut a parameter in two)

    step():  g_flat  <- every p.grad, end to end (this rank's local gradient)
             g_shard <- reduce_scatter(g_flat, sum) / W       my slice of the average
             the wrapped optimizer updates my slice of the parameters (its state is
                 only my slice's: 1/W of the memory)
             flat    <- allgather(my slice)                    everyone's new slices
             every parameter <- its part of flat

The wrapped optimizer (e.g. ``minilm.optim.AdamW``) runs unchanged on *shard
Parameters*: for each parameter that intersects my shard, a 1-D Parameter that is a view
into my shard of a flat master buffer, placed in the same parameter group as the original
(so per-group hyperparameters such as weight decay or lr apply exactly as in one
process). This is correct for optimizers whose update is elementwise (SGD, Adam, AdamW,
Adamax, RMSprop, Adagrad); one that looks at a whole tensor at once (LAMB's trust ratio,
Adafactor's factored moments) would see only a piece and must not be sharded this way.

Usage: ``model backward -> zero.step()``. ZeRO does its own gradient reduction (the
reduce-scatter moves half the data of an allreduce), so do *not* also average the
gradients with :class:`DataParallel`::

    broadcast from rank 0 at construction (so every rank starts equal)
    _, loss = model(x_my_half, y_my_half); loss.backward()
    zero.step(); zero.zero_grad()

If the gradients are already averaged (e.g. a DataParallel wrapper is in place for other
reasons), pass ``reduce_grads=False``: ``step()`` then takes its slice of the local
gradient without communicating.

After ``step()`` every parameter is updated and equal on all ranks; ``p.grad`` still
holds this rank's local gradient. Parameters with no gradient on any rank are skipped,
as a one-process optimizer skips them. The model's parameters are the source of truth:
the master slice is refreshed from them at every step (so ``load_state_dict`` on the
model, or clipping the parameters, just works); the master has the parameters' dtype.
Gradient clipping by global norm must be done on the averaged gradient, which only the
shards see: ``clip_grad_norm_`` on the local ``p.grad`` would be wrong under ZeRO.

``state_dict()`` is *consolidated*: a collective that gathers every shard and returns,
on every rank, exactly the dict the wrapped optimizer would have in one process (indices,
groups, full-shape buffers). ``load_state_dict`` takes such a dict (from this world size,
another one, or a one-process run) and keeps the slice of this rank: resharding is free.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..autograd import enable_grad, no_grad
from ..backends import is_device_array
from ..nn.module import Parameter
from ..optim.optimizer import Optimizer
from ..tensor import Tensor
from .comm import Communicator, world
from .data_parallel import check_same_layout

__all__ = ["Zero1Optimizer", "ZeroRedundancyOptimizer"]


class _Piece:
    """The part ``[a, b)`` (flat coordinates) of parameter ``index`` that is in my shard."""

    __slots__ = ("index", "group", "a", "b", "shard_param")

    def __init__(self, index: int, group: int, a: int, b: int, shard_param: Parameter) -> None:
        self.index, self.group, self.a, self.b = index, group, a, b
        self.shard_param = shard_param


class ZeroRedundancyOptimizer(Optimizer):
    """``ZeroRedundancyOptimizer(params, optimizer_class, comm=None, *, broadcast=True,
    reduce_grads=True, **optimizer_kwargs)`` (alias ``Zero1Optimizer``); see the module
    docstring. ``params`` are Parameters or param-group dicts as for any optimizer;
    ``optimizer_kwargs`` go to ``optimizer_class`` (``lr=..., weight_decay=...``).

    ``param_groups`` holds the original (whole) parameters and their hyperparameters:
    LR schedulers change them there, and ``step()`` passes them on to the shard
    optimizer ``self.optim``, whose ``state`` is this rank's slice."""

    def __init__(self, params: Any, optimizer_class: type, comm: Communicator | None = None, *,
                 broadcast: bool = True, reduce_grads: bool = True,
                 **optimizer_kwargs: Any) -> None:
        self._initialised = False
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError("ZeroRedundancyOptimizer: optimizer_class must be an Optimizer "
                            f"subclass (e.g. minilm.optim.AdamW), got {optimizer_class!r}")
        # validates the parameters and groups (hyperparameters are filled in below)
        super().__init__(params, {})
        self.comm = comm if comm is not None else world()
        self.reduce_grads = bool(reduce_grads)
        self._flat = [p for g in self.param_groups for p in g["params"]]
        dtypes = {np.dtype(p.dtype) for p in self._flat}
        if len(dtypes) != 1:
            raise TypeError(f"ZeroRedundancyOptimizer: all parameters must share one dtype, got "
                            f"{sorted(str(d) for d in dtypes)}")
        for p in self._flat:
            if is_device_array(p.data) or not isinstance(p.data, np.ndarray):
                raise TypeError("ZeroRedundancyOptimizer: parameters must be NumPy (host) "
                                f"arrays, got {type(p.data).__module__}.{type(p.data).__name__}")
        self.dtype = dtypes.pop()
        check_same_layout(self.comm, "ZeroRedundancyOptimizer",
                          [[list(p.shape), str(p.dtype), gi] for gi, g in
                           enumerate(self.param_groups) for p in g["params"]])
        W, r = self.comm.size, self.comm.rank
        self._offsets = []
        n = 0
        for p in self._flat:
            self._offsets.append(n)
            n += p.data.size
        self.numel = n
        self.shard_size = -(-n // W)              # ceil(n / W)
        self.padded_numel = self.shard_size * W
        self.lo = r * self.shard_size
        self.hi = self.lo + self.shard_size
        self._full = np.zeros(self.padded_numel, dtype=self.dtype)   # allgather target
        self._master = np.zeros(self.shard_size, dtype=self.dtype)   # my slice, updated
        self._gflat = np.zeros(self.padded_numel, dtype=self.dtype)  # local grads, flat
        self._gshard = np.zeros(self.shard_size, dtype=self.dtype)   # my averaged slice
        # the pieces of my shard, as Parameters viewing the master slice, grouped
        self._pieces: list[_Piece] = []
        inner_groups = []
        i = 0
        for gi, g in enumerate(self.param_groups):
            shard_params = []
            for p in g["params"]:
                o = self._offsets[i]
                a, b = max(o, self.lo), min(o + p.data.size, self.hi)
                if a < b:
                    sp = Parameter(self._master[a - self.lo:b - self.lo])
                    self._pieces.append(_Piece(i, gi, a, b, sp))
                    shard_params.append(sp)
                i += 1
            inner_groups.append({**{k: v for k, v in g.items() if k != "params"},
                                 "params": shard_params})
        self.optim = optimizer_class(inner_groups, **optimizer_kwargs)
        self.defaults = dict(self.optim.defaults)
        for g, ig in zip(self.param_groups, self.optim.param_groups):
            for k, v in ig.items():
                if k != "params":
                    g.setdefault(k, v)
        if broadcast and W > 1:
            with no_grad():
                self._flatten_params(self._full)
                self.comm.bcast(self._full, root=0)
                self._unflatten_params(self._full)
        self.reset_stats()
        self._initialised = True

    # ------------------------------------------------------------------ the step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        W = self.comm.size
        with no_grad():
            for g, ig in zip(self.param_groups, self.optim.param_groups):
                for k, v in g.items():
                    if k != "params":
                        ig[k] = v
            has = np.array([p.grad is not None for p in self._flat], dtype=np.int64)
            for p, o in zip(self._flat, self._offsets):
                n = p.data.size
                if p.grad is None:
                    self._gflat[o:o + n] = 0
                else:
                    if tuple(p.grad.shape) != p.shape:
                        raise ValueError(f"ZeroRedundancyOptimizer.step: a parameter of shape "
                                         f"{p.shape} has a gradient of shape {p.grad.shape}")
                    self._gflat[o:o + n] = p.grad.data.reshape(-1)
            t0 = time.perf_counter()
            if self.reduce_grads and W > 1:
                self.comm.allreduce(has)
                self.comm.reduce_scatter(self._gflat, self._gshard)
                self._gshard *= 1.0 / W
            else:
                self._gshard[...] = self._gflat[self.lo:self.hi]
            t1 = time.perf_counter()
            for pc in self._pieces:  # refresh my master slice from the model, attach grads
                p, o = self._flat[pc.index], self._offsets[pc.index]
                self._master[pc.a - self.lo:pc.b - self.lo] = p.data.reshape(-1)[pc.a - o:pc.b - o]
                sp = pc.shard_param
                sp.grad = Tensor._make(self._gshard[pc.a - self.lo:pc.b - self.lo]) \
                    if has[pc.index] else None
            self.optim.step()
            for pc in self._pieces:
                pc.shard_param.grad = None
            t2 = time.perf_counter()
            self.comm.allgather(self._master, self._full)
            self.stats["comm_s"] += (t1 - t0) + (time.perf_counter() - t2)
            self.stats["steps"] += 1
            self._unflatten_params(self._full)
        return loss

    def reset_stats(self) -> None:
        """``stats``: ``comm_s`` (seconds in the reduce-scatter and allgather, waiting
        included) and ``steps``, since construction or the last reset."""
        self.stats = {"comm_s": 0.0, "steps": 0}

    # ------------------------------------------------------------------ memory
    def state_bytes(self) -> int:
        """Bytes of optimizer state (moment buffers ...) held by this rank: about
        1/W of what the unsharded optimizer holds."""
        total = 0
        for s in self.optim.state.values():
            for v in s.values():
                if hasattr(v, "nbytes"):
                    total += int(v.nbytes)
        return total

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The consolidated state, in the wrapped optimizer's one-process layout (a
        collective: every rank must call it; every rank gets the whole dict)."""
        groups = Optimizer.state_dict(self)["param_groups"]  # numbering, hyperparameters
        inner = self.optim.state
        scalars: dict = {}
        arrays: dict = {}
        for pc in self._pieces:
            s = inner.get(pc.shard_param, {})
            for k, v in s.items():
                if hasattr(v, "shape") and v.shape != ():
                    if tuple(v.shape) != (pc.b - pc.a,):
                        raise NotImplementedError(
                            f"ZeroRedundancyOptimizer.state_dict: state {k!r} has shape "
                            f"{tuple(v.shape)}, not the piece's ({pc.b - pc.a},); only "
                            "elementwise optimizer state can be sharded")
                    arrays.setdefault(str(pc.index), []).append(k)
                else:
                    scalars.setdefault(str(pc.index), {})[k] = _jsonable(v)
        merged_scalars: dict = {}
        merged_arrays: dict = {}
        for part in self.comm.allgather_json({"scalars": scalars, "arrays": arrays}):
            for i, d in part["scalars"].items():
                merged_scalars.setdefault(int(i), {}).update(d)
            for i, keys in part["arrays"].items():
                merged_arrays.setdefault(int(i), set()).update(keys)
        keys = sorted({k for ks in merged_arrays.values() for k in ks})
        state: dict = {i: dict(d) for i, d in merged_scalars.items()}
        send = np.zeros(self.shard_size, dtype=self.dtype)
        for key in keys:
            send[...] = 0
            for pc in self._pieces:
                s = inner.get(pc.shard_param, {})
                if key in s:
                    send[pc.a - self.lo:pc.b - self.lo] = s[key]
            full = np.empty(self.padded_numel, dtype=self.dtype)
            self.comm.allgather(send, full)
            for i, ks in merged_arrays.items():
                if key in ks:
                    p, o = self._flat[i], self._offsets[i]
                    state.setdefault(i, {})[key] = full[o:o + p.data.size].reshape(p.shape).copy()
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a consolidated (one-process layout) state dict: this rank keeps its
        slice. Checks happen before anything changes."""
        name = "ZeroRedundancyOptimizer.load_state_dict"
        if not isinstance(state_dict, dict) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError(f"{name}: expected a dict with 'state' and 'param_groups'")
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(f"{name}: the state dict has {len(saved)} parameter groups, this "
                             f"optimizer has {len(self.param_groups)}")
        for gi, (sg, g) in enumerate(zip(saved, self.param_groups)):
            if len(sg["params"]) != len(g["params"]):
                raise ValueError(f"{name}: parameter group {gi} has {len(sg['params'])} "
                                 f"parameters in the state dict and {len(g['params'])} here")
        # saved index -> position in our flat order
        pos = {int(k): i for i, k in enumerate(k for sg in saved for k in sg["params"])}
        full_state = {pos[int(k)]: v for k, v in state_dict["state"].items()}
        shard_state: dict = {}
        shard_groups = []
        n = 0
        for gi, sg in enumerate(saved):
            ids = []
            for pc in self._pieces:
                if pc.group != gi:
                    continue
                entries = full_state.get(pc.index)
                if entries:
                    p, o = self._flat[pc.index], self._offsets[pc.index]
                    out = {}
                    for k, v in entries.items():
                        arr = v.data if isinstance(v, Tensor) else v
                        if hasattr(arr, "shape") and tuple(arr.shape) != ():
                            if tuple(arr.shape) != p.shape:
                                raise ValueError(f"{name}: state {k!r} of parameter "
                                                 f"{pc.index} has shape {tuple(arr.shape)}, "
                                                 f"the parameter has shape {p.shape}")
                            host = np.asarray(arr.get() if hasattr(arr, "get") else arr)
                            out[k] = host.reshape(-1)[pc.a - o:pc.b - o]
                        else:
                            out[k] = arr
                    shard_state[n] = out
                ids.append(n)
                n += 1
            shard_groups.append({**{k: v for k, v in sg.items() if k != "params"},
                                 "params": ids})
        self.optim.load_state_dict({"state": shard_state, "param_groups": shard_groups})
        for g, ig in zip(self.param_groups, self.optim.param_groups):
            for k, v in ig.items():
                if k != "params":
                    g[k] = v

    # ------------------------------------------------------------------ helpers
    def add_param_group(self, param_group: dict) -> None:
        if getattr(self, "_initialised", False):
            raise NotImplementedError("ZeroRedundancyOptimizer: parameter groups cannot be "
                                      "added after construction (the flat layout is fixed)")
        super().add_param_group(param_group)

    def _flatten_params(self, out: np.ndarray) -> None:
        for p, o in zip(self._flat, self._offsets):
            out[o:o + p.data.size] = p.data.reshape(-1)

    def _unflatten_params(self, flat: np.ndarray) -> None:
        for p, o in zip(self._flat, self._offsets):
            p.data[...] = flat[o:o + p.data.size].reshape(p.shape)
            p._version.value += 1

    def __repr__(self) -> str:
        return (f"ZeroRedundancyOptimizer({type(self.optim).__name__}, rank {self.comm.rank} "
                f"of {self.comm.size}: elements [{self.lo}, {min(self.hi, self.numel)}) of "
                f"{self.numel}, {self.state_bytes()} state bytes)")


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if hasattr(v, "shape") and v.shape == ():
        return np.asarray(v.get() if hasattr(v, "get") else v).item()
    return v


Zero1Optimizer = ZeroRedundancyOptimizer
