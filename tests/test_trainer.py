"""The training loop: a tiny GPT overfits a batch; early stopping; the CLI end to end;
the errors of bad data and bad checkpoints. (That a resumed run continues bit for bit,
the whole training state compared, is in tests/test_resume.py.)"""

import json
import math
import os

import numpy as np
import pytest

import minilm as ml
from minilm import optim
from minilm.cli import main as cli
from minilm.data import CharTokenizer, DataLoader, RandomWindowBatches, split_tokens
from minilm.nn import GPT, GPTConfig
from minilm.train.config import TrainConfig
from minilm.train.trainer import Trainer

TEXT = ("the quick brown fox jumps over the lazy dog. " * 40
        + "pack my box with five dozen liquor jugs. " * 40)


def test_tiny_gpt_overfits_a_batch():
    ml.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=20, context_length=16, n_layers=2, n_heads=2, d_model=32))
    ids = ml.randint(0, 20, (4, 17))
    x, y = ids[:, :-1], ids[:, 1:]
    opt = optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        _, loss = m(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.05, loss.item()


def _setup(tmp_path, max_steps=12, lr=3e-3, **kw):
    ml.use_backend("numpy")
    ml.manual_seed(0)
    tok = CharTokenizer.train(TEXT)
    tokens = np.asarray(tok.encode(TEXT), dtype=np.uint16)
    train, val = split_tokens(tokens, 0.1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layers=2, n_heads=2,
                          d_model=16, dropout=0.1))
    cfg = TrainConfig(out_dir=str(tmp_path), batch_size=4, max_steps=max_steps, warmup_steps=3,
                      eval_interval=4, eval_batches=2, ckpt_interval=100, log_interval=1,
                      progress=False, plot=False, lr=lr, min_lr=lr / 10, **kw)
    loader = DataLoader(RandomWindowBatches(train, 4, 16, rng=7), prefetch=2)
    return Trainer(model, loader, val, cfg, tokenizer=tok)


def test_early_stopping_and_logs(tmp_path):
    t = _setup(tmp_path, max_steps=40, lr=0.0, early_stopping_patience=2)
    last = t.fit()  # lr 0: the validation loss never improves after the first evaluation
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert last["stopped_early"] and t.step == 12 and len(vals) == 3
    assert len({round(v, 12) for v in vals}) == 1
    assert (tmp_path / "ckpt.safetensors").exists() and (tmp_path / "best.safetensors").exists()


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    ml.manual_seed(0)
    m1 = GPT(GPTConfig(vocab_size=20, context_length=8, n_layers=1, n_heads=2, d_model=8)).double()
    m2 = GPT(GPTConfig(vocab_size=20, context_length=8, n_layers=1, n_heads=2, d_model=8)).double()
    m2.load_state_dict(m1.state_dict())
    ids = ml.randint(0, 20, (4, 9))
    _, loss = m1(ids[:, :-1], ids[:, 1:])
    loss.backward()
    for half in (slice(0, 2), slice(2, 4)):
        _, l2 = m2(ids[half, :-1], ids[half, 1:])
        (l2 / 2).backward()
    for (n, p), (_, q) in zip(m1.named_parameters(), m2.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-14,
                                   err_msg=n)


@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT * 3)
    return p


def test_cli_train_sample_eval_resume(tmp_path, corpus_file, capsys):
    out = tmp_path / "run"
    common = ["--data", str(corpus_file), "--out-dir", str(out), "--tokenizer", "bpe",
              "--bpe-vocab-size", "300", "--n-layers", "1", "--n-heads", "2", "--d-model", "16",
              "--context-length", "16", "--batch-size", "4", "--eval-interval", "5",
              "--ckpt-interval", "5", "--no-progress", "--warmup-steps", "2"]
    assert cli(["train", *common, "--max-steps", "10"]) == 0
    for f in ("ckpt.safetensors", "best.safetensors", "metrics.jsonl", "loss.png",
              "tokenizer.json"):
        assert (out / f).exists(), f
    assert cli(["train", *common, "--max-steps", "15", "--resume"]) == 0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 15
    capsys.readouterr()
    assert cli(["sample", "--out-dir", str(out), "--prompt", "the quick", "--max-new-tokens",
                "20", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "the quick" in text
    assert cli(["sample", "--out-dir", str(out), "--prompt", "the", "--beam", "2",
                "--max-new-tokens", "5"]) == 0
    assert cli(["eval", "--out-dir", str(out)]) == 0
    res = capsys.readouterr().out
    assert "perplexity" in res
    ppl = float(res.split("perplexity")[1].split()[0])
    assert 1.0 < ppl < 300 and math.isfinite(ppl)
    # sliding windows: every target once, with more context than non-overlapping ones
    assert cli(["eval", "--out-dir", str(out), "--stride", "4"]) == 0
    res = capsys.readouterr().out
    slid = float(res.split("perplexity")[1].split()[0])
    assert 1.0 < slid < 300 and math.isfinite(slid)
    assert cli(["eval", "--out-dir", str(out), "--stride", "17"]) == 2
    assert "--stride 17: must be at most the context length 16" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    assert cli(["train", "--data", str(tmp_path / "missing.txt"), "--out-dir",
                str(tmp_path / "r"), "--no-progress"]) == 2
    assert "missing.txt" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert cli(["train", "--data", str(empty), "--out-dir", str(tmp_path / "r2"),
                "--no-progress"]) == 2
    assert "empty" in capsys.readouterr().err.lower()
    assert cli(["sample", "--out-dir", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_checkpoint_from_a_different_config_is_refused(tmp_path, corpus_file, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(corpus_file), "--out-dir", str(out), "--tokenizer", "char",
            "--n-layers", "1", "--n-heads", "2", "--d-model", "16", "--context-length", "16",
            "--batch-size", "2", "--max-steps", "2", "--no-progress", "--warmup-steps", "1"]
    assert cli(args) == 0
    t = _setup(tmp_path / "other")
    before = {k: v.numpy().copy() for k, v in t.model.state_dict().items()}
    with pytest.raises(ValueError, match=r"shape mismatch|missing keys|unexpected keys"):
        t.resume(out / "ckpt.safetensors")
    for k, v in t.model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    t.loader.close()


def test_truncated_checkpoint_is_a_clear_error(tmp_path, corpus_file, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(corpus_file), "--out-dir", str(out), "--tokenizer", "char",
            "--n-layers", "1", "--n-heads", "2", "--d-model", "16", "--context-length", "16",
            "--batch-size", "2", "--max-steps", "2", "--no-progress", "--warmup-steps", "1"]
    assert cli(args) == 0
    ck = out / "best.safetensors"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert cli(["sample", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "best.safetensors" in err
    os.remove(ck)


@pytest.mark.parametrize("name", ["numba", "numpy"])
def test_a_slow_first_step_on_numba_says_it_is_compiling(tmp_path, capsys, monkeypatch, name):
    import time

    import minilm.train.trainer as tr

    monkeypatch.setattr(tr, "COMPILE_NOTICE_S", 0.05)
    t = _setup(tmp_path, max_steps=2)
    ml.use_backend(name)
    step = t.train_step

    def slow_step(batches):  # a first step that outlasts the notice delay
        time.sleep(0.3)
        return step(batches)

    monkeypatch.setattr(t, "train_step", slow_step)
    t.fit()
    out = capsys.readouterr().out
    said = "compiling the Numba kernels for float32" in out
    assert said == (name == "numba")
    assert ("first step done after" in out) == (name == "numba")
    assert out.count("compiling the Numba kernels") <= 1
