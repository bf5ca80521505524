"""Sequence-to-sequence models with attention: an encoder-decoder Transformer and an
LSTM encoder-decoder with additive (Bahdanau) attention, trained with teacher forcing
and decoded greedily or with beam search. docs/seq2seq.md has the diagrams.

Both models read a source x_1..x_S (padded batches: ``src_mask`` (B, S) True at real
tokens; None means ``src_ids != pad_id``) and model the target y_1..y_T one token at a
time, p(y_t | y_<t, x). The decoder's input is the target shifted right behind <bos>:

    teacher forcing:  logits = model(src, src_mask, [<bos>, y_1, .., y_{T-1}])
                      loss   = mean_t  -log p(y_t | y_<t, x)          (y_T = <eos>)

Decoding (``greedy_decode``, ``beam_decode``, one implementation for both models over
three hooks: ``_begin`` encodes the source, ``_step`` feeds one token per row and
returns log p(. | prefix, x) and the step's attention weights, ``_reorder`` keeps the
rows a beam search selects):

    greedy:  y_t = argmax_v log p(v | y_<t, x), until <eos> or max_len
    beam:    keep the K prefixes with the best  score(y) = log p(y | x) / |y|^alpha
             (alpha = length_penalty; a finished prefix keeps its score and length)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..backends import current_backend, to_host
from ..tensor import Tensor
from .attention import KVCache, MultiHeadAttention, RotaryEmbedding, sinusoidal_positions
from .layers import Dropout, Embedding, LayerNorm, Linear
from .module import Module, ModuleList, model_backend
from .recurrent import LSTM
from .transformer import MLP, TransformerBlock

__all__ = ["LSTMSeq2Seq", "TransformerSeq2Seq"]


def _ids(x: Any, name: str) -> np.ndarray:
    """Token ids as an int64 array (B, L) (a 1-D input is one sequence)."""
    a = to_host(x)  # host ids (a device array copied)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0 or a.dtype.kind not in "iu":
        raise ValueError(f"{name}: ids must be integers of shape (B, L) with L >= 1, got "
                         f"{a.dtype} {a.shape}")
    return a.astype(np.int64, copy=False)


def _src_mask(src: np.ndarray, src_mask: Any, pad_id: int, name: str) -> np.ndarray:
    """The (B, S) bool mask, True at real source tokens; every row needs one."""
    if src_mask is None:
        mask = src != pad_id
    else:
        mask = to_host(src_mask)
        if mask.ndim == 1:
            mask = mask[None, :]
        if mask.dtype != np.bool_ or mask.shape != src.shape:
            raise ValueError(f"{name}: src_mask must be bool of the source's shape "
                             f"{src.shape}, got {mask.dtype} {mask.shape}")
    if not mask.any(axis=1).all():
        raise ValueError(f"{name}: source rows {np.flatnonzero(~mask.any(axis=1)).tolist()} "
                         "have no real token")
    return mask


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class _Seq2SeqDecoding:
    """Greedy and beam decoding, shared by both models through three hooks:
    ``_begin(src, mask) -> state`` (a dict), ``_step(state, tokens (N,)) -> (log-probs
    (N, V), attention (N, S) or None)`` and ``_reorder(state, rows)``. The attention is
    computed and copied only when ``state["attention"]`` (the caller asked for it)."""

    pad_id: int
    bos_id: int
    eos_id: int
    max_tgt_len: int

    def _next_logp(self, state: Any, tokens: np.ndarray) -> tuple:
        """_step, with <pad> and <bos> forbidden (never a target, so never an output)."""
        logp, w = self._step(state, tokens)
        logp[:, [self.pad_id, self.bos_id]] = -np.inf
        return logp, w

    def _decode_len(self, max_len: int | None, name: str) -> int:
        max_len = self.max_tgt_len if max_len is None else int(max_len)
        if not 1 <= max_len <= self.max_tgt_len:
            raise ValueError(f"{name}: max_len must be in [1, {self.max_tgt_len}] "
                             f"(max_tgt_len), got {max_len}")
        return max_len

    @no_grad()
    def greedy_decode(self, src_ids: Any, max_len: int | None = None, src_mask: Any = None,
                      return_attention: bool = False) -> Any:
        """y_t = argmax log p(. | y_<t, x) until every row emitted <eos> or ``max_len``
        tokens. Returns ids (B, L) int64 (<eos> included, <pad> after it) and, with
        ``return_attention``, the attention weights (B, L, S) of each output token."""
        src = _ids(src_ids, "greedy_decode")
        mask = _src_mask(src, src_mask, self.pad_id, "greedy_decode")
        max_len = self._decode_len(max_len, "greedy_decode")
        was_training = self.training
        self.eval()
        try:
            state = self._begin(src, mask)
            state["attention"] = return_attention
            tokens = np.full(src.shape[0], self.bos_id, dtype=np.int64)
            done = np.zeros(src.shape[0], dtype=bool)
            out, attn = [], []
            for _ in range(max_len):
                logp, w = self._next_logp(state, tokens)
                tokens = np.where(done, self.pad_id, logp.argmax(axis=-1))
                out.append(tokens)
                if return_attention:
                    attn.append(w)
                done |= tokens == self.eos_id
                if done.all():
                    break
        finally:
            self.train(was_training)
        ids = np.stack(out, axis=1)
        return (ids, np.stack(attn, axis=1)) if return_attention else ids

    @no_grad()
    def beam_decode(self, src_ids: Any, beam_size: int = 4, max_len: int | None = None,
                    length_penalty: float = 1.0, src_mask: Any = None,
                    return_attention: bool = False) -> Any:
        """Beam search, every source row at once (B * K decoder rows). Each step extends
        the K prefixes of a row by every token and keeps the K best candidates by

            score = log p(y_1..y_n | x) / n^alpha,   alpha = ``length_penalty``

        (alpha = 0: the plain sum, which favours short outputs; 1: per-token mean). A
        prefix that emitted <eos> is finished: its only continuation is <pad> at log-prob
        0, so its score and length n stay as they were while it competes with the
        others. Stops when all K prefixes of every row are finished or after ``max_len``
        tokens; returns the best prefix per row, as ``greedy_decode`` does."""
        src = _ids(src_ids, "beam_decode")
        mask = _src_mask(src, src_mask, self.pad_id, "beam_decode")
        max_len = self._decode_len(max_len, "beam_decode")
        B, K = src.shape[0], int(beam_size)
        was_training = self.training
        self.eval()
        try:
            state = self._begin(src, mask)
            state["attention"] = return_attention
            self._reorder(state, np.repeat(np.arange(B), K))  # row b*K + k: beam k of b
            scores = np.full((B, K), -np.inf)
            scores[:, 0] = 0.0  # at the start every beam is the same empty prefix: keep one
            lengths = np.zeros((B, K))
            done = np.zeros((B, K), dtype=bool)
            # per step: each new row's parent row, token and attention (backpointers:
            # the prefixes are rebuilt once at the end, not copied at every step)
            parents: list = []
            toks: list = []
            weights: list = []
            tokens = np.full(B * K, self.bos_id, dtype=np.int64)
            for _ in range(max_len):
                logp, w = self._next_logp(state, tokens)
                V = logp.shape[-1]
                if not 1 <= K <= V:
                    raise ValueError(f"beam_decode: beam_size must be in [1, {V}] (the "
                                     f"vocabulary size), got {beam_size}")
                frozen = np.full(V, -np.inf)
                frozen[self.pad_id] = 0.0
                logp = np.where(done[..., None], frozen, logp.reshape(B, K, V))
                total = scores[..., None] + logp  # (B, K, V)
                new_len = lengths + ~done
                ranked = (total / new_len[..., None] ** length_penalty).reshape(B, K * V)
                best = np.argsort(-ranked, axis=1, kind="stable")[:, :K]
                parent, tok = np.divmod(best, V)
                rows = (np.arange(B)[:, None] * K + parent).reshape(-1)
                scores = np.take_along_axis(total.reshape(B, K * V), best, axis=1)
                lengths = np.take_along_axis(new_len, parent, axis=1)
                done = np.take_along_axis(done, parent, axis=1) | (tok == self.eos_id)
                parents.append(rows)
                toks.append(tok.reshape(-1))
                if return_attention:
                    weights.append(w[rows])
                self._reorder(state, rows)
                tokens = tok.reshape(-1)
                if done.all():
                    break
        finally:
            self.train(was_training)
        T = len(toks)
        ids = np.zeros((B, T), dtype=np.int64)
        attn = np.zeros((B, T, src.shape[1]))
        row = np.arange(B) * K  # beams stay sorted best first: beam 0 of each source row
        for t in range(T - 1, -1, -1):  # follow the backpointers from the last step
            ids[:, t] = toks[t][row]
            if return_attention:
                attn[:, t] = weights[t][row]
            row = parents[t][row]
        return (ids, attn) if return_attention else ids


# ---------------------------------------------------------------------------- Transformer


class DecoderBlock(Module):
    """Pre-LN decoder block of the encoder-decoder Transformer:

        x = x + SelfAttn(LN1(x))                 causal, over the target prefix
        x = x + CrossAttn(LN2(x), memory)        queries from x, keys/values from memory
        x = x + MLP(LN3(x))
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float,
                 rope: RotaryEmbedding | None, layer_index: int) -> None:
        super().__init__()
        self.ln1 = LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, causal=True, rope=rope,
                                            layer_index=layer_index)
        self.ln2 = LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout, causal=False,
                                             cross=True, layer_index=layer_index)
        self.ln3 = LayerNorm(d_model)
        self.mlp = MLP(d_model, d_ff, dropout)

    def forward(self, x: Tensor, memory: Tensor | None, memory_padding: Any,
                cache: KVCache | None = None, context_length: int | None = None,
                need_weights: bool = False) -> Any:
        x = x + self.self_attn(self.ln1(x), cache=cache, context_length=context_length)
        h = self.ln2(x)
        x = x + self.cross_attn(h, memory, key_padding_mask=memory_padding, cache=cache)
        # after cross_attn: with a cache, its K (and mask) are read back, not recomputed
        weights = self.cross_weights(h, memory, memory_padding, cache) if need_weights else None
        x = x + self.mlp(self.ln3(x))
        return (x, weights) if need_weights else x

    def cross_weights(self, h: Tensor, memory: Tensor | None, memory_padding: Any,
                      cache: KVCache | None) -> np.ndarray:
        """The cross-attention weights softmax(q k^T / sqrt(d_k)) (B, T, S), averaged
        over the heads, for plotting (no gradient: an inspection, not the forward)."""
        a = self.cross_attn
        stored = cache.cross_kv(a.layer_index) if cache is not None else None
        if stored is not None:
            k, _, memory_padding = stored
        else:
            k, _ = a.cross_keys_values(memory)
        q = a._heads(a.q_proj(h)).data
        xp = h.backend.xp
        s = xp.matmul(q, xp.swapaxes(k.data, -1, -2)) / math.sqrt(a.head_dim)  # (B, H, T, S)
        if memory_padding is not None:
            s = xp.where(xp.asarray(memory_padding)[:, None, None, :], -xp.inf, s)
        return Tensor._make(F.softmax(Tensor._make(s), dim=-1).data.mean(axis=1)).numpy()


class TransformerSeq2Seq(_Seq2SeqDecoding, Module):
    """Encoder-decoder Transformer (Vaswani et al. 2017), pre-LN:

        memory = LN_e(EncoderBlock^L(E_src[x] + P))        bidirectional, padding masked
        h      = LN_d(DecoderBlock^L(E_tgt[y_<t] + P, memory))
        logits = h W_out^T                                  (W_out = E_tgt when tied)

    Cross-attention in each decoder block: softmax(Q K^T / sqrt(d_k) + M) V with Q from
    the decoder, K, V from ``memory`` and M = -inf at the source's padding.
    ``positional``: "sinusoidal" | "learned" (added to the embeddings) | "rope" (rotates
    queries and keys of the self-attentions; never the cross-attention's).

    ``decode_step`` runs the decoder incrementally with a :class:`KVCache`: the self-
    attention keys/values grow by one column per token, the cross-attention ones are
    computed from ``memory`` on the first step and reused."""

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, d_model: int = 64,
                 n_heads: int = 4, n_encoder_layers: int = 2, n_decoder_layers: int = 2,
                 d_ff: int | None = None, dropout: float = 0.0, max_src_len: int = 64,
                 max_tgt_len: int = 32, positional: str = "sinusoidal",
                 tie_weights: bool = False, pad_id: int = 0, bos_id: int = 1,
                 eos_id: int = 2) -> None:
        super().__init__()
        if positional not in ("sinusoidal", "learned", "rope"):
            raise ValueError(f"TransformerSeq2Seq: positional must be sinusoidal, learned or "
                             f"rope, got {positional!r}")
        if d_model % n_heads:
            raise ValueError(f"TransformerSeq2Seq: d_model {d_model} is not divisible by "
                             f"n_heads {n_heads}")
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.d_model, self.positional = d_model, positional
        self.max_src_len, self.max_tgt_len = max_src_len, max_tgt_len
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.src_emb = Embedding(src_vocab_size, d_model)
        self.tgt_emb = Embedding(tgt_vocab_size, d_model)
        rope = None
        if positional == "learned":
            self.src_pos = Embedding(max_src_len, d_model)
            self.tgt_pos = Embedding(max_tgt_len, d_model)
        elif positional == "sinusoidal":
            table = sinusoidal_positions(max(max_src_len, max_tgt_len), d_model)
            self.register_buffer("pos_table", Tensor(table.astype(np.float32),
                                                     backend=current_backend()),
                                 persistent=False)
        else:
            rope = RotaryEmbedding(d_model // n_heads, max(max_src_len, max_tgt_len))
            self.rope = rope
        self.drop = Dropout(dropout)
        self.encoder = ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout, causal=False, rope=rope,
                             layer_index=i) for i in range(n_encoder_layers))
        self.ln_enc = LayerNorm(d_model)
        self.decoder = ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, dropout, rope, layer_index=i)
            for i in range(n_decoder_layers))
        self.ln_dec = LayerNorm(d_model)
        self.head = Linear(d_model, tgt_vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.tgt_emb.weight

    def _embed(self, emb: Embedding, pos: str, ids: np.ndarray, offset: int = 0) -> Tensor:
        """E[ids] plus the positions offset .. offset+L-1 (none for RoPE), then dropout."""
        L = ids.shape[1]
        x = emb(Tensor(ids, backend=emb.weight.backend))  # host ids onto the model's device
        if self.positional == "learned":
            x = x + getattr(self, pos).positions(offset, L)
        elif self.positional == "sinusoidal":
            x = x + Tensor._make(self.pos_table.data[offset:offset + L].astype(x.dtype))
        return self.drop(x)

    def encode(self, src_ids: Any, src_mask: Any = None) -> Tensor:
        """memory (B, S, d_model): the encoder's output, padding masked as keys."""
        src = _ids(src_ids, "TransformerSeq2Seq.encode")
        mask = _src_mask(src, src_mask, self.pad_id, "TransformerSeq2Seq.encode")
        if src.shape[1] > self.max_src_len:
            raise ValueError(f"TransformerSeq2Seq: source of {src.shape[1]} tokens exceeds "
                             f"max_src_len {self.max_src_len}")
        padding = None if mask.all() else ~mask
        x = self._embed(self.src_emb, "src_pos", src)
        for block in self.encoder:
            x = block(x, key_padding_mask=padding)
        return self.ln_enc(x)

    def _decode(self, tgt: np.ndarray, memory: Tensor | None, padding: Any,
                cache: KVCache | None, need_weights: bool) -> tuple:
        offset = cache.length if cache is not None else 0
        if offset + tgt.shape[1] > self.max_tgt_len:
            raise ValueError(f"TransformerSeq2Seq: target of {offset + tgt.shape[1]} tokens "
                             f"exceeds max_tgt_len {self.max_tgt_len}")
        x = self._embed(self.tgt_emb, "tgt_pos", tgt, offset)
        weights = None
        for i, block in enumerate(self.decoder):
            last = need_weights and i == len(self.decoder) - 1
            out = block(x, memory, padding, cache=cache, context_length=self.max_tgt_len,
                        need_weights=last)
            x, weights = out if last else (out, weights)
        if cache is not None:
            cache.advance(tgt.shape[1])
        return self.head(self.ln_dec(x)), weights

    def forward(self, src_ids: Any, src_mask: Any, tgt_in_ids: Any,
                return_attention: bool = False) -> Any:
        """Teacher forcing: logits (B, T, V) of y_1..y_T from the decoder input
        tgt_in_ids = [<bos>, y_1 .. y_{T-1}] (B, T). With ``return_attention``, also
        the last decoder block's cross-attention weights (B, T, S), head-averaged."""
        src = _ids(src_ids, "TransformerSeq2Seq")
        mask = _src_mask(src, src_mask, self.pad_id, "TransformerSeq2Seq")
        memory = self.encode(src, mask)
        tgt = _ids(tgt_in_ids, "TransformerSeq2Seq")
        logits, w = self._decode(tgt, memory, None if mask.all() else ~mask, None,
                                 return_attention)
        return (logits, w) if return_attention else logits

    def decode_step(self, tgt_ids: Any, memory: Tensor | None, src_mask: Any,
                    cache: KVCache, return_attention: bool = False) -> Any:
        """Logits (B, T, V) for the next decoder inputs ``tgt_ids`` (B, T) at positions
        cache.length .. cache.length+T-1; the cache then holds them. ``memory`` and
        ``src_mask`` ((B, S) True at real tokens; None: no padding) are read on the
        first step only (the cross-attention keys/values and mask are cached; later
        steps may pass None)."""
        tgt = _ids(tgt_ids, "TransformerSeq2Seq.decode_step")
        padding = None
        if memory is not None and not cache.cross:
            mask = np.ones(memory.shape[:2], dtype=bool) if src_mask is None else to_host(
                src_mask.data if isinstance(src_mask, Tensor) else src_mask).astype(bool)
            padding = None if mask.all() else ~mask
        logits, w = self._decode(tgt, memory, padding, cache, return_attention)
        return (logits, w) if return_attention else logits

    # decoding hooks
    def _begin(self, src: np.ndarray, mask: np.ndarray) -> dict:
        return {"memory": self.encode(src, mask), "mask": mask, "cache": KVCache()}

    def _step(self, state: dict, tokens: np.ndarray) -> tuple:
        if not state.get("attention", True):
            logits = self.decode_step(tokens[:, None], state["memory"], state["mask"],
                                      state["cache"])
            return _log_softmax(logits.numpy()[:, -1].astype(np.float64)), None
        logits, w = self.decode_step(tokens[:, None], state["memory"], state["mask"],
                                     state["cache"], return_attention=True)
        return _log_softmax(logits.numpy()[:, -1].astype(np.float64)), w[:, -1]

    def _reorder(self, state: dict, rows: np.ndarray) -> None:
        state["cache"].reorder(rows)
        state["memory"] = Tensor._make(state["memory"].data[rows])
        state["mask"] = state["mask"][rows]


# ---------------------------------------------------------------------------- LSTM


class LSTMSeq2Seq(_Seq2SeqDecoding, Module):
    """LSTM encoder-decoder with additive attention (Bahdanau et al. 2015) and input
    feeding (Luong et al. 2015).

    Encoder:  h_1..h_S = LSTM(E_src[x])    (bidirectional: h_j = [fwd_j; bwd_j]), padded
              steps skipped (the LSTM's mask); s_0 = tanh(W_b [fwd_S; bwd_1] + b_b), m_0 = 0
    Step t (decoder state s_{t-1}, cell m_{t-1}, previous output o_{t-1}, o_0 = 0):

        e_tj    = v^T tanh(W_s s_{t-1} + W_h h_j)          (W_h h_j computed once)
        alpha_t = softmax_j(e_tj), with e_tj = -inf at padding (alpha_tj = 0 there)
        c_t     = sum_j alpha_tj h_j
        s_t, m_t = LSTM([E_tgt[y_{t-1}]; c_t; o_{t-1}], (s_{t-1}, m_{t-1}))
        o_t     = tanh(W_o [s_t; c_t])                     (fed to step t+1)
        logits_t = W_out o_t + b_out

    With several decoder layers, s_{t-1} is the top layer's state."""

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, emb_dim: int = 32,
                 hidden_size: int = 64, attn_dim: int | None = None,
                 encoder_layers: int = 1, decoder_layers: int = 1, bidirectional: bool = True,
                 dropout: float = 0.0, max_tgt_len: int = 32, pad_id: int = 0,
                 bos_id: int = 1, eos_id: int = 2) -> None:
        super().__init__()
        attn_dim = hidden_size if attn_dim is None else attn_dim
        self.hidden_size, self.decoder_layers = hidden_size, decoder_layers
        self.max_tgt_len = max_tgt_len
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.src_emb = Embedding(src_vocab_size, emb_dim)
        self.tgt_emb = Embedding(tgt_vocab_size, emb_dim)
        self.encoder = LSTM(emb_dim, hidden_size, num_layers=encoder_layers,
                            batch_first=True, bidirectional=bidirectional)
        enc_dim = hidden_size * (2 if bidirectional else 1)
        self.bridge = Linear(enc_dim, decoder_layers * hidden_size)
        self.attn_h = Linear(enc_dim, attn_dim, bias=False)   # W_h
        self.attn_s = Linear(hidden_size, attn_dim)           # W_s (and the bias)
        self.attn_v = Linear(attn_dim, 1, bias=False)         # v
        self.decoder = LSTM(emb_dim + enc_dim + hidden_size, hidden_size,
                            num_layers=decoder_layers)
        self.combine = Linear(hidden_size + enc_dim, hidden_size)  # W_o
        self.out = Linear(hidden_size, tgt_vocab_size)
        self.drop = Dropout(dropout)

    def _begin(self, src: np.ndarray, mask: np.ndarray) -> dict:
        """Encode: the state every decoder step reads and updates."""
        be = model_backend(self)
        x = self.drop(self.src_emb(Tensor(src, backend=be)))
        enc, (h_n, _) = self.encoder(x, mask=None if mask.all() else mask)
        D = 2 if self.encoder.bidirectional else 1
        last = F.cat([h_n[h_n.shape[0] - D + d] for d in range(D)], dim=-1)  # top layer
        B, L, H = src.shape[0], self.decoder_layers, self.hidden_size
        s0 = F.tanh(self.bridge(last)).reshape(B, L, H).transpose(0, 1)
        zeros = Tensor(be.xp.zeros((B, H), dtype=enc.dtype))
        return {"enc": enc, "keys": self.attn_h(enc), "mask": mask,
                "h": s0, "c": Tensor(be.xp.zeros((L, B, H), dtype=enc.dtype)), "o": zeros}

    def attend(self, s: Tensor, keys: Tensor, enc: Tensor, mask: np.ndarray) -> tuple:
        """Additive attention: alpha (B, S) and context c (B, enc_dim) for the decoder
        state ``s`` (B, H), ``keys`` = W_h h (B, S, A), encoder states ``enc`` (B, S, E)."""
        e = self.attn_v(F.tanh(F.unsqueeze(self.attn_s(s), 1) + keys)).squeeze(-1)  # (B, S)
        if not mask.all():
            e = F.masked_fill(e, e.backend.asarray(~mask), -math.inf)
        alpha = F.softmax(e, dim=-1)
        context = F.matmul(F.unsqueeze(alpha, 1), enc).squeeze(1)
        return alpha, context

    def _advance(self, state: dict, tokens: Any) -> tuple:
        """One decoder step on token ids (B,): updates ``state``; logits (B, V), alpha."""
        if not isinstance(tokens, Tensor):
            tokens = Tensor(tokens, backend=self.tgt_emb.weight.backend)
        y = self.drop(self.tgt_emb(tokens))
        h, c = state["h"], state["c"]
        alpha, context = self.attend(h[h.shape[0] - 1], state["keys"], state["enc"],
                                     state["mask"])
        inp = F.cat([y, context, state["o"]], dim=-1)
        out, (h, c) = self.decoder(F.unsqueeze(inp, 0), (h, c))
        o = self.drop(F.tanh(self.combine(F.cat([out[0], context], dim=-1))))
        state["h"], state["c"], state["o"] = h, c, o
        return self.out(o), alpha

    def forward(self, src_ids: Any, src_mask: Any, tgt_in_ids: Any,
                return_attention: bool = False) -> Any:
        """Teacher forcing: logits (B, T, V) of y_1..y_T from the decoder input
        tgt_in_ids = [<bos>, y_1 .. y_{T-1}] (B, T); with ``return_attention`` also the
        attention weights alpha (B, T, S)."""
        src = _ids(src_ids, "LSTMSeq2Seq")
        mask = _src_mask(src, src_mask, self.pad_id, "LSTMSeq2Seq")
        tgt = Tensor(_ids(tgt_in_ids, "LSTMSeq2Seq"), backend=model_backend(self))
        state = self._begin(src, mask)
        logits, alphas = [], []
        for t in range(tgt.shape[1]):
            z, alpha = self._advance(state, tgt[:, t])
            logits.append(z)
            alphas.append(alpha)
        logits = F.stack(logits, dim=1)
        return (logits, F.stack(alphas, dim=1)) if return_attention else logits

    # decoding hooks
    def _step(self, state: dict, tokens: np.ndarray) -> tuple:
        logits, alpha = self._advance(state, tokens)
        return (_log_softmax(logits.numpy().astype(np.float64)),
                alpha.numpy().astype(np.float64) if state.get("attention", True) else None)

    def _reorder(self, state: dict, rows: np.ndarray) -> None:
        for key in ("enc", "keys", "o"):
            state[key] = Tensor._make(state[key].data[rows])
        for key in ("h", "c"):
            state[key] = Tensor._make(state[key].data[:, rows])
        state["mask"] = state["mask"][rows]
