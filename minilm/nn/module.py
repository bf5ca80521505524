"""Module, Parameter and the containers (Sequential, ModuleList, ModuleDict).

A Module owns Parameters (leaf tensors that require grad), buffers (state that is
saved but not trained, such as a causal mask or running statistics) and child
Modules, registered simply by assigning them as attributes. Names are dotted paths
(``blocks.0.attn.qkv.weight``), the keys of ``state_dict()``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..autograd import RemovableHandle, no_grad
from ..backends import current_backend, is_device_array, to_host
from ..tensor import Tensor, dtype_of

__all__ = ["IncompatibleKeys", "Module", "ModuleDict", "ModuleList", "Parameter", "Sequential",
           "model_backend"]


def model_backend(module: Any) -> Any:
    """The backend of ``module``'s first parameter (or buffer): where its inputs must
    live and its dropout draws. The current backend for a module holding neither, or
    for a callable model that is not a Module (no ``parameters``)."""
    for t in getattr(module, "parameters", tuple)():
        return t.backend
    for _, t in getattr(module, "named_buffers", tuple)():
        if t is not None:
            return t.backend
    return current_backend()


class Parameter(Tensor):
    """A leaf tensor that a Module registers as trainable (``requires_grad=True``)."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad, backend=None)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of every layer and model; subclasses define ``forward``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", [])
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}: call super().__init__() before assigning attributes"
            )
        if name in self._buffers and (value is None or isinstance(value, Tensor)) \
                and not isinstance(value, Parameter):
            self._buffers[name] = value  # assigning to a buffer replaces it
            return
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
            return
        setattr(self, name, param)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """State saved with the module (unless ``persistent=False``) but not trained."""
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        self._modules[name] = module

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "", memo: set | None = None) -> Iterator[tuple]:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple]:
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, c in self.named_children():
            yield c

    def _named_members(self, store: str, prefix: str, recurse: bool,
                       remove_duplicate: bool = True) -> Iterator[tuple]:
        seen: set = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, mod in mods:
            for name, value in getattr(mod, store).items():
                if value is None:
                    continue
                if remove_duplicate:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple]:
        """(name, Parameter) pairs; a Parameter shared by several modules (tied
        weights) is yielded once, under its first name."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple]:
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, flag: bool = True) -> Module:
        """Freeze (``False``) or unfreeze every parameter of this module."""
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data[...] = 0

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call ``fn`` on every submodule (children first) and then on self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, target: Any) -> Module:
        """Move every parameter and buffer to a backend (``"cupy"``, ``"numpy"``) or
        cast floating ones to a dtype, in place (Parameters stay the same objects, so
        optimizers built before keep working)."""
        def convert(t: Tensor) -> Any:
            if isinstance(target, str) and target in ("numpy", "numba", "cupy", "cpu", "cuda"):
                return t.detach().to(target).data
            if t.dtype.kind != "f":
                return t.data
            return t.data.astype(dtype_of(target), copy=False)

        with no_grad():
            seen: set = set()
            for m in self.modules():
                for store in (m._parameters, m._buffers):
                    for t in store.values():
                        if t is None or id(t) in seen:
                            continue
                        seen.add(id(t))
                        t.data = convert(t)
                        if t.grad is not None:
                            t.grad = None
        return self

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    def half(self) -> Module:
        return self.to(np.float16)

    # ------------------------------------------------------------------ state dict
    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict:
        """Every parameter and persistent buffer by dotted name. Tied parameters
        appear under each of their names (all holding the same tensor)."""
        out: OrderedDict = OrderedDict()
        for mod_prefix, mod in self.named_modules(prefix.rstrip(".")):
            for store, skip in ((mod._parameters, set()), (mod._buffers, mod._non_persistent)):
                for name, t in store.items():
                    if t is None or name in skip:
                        continue
                    key = f"{mod_prefix}.{name}" if mod_prefix else name
                    out[key] = t if keep_vars else t.detach()
        return out

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy tensors from ``state_dict`` into this module's parameters and buffers.

        A value may be a Tensor, a NumPy/CuPy array or anything array-like (nested
        lists, scalars) of the parameter's shape; it is cast to the parameter's dtype.
        A value that is not numeric (strings, None, objects) is a TypeError naming its
        key. Every value is converted and its shape checked before anything is written,
        so an error leaves the module untouched. With ``strict`` (default), missing or
        unexpected keys are an error too; otherwise they are returned."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict into {type(self).__name__}: expected a dict of "
                            f"name -> tensor, got {type(state_dict).__name__}")
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = []
        arrays = {}
        for k, t in own.items():
            if k in state_dict:
                arr = _state_array(state_dict[k], k, t, type(self).__name__)
                if tuple(arr.shape) != t.shape:
                    mismatched.append(f"{k}: checkpoint {tuple(arr.shape)} vs model {t.shape}")
                arrays[k] = arr
        problems = []
        if mismatched:
            problems.append("shape mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + ". ".join(problems))
        with no_grad():
            for k, arr in arrays.items():
                t = own[k]
                t.data[...] = arr
                t._bump()
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def register_forward_hook(self, hook: Callable) -> RemovableHandle:
        """``hook(module, args, output)`` after each forward; a non-None return
        replaces the output (e.g. to record activations or to rewrite an output; nothing
        in minilm registers one itself). ``handle.remove()`` takes it off again."""
        self._forward_hooks.append(hook)
        return RemovableHandle(self._forward_hooks, hook)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.forward(*args, **kwargs)
        for hook in self._forward_hooks:
            r = hook(self, args, out)
            if r is not None:
                out = r
        return out

    # ------------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        head = f"{type(self).__name__}(" + (extra if extra else "")
        return head + "\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Applies its modules in order: ``Sequential(Linear(4, 8), ReLU(), Linear(8, 2))``."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of modules registered as children ``0, 1, …``."""

    def __init__(self, modules: Any = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Any) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i: Any) -> Any:
        items = list(self._modules.values())
        if isinstance(i, slice):
            return ModuleList(items[i])
        return items[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class ModuleDict(Module):
    """A dict of modules registered under their keys."""

    def __init__(self, modules: dict | None = None) -> None:
        super().__init__()
        for k, m in (modules or {}).items():
            self[k] = m

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def keys(self) -> Any:
        return self._modules.keys()

    def values(self) -> Any:
        return self._modules.values()

    def items(self) -> Any:
        return self._modules.items()


def _state_array(src: Any, key: str, target: Tensor, owner: str) -> Any:
    """``src`` (a state-dict value) as an array of ``target``'s backend, ready to copy
    in; a non-numeric value is a TypeError naming ``key``."""
    arr = src.data if isinstance(src, Tensor) else src
    xp = target.backend.xp
    across = is_device_array(arr) != (xp is not np)  # host -> device or device -> host
    if across or not isinstance(arr, xp.ndarray):  # lists, scalars, other backends: via host
        try:
            host = to_host(arr)
        except (ValueError, TypeError) as e:
            raise TypeError(f"load_state_dict into {owner}: value for {key!r} is not an array "
                            f"({type(src).__name__}: {e})") from None
        arr = xp.asarray(host)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"load_state_dict into {owner}: value for {key!r} is "
                        f"{type(src).__name__} of dtype {arr.dtype}; expected numbers of shape "
                        f"{target.shape}")
    return arr
