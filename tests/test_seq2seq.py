"""Sequence-to-sequence models (minilm/nn/seq2seq.py), the cross-attention KV cache
(minilm/nn/attention.py), the date task (minilm/data/dates.py), BLEU and exact match
(minilm/train/seq_metrics.py), and examples/seq2seq_dates.py in its --quick form.

Model checks run in float64: gradcheck of both models, incremental decoding with the
cache equal to the teacher-forced forward (1e-10, RoPE'd decoder and beam reorder
included), Bahdanau weights summing to 1 and 0 on padding, padding invariance, and
greedy == beam search with one beam."""

import datetime
import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest

import minilm as ml
from minilm import nn
from minilm.data import (
    DATE_FORMATS,
    CharVocab,
    date_pairs,
    date_splits,
    date_vocabularies,
    encode_pairs,
    format_date,
)
from minilm.data.dates import ordinal
from minilm.nn.attention import KVCache
from minilm.train.seq_metrics import corpus_bleu, exact_match, ngram_counts

SRC_V, TGT_V = 9, 7


def transformer(positional="sinusoidal", **kw):
    ml.manual_seed(0)
    opts = dict(d_model=8, n_heads=2, n_encoder_layers=2, n_decoder_layers=2, d_ff=12,
                max_src_len=10, max_tgt_len=8, positional=positional)
    opts.update(kw)
    return nn.TransformerSeq2Seq(SRC_V, TGT_V, **opts).double()


def lstm(**kw):
    ml.manual_seed(0)
    opts = dict(emb_dim=4, hidden_size=5, attn_dim=3, bidirectional=True)
    opts.update(kw)
    return nn.LSTMSeq2Seq(SRC_V, TGT_V, **opts).double()


def batch(seed=0, B=3, S=6, T=5):
    """Random source ids in [3, V) (no special token), row 1 padded after 4 tokens, and
    decoder inputs starting with <bos>."""
    rng = np.random.default_rng(seed)
    src = rng.integers(3, SRC_V, (B, S))
    src[1, 4:] = 0
    tgt = rng.integers(3, TGT_V, (B, T))
    tgt[:, 0] = 1
    return src, src != 0, tgt


# ---------------------------------------------------------------------------- gradcheck


def gradcheck_params(model, fn):
    """gradcheck of ``fn()`` with respect to every parameter of ``model`` (gradcheck's
    perturbed copies are put in the parameters for one call, then the originals back)."""
    params = list(model.parameters())
    originals = [p.data for p in params]

    def call(*copies):
        for p, c in zip(params, copies):
            p.data = c.data
        try:
            return fn()
        finally:
            for p, o in zip(params, originals):
                p.data = o

    assert ml.gradcheck(call, params)


def test_gradcheck_transformer_seq2seq():
    m = transformer(n_encoder_layers=1, n_decoder_layers=1, d_model=4, d_ff=6,
                    positional="learned")
    src, mask, tgt = batch(1, B=2, S=4, T=3)
    src[1, 3:] = 0
    gradcheck_params(m, lambda: m(src, src != 0, tgt))


def test_gradcheck_lstm_seq2seq():
    m = lstm(emb_dim=2, hidden_size=2, attn_dim=2)
    src, mask, tgt = batch(2, B=2, S=3, T=3)
    src[1, 2:] = 0
    gradcheck_params(m, lambda: m(src, src != 0, tgt, return_attention=True))


# ---------------------------------------------------------------------------- the cache


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope"])
def test_incremental_decoding_with_cache_equals_full_forward(positional):
    m = transformer(positional, tie_weights=positional == "learned")
    assert (m.head.weight is m.tgt_emb.weight) == (positional == "learned")
    src, mask, tgt = batch(3)
    full = m(src, mask, tgt).numpy()
    memory = m.encode(src, mask)
    cache = KVCache()
    steps = [m.decode_step(tgt[:, t:t + 1], memory if t == 0 else None, mask, cache).numpy()
             for t in range(tgt.shape[1])]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=0, atol=1e-10)
    assert cache.length == tgt.shape[1]
    # cross-attention entries: the source's S keys per layer, stored once, never grown
    assert sorted(cache.cross) == [0, 1]
    assert all(e[0].shape == (3, 2, src.shape[1], 4) for e in cache.cross.values())


def test_cache_with_beam_reorder_equals_full_forward_of_the_reordered_rows():
    m = transformer("rope")
    src, mask, tgt = batch(4)
    memory = m.encode(src, mask)
    cache = KVCache()
    split = 2
    first = m.decode_step(tgt[:, :split], memory, mask, cache).numpy()
    rows = np.array([2, 0, 0, 1])  # a beam step: keep, drop and duplicate hypotheses
    cache.reorder(rows)
    rest = m.decode_step(tgt[rows, split:], None, None, cache).numpy()
    full = m(src[rows], mask[rows], tgt[rows]).numpy()
    np.testing.assert_allclose(first[rows], full[:, :split], rtol=0, atol=1e-10)
    np.testing.assert_allclose(rest, full[:, split:], rtol=0, atol=1e-10)


def test_cross_attention_keys_values_are_computed_once_and_never_rotated():
    ml.manual_seed(0)
    d, S = 8, 5
    rope = nn.RotaryEmbedding(4, 16)
    cross = nn.MultiHeadAttention(d, 2, cross=True, causal=False, rope=rope).double()
    plain = nn.MultiHeadAttention(d, 2, cross=True, causal=False).double()
    plain.load_state_dict(cross.state_dict())
    rng = np.random.default_rng(5)
    ctx = ml.Tensor(rng.standard_normal((2, S, d)))
    x = ml.Tensor(rng.standard_normal((2, 3, d)))
    pad = np.zeros((2, S), dtype=bool)
    pad[0, 3:] = True
    ref = plain(x, ctx, key_padding_mask=pad).numpy()
    calls = []
    cross.kv_proj.register_forward_hook(lambda *a: calls.append(1))
    cache = KVCache()
    cache.length = 4  # the decoder is at position 4: no rotation may depend on it
    outs = []
    for t in range(3):
        outs.append(cross(x[:, t:t + 1], ctx if t == 0 else None, key_padding_mask=pad,
                          cache=cache).numpy())
        cache.advance(1)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), ref, rtol=0, atol=1e-12)
    assert len(calls) == 1  # kv_proj(context) once, on the first step
    assert cache.cross[0][0].shape == (2, 2, S, 4) and cache.layers == {}
    # no cache: the same result as without RoPE (cross-attention is never rotated)
    np.testing.assert_allclose(cross(x, ctx, key_padding_mask=pad).numpy(), ref, atol=1e-12)


def test_cross_attention_without_context_or_cache_is_an_error():
    mha = nn.MultiHeadAttention(8, 2, cross=True)
    with pytest.raises(ValueError, match="needs a context"):
        mha(ml.Tensor(np.zeros((1, 2, 8), dtype=np.float32)))


# ---------------------------------------------------------------------------- attention, padding


def test_bahdanau_weights_sum_to_one_and_are_zero_on_padding():
    m = lstm()
    src, mask, tgt = batch(6)
    _, alpha = m(src, mask, tgt, return_attention=True)
    a = alpha.numpy()
    assert a.shape == (3, tgt.shape[1], src.shape[1])
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-12)
    assert np.all(a[1, :, 4:] == 0.0) and np.all(a[1, :, :4] > 0)


def test_transformer_cross_weights_sum_to_one_zero_on_padding_and_match_the_cache():
    m = transformer()
    src, mask, tgt = batch(6)
    _, w = m(src, mask, tgt, return_attention=True)
    assert w.shape == (3, tgt.shape[1], src.shape[1])
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-12)
    assert np.all(w[1, :, 4:] == 0.0) and np.all(w[1, :, :4] > 0)
    memory, cache = m.encode(src, mask), KVCache()
    steps = [m.decode_step(tgt[:, t:t + 1], memory, mask, cache, return_attention=True)[1]
             for t in range(tgt.shape[1])]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [transformer, lstm])
def test_source_padding_does_not_change_the_result(make):
    m = make()
    src, mask, tgt = batch(7)
    alone = m(src[1:2, :4], None, tgt[1:2]).numpy()
    padded = m(src, mask, tgt).numpy()[1:2]
    np.testing.assert_allclose(padded, alone, rtol=0, atol=1e-10)
    longer = np.concatenate([src, np.zeros((3, 3), dtype=src.dtype)], axis=1)
    np.testing.assert_allclose(m(longer, longer != 0, tgt).numpy(), m(src, mask, tgt).numpy(),
                               rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("make", [transformer, lstm])
def test_greedy_equals_beam_search_with_one_beam(make):
    m = make()
    src, mask, _ = batch(8, B=4)
    g, ga = m.greedy_decode(src, src_mask=mask, max_len=7, return_attention=True)
    b, ba = m.beam_decode(src, src_mask=mask, beam_size=1, max_len=7, return_attention=True)
    np.testing.assert_array_equal(g, b)
    np.testing.assert_array_equal(m.beam_decode(src, 1, 7, 1.0, mask), m.greedy_decode(src, 7, mask))
    np.testing.assert_allclose(ga, ba, atol=1e-12)
    assert g.shape[1] <= 7 and not np.isin(g, [0, 1]).all(axis=1).any()


@pytest.mark.parametrize("make", [transformer, lstm])
def test_beam_attention_is_that_of_the_returned_ids(make):
    """With several beams the ids and attention are rebuilt from per-step backpointers:
    the attention returned for each output token equals the teacher-forced attention
    of the returned ids, up to and including <eos>."""
    m = make()
    src, mask, _ = batch(12, B=4)
    with ml.no_grad():
        ids, att = m.beam_decode(src, src_mask=mask, beam_size=3, max_len=6,
                                 return_attention=True)
        tgt_in = np.concatenate([np.ones((len(ids), 1), dtype=np.int64), ids[:, :-1]], axis=1)
        _, want = m(src, mask, tgt_in, return_attention=True)
    want = want.numpy() if hasattr(want, "numpy") else np.asarray(want)
    for b in range(len(ids)):
        n = list(ids[b]).index(2) + 1 if 2 in ids[b] else ids.shape[1]
        np.testing.assert_allclose(att[b, :n], want[b, :n], atol=1e-10)


def test_greedy_tokens_are_the_argmax_of_the_teacher_forced_logits():
    m = lstm()
    src, mask, _ = batch(9)
    ids = m.greedy_decode(src, src_mask=mask, max_len=6)
    tgt_in = np.concatenate([np.ones((3, 1), dtype=np.int64), ids[:, :-1]], axis=1)
    logits = m(src, mask, tgt_in).numpy()
    logits[..., :2] = -np.inf  # <pad>, <bos> are never produced
    for b in range(3):
        n = list(ids[b]).index(2) + 1 if 2 in ids[b] else ids.shape[1]
        np.testing.assert_array_equal(logits[b, :n].argmax(-1), ids[b, :n])


@pytest.mark.parametrize("make", [transformer, lstm])
def test_beam_search_score_is_at_least_the_greedy_score(make):
    """With alpha = 0 the beam's best log p(y|x) is >= greedy's (greedy is one path the
    beam considers while it is among the top K)."""
    m = make()
    src, mask, _ = batch(10, B=4)

    def logp(ids):
        tgt_in = np.concatenate([np.ones((len(ids), 1), dtype=np.int64), ids[:, :-1]], axis=1)
        z = m(src, mask, tgt_in).numpy()
        z = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - z.max(-1, keepdims=True)
        out = []
        for b in range(len(ids)):
            n = list(ids[b]).index(2) + 1 if 2 in ids[b] else ids.shape[1]
            out.append(sum(z[b, t, ids[b, t]] for t in range(n)))
        return np.array(out)

    with ml.no_grad():
        g = m.greedy_decode(src, src_mask=mask, max_len=6)
        b = m.beam_decode(src, src_mask=mask, beam_size=3, max_len=6, length_penalty=0.0)
        assert np.all(logp(b) >= logp(g) - 1e-9)


def test_decode_rejects_bad_input():
    m = transformer()
    with pytest.raises(ValueError, match="max_len"):
        m.greedy_decode(np.array([[3, 4]]), max_len=99)
    with pytest.raises(ValueError, match="no real token"):
        m.greedy_decode(np.array([[0, 0]]))
    with pytest.raises(ValueError, match="beam_size"):
        m.beam_decode(np.array([[3, 4]]), beam_size=50)


# ---------------------------------------------------------------------------- dates


def test_date_formats_write_the_example_day():
    d = datetime.date(1998, 3, 3)
    assert format_date(d, "weekday_ordinal_of") == "Tuesday 3rd of March 1998"
    assert format_date(d, "dotted_dmy_short") == "03.03.98"
    assert format_date(d, "month_day_comma_year") == "March 3, 1998"
    assert format_date(d, "slash_mdy_marked") == "3/3/1998 (m/d/y)"
    assert len(DATE_FORMATS) >= 12
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "31st"]


def test_date_splits_are_seeded_and_disjoint():
    a_train, a_test = date_splits(300, 200, seed=3)
    b_train, b_test = date_splits(300, 200, seed=3)
    assert a_train == b_train and a_test == b_test
    assert date_splits(300, 200, seed=4)[0] != a_train
    train_days = {t for _, t in a_train}
    test_days = [t for _, t in a_test]
    assert len(set(test_days)) == len(test_days)  # held-out pairs: distinct days
    assert not train_days & set(test_days)
    # every pair's source names its target day (two-digit years: 50-99 -> 19yy)
    for s, t in a_train + a_test:
        d = datetime.date.fromisoformat(t)
        assert datetime.date(1950, 1, 1) <= d <= datetime.date(2049, 12, 31)
        assert s in {f(d) for f in DATE_FORMATS.values()}
    fmts = {f for s, t in a_train for f, w in DATE_FORMATS.items()
            if w(datetime.date.fromisoformat(t)) == s}
    assert len(fmts) == len(DATE_FORMATS)


def test_char_vocab_and_padded_batches():
    sv, tv = date_vocabularies()
    pairs = date_pairs([datetime.date(1998, 3, 3)], 2, np.random.default_rng(0))
    for s, _ in pairs:
        assert sv.decode(sv.encode(s, bos=True, eos=True)) == s
    b = encode_pairs([("3 March 1998", "1998-03-03"), ("03.03.98", "1998-03-03")], sv, tv)
    assert b["src"].shape == (2, 12) and b["src_mask"][1].sum() == 8
    assert list(b["tgt_in"][0, :2]) == [1, tv.encode("1")[0]]
    assert b["tgt_out"][0, -1] == CharVocab.eos_id and b["tgt_in"].shape == (2, 11)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tv.encode("x")


# ---------------------------------------------------------------------------- metrics


def test_bleu_hand_computed():
    hyp, ref = "the cat sat on the mat".split(), "the cat is on the mat".split()
    # p1 = 5/6 (the x2, cat, on, mat), p2 = 3/5 (the cat, on the, the mat),
    # p3 = 1/4 (on the mat); c = r = 6 -> BP = 1; BLEU = (5/6 * 3/5 * 1/4)^(1/3) = 1/2
    assert corpus_bleu([hyp], [ref], max_n=3) == pytest.approx(0.5, abs=1e-12)
    assert corpus_bleu([hyp], [ref]) == 0.0  # no 4-gram matches
    short = "the cat on the mat".split()
    # p1 = 5/5, p2 = 3/4, c = 5 < r = 6 -> BP = exp(1 - 6/5)
    assert corpus_bleu([short], [ref], max_n=2) == pytest.approx(
        math.exp(-0.2) * math.sqrt(3 / 4), abs=1e-12)
    # corpus level: counts summed before dividing; p1 = 10/11, p2 = 6/9, BP = exp(1 - 12/11)
    assert corpus_bleu([hyp, short], [ref, ref], max_n=2) == pytest.approx(
        math.exp(1 - 12 / 11) * math.sqrt(10 / 11 * 6 / 9), abs=1e-12)
    # clipping: "the" counted at most as often as in the reference
    assert corpus_bleu([["the"] * 3], [["the", "cat", "x"]], max_n=1) == pytest.approx(1 / 3)
    # characters: one wrong digit of ten
    assert corpus_bleu(["1998-03-03"], ["1998-03-04"]) == pytest.approx(
        (9 / 10 * 8 / 9 * 7 / 8 * 6 / 7) ** 0.25)
    assert corpus_bleu(["1998-03-03"], ["1998-03-03"]) == 1.0
    assert ngram_counts("abab", 2) == {("a", "b"): 2, ("b", "a"): 1}


def test_exact_match():
    assert exact_match(["a", "bc", "d"], ["a", "bd", "d"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exact_match(["a"], [])


# ---------------------------------------------------------------------------- the example


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "seq2seq_dates.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("seq2seq_dates", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_example_quick_mode_learns_the_reduced_task(tmp_path):
    example = _load_example()
    res = example.main(["--quick", "--out-dir", str(tmp_path)])
    for kind in ("transformer", "lstm"):
        for mode in ("greedy", "beam4"):
            # chance is ~0: a date is right only when all 10 characters are
            assert res[kind][mode]["exact_match"] >= 0.5, (kind, mode, res[kind][mode])
            assert res[kind][mode]["bleu"] >= 0.8
        assert os.path.getsize(tmp_path / f"attention_{kind}.png") > 1000


@pytest.mark.parametrize("flags", [["--steps", "0"], ["--beam", "0"], ["--beam", "99"],
                                   ["--batch", "-1"], ["--d-model", "30"],
                                   ["--n-test", "100000"], ["--dropout", "1"]])
def test_example_rejects_bad_flags_with_an_error_line(tmp_path, flags, capsys):
    with pytest.raises(SystemExit) as e:
        _load_example().main([*flags, "--out-dir", str(tmp_path / "run")])
    assert e.value.code == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
