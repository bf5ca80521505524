"""Tokenizers: exact round trips, BPE training (against a naive reference), JSON I/O."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilm
from minilm.data import (
    ByteBPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_corpus,
    load_tokenizer,
    pretokenize,
    tokenizer_from_dict,
    train_merges,
)
from minilm.data.bpe import _merge

EOT = "<|endoftext|>"

# Any Unicode scalar value (no lone surrogates: UTF-8 cannot hold them).
unicode_text = st.text(st.characters(codec="utf-8"), max_size=60)


@pytest.fixture(scope="module")
def corpus() -> str:
    return load_corpus()[:40_000]


@pytest.fixture(scope="module")
def bpe(corpus: str) -> ByteBPETokenizer:
    return ByteBPETokenizer.train(corpus, vocab_size=400, special_tokens=[EOT])


@pytest.fixture(scope="module")
def words(corpus: str) -> list[str]:
    return [w for w, _ in Counter(pretokenize(corpus)).most_common(200)]


def naive_merges(text: str, num_merges: int) -> list[tuple[int, int]]:
    """Reference trainer: recount every pair before each merge (slow, obviously right)."""
    words = [(list(w.encode("utf-8")), c) for w, c in Counter(pretokenize(text)).items()]
    merges = []
    for r in range(num_merges):
        counts: Counter = Counter()
        for w, c in words:
            for p in zip(w, w[1:]):
                counts[p] += c
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))  # most frequent, then smallest
        merges.append(best)
        words = [(_merge(w, best[0], best[1], 256 + r), c) for w, c in words]
    return merges


# ---------------------------------------------------------------------- pre-tokenizer
@given(unicode_text)
def test_pretokenize_covers_the_text(s):
    assert "".join(pretokenize(s)) == s


def test_pretokenize_chunks():
    assert pretokenize("Hello world's  \n    def f(x_1): return 1234") == [
        "Hello", " world", "'s", "  \n   ", " def", " f", "(", "x", "_", "1", "):", " return",
        " 123", "4"]


# ---------------------------------------------------------------------- BPE round trip
@given(st.one_of(
    unicode_text,
    st.lists(st.one_of(st.sampled_from(["the", " the", " of", "\n\n", " ", EOT, "é", "👍🏽"]),
                       unicode_text), max_size=12).map("".join),
))
def test_bpe_round_trip(bpe, s):
    ids = bpe.encode(s)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == s
    assert bpe.decode(bpe.encode(s, allow_special=False)) == s


@given(st.lists(st.integers(0, 199), max_size=30))
def test_bpe_round_trip_corpus_words(bpe, words, picks):
    s = "".join(words[i] for i in picks)
    ids = bpe.encode(s)
    assert bpe.decode(ids) == s
    assert len(ids) <= len(s.encode("utf-8"))


@pytest.mark.parametrize("s", [
    "", "a", "👨‍👩‍👧‍👦 family", "e\u0301\u0302 combining", "日本語のテキスト", "tab\tcr\r\nnul\x00",
    " " * 500, "\U0010ffff\ufeff\u200b", "x" * 1000, "don't won't they'll", "🙂" * 50,
])
def test_bpe_round_trip_examples(bpe, s):
    assert bpe.decode(bpe.encode(s)) == s


def test_bpe_lone_surrogate_is_a_clear_error(bpe):
    with pytest.raises(ValueError, match=r"surrogate '\\ud800' at position 3"):
        bpe.encode("abc\ud800def")
    with pytest.raises(ValueError, match="surrogate"):
        ByteBPETokenizer.train("ab\udfffc", 300)


def test_bpe_decode_partial_utf8_and_bad_ids(bpe):
    ids = bpe.encode("é", allow_special=False)
    raw = b"".join(bpe.token_bytes(i) for i in ids)
    assert raw == "é".encode()
    assert bpe.decode(list(raw[:1])) == "\ufffd"  # a cut multi-byte character
    assert bpe.decode_bytes(list(raw[:1])) == raw[:1]
    for bad in (-1, bpe.vocab_size):
        with pytest.raises(ValueError, match=f"id {bad} is outside"):
            bpe.decode([1, bad])


def test_bpe_decode_accepts_arrays_and_tensors(bpe):
    ids = bpe.encode("the end")
    assert bpe.decode(np.array(ids)) == "the end"
    assert bpe.decode(minilm.tensor(ids)) == "the end"


def test_iter_encode_matches_encode(bpe, corpus):
    text = corpus[:5000] + EOT + corpus[5000:6000]
    pieces = list(bpe.iter_encode(text, chunk_size=100))
    assert len(pieces) > 10
    assert [i for p in pieces for i in p] == bpe.encode(text)
    char = CharTokenizer.train(text)
    assert [i for p in char.iter_encode(text, chunk_size=7) for i in p] == char.encode(text)


# ---------------------------------------------------------------------- BPE training
def test_merges_are_learned(bpe, corpus):
    assert bpe.vocab_size == 400
    assert len(bpe.merges) == 400 - 256 - 1
    for w in (" the", " is", " object", " class", "ing"):
        assert len(bpe.encode(w)) == 1, w
    sample = corpus[:5000]
    assert len(bpe.encode(sample)) < 0.6 * len(sample.encode("utf-8"))
    # merged tokens are the concatenation of their parts
    for r, (a, b) in enumerate(bpe.merges):
        assert bpe.token_bytes(256 + r) == bpe.token_bytes(a) + bpe.token_bytes(b)


def test_training_is_deterministic(corpus):
    a = ByteBPETokenizer.train(corpus[:20000], 320)
    b = ByteBPETokenizer.train(corpus[:20000], 320)
    assert a.merges == b.merges
    assert a.fingerprint() == b.fingerprint()


def test_incremental_training_equals_naive_recount(corpus):
    text = corpus[:6000] + " aaaaaaa aaa abababab 🙂🙂🙂"
    fast = ByteBPETokenizer.train(text, 256 + 60).merges
    assert fast == naive_merges(text, 60)


@given(st.text(st.sampled_from("ab \n.é"), max_size=80), st.integers(0, 20))
def test_incremental_training_equals_naive_recount_random(text, n):
    counts = Counter(w.encode("utf-8") for w in pretokenize(text))
    assert train_merges(counts, n) == naive_merges(text, n)


def test_ties_break_to_the_smallest_pair():
    # chunks "ab", " cd": the pairs (a,b), (" ",c), (c,d) all occur once
    assert ByteBPETokenizer.train("ab cd", 257).merges == [(ord(" "), ord("c"))]


def test_training_stops_when_pairs_run_out():
    tok = ByteBPETokenizer.train("ab", 1000)
    assert tok.merges == [(97, 98)] and tok.vocab_size == 257
    assert tok.encode("ab") == [256]


def test_encode_applies_merges_by_rank():
    # merges: (b,c) first, then (a,b): "abc" -> a (bc); the later (a,b) never fires
    tok = ByteBPETokenizer([(98, 99), (97, 98)])
    assert tok.encode("abc") == [97, 256]
    assert tok.encode("abd") == [257, 100]


def test_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size must be"):
        ByteBPETokenizer.train("abc", 256, special_tokens=[EOT])
    with pytest.raises(ValueError, match="does not exist yet"):
        ByteBPETokenizer([(97, 256)])
    with pytest.raises(ValueError, match="duplicate special"):
        ByteBPETokenizer((), [EOT, EOT])
    with pytest.raises(ValueError, match="non-empty"):
        ByteBPETokenizer((), [""])
    with pytest.raises(TypeError, match="expected str, got bytes"):
        ByteBPETokenizer().encode(b"abc")
    with pytest.raises(TypeError, match="expected str, got bytes"):
        CharTokenizer("abc").encode(b"abc")


# ---------------------------------------------------------------------- special tokens
def test_special_tokens_are_never_split(bpe):
    eot = bpe.special_tokens[EOT]
    assert eot == bpe.vocab_size - 1
    ids = bpe.encode(f"hello{EOT}world{EOT}")
    assert ids.count(eot) == 2 and ids[-1] == eot
    assert bpe.decode(ids) == f"hello{EOT}world{EOT}"
    plain = bpe.encode(EOT, allow_special=False)
    assert eot not in plain and bpe.decode(plain) == EOT


def test_special_tokens_are_not_trained_on():
    tok = ByteBPETokenizer.train((EOT + "xy ") * 200, 300, special_tokens=[EOT])
    learned = [tok.token_bytes(256 + r) for r in range(len(tok.merges))]
    assert all(b"endof" not in t and b"<|" not in t for t in learned)
    assert tok.encode(EOT + "xy") == [tok.special_tokens[EOT], *tok.encode("xy")]


def test_longest_special_token_wins():
    tok = ByteBPETokenizer((), ["<a>", "<a><b>"])
    assert tok.encode("<a><b><a>") == [tok.special_tokens["<a><b>"], tok.special_tokens["<a>"]]


# ---------------------------------------------------------------------- serialisation
def test_bpe_save_load_round_trip(bpe, corpus, tmp_path):
    path = tmp_path / "tok.json"
    bpe.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temp file left behind
    d = json.loads(path.read_text())
    assert d["type"] == "byte_bpe" and d["vocab_size"] == 400
    for loaded in (ByteBPETokenizer.load(path), load_tokenizer(path), Tokenizer.load(path),
                   tokenizer_from_dict(json.loads(json.dumps(bpe.to_dict())))):
        assert isinstance(loaded, ByteBPETokenizer)
        assert loaded == bpe and loaded.fingerprint() == bpe.fingerprint()
        sample = corpus[:3000] + EOT + "🙂"
        assert loaded.encode(sample) == bpe.encode(sample)
    with pytest.raises(ValueError, match="holds a ByteBPETokenizer"):
        CharTokenizer.load(path)


def test_from_dict_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer type 'nope'"):
        tokenizer_from_dict({"type": "nope"})
    with pytest.raises(ValueError, match="'type' key"):
        tokenizer_from_dict({"merges": []})
    with pytest.raises(ValueError, match="does not match"):
        tokenizer_from_dict({"type": "byte_bpe", "merges": [[97, 98]], "vocab_size": 300})
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_tokenizer(tmp_path / "bad.json")


# ---------------------------------------------------------------------- CharTokenizer
@given(st.text(st.characters(), min_size=1, max_size=50))
def test_char_round_trip(s):
    tok = CharTokenizer.train(s)
    assert tok.chars == sorted(set(s))
    ids = tok.encode(s)
    assert len(ids) == len(s) and tok.decode(ids) == s


def test_char_unknown_character(tmp_path):
    tok = CharTokenizer.from_text("hello world")
    assert tok.vocab_size == 8 and tok.encode("hello") == [3, 2, 4, 4, 5]
    with pytest.raises(ValueError, match=r"character 'z' \(U\+007A\) at position 6"):
        tok.encode("hello zoo")
    with pytest.raises(ValueError, match="id 8 is outside"):
        tok.decode([0, 8])
    unk = CharTokenizer.train("hello world", unk_char="\ufffd")
    assert unk.decode(unk.encode("hello zoo")) == "hello \ufffdoo"
    path = tmp_path / "char.json"
    unk.save(path)
    loaded = CharTokenizer.load(path)
    assert loaded == unk and loaded.unk == unk.unk
    assert tokenizer_from_dict(unk.to_dict()).encode("zz") == unk.encode("zz")


def test_char_bad_vocabulary():
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["ab"])
    with pytest.raises(ValueError, match="duplicate"):
        CharTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="unk id 5"):
        CharTokenizer(["a"], unk=5)
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.train("")
