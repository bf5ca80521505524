"""Distillation of a sentence encoder: a small student learns all-MiniLM-L6-v2's embeddings.

The teacher (a :class:`~minilm.nn.SentenceEncoder`) embeds every training sentence once,
without a graph; the student is trained to give the same unit vectors. On a batch with
teacher embeddings e_t (B, 384), student embeddings e_s (B, 384) and, for the hidden
term, the hidden states of mapped layers::

    L = w_mse * mean_b ||e_s - e_t||^2                                  (embedding MSE)
      + w_cos * mean_b (1 - cos(e_s, e_t))                              (cosine)
      + w_hid * sum_(k, l) in layer_map  MSE_tok(h_s^(k) W_k, h_t^(l))  (hidden states)

``||.||^2`` is the squared L2 norm of a row (for unit rows it equals 2 - 2 cos, the
same scale as the cosine term). MSE_tok is the mean over the real (unpadded) tokens and
the hidden units of the squared difference. ``h^(k)`` is the output of layer k (1 the
first block; 0 the embedding layer). ``W_k`` is a learnable projection (H_s, H_t) when
the widths differ, the identity when they are equal.

Students:

- **layer dropping** (:func:`layer_dropped_student`): a copy of the teacher that keeps
  only some of its blocks (by default the first, the last and evenly spaced ones
  between: teacher blocks 0, 3, 5 of 0..5 for 3 layers, 0, 5 for 2 layers) with the
  embeddings copied. Same width, so W_k = I. Student layer k is mapped to the teacher
  layer its block was copied from (the output of teacher block keep[k-1], i.e. teacher
  layer keep[k-1] + 1: 3 layers -> 1, 4, 6; 2 layers -> 1, 6).
- **narrow** (:func:`narrow_student`): a fresh encoder of width H_s < H_t (random init)
  whose mean-pooled state goes through a projection ``out_proj`` (H_s -> H_t) before the
  normalisation; the hidden term then has a learnable W_k per mapped layer.

Sentences come from a text by :func:`split_sentences` (rules in its docstring), deduped;
:func:`holdout_split` keeps a seeded 10% aside. Training (:func:`train_student`) uses
AdamW with linear warm-up and decay, batches of sentences of similar length (fixed
batches from the length order, visited in a seeded random order each epoch), gradient
clipping, and the student in eval mode (no dropout: the target is deterministic).
:func:`evaluate_student` reports the cosine between student and teacher embeddings of
held-out sentences (mean / min) and the retrieval agreement: the share of held-out
sentences whose nearest neighbour among the other held-out sentences is the same for
the student as for the teacher. :func:`save_pretrained` writes a (layer-dropped)
student as a folder that :func:`minilm.models.load_pretrained` reads.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import functional as F
from .. import optim
from ..autograd import no_grad
from ..backends import manual_seed, to_host
from ..data._io import atomic_write_bytes
from ..models.pretrained import expand_name_map
from ..nn.bert import (
    BertConfig,
    BertModel,
    SentenceEncoder,
    _ids,
    _padding_mask,
    mean_pool,
    normalize,
    pad_batch,
)
from ..nn.layers import Linear
from ..nn.module import Module, ModuleList, model_backend
from ..tensor import Tensor

__all__ = ["DistillConfig", "DistillStudent", "default_layer_map", "embedding_distill_loss",
           "encoder_states", "evaluate_student", "holdout_split", "layer_dropped_student",
           "narrow_student", "save_pretrained", "split_sentences", "student_embeddings",
           "teacher_targets", "time_encoders", "train_student"]


# --------------------------------------------------------------------------- sentences
_HEADING_RULE = re.compile(r"^\s*[=\-*~^]{3,}\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_ABBREV = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Dr.", "No.")


def split_sentences(text: str, min_words: int = 5, max_words: int = 40) -> list[str]:
    """English sentences of ``text`` (pydoc-style prose with code), deduped, in order.

    Rules: (1) paragraphs are runs of non-blank lines; a paragraph is dropped when one
    of its lines starts with ``>>>`` or ``...`` (an interactive session), when it is
    indented more than its paragraph's usual prose indent would allow for code (its
    first line indented by 5 or more spaces more than the text's least indented line
    near it, i.e. a code block under 3-space prose), or when it is a heading rule
    (``====``); (2) the lines of a paragraph are joined with single spaces; (3) the
    joined text is cut after ``.``, ``!`` or ``?`` followed by white space and an upper
    case letter, a quote or a parenthesis, except after an abbreviation (e.g., i.e.,
    etc.); (4) a sentence is kept when it has ``min_words`` to ``max_words`` words,
    starts with an upper-case letter or a quote and ends with ``.``, ``!`` or ``?``, and
    at least 70% of its characters are letters or spaces (not code); (5) exact
    duplicates are dropped (the first kept)."""
    out: list[str] = []
    seen: set = set()
    for para in re.split(r"\n\s*\n", text):
        lines = [ln for ln in para.split("\n") if ln.strip()]
        if not lines or any(_HEADING_RULE.match(ln) for ln in lines):
            continue
        if any(ln.lstrip().startswith((">>>", "...")) for ln in lines):
            continue
        indent = len(lines[0]) - len(lines[0].lstrip())
        if indent >= 5:  # prose is at 0 or 3 spaces in pydoc's topics; deeper is code
            continue
        joined = " ".join(ln.strip() for ln in lines)
        pieces = _SENTENCE_END.split(joined)
        merged: list[str] = []
        for p in pieces:  # glue back cuts made after an abbreviation
            if merged and merged[-1].endswith(_ABBREV):
                merged[-1] = merged[-1] + " " + p
            else:
                merged.append(p)
        for s in merged:
            s = s.strip()
            words = s.split()
            if not min_words <= len(words) <= max_words:
                continue
            if not (s[0].isupper() or s[0] in "\"'") or s[-1] not in ".!?":
                continue
            if sum(c.isalpha() or c == " " for c in s) < 0.7 * len(s):
                continue
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def holdout_split(sentences: Sequence[str], fraction: float = 0.1, seed: int = 0) -> tuple:
    """(train, held_out): a seeded random ``fraction`` of the sentences held out (at
    least one), both lists in their original order."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout_split: fraction must be in (0, 1), got {fraction!r}")
    n = len(sentences)
    if n < 2:
        raise ValueError(f"holdout_split: needs at least 2 sentences, got {n}")
    k = max(1, int(round(fraction * n)))
    held = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    return ([s for i, s in enumerate(sentences) if i not in held],
            [s for i, s in enumerate(sentences) if i in held])


# --------------------------------------------------------------------------- students
def default_layer_map(student_layers: int, teacher_layers: int) -> list:
    """[(k, l)]: student layer k (1..L_s) learns teacher layer l = round(k L_t / L_s)."""
    return [(k, int(round(k * teacher_layers / student_layers)))
            for k in range(1, student_layers + 1)]


class DistillStudent(Module):
    """A student: ``encoder`` (a SentenceEncoder), an optional ``out_proj`` (H_s -> H_t)
    applied to the pooled state before the normalisation (narrow students), and one
    ``hidden_proj`` Linear per mapped layer when the widths differ (W_k of the loss).

    ``forward(ids, mask) -> (e_s (B, H_t) unit rows, [h_s^(k) W_k for k in layer_map])``.
    """

    def __init__(self, encoder: SentenceEncoder, teacher_width: int,
                 layer_map: Sequence[tuple] | None = None, out_proj: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        width = encoder.config.hidden_size
        self.teacher_width = int(teacher_width)
        self.layer_map = [tuple(map(int, p)) for p in (layer_map or [])]
        for k, _ in self.layer_map:
            if not 0 <= k <= encoder.config.num_hidden_layers:
                raise ValueError(f"DistillStudent: layer_map student layer {k} is not in "
                                 f"0..{encoder.config.num_hidden_layers}")
        if width != self.teacher_width and not out_proj:
            raise ValueError(f"DistillStudent: width {width} differs from the teacher's "
                             f"{teacher_width}; a narrow student needs out_proj=True")
        self.out_proj = Linear(width, self.teacher_width) if out_proj else None
        self.hidden_proj = (ModuleList(Linear(width, self.teacher_width, bias=False)
                                       for _ in self.layer_map)
                            if width != self.teacher_width else None)

    def forward(self, input_ids: Any, attention_mask: Any) -> tuple:
        states = encoder_states(self.encoder.bert, input_ids, attention_mask)
        u = mean_pool(states[-1], attention_mask)
        if self.out_proj is not None:
            u = self.out_proj(u)
        hidden = [states[k] for k, _ in self.layer_map]
        if self.hidden_proj is not None:
            hidden = [proj(h) for proj, h in zip(self.hidden_proj, hidden)]
        return normalize(u), hidden


def encoder_states(bert: BertModel, input_ids: Any, attention_mask: Any) -> list:
    """[h^(0), h^(1), ..., h^(L)]: the embedding output and each block's output (B, T, H)
    of ``bert`` on a padded batch (``attention_mask`` 1 at real tokens)."""
    be = model_backend(bert)
    ids = _ids(input_ids, "input_ids", be)
    kpm = _padding_mask(attention_mask, ids.shape, be)
    h = bert.embeddings(ids)
    states = [h]
    for layer in bert.encoder.layers:
        h = layer(h, key_padding_mask=kpm)
        states.append(h)
    return states


def layer_dropped_student(teacher: SentenceEncoder, num_layers: int = 3,
                          keep: Sequence[int] | None = None) -> DistillStudent:
    """A student that copies the teacher's embeddings and the blocks ``keep`` (0-based
    teacher block indices, in order; default the first and the last block and the
    others evenly spaced between, k (L_t - 1) / (L_s - 1) rounded half up: (0, 3, 5)
    for 3 of 6, (0, 5) for 2 of 6; it started closest to the teacher of the choices
    measured, see docs/pretrained.md). Hidden map: student layer k -> teacher layer
    keep[k-1] + 1, the output of the block it copies."""
    tc = teacher.config
    L = tc.num_hidden_layers
    if keep is None:
        if not 1 <= num_layers <= L:
            raise ValueError(f"layer_dropped_student: num_layers must be in 1..{L}, "
                             f"got {num_layers}")
        keep = ([L - 1] if num_layers == 1 else
                [int(k * (L - 1) / (num_layers - 1) + 0.5) for k in range(num_layers)])
    keep = [int(i) for i in keep]
    if not keep or any(not 0 <= i < L for i in keep) or sorted(set(keep)) != keep:
        raise ValueError(f"layer_dropped_student: keep must be increasing block indices in "
                         f"0..{L - 1}, got {keep}")
    cfg = BertConfig(**{**tc.to_dict(), "num_hidden_layers": len(keep)})
    bert = BertModel(cfg, add_pooling_layer=teacher.bert.pooler is not None)
    src = teacher.bert.state_dict()
    state = {}
    for name in bert.state_dict():
        if name.startswith("encoder.layers."):
            k = int(name.split(".")[2])
            rest = name.split(".", 3)[3]
            state[name] = to_host(src[f"encoder.layers.{keep[k]}.{rest}"].data).copy()
        else:
            state[name] = to_host(src[name].data).copy()
    bert.load_state_dict(state)
    if teacher.bert.embeddings.word_embeddings.weight.dtype != np.float32:
        bert.double()
    enc = SentenceEncoder(bert, teacher.tokenizer, max_length=teacher.max_length,
                          pooling=teacher.pooling, normalize=teacher.normalize)
    return DistillStudent(enc, tc.hidden_size, [(k + 1, i + 1) for k, i in enumerate(keep)])


def narrow_student(teacher: SentenceEncoder, num_layers: int = 3, hidden_size: int = 192,
                   num_heads: int = 6, intermediate_size: int | None = None,
                   seed: int = 0) -> DistillStudent:
    """A fresh (random) encoder of width ``hidden_size`` with the teacher's vocabulary
    and positions, ``out_proj`` to the teacher's width, and W_k projections for the
    hidden map :func:`default_layer_map`."""
    tc = teacher.config
    manual_seed(seed)
    cfg = BertConfig(**{**tc.to_dict(), "num_hidden_layers": num_layers,
                        "hidden_size": hidden_size, "num_attention_heads": num_heads,
                        "intermediate_size": intermediate_size or 4 * hidden_size})
    enc = SentenceEncoder(BertModel(cfg, add_pooling_layer=False), teacher.tokenizer,
                          max_length=teacher.max_length, pooling="mean", normalize=True)
    return DistillStudent(enc, tc.hidden_size,
                          default_layer_map(num_layers, tc.num_hidden_layers), out_proj=True)


# --------------------------------------------------------------------------- the loss
def embedding_distill_loss(e_s: Tensor, e_t: Any, h_s: Sequence[Tensor] = (),
                           h_t: Sequence[Any] = (), mask: Any = None, w_mse: float = 1.0,
                           w_cos: float = 1.0, w_hid: float = 0.0) -> Tensor:
    """L = w_mse mean_b ||e_s - e_t||^2 + w_cos mean_b (1 - cos(e_s, e_t))
    + w_hid sum_k MSE_tok(h_s[k], h_t[k]).

    ``e_s`` (B, D) a Tensor, ``e_t`` (B, D) constants; ``h_s[k]`` (B, T, D) Tensors
    (already projected by W_k), ``h_t[k]`` (B, T, D) constants, ``mask`` (B, T) 1 at
    real tokens (None: all real). MSE_tok = sum_(b,t real, d) (h_s - h_t)^2 / (n_real D).
    Backward is the autograd of these formulas (every piece a differentiable op)."""
    xp = e_s.backend.xp
    if len(h_s) != len(h_t):
        raise ValueError(f"embedding_distill_loss: {len(h_s)} student hidden states vs "
                         f"{len(h_t)} teacher ones")
    e_t = Tensor._make(xp.asarray(e_t.data if isinstance(e_t, Tensor) else e_t, e_s.dtype))
    if tuple(e_s.shape) != tuple(e_t.shape):
        raise ValueError(f"embedding_distill_loss: e_s {tuple(e_s.shape)} vs e_t "
                         f"{tuple(e_t.shape)}")
    B = e_s.shape[0]
    loss = None
    if w_mse:
        d = e_s - e_t
        loss = (d * d).sum() * (w_mse / B)
    if w_cos:
        ns = F.sqrt((e_s * e_s).sum(dim=-1))
        nt = F.sqrt((e_t * e_t).sum(dim=-1))
        cos = (e_s * e_t).sum(dim=-1) / F.clamp(ns * nt, min=1e-12)
        term = (1.0 - cos).sum() * (w_cos / B)
        loss = term if loss is None else loss + term
    if w_hid and h_s:
        m = None
        for hs, ht in zip(h_s, h_t):
            ht = Tensor._make(xp.asarray(ht.data if isinstance(ht, Tensor) else ht, hs.dtype))
            if tuple(hs.shape) != tuple(ht.shape):
                raise ValueError(f"embedding_distill_loss: hidden {tuple(hs.shape)} vs "
                                 f"{tuple(ht.shape)}")
            if m is None:
                mm = np.ones(hs.shape[:2]) if mask is None else np.asarray(mask)
                count = float(mm.sum()) * hs.shape[-1]
                m = Tensor._make(xp.asarray(mm[..., None], hs.dtype))
            d = (hs - ht) * m
            term = (d * d).sum() * (w_hid / count)
            loss = term if loss is None else loss + term
    if loss is None:
        raise ValueError("embedding_distill_loss: every weight is 0")
    return loss


# --------------------------------------------------------------------------- training
@dataclass
class DistillConfig:
    """Hyper-parameters of :func:`train_student`."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup: float = 0.06          # share of the steps with a linear warm-up
    grad_clip: float = 1.0
    w_mse: float = 1.0
    w_cos: float = 1.0
    w_hid: float = 0.1
    seed: int = 0
    log_every: int = 50


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list:
    """Ids with [CLS]/[SEP], at most ``max_length`` of them (as ``encode`` cuts them)."""
    return [tokenizer.encode(t, max_length=max_length) for t in texts]


def _length_batches(ids: list, batch_size: int) -> list:
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


@no_grad()
def teacher_targets(teacher: SentenceEncoder, batches: list, ids: list,
                    teacher_layers: Sequence[int] = ()) -> list:
    """One pass of the teacher (eval, no graph) over the fixed batches: per batch
    (input_ids, mask, e_t (B, H) float32, [h_t^(l) (B, T, H) float16 for l in
    teacher_layers])."""
    teacher.eval()
    pad = teacher.config.pad_token_id
    out = []
    for rows in batches:
        b, m = pad_batch(ids, rows, pad)
        states = encoder_states(teacher.bert, b, m)
        u = normalize(mean_pool(states[-1], m)) if teacher.normalize else mean_pool(states[-1], m)
        hid = [to_host(states[layer].data).astype(np.float16) for layer in teacher_layers]
        out.append((b, m, to_host(u.data).astype(np.float32), hid))
    return out


def train_student(student: DistillStudent, teacher: SentenceEncoder, sentences: Sequence[str],
                  config: DistillConfig | None = None, log: Any = print) -> list:
    """Train ``student`` to match ``teacher`` on ``sentences`` (see the module docstring);
    returns the loss of every step. Deterministic for a given ``config.seed``."""
    c = config or DistillConfig()
    if c.steps < 0 or c.batch_size < 1:
        raise ValueError(f"train_student: steps {c.steps} must be >= 0 and batch_size "
                         f"{c.batch_size} >= 1")
    manual_seed(c.seed)
    rng = np.random.default_rng(c.seed)
    ids = _tokenize(teacher.tokenizer, sentences, teacher.max_length)
    batches = _length_batches(ids, c.batch_size)
    t0 = time.perf_counter()
    teacher_layers = [t for _, t in student.layer_map] if c.w_hid else []
    targets = teacher_targets(teacher, batches, ids, teacher_layers)
    if log:
        log(f"teacher targets: {len(sentences)} sentences in {len(batches)} batches, "
            f"{time.perf_counter() - t0:.1f} s")
    params = [p for p in student.parameters() if p.requires_grad]
    opt = optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    warm = max(1, int(c.warmup * c.steps))
    student.eval()  # no dropout
    losses: list = []
    order: list = []
    t0 = time.perf_counter()
    for step in range(1, c.steps + 1):
        if not order:
            order = rng.permutation(len(batches)).tolist()
        b, m, e_t, h_t = targets[order.pop()]
        lr = c.lr * (step / warm if step <= warm else
                     max(0.0, (c.steps - step) / max(1, c.steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr
        e_s, h_s = student(b, m)
        loss = embedding_distill_loss(e_s, e_t, h_s if c.w_hid else (), h_t, m,
                                      c.w_mse, c.w_cos, c.w_hid)
        loss.backward()
        if c.grad_clip:
            optim.clip_grad_norm_(params, c.grad_clip)
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.item()))
        if log and c.log_every and (step % c.log_every == 0 or step == c.steps):
            recent = losses[-c.log_every:]
            log(f"step {step:5d}  loss {sum(recent) / len(recent):.5f}  lr {lr:.2e}  "
                f"{time.perf_counter() - t0:.0f} s")
    return losses


# --------------------------------------------------------------------------- evaluation
@no_grad()
def student_embeddings(student: DistillStudent | SentenceEncoder, texts: Sequence[str],
                       batch_size: int = 32) -> np.ndarray:
    """(n, H_t) float32 unit rows: the student's embeddings of ``texts`` (a plain
    SentenceEncoder is encoded with its own ``encode``)."""
    if isinstance(student, SentenceEncoder):
        return student.encode(list(texts), batch_size=batch_size)
    enc = student.encoder
    if student.out_proj is None:
        return enc.encode(list(texts), batch_size=batch_size)
    ids = _tokenize(enc.tokenizer, texts, enc.max_length)
    out = np.zeros((len(ids), student.teacher_width), np.float32)
    was = student.training
    student.eval()
    for rows in _length_batches(ids, batch_size):
        b, m = pad_batch(ids, rows, enc.config.pad_token_id)
        states = encoder_states(enc.bert, b, m)
        out[rows] = normalize(student.out_proj(mean_pool(states[-1], m))).data
    student.train(was)
    return out


def evaluate_student(student: Any, teacher: SentenceEncoder, sentences: Sequence[str],
                     batch_size: int = 32, teacher_emb: np.ndarray | None = None) -> dict:
    """Student vs teacher on ``sentences``: ``cos_mean`` / ``cos_min`` of the cosine
    between their embeddings of each sentence, and ``retrieval`` (top-1 agreement): the
    share of sentences whose nearest neighbour (cosine, itself excluded) among the
    others is the same sentence for the student as for the teacher; ``teacher_emb``
    may be passed to avoid recomputing it."""
    if len(sentences) < 2:
        raise ValueError("evaluate_student: needs at least 2 sentences")
    t = teacher.encode(list(sentences), batch_size) if teacher_emb is None else teacher_emb
    s = student_embeddings(student, sentences, batch_size)
    cos = (s * t).sum(1) / np.maximum(np.linalg.norm(s, axis=1) * np.linalg.norm(t, axis=1),
                                      1e-12)
    nn_ = []
    for e in (t, s):  # cosine: unit rows (a teacher_emb passed in need not be normalised)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        nn_.append(sim.argmax(1))
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
            "retrieval": float((nn_[0] == nn_[1]).mean()), "n": len(sentences)}


def time_encoders(encoders: dict, texts: Sequence[str], batch_size: int = 32,
                  rounds: int = 5) -> dict:
    """{name: median sentences/s} of ``encode(texts, batch_size)`` for each encoder
    (SentenceEncoder or DistillStudent), after one warm-up call each, the encoders
    taking turns in every round so that load from other users falls on all alike."""
    times: dict = {k: [] for k in encoders}
    for e in encoders.values():
        student_embeddings(e, texts[:batch_size], batch_size)
    for _ in range(rounds):
        for k, e in encoders.items():
            t0 = time.perf_counter()
            student_embeddings(e, texts, batch_size)
            times[k].append(time.perf_counter() - t0)
    return {k: len(texts) / float(np.median(v)) for k, v in times.items()}


# --------------------------------------------------------------------------- saving
def hf_state_dict(bert: BertModel) -> dict:
    """The inverse of load_hf_state_dict: ``{Hugging Face name: float32 array}`` of a
    BertModel (the fused qkv split back into query / key / value rows)."""
    own = {k: to_host(v.data).astype(np.float32, copy=False)
           for k, v in bert.state_dict().items()}
    out = {}
    table = expand_name_map(bert.config, pooler=bert.pooler is not None)
    for hf, (ml, part) in table.items():
        arr = own[ml]
        if part is not None:
            n = arr.shape[0] // 3
            i = {"q": 0, "k": 1, "v": 2}[part]
            arr = arr[i * n:(i + 1) * n]
        out[hf] = np.ascontiguousarray(arr)
    return out


def save_pretrained(model: SentenceEncoder | DistillStudent, tokenizer: Any,
                    folder: str | os.PathLike) -> Path:
    """Write ``model`` (a SentenceEncoder, or a DistillStudent without ``out_proj``) as
    a folder :func:`minilm.models.load_pretrained` reads: config.json (Hugging Face
    BertModel config), model.safetensors (Hugging Face names), vocab.txt,
    tokenizer_config.json, sentence_bert_config.json (max_seq_length),
    1_Pooling/config.json (mean or cls), modules.json (Normalize when the model
    normalises). Each file is written atomically (temp file + rename)."""
    import safetensors.numpy as stnp

    if isinstance(model, DistillStudent):
        if model.out_proj is not None:
            raise ValueError("save_pretrained: a narrow student has an out_proj that a "
                             "BertModel folder cannot hold; save a layer-dropped student")
        model = model.encoder
    if not isinstance(model, SentenceEncoder):
        raise TypeError(f"save_pretrained: expected a SentenceEncoder, got "
                        f"{type(model).__name__}")
    c = model.config
    if c.position_offset:
        raise ValueError("save_pretrained: RoBERTa-style position offsets are not written")
    folder = Path(folder)
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    hf_cfg = {"architectures": ["BertModel"], "model_type": "bert",
              "position_embedding_type": "absolute",
              **{k: v for k, v in c.to_dict().items() if k != "position_offset"}}
    files = {
        "config.json": hf_cfg,
        "tokenizer_config.json": {"do_lower_case": bool(tokenizer.lowercase),
                                  "tokenizer_class": "BertTokenizer",
                                  "model_max_length": c.max_length},
        "sentence_bert_config.json": {"max_seq_length": model.max_length,
                                      "do_lower_case": False},
        "1_Pooling/config.json": {"word_embedding_dimension": c.hidden_size,
                                  "pooling_mode_cls_token": model.pooling == "cls",
                                  "pooling_mode_mean_tokens": model.pooling == "mean",
                                  "pooling_mode_max_tokens": False,
                                  "pooling_mode_mean_sqrt_len_tokens": False},
        "modules.json": [{"idx": 0, "name": "0", "path": "",
                          "type": "sentence_transformers.models.Transformer"},
                         {"idx": 1, "name": "1", "path": "1_Pooling",
                          "type": "sentence_transformers.models.Pooling"}]
        + ([{"idx": 2, "name": "2", "path": "2_Normalize",
             "type": "sentence_transformers.models.Normalize"}] if model.normalize else []),
    }
    for name, obj in files.items():
        atomic_write_bytes(folder / name, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))
    atomic_write_bytes(folder / "vocab.txt",
                  "".join(t + "\n" for t in tokenizer.vocab).encode("utf-8"))
    atomic_write_bytes(folder / "model.safetensors",
                  stnp.save(hf_state_dict(model.bert), metadata={"format": "pt"}))
    return folder
