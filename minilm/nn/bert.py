"""BERT-family encoders (BERT, RoBERTa, MiniLM), their heads, and sentence embeddings.

Embeddings (one row of each table per token, then LayerNorm and dropout)::

    e_t = LN(E_word[id_t] + E_pos[offset + t] + E_type[type_t])

``offset`` is 0 for BERT and pad_id + 1 for RoBERTa (whose positions start after the
padding index); ``type_vocab_size = 0`` drops the token-type table.

Post-LN encoder block (the original Transformer's order, as BERT has it)::

    x = LN_1(x + Dropout(Attn(x)))           Attn: bidirectional multi-head attention,
    x = LN_2(x + Dropout(W_2 GELU(W_1 x)))   padding keys masked out

GELU is the exact x Phi(x) = x/2 (1 + erf(x / sqrt 2)) (``hidden_act = "gelu"``).
Pooler: p = tanh(W_p h_[CLS] + b_p). Masked-LM head: logits = LN(GELU(W_t h + b_t))
E_word^T + b (the decoder is the word-embedding table itself: tied). Sentence
embeddings (sentence-transformers' recipe): the mean of the last hidden states over
the real tokens, u = sum_t m_t h_t / max(sum_t m_t, 1e-9), then u / max(||u||_2, eps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..backends import to_host
from ..backends.threads import thread_map
from ..creation import zeros
from ..tensor import Tensor
from . import init
from .attention import MultiHeadAttention
from .layers import Dropout, Embedding, LayerNorm, Linear
from .module import Module, ModuleList, Parameter, model_backend
from .transformer import MLP

__all__ = [
    "BertConfig", "BertEmbeddings", "BertEncoder", "BertForMaskedLM",
    "BertForSequenceClassification", "BertLayer", "BertModel", "BertPooler",
    "SentenceEncoder", "mean_pool", "normalize", "pad_batch",
]

# Hugging Face ``hidden_act`` -> the MLP activation of minilm (exact or tanh GELU)
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_tanh": "gelu_tanh"}
_ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")


@dataclass
class BertConfig:
    """Shape and options of a BERT-family encoder (defaults: bert-base-uncased).

    ``position_offset``: index of the first position's row in the position table
    (RoBERTa: pad_token_id + 1, the table then has max_len + offset rows);
    ``type_vocab_size``: 0 for no token-type embeddings."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_offset: int = 0
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)):
                raise TypeError(f"BertConfig.{f.name} = {v!r}: must be an integer")
            if f.type == "float" and (not isinstance(v, (int, float, np.floating))
                                      or isinstance(v, bool)):
                raise TypeError(f"BertConfig.{f.name} = {v!r}: must be a number")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"BertConfig.{name} = {getattr(self, name)!r}: must be >= 1")
        for name in ("type_vocab_size", "position_offset"):
            if getattr(self, name) < 0:
                raise ValueError(f"BertConfig.{name} = {getattr(self, name)!r}: must be >= 0")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig.pad_token_id = {self.pad_token_id!r}: must be in "
                             f"[0, vocab_size {self.vocab_size})")
        if self.position_offset >= self.max_position_embeddings:
            raise ValueError(f"BertConfig.position_offset = {self.position_offset!r}: leaves no "
                             f"position of max_position_embeddings "
                             f"{self.max_position_embeddings}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig.{name} = {getattr(self, name)!r}: must be in [0, 1)")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"BertConfig.layer_norm_eps = {self.layer_norm_eps!r}: must be > 0")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig.hidden_size = {self.hidden_size}: must be a multiple "
                             f"of num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act = {self.hidden_act!r}: must be one of "
                             f"{', '.join(_ACTIVATIONS)}")

    @property
    def max_length(self) -> int:
        """The longest input sequence the position table holds."""
        return self.max_position_embeddings - self.position_offset

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_hf_config(cls, d: dict) -> BertConfig:
        """A config from a Hugging Face ``config.json`` dict (model_type bert, roberta,
        xlm-roberta, camembert; MiniLM checkpoints are model_type bert). RoBERTa's
        positions start at pad_token_id + 1. Relative position embeddings are refused."""
        if not isinstance(d, dict):
            raise TypeError(f"BertConfig.from_hf_config: expected a dict, got {type(d).__name__}")
        kind = d.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"BertConfig.from_hf_config: position_embedding_type {kind!r} is "
                             "not supported (only 'absolute')")
        known = {f.name for f in fields(cls)} - {"position_offset"}
        kwargs = {k: d[k] for k in known if k in d}
        if d.get("model_type") in _ROBERTA_TYPES:
            kwargs["position_offset"] = int(d.get("pad_token_id", 1)) + 1
        return cls(**kwargs)


def _padding_mask(attention_mask: Any, shape: tuple, backend: Any) -> Any:
    """The key padding mask (B, T), True at padding, of a (B, T) ``attention_mask``
    (1 = real token, 0 = padding) as an array of ``backend`` (the model's), or None when
    there is no padding."""
    if attention_mask is None:
        return None
    m = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
    m = backend.asarray(m) if backend.xp is not np else to_host(m)
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"BertModel: attention_mask {tuple(m.shape)} does not match "
                         f"input_ids {tuple(shape)}")
    pad = m == 0
    return pad if pad.any() else None


def _ids(x: Any, what: str, backend: Any) -> Tensor:
    """Token ids (a Tensor, or an array / list put on ``backend``) as a (B, T) Tensor."""
    t = x if isinstance(x, Tensor) else Tensor(x, dtype=np.int64, backend=backend)
    if t.ndim == 1:
        t = t.reshape(1, -1)
    if t.ndim != 2:
        raise ValueError(f"BertModel: {what} must be (batch, length), got shape {t.shape}")
    return t


class BertEmbeddings(Module):
    """e_t = Dropout(LN(E_word[id_t] + E_pos[offset + t] + E_type[type_t]))."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.word_embeddings = Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = (Embedding(c.type_vocab_size, c.hidden_size)
                                      if c.type_vocab_size else None)
        self.layer_norm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        c = self.config
        T = input_ids.shape[-1]
        if T > c.max_length:
            raise ValueError(f"BertEmbeddings: {T} tokens exceed the {c.max_length} positions of "
                             "the model; truncate the input")
        xp = self.position_embeddings.weight.backend.xp
        x = self.word_embeddings(input_ids)
        x = x + self.position_embeddings.positions(c.position_offset, T)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = Tensor._make(xp.zeros(input_ids.shape, dtype=np.int64))
            x = x + self.token_type_embeddings(token_type_ids)
        elif token_type_ids is not None:
            raise ValueError("BertEmbeddings: this model has no token types (type_vocab_size 0); "
                             "do not pass token_type_ids")
        return self.dropout(self.layer_norm(x))


class BertLayer(Module):
    """Post-LN block: x = LN_1(x + Attn(x)); x = LN_2(x + MLP(x)), MLP = W_2 GELU(W_1 x).

    The attention is minilm's MultiHeadAttention (non-causal, one fused qkv projection,
    ``out_proj`` followed by the hidden dropout); its attention probabilities drop with
    ``attention_probs_dropout_prob``."""

    def __init__(self, config: BertConfig, layer_index: int = 0) -> None:
        super().__init__()
        c = config
        self.attention = MultiHeadAttention(c.hidden_size, c.num_attention_heads,
                                            dropout=c.hidden_dropout_prob, causal=False,
                                            layer_index=layer_index)
        self.attention.dropout_p = c.attention_probs_dropout_prob  # BERT's two dropouts
        self.attention_norm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = MLP(c.hidden_size, c.intermediate_size, c.hidden_dropout_prob,
                       activation=_ACTIVATIONS[c.hidden_act])
        self.output_norm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: Tensor, key_padding_mask: Any = None) -> Tensor:
        x = self.attention_norm(x + self.attention(x, key_padding_mask=key_padding_mask))
        return self.output_norm(x + self.mlp(x))


class BertEncoder(Module):
    """``num_hidden_layers`` BertLayers applied in turn."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layers = ModuleList(BertLayer(config, i) for i in range(config.num_hidden_layers))

    def forward(self, x: Tensor, key_padding_mask: Any = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, key_padding_mask=key_padding_mask)
        return x


class BertPooler(Module):
    """p = tanh(W h_0 + b): a dense layer on the first ([CLS]) token's hidden state."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return F.tanh(self.dense(hidden[:, 0]))


class BertModel(Module):
    """The encoder: embeddings, post-LN blocks, and (``add_pooling_layer``) the pooler.

    ``forward(input_ids, attention_mask=None, token_type_ids=None)`` with ids (B, T)
    and the mask (B, T) 1 at real tokens, 0 at padding, returns ``(sequence_output
    (B, T, H), pooled (B, H) or None)`` (None also with ``pool=False``, which skips the
    pooler for callers that discard it). Padding keys are never attended to, so the
    outputs at real positions do not depend on how much padding follows."""

    def __init__(self, config: BertConfig | None = None, add_pooling_layer: bool = True,
                 **kwargs: Any) -> None:
        super().__init__()
        config = config if config is not None else BertConfig(**kwargs)
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        init_bert_weights(self, config)

    def forward(self, input_ids: Any, attention_mask: Any = None,
                token_type_ids: Any = None, pool: bool = True) -> tuple:
        be = model_backend(self)
        input_ids = _ids(input_ids, "input_ids", be)
        if token_type_ids is not None:
            token_type_ids = _ids(token_type_ids, "token_type_ids", be)
            if token_type_ids.shape != input_ids.shape:
                raise ValueError(f"BertModel: token_type_ids {token_type_ids.shape} does not "
                                 f"match input_ids {input_ids.shape}")
        kpm = _padding_mask(attention_mask, input_ids.shape, be)
        h = self.encoder(self.embeddings(input_ids, token_type_ids), key_padding_mask=kpm)
        return h, (self.pooler(h) if pool and self.pooler is not None else None)

    def extra_repr(self) -> str:
        return f"{self.num_parameters():,} parameters"


def init_bert_weights(model: Module, config: BertConfig) -> None:
    """BERT's initialisation: N(0, initializer_range) for every matrix and embedding
    table, zero biases, LayerNorm weight 1 and bias 0, the padding row zero."""
    norms = {id(m.weight) for m in model.modules() if isinstance(m, LayerNorm)}
    for p in model.parameters():
        if id(p) in norms:
            init.ones_(p)
        elif p.ndim == 1:
            init.zeros_(p)
        else:
            init.normal_(p, 0.0, config.initializer_range)
    for m in model.modules():
        if isinstance(m, Embedding) and m.padding_idx is not None:
            m.weight.data[m.padding_idx] = 0


class BertForMaskedLM(Module):
    """Masked-LM head on the encoder: logits = LN(GELU(W_t h + b_t)) E_word^T + b, with
    the decoder matrix the word-embedding table itself (one Parameter: tied).
    ``forward(..., labels)`` also returns the mean cross-entropy over the positions
    whose label is not -100."""

    def __init__(self, config: BertConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        config = config if config is not None else BertConfig(**kwargs)
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.transform = Linear(config.hidden_size, config.hidden_size)
        self.transform_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder_bias = Parameter(zeros(config.vocab_size))  # on the current backend
        init_bert_weights(self.transform, config)

    @property
    def decoder_weight(self) -> Parameter:
        """The output matrix (vocab, H): the word-embedding table."""
        return self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                labels: Any = None) -> Any:
        h, _ = self.bert(input_ids, attention_mask, token_type_ids)
        act = "tanh" if _ACTIVATIONS[self.config.hidden_act] == "gelu_tanh" else "none"
        z = self.transform_norm(F.gelu(self.transform(h), act))
        logits = F.linear(z, self.decoder_weight, self.decoder_bias)
        if labels is None:
            return logits
        labels = _ids(labels, "labels", logits.backend)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=-100)
        return logits, loss


class BertForSequenceClassification(Module):
    """logits = W Dropout(pooled) + b on the pooler's output; with ``labels``,
    (logits, mean cross-entropy)."""

    def __init__(self, config: BertConfig | None = None, num_labels: int = 2,
                 classifier_dropout: float | None = None, **kwargs: Any) -> None:
        super().__init__()
        config = config if config is not None else BertConfig(**kwargs)
        if num_labels < 1:
            raise ValueError(f"BertForSequenceClassification: num_labels must be >= 1, "
                             f"got {num_labels}")
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config, add_pooling_layer=True)
        p = config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
        self.dropout = Dropout(p)
        self.classifier = Linear(config.hidden_size, num_labels)
        init_bert_weights(self.classifier, config)

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                labels: Any = None) -> Any:
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(pooled))
        if labels is None:
            return logits
        labels = labels if isinstance(labels, Tensor) else \
            Tensor(labels, dtype=np.int64, backend=logits.backend)
        return logits, F.cross_entropy(logits, labels.reshape(-1))


# ------------------------------------------------------------------ sentence embeddings
def pad_batch(ids: Sequence[Sequence[int]], rows: Sequence[int], pad_id: int) -> tuple:
    """``(input_ids, attention_mask)``, each (len(rows), L) int64: the id lists
    ``ids[r]`` of ``rows``, right-padded with ``pad_id`` to the longest (L); the mask is
    1 at real tokens."""
    L = max(len(ids[r]) for r in rows)
    b = np.full((len(rows), L), pad_id, dtype=np.int64)
    m = np.zeros((len(rows), L), dtype=np.int64)
    for j, r in enumerate(rows):
        b[j, :len(ids[r])] = ids[r]
        m[j, :len(ids[r])] = 1
    return b, m


def mean_pool(hidden: Tensor, attention_mask: Any) -> Tensor:
    """u = sum_t m_t h_t / max(sum_t m_t, 1e-9): the mean of ``hidden`` (B, T, H) over
    the real tokens of ``attention_mask`` (B, T) (1 = real). Differentiable in hidden."""
    m = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
    xp = hidden.backend.xp
    m = Tensor._make(xp.asarray(m).astype(hidden.dtype)[..., None])
    return (hidden * m).sum(dim=1) / F.clamp(m.sum(dim=1), min=1e-9)


def normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """x / max(||x||_2, eps) along the last dim (unit rows; a zero row stays zero)."""
    return x / F.clamp(F.sqrt((x * x).sum(dim=-1, keepdim=True)), min=eps)


class SentenceEncoder(Module):
    """Sentence embeddings from a BertModel and its tokenizer, as sentence-transformers
    computes them: tokenize (truncated at ``max_length`` tokens, [CLS]/[SEP] included),
    run the encoder on padded batches, mean-pool the last hidden states over the real
    tokens (or take [CLS] with ``pooling="cls"``), L2-normalise.

    The tokenizer needs ``batch_encode(texts, max_length=...)`` returning a dict with
    "input_ids", "attention_mask" and "token_type_ids" (B, L) arrays, as
    minilm.data.wordpiece.WordPieceTokenizer has."""

    def __init__(self, bert: BertModel, tokenizer: Any = None, max_length: int | None = None,
                 pooling: str = "mean", normalize: bool = True) -> None:
        super().__init__()
        if max_length is None:  # sentence-transformers' max_seq_length for MiniLM
            max_length = min(256, bert.config.max_length)
        if pooling not in ("mean", "cls"):
            raise ValueError(f"SentenceEncoder: pooling must be 'mean' or 'cls', got {pooling!r}")
        if not 1 <= max_length <= bert.config.max_length:
            raise ValueError(f"SentenceEncoder: max_length {max_length} must be in [1, "
                             f"{bert.config.max_length}] (the model's positions)")
        self.bert = bert
        self.tokenizer = tokenizer
        self.max_length, self.pooling, self.normalize = max_length, pooling, normalize
        self.eval()

    @property
    def config(self) -> BertConfig:
        return self.bert.config

    @property
    def dim(self) -> int:
        """The embedding size."""
        return self.bert.config.hidden_size

    def forward(self, input_ids: Any, attention_mask: Any = None,
                token_type_ids: Any = None) -> Tensor:
        """Pooled (and, with ``normalize``, unit-length) embeddings (B, H) of a padded
        batch; differentiable (for fine-tuning)."""
        input_ids = _ids(input_ids, "input_ids", model_backend(self))
        if attention_mask is None:
            attention_mask = np.ones(input_ids.shape, dtype=np.int64)
        h, _ = self.bert(input_ids, attention_mask, token_type_ids, pool=False)
        u = mean_pool(h, attention_mask) if self.pooling == "mean" else h[:, 0]
        return normalize(u) if self.normalize else u

    def _run(self, row_batches: list, inputs: Callable, n: int, normalize_: bool,
             threads: int | None) -> np.ndarray:
        """Embeddings of ``n`` rows: each batch of row indices becomes model inputs
        (``inputs(rows) -> (ids, mask, types)``, tokenizing if need be) and one no-grad
        forward. Batches are spread over threads (``minilm.backends.thread_map``: each
        thread a whole batch, its kernels single-threaded), longest first."""
        out = np.zeros((n, self.dim), dtype=np.float32)
        was_training, was_normalize = self.training, self.normalize
        self.eval()
        self.normalize = normalize_

        def one(rows: list) -> None:
            with no_grad():
                e = self.forward(*inputs(rows)).data
            out[rows] = to_host(e).astype(np.float32, copy=False)

        try:
            thread_map(one, row_batches, threads)
        finally:
            self.normalize = was_normalize
            self.train(was_training)
        return out

    def encode_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 32,
                   normalize: bool | None = None, threads: int | None = None) -> np.ndarray:
        """Embeddings (n, H) float32 of already tokenized sequences (lists of ids with
        their special tokens), right-padded per batch of ``batch_size``; ``threads`` as
        in :meth:`encode`."""
        ids = [list(map(int, s)) for s in ids]
        too_long = [i for i, s in enumerate(ids) if len(s) > self.bert.config.max_length]
        if too_long:
            raise ValueError(f"SentenceEncoder.encode_ids: sequences {too_long} are longer than "
                             f"the model's {self.bert.config.max_length} positions")
        if any(not s for s in ids):
            raise ValueError("SentenceEncoder.encode_ids: an empty id sequence (it needs at "
                             "least [CLS] and [SEP])")
        _check_batch_size("encode_ids", batch_size)
        pad = self.bert.config.pad_token_id
        return self._run(list(_length_batches([len(s) for s in ids], batch_size)),
                         lambda rows: (*pad_batch(ids, rows, pad), None), len(ids),
                         self.normalize if normalize is None else normalize, threads)

    def encode(self, texts: str | Sequence[str], batch_size: int = 32,
               max_length: int | None = None, normalize: bool | None = None,
               threads: int | None = None) -> np.ndarray:
        """Embeddings (n, H) float32 of ``texts`` (a single string gives (H,)), each text
        tokenized with [CLS]/[SEP] and truncated at ``max_length`` tokens (default the
        model's, 256 for all-MiniLM-L6-v2); unit length unless ``normalize=False``.
        Texts are batched by length (less padding) and returned in the given order.

        On the CPU backends the batches are spread over ``threads`` threads (default
        :func:`minilm.get_num_threads`), each computing whole batches with one-thread
        kernels: faster than splitting every GEMM (docs/performance.md, "Who owns the
        cores"). The result does not depend on ``threads``."""
        if self.tokenizer is None:
            raise ValueError("SentenceEncoder.encode: no tokenizer; pass one to the "
                             "constructor or use encode_ids")
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"SentenceEncoder.encode: texts {bad} are not strings")
        _check_batch_size("encode", batch_size)
        max_length = self.max_length if max_length is None else max_length
        if not 2 <= max_length <= self.bert.config.max_length:
            raise ValueError(f"SentenceEncoder.encode: max_length {max_length} must be in [2, "
                             f"{self.bert.config.max_length}]")
        use_types = self.bert.config.type_vocab_size > 0

        def inputs(rows: list) -> tuple:
            enc = self.tokenizer.batch_encode([texts[r] for r in rows], max_length=max_length)
            types = np.asarray(enc["token_type_ids"], np.int64) if use_types else None
            return (np.asarray(enc["input_ids"], np.int64),
                    np.asarray(enc["attention_mask"], np.int64), types)

        out = self._run(list(_length_batches([len(t) for t in texts], batch_size)), inputs,
                        len(texts), self.normalize if normalize is None else normalize, threads)
        return out[0] if single else out

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, max_length={self.max_length}, pooling={self.pooling!r}, "
                f"normalize={self.normalize}")


def _check_batch_size(method: str, batch_size: Any) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"SentenceEncoder.{method}: batch_size must be an integer >= 1, "
                         f"got {batch_size!r}")


def _length_batches(lengths: list, batch_size: int) -> Any:
    """Row indices in batches of ``batch_size``, longest first (similar lengths share a
    batch, so little padding); a list per batch."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for s in range(0, len(order), batch_size):
        yield order[s:s + batch_size]
