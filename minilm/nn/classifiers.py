"""Text classifiers over padded batches of token ids, and DropConnectLinear.

Both classifiers take ``ids`` (B, T) integer token ids and ``mask`` (B, T) bool, True on
real tokens (as ``minilm.data.pad_sequences`` returns it; None = no padding), and return
logits (B, num_classes). Padding never changes a sequence's logits: a sequence alone
gives the same logits as inside a right-padded batch (tested to float64 rounding).

TextCNN (Kim 2014)::

    e = E[ids] * mask                        (B, T, d)   padded positions are zero vectors
    h_K = relu(conv1d_K(e^T))                (B, C, T + K - 1) for each width K ("wide"
                                             convolution: K - 1 zeros on both ends)
    z_K = max over real windows t of h_K     windows with at least one real token
    logits = W dropout([z_K1, z_K2, ...]) + b

With zeroed padding embeddings, a window that overlaps padding sees the same zeros as
the convolution's own zero padding around a lone sequence; windows made only of padding
are masked out of the max. Wide convolution also handles sequences shorter than K.

TransformerEncoderClassifier::

    x = E_tok[ids] + E_pos[0..T-1]           ("cls": a learned [CLS] vector at position 0,
                                             the tokens at 1..T)
    x = blocks(x) with bidirectional self-attention, padded keys masked (no causal mask)
    h = LN_f(x);  pooled = h[:, 0] ("cls") or the mean of h over real tokens ("mean")
    logits = W dropout(pooled) + b
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import functional as F
from ..creation import empty
from ..tensor import Tensor
from . import init
from .conv import Conv1d
from .layers import Dropout, Embedding, LayerNorm, Linear
from .module import Module, ModuleList, Parameter, model_backend
from .recurrent import GRU, LSTM
from .transformer import TransformerBlock

__all__ = ["DropConnectLinear", "RNNClassifier", "TextCNN", "TransformerEncoderClassifier"]


def _ids_and_mask(name: str, ids: Any, mask: Any, model: Module) -> tuple:
    """ids as an integer Tensor (B, T) (an array or list goes to ``model``'s backend) and
    mask as a bool array (B, T) on the ids' backend, or ValueError/TypeError naming the
    shapes."""
    if not isinstance(ids, Tensor):
        ids = Tensor(ids, backend=model_backend(model))
    if ids.ndim == 1:
        ids = ids.reshape(1, -1)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"{name}: ids must be integer (B, T), got {ids.dtype} {ids.shape}")
    if ids.shape[1] == 0:
        raise ValueError(f"{name}: ids has no tokens (shape {ids.shape})")
    xp = ids.backend.xp
    if mask is None:
        return ids, xp.ones(ids.shape, dtype=bool)
    raw = mask.data if isinstance(mask, Tensor) else ids.backend.asarray(mask)
    if raw.ndim == 1 and ids.shape[0] == 1:
        raw = raw.reshape(1, -1)
    if raw.dtype != bool or tuple(raw.shape) != tuple(ids.shape):
        raise ValueError(f"{name}: mask must be bool of the ids' shape {ids.shape}, got "
                         f"{raw.dtype} {tuple(raw.shape)}")
    if not bool(raw.any(axis=1).all()):
        empty_rows = [int(i) for i in (~raw.any(axis=1)).nonzero()[0]]
        raise ValueError(f"{name}: mask has no real token in rows {empty_rows}")
    return ids, raw


class TextCNN(Module):
    """Kim (2014) CNN for sentence classification: embedding, one Conv1d per width in
    ``kernel_sizes`` with ``num_filters`` filters and ReLU, masked max over time,
    concatenation, dropout, linear head (see the module docstring)."""

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 128,
                 num_filters: int = 100, kernel_sizes: Sequence[int] = (3, 4, 5),
                 dropout: float = 0.5, padding_idx: int | None = 0) -> None:
        super().__init__()
        kernel_sizes = tuple(kernel_sizes)
        if not kernel_sizes or any(not isinstance(k, int) or k < 1 for k in kernel_sizes):
            raise ValueError(f"TextCNN: kernel_sizes must be integers >= 1, got {kernel_sizes}")
        if num_classes < 2:
            raise ValueError(f"TextCNN: num_classes must be >= 2, got {num_classes}")
        self.kernel_sizes, self.num_classes = kernel_sizes, num_classes
        self.embedding = Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.convs = ModuleList(Conv1d(embed_dim, num_filters, k, padding=k - 1)
                                for k in kernel_sizes)
        self.dropout = Dropout(dropout)
        self.head = Linear(num_filters * len(kernel_sizes), num_classes)

    def features(self, ids: Any, mask: Any = None) -> Tensor:
        """The pooled features (B, num_filters * len(kernel_sizes)) before dropout."""
        ids, m = _ids_and_mask("TextCNN", ids, mask, self)
        e = self.embedding(ids)                                      # (B, T, d)
        e = e * Tensor._make(m[..., None].astype(e.dtype))           # padding -> 0
        x = e.transpose(1, 2)                                        # (B, d, T)
        pooled = []
        xp = ids.backend.xp
        for k, conv in zip(self.kernel_sizes, self.convs):
            h = F.relu(conv(x))                                      # (B, C, T + k - 1)
            # output t covers tokens t - k + 1 .. t: real if any of them is real
            padded = xp.pad(m, ((0, 0), (k - 1, k - 1)))
            real = xp.stack([padded[:, j:j + h.shape[-1]] for j in range(k)]).any(axis=0)
            pooled.append(F.global_max_pool1d(h, real))
        return F.cat(pooled, dim=1)

    def forward(self, ids: Any, mask: Any = None) -> Tensor:
        return self.head(self.dropout(self.features(ids, mask)))


class TransformerEncoderClassifier(Module):
    """Bidirectional transformer encoder with a classification head: token + learned
    position embeddings, ``n_layers`` pre-LN ``TransformerBlock``s with ``causal=False``
    and a key padding mask, a final LayerNorm, then ``pooling`` "cls" (a learned [CLS]
    vector prepended at position 0, its output taken) or "mean" (the mean of the outputs
    over real tokens), dropout and a linear head. ``max_len`` counts the [CLS] slot."""

    def __init__(self, vocab_size: int, num_classes: int, max_len: int = 512,
                 d_model: int = 128, n_heads: int = 4, n_layers: int = 2,
                 d_ff: int | None = None, dropout: float = 0.1, pooling: str = "cls",
                 padding_idx: int | None = 0) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"TransformerEncoderClassifier: pooling must be 'cls' or 'mean', "
                             f"got {pooling!r}")
        if num_classes < 2:
            raise ValueError(f"TransformerEncoderClassifier: num_classes must be >= 2, got "
                             f"{num_classes}")
        self.pooling, self.max_len, self.num_classes = pooling, max_len, num_classes
        self.tok_emb = Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.pos_emb = Embedding(max_len, d_model)
        self.cls = Parameter(empty(d_model)) if pooling == "cls" else None
        self.drop = Dropout(dropout)
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.blocks = ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout, causal=False, layer_index=i)
            for i in range(n_layers))
        self.ln_f = LayerNorm(d_model)
        self.head = Linear(d_model, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """N(0, 0.02) for embeddings, matrices and [CLS]; zero biases (BERT's init)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                init.zeros_(p)
            elif p.ndim == 2 or name == "cls":
                init.normal_(p, 0.0, 0.02)
        if self.tok_emb.padding_idx is not None:
            self.tok_emb.weight.data[self.tok_emb.padding_idx] = 0

    def encode(self, ids: Any, mask: Any = None) -> tuple:
        """(hidden states (B, T', d) after the final LayerNorm, bool mask (B, T')), with
        T' = T + 1 and the [CLS] slot first for ``pooling="cls"``."""
        name = type(self).__name__
        ids, m = _ids_and_mask(name, ids, mask, self)
        B, T = ids.shape
        x = self.tok_emb(ids)
        if self.cls is not None:
            cls = self.cls.reshape(1, 1, -1).expand(B, 1, self.cls.shape[0])
            x = F.cat([cls, x], dim=1)
            xp = ids.backend.xp
            m = xp.concatenate([xp.ones((B, 1), dtype=bool), m], axis=1)
            T += 1
        if T > self.max_len:
            raise ValueError(f"{name}: {T} positions (ids shape {ids.shape}"
                             f"{' plus [CLS]' if self.cls is not None else ''}) exceed "
                             f"max_len {self.max_len}; truncate the inputs")
        x = self.drop(x + self.pos_emb.positions(0, T))
        key_padding = None if bool(m.all()) else ~m  # True at padding: never attended
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding)
        return self.ln_f(x), m

    def forward(self, ids: Any, mask: Any = None) -> Tensor:
        h, m = self.encode(ids, mask)
        if self.pooling == "cls":
            pooled = h[:, 0]
        else:
            pooled = F.global_avg_pool1d(h.transpose(1, 2), m)
        return self.head(self.drop(pooled))


class RNNClassifier(Module):
    """Embedding, a (bidirectional) LSTM or GRU over the real tokens only (``lengths``
    from the mask), masked mean of its outputs over time, dropout, linear head::

        h_t = RNN(E[ids])_t                      (B, T, D H), 0 at padded steps
        pooled = sum_t mask_t h_t / sum_t mask_t
        logits = W dropout(pooled) + b
    """

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 64,
                 hidden_size: int = 64, num_layers: int = 1, cell: str = "lstm",
                 bidirectional: bool = True, dropout: float = 0.3,
                 padding_idx: int | None = 0) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"RNNClassifier: cell must be 'lstm' or 'gru', got {cell!r}")
        self.cell = cell
        self.embed = Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        rnn = LSTM if cell == "lstm" else GRU
        self.rnn = rnn(embed_dim, hidden_size, num_layers=num_layers, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.dropout = Dropout(dropout)
        self.head = Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, ids: Any, mask: Any = None) -> Tensor:
        ids, m = _ids_and_mask("RNNClassifier", ids, mask, self)
        lengths = m.sum(axis=1)
        out, _ = self.rnn(self.embed(ids), lengths=lengths)
        w = Tensor(m.astype(out.dtype)[..., None])
        pooled = (out * w).sum(dim=1) / Tensor(lengths.astype(out.dtype)[:, None])
        return self.head(self.dropout(pooled))


class DropConnectLinear(Linear):
    """Linear whose weight goes through DropConnect in training:
    y = x (W * M / (1 - p))^T + b, M ~ Bernoulli(1 - p) per weight, drawn once per
    forward and shared by the batch; y = x W^T + b in eval (Wan et al., 2013)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.5,
                 dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias, dtype)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"DropConnectLinear: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, F.drop_connect(self.weight, self.p, self.training), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"
