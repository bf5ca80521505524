"""Text generation from a causal language model: greedy, temperature, top-k, top-p
(nucleus) sampling and beam search, all decoding incrementally with the KV cache.

At each step the model sees only the new token; keys and values of earlier positions
come from the cache, so producing n tokens costs O(n) attention rows, not O(n^2).
When the context window is full, the sequence is cropped to its last half and the
cache is rebuilt from it (the model never sees more than ``context_length`` tokens).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from ..autograd import no_grad
from ..backends.threads import one_thread
from ..nn.attention import KVCache
from ..nn.decode import decode_step, supports_fast_decode
from ..nn.module import model_backend
from ..tensor import Tensor

__all__ = ["beam_search", "filter_logits", "generate", "sample_next"]


def filter_logits(logits: np.ndarray, top_k: int | None = None,
                  top_p: float | None = None) -> np.ndarray:
    """Mask (to -inf) every logit outside the top ``k`` and outside the smallest set of
    most likely tokens whose probability reaches ``top_p``. Rows are independent."""
    out = np.array(logits, dtype=np.float64)
    V = out.shape[-1]
    if top_k is not None and 0 < top_k < V:
        kth = np.partition(out, V - top_k, axis=-1)[..., V - top_k][..., None]
        out[out < kth] = -np.inf
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-out, axis=-1, kind="stable")
        sorted_logits = np.take_along_axis(out, order, axis=-1)
        probs = np.exp(sorted_logits - sorted_logits[..., :1])
        probs /= probs.sum(axis=-1, keepdims=True)
        cum = np.cumsum(probs, axis=-1)
        # drop a token when the mass before it already reaches top_p (the first stays)
        drop_sorted = (cum - probs) >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        out[drop] = -np.inf
    return out


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """Next-token ids (B,) from last-position logits (B, V). ``temperature == 0`` is
    greedy (argmax); otherwise p = softmax(filter(logits) / temperature)."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return logits.argmax(axis=-1)
    z = filter_logits(logits / temperature, top_k, top_p)
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    ids = (np.cumsum(p, axis=-1) < u).sum(axis=-1)
    return np.minimum(ids, p.shape[-1] - 1)


def _last_logits(model: Any, ids: np.ndarray, cache: KVCache | None,
                 vocab_limit: int | None = None, fast: bool = False) -> np.ndarray:
    """Logits (B, vocab) of the token after ``ids`` (B, T). With ``fast`` (the model
    passed ``nn.decode.supports_fast_decode``) only the last position's logits are
    computed, and a one-token step with a cache runs ``decode_step`` (no Tensors, no
    graph); otherwise the model's forward."""
    ids_on = Tensor(ids, backend=model_backend(model))  # sampling is on the host
    if fast:
        if cache is not None and ids.shape[1] == 1 and cache.length > 0:
            logits = decode_step(model, ids[:, 0], cache)
        else:
            logits = model(ids_on, cache=cache, last_only=True).numpy()[:, -1, :]
    else:
        logits = model(ids_on, cache=cache).numpy()[:, -1, :]
    if vocab_limit is not None and vocab_limit < logits.shape[-1]:
        logits = logits.copy()
        logits[:, vocab_limit:] = -np.inf  # padding rows of the embedding: never emitted
    return logits


@no_grad()
def generate(model: Any, prompt: Any, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             rng: np.random.Generator | None = None, use_cache: bool = True,
             seed: int | None = None, vocab_limit: int | None = None) -> np.ndarray:
    """Extend ``prompt`` (token ids, (T,) or (B, T)) by up to ``max_new_tokens`` tokens.

    ``temperature=0`` decodes greedily. ``vocab_limit`` forbids ids >= it (a vocabulary
    padded for tensor parallelism). Returns an int64 array (B, T + n); rows that
    produced ``eos_id`` keep emitting it."""
    ctx_len = model.config.context_length
    ids = np.asarray(prompt.numpy() if isinstance(prompt, Tensor) else prompt, dtype=np.int64)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.shape[1] == 0:
        raise ValueError("generate: the prompt is empty; give at least one token")
    if ids.shape[1] > ctx_len:
        raise ValueError(
            f"generate: prompt of {ids.shape[1]} tokens is longer than the model's context "
            f"length {ctx_len}; shorten it (or keep its last {ctx_len} tokens)"
        )
    vocab = model.config.vocab_size
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"generate: prompt token ids must lie in [0, {vocab}), got "
                         f"[{ids.min()}, {ids.max()}]")
    rng = rng if rng is not None else np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    try:
        done = np.zeros(ids.shape[0], dtype=bool)
        cache = KVCache() if use_cache else None
        fast = supports_fast_decode(model)
        logits = _last_logits(model, ids, cache, vocab_limit, fast)
        # one row: every op of a step is tiny, and waking a second thread for each
        # costs more than it saves (bench/decode_threads.py: 967 vs 343 tokens/s at
        # batch 1; at batch 8 two threads win, 2,545 vs 1,872)
        with one_thread() if ids.shape[0] == 1 else contextlib.nullcontext():
            ids = _decode(model, ids, logits, cache, max_new_tokens, temperature, top_k, top_p,
                          eos_id, rng, use_cache, vocab_limit, done, fast)
        return ids
    finally:
        model.train(was_training)


def _decode(model: Any, ids: np.ndarray, logits: np.ndarray, cache: KVCache | None,
            max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
            eos_id: int | None, rng: np.random.Generator, use_cache: bool,
            vocab_limit: int | None, done: np.ndarray, fast: bool) -> np.ndarray:
    """generate's loop: sample, append (into a buffer of the final size), step the
    model."""
    ctx_len = model.config.context_length
    n = ids.shape[1]
    out = np.empty((ids.shape[0], n + max_new_tokens), dtype=np.int64)
    out[:, :n] = ids
    for _ in range(max_new_tokens):
        nxt = sample_next(logits, rng, temperature, top_k, top_p)
        if eos_id is not None:
            nxt = np.where(done, eos_id, nxt)
            done |= nxt == eos_id
        out[:, n] = nxt
        n += 1
        if eos_id is not None and done.all():
            break
        if not use_cache:
            logits = _last_logits(model, out[:, max(n - ctx_len, 0):n], None, vocab_limit, fast)
        elif cache.length + 1 > ctx_len:  # window full: crop and rebuild the cache
            cache = KVCache()
            logits = _last_logits(model, out[:, n - max(ctx_len // 2, 1):n], cache, vocab_limit,
                                  fast)
        else:
            logits = _last_logits(model, nxt[:, None], cache, vocab_limit, fast)
    return out[:, :n]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@no_grad()
def beam_search(model: Any, prompt: Any, max_new_tokens: int, beam_width: int = 4,
                length_penalty: float = 1.0, eos_id: int | None = None,
                vocab_limit: int | None = None) -> list:
    """Beam search from a single prompt (T,): keep the ``beam_width`` partial sequences
    with the highest total log-probability; a finished hypothesis is ranked by
    logp / len^length_penalty. Returns [(ids, score), ...] best first."""
    ctx_len = model.config.context_length
    ids = np.asarray(prompt.numpy() if isinstance(prompt, Tensor) else prompt, dtype=np.int64)
    ids = ids.reshape(-1)
    if ids.size > ctx_len:
        raise ValueError(
            f"beam_search: prompt of {ids.size} tokens is longer than the model's context "
            f"length {ctx_len}; shorten it (or keep its last {ctx_len} tokens)"
        )
    was_training = model.training
    model.eval()
    try:
        cache = KVCache()
        fast = supports_fast_decode(model)  # decode_step for the beams' one-token steps
        logp = _log_softmax(_last_logits(model, ids[None, :], cache, vocab_limit, fast))[0]
        cache.reorder(np.zeros(1, dtype=np.int64))
        beams = [(ids, 0.0)]
        finished: list = []
        step_logp = logp[None, :]
        for step in range(max_new_tokens):
            V = step_logp.shape[-1]
            totals = np.array([s for _, s in beams])[:, None] + step_logp  # (beams, V)
            flat = totals.reshape(-1)
            k = min(beam_width * 2, flat.size)
            cand = np.argpartition(-flat, k - 1)[:k]
            cand = cand[np.argsort(-flat[cand], kind="stable")]
            new_beams, parents = [], []
            for c in cand:
                b, tok = divmod(int(c), V)
                seq = np.append(beams[b][0], tok)
                score = float(flat[c])
                if eos_id is not None and tok == eos_id:
                    finished.append((seq, score / (len(seq) - ids.size) ** length_penalty))
                    continue
                new_beams.append((seq, score))
                parents.append(b)
                if len(new_beams) == beam_width:
                    break
            if not new_beams or step == max_new_tokens - 1:
                beams = new_beams
                break
            beams = new_beams
            cache.reorder(np.array(parents, dtype=np.int64))
            if cache.length + 1 > ctx_len:  # window full: crop and rebuild, as generate does
                cache = KVCache()
                keep = max(ctx_len // 2, 1)
                window = np.stack([s[-keep:] for s, _ in beams])  # all beams have one length
                step_logp = _log_softmax(_last_logits(model, window, cache, vocab_limit, fast))
            else:
                last = np.array([[s[-1]] for s, _ in beams], dtype=np.int64)
                step_logp = _log_softmax(_last_logits(model, last, cache, vocab_limit, fast))
        n_new = lambda s: max(len(s) - ids.size, 1)  # noqa: E731
        finished += [(s, sc / n_new(s) ** length_penalty) for s, sc in beams]
        finished.sort(key=lambda t: -t[1])
        return finished[:beam_width]
    finally:
        model.train(was_training)


