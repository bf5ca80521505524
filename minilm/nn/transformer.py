"""Transformer blocks and the GPT decoder-only language model.

Pre-LN block (GPT-2):   x = x + Dropout(Attn(LN1(x)));   x = x + Dropout(MLP(LN2(x)))
MLP:                    Linear(d, 4d) -> GELU -> Linear(4d, d)
GPT:                    logits = LN_f(blocks(E_tok[ids] + E_pos)) W_head^T
with W_head = E_tok when the input and output embeddings are tied.

Options of GPTConfig beyond the GPT-2 layout:

- ``attn_top_k = k``: top-k (hard) attention in every block, each query attending to its
  k highest-scoring allowed keys only (formula in minilm/nn/attention.py; ties at the
  k-th score all kept). k >= the number of allowed keys is ordinary attention.
- ``share_layers``: ALBERT-style cross-layer sharing, one block applied n_layers times,
  x <- Block_theta(x), L times. The parameters then do not grow with n_layers; the
  state_dict holds the one block under ``blocks.0.*`` (``self.blocks`` is a ModuleList
  of length 1, ``layer_blocks()`` the n_layers applications). Application l uses KV-cache
  layer l (the forward loop sets the block's ``attn.layer_index = l`` before it), so a
  cache holds n_layers layers as for an unshared model. The gradient of a shared
  parameter is the sum of its n_layers uses. Loading a checkpoint of the other layout
  is a ValueError saying so. Pipeline parallelism splits ``blocks`` into stages and
  cannot split one shared block: do not use it with share_layers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import checkpoint
from ..backends import current_backend
from ..tensor import Tensor
from . import init
from .attention import KVCache, MultiHeadAttention, RotaryEmbedding, sinusoidal_positions
from .layers import GELU, Dropout, Embedding, LayerNorm, Linear, RMSNorm
from .module import Module, ModuleList

__all__ = ["GPT", "GPTConfig", "MLP", "TransformerBlock"]


class MLP(Module):
    """Position-wise feed-forward network: Linear(d, d_ff) -> GELU -> Linear(d_ff, d)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, bias: bool = True,
                 activation: str = "gelu") -> None:
        super().__init__()
        self.fc = Linear(d_model, d_ff, bias=bias)
        self.act = GELU("tanh" if activation == "gelu_tanh" else "none")
        self.proj = Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


def _norm(kind: str, d: int) -> Module:
    if kind == "layernorm":
        return LayerNorm(d)
    if kind == "rmsnorm":
        return RMSNorm(d)
    raise ValueError(f"unknown norm {kind!r}; use 'layernorm' or 'rmsnorm'")


class TransformerBlock(Module):
    """Pre-LN transformer block: attention and MLP sublayers, each with a residual."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 bias: bool = True, causal: bool = True, window: int | None = None,
                 norm: str = "layernorm", activation: str = "gelu",
                 rope: RotaryEmbedding | None = None, layer_index: int = 0,
                 top_k: int | None = None) -> None:
        super().__init__()
        self.ln1 = _norm(norm, d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout, bias, causal=causal,
                                       window=window, rope=rope, layer_index=layer_index,
                                       top_k=top_k)
        self.ln2 = _norm(norm, d_model)
        self.mlp = MLP(d_model, d_ff, dropout, bias, activation)

    def forward(self, x: Tensor, key_padding_mask: Any = None, cache: KVCache | None = None,
                context_length: int | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), key_padding_mask=key_padding_mask, cache=cache,
                          context_length=context_length)
        return x + self.mlp(self.ln2(x))


def _whole(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


_POSITIONAL = ("learned", "sinusoidal", "rope")
_NORMS = ("layernorm", "rmsnorm")
_ACTIVATIONS = ("gelu", "gelu_tanh")  # MLP: exact GELU, or its tanh approximation

# field -> (kind, check, what is allowed); kind: int, float, bool or str. A field whose
# default is None (d_ff, window) may also be None. The same wording as the [model] keys
# of minilm.train.config.RULES (nn must not import train, so the table lives here).
_GPT_RULES: dict[str, tuple] = {
    "vocab_size": (int, lambda x: x >= 1, "an integer >= 1"),
    "context_length": (int, lambda x: x >= 1, "an integer >= 1"),
    "n_layers": (int, lambda x: x >= 1, "an integer >= 1"),
    "n_heads": (int, lambda x: x >= 1, "an integer >= 1"),
    "d_model": (int, lambda x: x >= 1, "an integer >= 1"),
    "d_ff": (int, lambda x: x >= 1, "an integer >= 1 (or None: 4 * d_model)"),
    "dropout": (float, lambda x: 0.0 <= x < 1.0, "a number in [0, 1)"),
    "bias": (bool, None, "True or False"),
    "positional": (str, lambda x: x in _POSITIONAL, "learned, sinusoidal or rope"),
    "tie_weights": (bool, None, "True or False"),
    "norm": (str, lambda x: x in _NORMS, "layernorm or rmsnorm"),
    "activation": (str, lambda x: x in _ACTIVATIONS, "gelu or gelu_tanh"),
    "window": (int, lambda x: x >= 1, "an integer >= 1 (or None: full causal attention)"),
    "init_std": (float, lambda x: 0.0 < x < math.inf, "a finite number > 0"),
    "checkpoint_activations": (bool, None, "True or False"),
    "attn_top_k": (int, lambda x: x >= 1, "an integer >= 1 (or None: ordinary attention)"),
    "share_layers": (bool, None, "True or False"),
}
_OPTIONAL = ("d_ff", "window", "attn_top_k")


def _checked(name: str, value: Any) -> Any:
    """``value`` of ``GPTConfig.<name>`` as a plain int/float/bool/str when its type and
    range are allowed; else TypeError (wrong type) or ValueError (out of range) naming
    the field, the value and what is allowed."""
    kind, check, allowed = _GPT_RULES[name]
    if value is None and name in _OPTIONAL:
        return None
    msg = f"GPTConfig.{name} = {value!r}: must be {allowed}"
    if kind is bool:
        ok = isinstance(value, (bool, np.bool_))
    elif kind is int:
        ok = _whole(value)
    elif kind is float:
        ok = _real(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise TypeError(msg)
    try:
        value = kind(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(msg) from None
    if check is not None and not check(value):  # NaN fails every comparison
        if name == "positional":  # the wording older callers match on
            msg = f"GPTConfig.positional = {value!r}: unknown, positional must be {allowed}"
        raise ValueError(msg)
    return value


@dataclass
class GPTConfig:
    """Shape and options of a GPT. ``positional``: learned | sinusoidal | rope."""

    vocab_size: int = 96
    context_length: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 256
    d_ff: int | None = None  # default 4 * d_model
    dropout: float = 0.0
    bias: bool = True
    positional: str = "learned"
    tie_weights: bool = True
    norm: str = "layernorm"
    activation: str = "gelu"
    window: int | None = None
    init_std: float = 0.02
    checkpoint_activations: bool = False
    attn_top_k: int | None = None  # top-k attention: keep each query's k largest scores
    share_layers: bool = False  # ALBERT: one block applied n_layers times

    def __post_init__(self) -> None:
        # every field's type and range, one table (_GPT_RULES); then what ties fields
        for f in fields(self):
            setattr(self, f.name, _checked(f.name, getattr(self, f.name)))
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        if self.d_model % self.n_heads:
            raise ValueError(f"GPTConfig.d_model = {self.d_model!r}: must be a multiple of "
                             f"n_heads ({self.d_model} is not divisible by n_heads "
                             f"{self.n_heads})")
        head = self.d_model // self.n_heads
        if self.positional == "rope" and head % 2:
            raise ValueError(f"GPTConfig.positional = 'rope': must have an even head size "
                             f"d_model / n_heads, got {self.d_model} / {self.n_heads} = {head}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class GPT(Module):
    """Decoder-only transformer language model (GPT-2 layout, pre-LN)."""

    def __init__(self, config: GPTConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        config = config if config is not None else GPTConfig(**kwargs)
        self.config = config
        c = config
        self.tok_emb = Embedding(c.vocab_size, c.d_model)
        rope = None
        if c.positional == "learned":
            self.pos_emb = Embedding(c.context_length, c.d_model)
        elif c.positional == "sinusoidal":
            self.register_buffer("pos_table", Tensor(
                sinusoidal_positions(c.context_length, c.d_model).astype(np.float32),
                backend=current_backend()), persistent=False)
        else:
            rope = RotaryEmbedding(c.d_model // c.n_heads, c.context_length)
            self.rope = rope
        self.drop = Dropout(c.dropout)
        self.blocks = ModuleList(  # one block when shared (applied n_layers times)
            TransformerBlock(c.d_model, c.n_heads, c.d_ff, c.dropout, c.bias, causal=True,
                             window=c.window, norm=c.norm, activation=c.activation, rope=rope,
                             layer_index=i, top_k=c.attn_top_k)
            for i in range(1 if c.share_layers else c.n_layers)
        )
        self.ln_f = _norm(c.norm, c.d_model)
        self.head = Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.head.weight = self.tok_emb.weight  # one Parameter, gradients summed
        self._init_weights()

    def _init_weights(self) -> None:
        """N(0, 0.02) for every matrix and embedding, zero biases, and GPT-2's
        scaled init std / sqrt(2 n_layers) for the projections into the residual."""
        c = self.config
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                init.zeros_(p)
            elif p.ndim == 2:
                std = c.init_std
                if name.endswith("out_proj.weight") or name.endswith("mlp.proj.weight"):
                    std = init.scaled_residual_std(c.init_std, c.n_layers)
                init.normal_(p, 0.0, std)

    def forward(self, ids: Tensor, targets: Tensor | None = None, cache: KVCache | None = None,
                key_padding_mask: Any = None, last_only: bool = False) -> Any:
        """Logits (B, T, vocab) for token ids (B, T); with ``targets``, (logits, loss)
        where loss is the mean cross-entropy of predicting targets (-100 ignored).
        ``last_only``: the logits of the last position only, (B, 1, vocab) (decoding
        needs no others: a long prompt then skips T - 1 rows of the LM head)."""
        if not isinstance(ids, Tensor):  # an array or a list: onto the model's backend
            ids = Tensor(ids, backend=self.tok_emb.weight.backend)
        if ids.ndim == 1:
            ids = ids.reshape(1, -1)
        B, T = ids.shape
        c = self.config
        offset = cache.length if cache is not None else 0
        if offset + T > c.context_length:
            raise ValueError(
                f"GPT: sequence of {offset + T} tokens exceeds the context length "
                f"{c.context_length}; crop the prompt to its last {c.context_length} tokens"
            )
        x = self.embed(ids, offset)
        shared = getattr(c, "share_layers", False)
        for i, block in enumerate(self.layer_blocks()):
            if shared and cache is not None:  # application i is cache layer i (the index
                block.attn.layer_index = i     # is read only with a cache: no threads then)
            if c.checkpoint_activations and self.training and cache is None:
                # the mask goes in with the block (a constant, not a differentiable input)
                x = checkpoint(partial(block, key_padding_mask=key_padding_mask), x)
            else:
                x = block(x, key_padding_mask=key_padding_mask, cache=cache,
                          context_length=c.context_length)
        if cache is not None:
            cache.advance(T)
        logits = self.logits(x[:, -1:] if last_only else x)
        if targets is None:
            return logits
        if not isinstance(targets, Tensor):
            targets = Tensor(targets, backend=logits.backend)
        return logits, self.loss(logits, targets)

    def layer_blocks(self) -> list:
        """The block of each of the n_layers applications, in order: ``list(blocks)``,
        or the shared block n_layers times (``share_layers``)."""
        if getattr(self.config, "share_layers", False):
            return [self.blocks[0]] * self.config.n_layers
        return list(self.blocks)

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> Any:
        """Module.load_state_dict, after checking (strict) that a checkpoint of one block
        (``share_layers=True``) is not loaded into an unshared model, nor one of several
        blocks into a shared model."""
        if strict and isinstance(state_dict, Mapping):
            n = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
            L = self.config.n_layers
            if getattr(self.config, "share_layers", False) and n > 1:
                raise ValueError(
                    f"GPT.load_state_dict: this model shares one block across its {L} "
                    f"layers (share_layers=True, keys blocks.0.*), the checkpoint has {n} "
                    f"separate blocks (blocks.0 .. blocks.{n - 1}): load it into a GPT with "
                    f"share_layers=False")
            if not getattr(self.config, "share_layers", False) and n == 1 and len(self.blocks) > 1:
                raise ValueError(
                    f"GPT.load_state_dict: this model has {len(self.blocks)} separate blocks, "
                    f"the checkpoint one (blocks.0.*), as a GPT with share_layers=True (or "
                    f"one layer) saves it: load it into a GPT with share_layers=True")
        return super().load_state_dict(state_dict, strict)

    # the forward pass in pieces: tensor- and pipeline-parallel models reuse them
    def embed(self, ids: Tensor, offset: int = 0) -> Tensor:
        """Token embeddings plus positions offset .. offset+T-1 (RoPE acts later, inside
        attention), then dropout."""
        T = ids.shape[-1]
        x = self.tok_emb(ids)
        if self.config.positional == "learned":
            x = x + self.pos_emb.positions(offset, T)
        elif self.config.positional == "sinusoidal":
            x = x + Tensor._make(self.pos_table.data[offset:offset + T].astype(x.dtype))
        return self.drop(x)

    def logits(self, h: Tensor) -> Tensor:
        """Logits of the final hidden states: LN_f(h) W_head^T."""
        return self.head(self.ln_f(h))

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean next-token cross-entropy (targets of -100 ignored)."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def extra_repr(self) -> str:
        return f"{self.num_parameters():,} parameters"
