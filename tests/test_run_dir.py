"""Owned run directories (issue 10, items 2, 5, 6, 7 and 8): a run records what it is,
one process writes it, ``train`` never silently reuses or overwrites it, and a resume
continues exactly that run or says what differs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minilm.cli import main
from minilm.train.run_dir import LOCK_NAME, RECORD_NAME, RunDir, RunLock, read_record
from minilm.train.training_state import load_training_state
from tests.test_cli_validation import _refused as refused

CORPUS = "the quick brown fox jumps over the lazy dog.\n" * 40
TINY = ["--tokenizer", "char", "--n-layers", "1", "--n-heads", "2", "--d-model", "16",
        "--context-length", "16", "--max-steps", "2", "--eval-interval", "2",
        "--ckpt-interval", "2", "--eval-batches", "1", "--batch-size", "2",
        "--warmup-steps", "0", "--log-interval", "1", "--no-progress"]


def tree(path: Path) -> dict:
    """{relative path: sha256} of every file under ``path``."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(CORPUS)
    return p


@pytest.fixture
def run(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out-dir", str(out), "--data", str(corpus), *TINY]) == 0
    capsys.readouterr()
    return out


def train(out, corpus, *extra):
    return ["train", "--out-dir", str(out), "--data", str(corpus), *TINY, *extra]


# ----------------------------------------------------------------------------- the record
def test_a_new_run_records_what_it_is(run, corpus):
    record = read_record(run)
    assert record["model_config"]["d_model"] == 16
    assert record["train_config"]["data"] == str(corpus)
    assert record["data"]["sha256"] and record["data"]["chars"] == len(CORPUS)
    assert record["minilm_version"] and record["command"]
    assert not (run / LOCK_NAME).exists()  # released at the end


def test_record_tokenizer_digest_is_the_checkpoints(run):
    from minilm.data import tokenizer_from_dict

    saved = load_training_state(run / "ckpt.safetensors")["tokenizer"]
    assert read_record(run)["tokenizer_sha256"] == tokenizer_from_dict(saved).fingerprint()


# ----------------------------------------------------------------------------- item 2
def test_train_into_an_existing_run_is_refused_and_changes_nothing(capsys, run, corpus):
    before = tree(run)
    refused(capsys, train(run, corpus), "already holds a run", "--resume", "--overwrite")
    # even with another tokenizer asked for, nothing is reused or touched
    refused(capsys, train(run, corpus, "--tokenizer", "bpe"), "already holds a run")
    assert tree(run) == before


def test_overwrite_moves_the_old_run_aside(capsys, run, corpus):
    before = tree(run)
    assert main(train(run, corpus, "--overwrite", "--seed", "7")) == 0
    out = capsys.readouterr().out
    moved = [p for p in run.parent.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and str(moved[0]) in out
    assert tree(moved[0]) == before  # the old run, byte for byte
    assert read_record(run)["train_config"]["seed"] == 7
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]  # a fresh log, not appended


def test_a_non_run_folder_and_a_file_are_refused(capsys, tmp_path, corpus):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    refused(capsys, train(tmp_path / "notes", corpus), "not a minilm run")
    refused(capsys, train(tmp_path / "notes", corpus, "--overwrite"), "not a minilm run")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    (tmp_path / "afile").write_text("x")
    refused(capsys, train(tmp_path / "afile", corpus), "not a directory")
    refused(capsys, train(tmp_path / "afile" / "sub", corpus), "cannot create")
    assert (tmp_path / "afile").read_text() == "x"


def test_an_empty_existing_directory_is_used(capsys, tmp_path, corpus):
    (tmp_path / "empty").mkdir()
    assert main(train(tmp_path / "empty", corpus)) == 0
    assert (tmp_path / "empty" / RECORD_NAME).exists()


def test_a_live_lock_refuses_a_second_writer(capsys, run, corpus):
    lock = RunLock(run / LOCK_NAME)
    lock.acquire()  # held by this (live) process, as by a training in another shell
    try:
        before = tree(run)
        refused(capsys, train(run, corpus, "--resume", "--max-steps", "4"),
                f"process {os.getpid()}", "another process is training")
        refused(capsys, train(run, corpus, "--overwrite"), "in use")
        assert tree(run) == before
    finally:
        lock.release()
    assert not (run / LOCK_NAME).exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_stale_lock_is_taken_over(capsys, run, corpus):
    import socket

    (run / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                             "start": "1", "since": "then"}))
    assert main(train(run, corpus, "--resume", "--max-steps", "3")) == 0
    assert "stale lock" in capsys.readouterr().out
    assert not (run / LOCK_NAME).exists()


def test_a_zombie_owner_is_stale(run):
    import socket

    child = subprocess.Popen([sys.executable, "-c", "pass"])  # exits; not reaped yet
    try:
        for _ in range(200):
            state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                break
            time.sleep(0.01)
        assert state == "Z"
        lock = RunLock(run / LOCK_NAME)
        assert lock.is_stale({"pid": child.pid, "host": socket.gethostname(), "start": None})
    finally:
        child.wait()


def test_a_reused_pid_is_not_the_owner(run):
    # this process's PID, but another start time: the owner died and the PID was reused
    lock = RunLock(run / LOCK_NAME)
    mine = lock._mine()
    assert not lock.is_stale(mine)
    if mine["start"] is not None:  # Linux: /proc gives start times
        assert lock.is_stale({**mine, "start": str(int(mine["start"]) + 1)})
    assert not lock.is_stale({**mine, "host": "another-host"})  # cannot tell: not stale


def test_the_lock_is_released_when_training_fails(capsys, run, corpus, monkeypatch):
    from minilm.train.trainer import Trainer

    def boom(self, batches):
        raise ValueError("simulated failure inside training")

    monkeypatch.setattr(Trainer, "train_step", boom)
    refused(capsys, train(run, corpus, "--resume", "--max-steps", "4"), "simulated failure")
    assert not (run / LOCK_NAME).exists()
    monkeypatch.undo()
    assert main(train(run, corpus, "--resume", "--max-steps", "4")) == 0


# ----------------------------------------------------------------------------- item 5
def test_resume_refuses_other_settings_and_lists_them(capsys, run, corpus):
    before = tree(run)
    line = refused(capsys, train(run, corpus, "--resume", "--max-steps", "4", "--d-model", "32",
                                 "--lr", "0.5"), "--d-model 32 (run: 16)", "--lr 0.5 (run: 0.001)",
                   "max_steps")
    assert "--overwrite" in line
    cfg = run.parent / "other.toml"
    cfg.write_text("[model]\nn_layers = 2\n")
    refused(capsys, ["train", "--out-dir", str(run), "--config", str(cfg), "--resume"],
            "[model] n_layers 2 (run: 1)")
    assert tree(run) == before


def test_resume_takes_the_runs_own_settings(capsys, run):
    # nothing but --resume and a longer run: data, tokenizer, shape all from the run
    assert main(["train", "--out-dir", str(run), "--resume", "--max-steps", "4",
                 "--eval-interval", "4", "--no-progress"]) == 0
    extra = load_training_state(run / "ckpt.safetensors")
    assert extra["step"] == 4 and extra["model_config"]["d_model"] == 16
    assert extra["train_config"]["eval_interval"] == 4  # an allowed change took effect
    assert extra["train_config"]["batch_size"] == 2  # the run's, not the default 16


def test_resume_refuses_changed_data(capsys, run, corpus):
    corpus.write_text(CORPUS.replace("fox", "cat"))
    before = tree(run)
    refused(capsys, train(run, corpus, "--resume", "--max-steps", "4"),
            "is not the one this run was trained on")
    refused(capsys, ["eval", "--out-dir", str(run)], "has changed since it was trained")
    assert tree(run) == before  # not even the token cache was rewritten
    moved = corpus.with_name("moved.txt")
    moved.write_text(CORPUS)  # the original text under another name is fine
    assert main(train(run, moved, "--resume", "--max-steps", "4")) == 0


def test_resume_refuses_an_edited_tokenizer_file(capsys, run, corpus):
    tok = run / "tokenizer.json"
    doc = json.loads(tok.read_text())
    doc["chars"] = doc["chars"][::-1] if "chars" in doc else doc
    tok.write_text(json.dumps(doc))
    refused(capsys, train(run, corpus, "--resume", "--max-steps", "4"),
            "tokenizer.json is not the tokenizer this run was trained with")
    tok.unlink()  # a deleted tokenizer file is rewritten from the checkpoint
    assert main(train(run, corpus, "--resume", "--max-steps", "4")) == 0
    from minilm.data import load_tokenizer, tokenizer_from_dict

    saved = load_training_state(run / "ckpt.safetensors")["tokenizer"]
    assert load_tokenizer(tok).fingerprint() == tokenizer_from_dict(saved).fingerprint()


def test_a_longer_resume_stretches_the_lr_schedule(capsys, tmp_path, corpus):
    out = tmp_path / "r"
    assert main(train(out, corpus, "--max-steps", "4", "--warmup-steps", "1",
                      "--ckpt-interval", "2", "--eval-interval", "4")) == 0
    # resume the step-4 checkpoint as a 40-step run: the cosine is recomputed for 40 steps
    assert main(train(out, corpus, "--resume", "--max-steps", "8", "--warmup-steps", "1",
                      "--eval-interval", "4")) == 0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in rows if "lr" in r}
    import math

    def cosine(t, total, lo=1e-4, hi=1e-3, w=1):
        return lo + (hi - lo) * 0.5 * (1 + math.cos(math.pi * (t - w) / (total - w)))

    # the lr logged at step s is the one the update of step s used: lr(s - 1)
    assert lrs[4] == pytest.approx(cosine(3, 4))
    for s in (5, 6, 7, 8):
        assert lrs[s] == pytest.approx(cosine(s - 1, 8)), s


# ----------------------------------------------------------------------------- item 6, 7
def test_resume_below_or_at_the_checkpoint_step(capsys, run, corpus):
    before = tree(run)
    refused(capsys, train(run, corpus, "--resume", "--max-steps", "1"),
            "--max-steps = 1", "below the checkpoint's step 2")
    assert main(train(run, corpus, "--resume")) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and "step 2" in out and "nan" not in out
    assert tree(run) == before


def test_a_checkpoint_without_metadata_is_refused(capsys, run, corpus):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2)}, str(run / "ckpt.safetensors"))
    refused(capsys, train(run, corpus, "--resume", "--max-steps", "4"), "ckpt.safetensors")


# ----------------------------------------------------------------------------- item 8
def test_a_failed_first_run_leaves_nothing_behind(capsys, tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("x")
    out = tmp_path / "r"
    refused(capsys, ["train", "--out-dir", str(out), "--data", str(tiny), "--tokenizer", "char",
                     "--no-progress"], "training split has")
    assert not out.exists()
    (tmp_path / "empty").mkdir()  # an existing empty directory stays, empty
    refused(capsys, ["train", "--out-dir", str(tmp_path / "empty"), "--data", str(tiny),
                     "--tokenizer", "char", "--no-progress"], "training split has")
    assert list((tmp_path / "empty").iterdir()) == []
    good = tmp_path / "good.txt"
    good.write_text(CORPUS)
    assert main(["train", "--out-dir", str(out), "--data", str(good), *TINY]) == 0


def test_resume_and_overwrite_together_is_refused(capsys, run, corpus):
    refused(capsys, train(run, corpus, "--resume", "--overwrite"), "give one")


def test_rundir_open_requires_a_checkpoint_for_resume(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        RunDir.open(tmp_path / "nothing", resume=True)
    assert not (tmp_path / "nothing").exists()


def test_demo_continues_an_existing_demo_run(capsys, tmp_path, corpus):
    cfg = tmp_path / "demo.toml"
    cfg.write_text(f"[model]\nn_layers = 1\nn_heads = 2\nd_model = 16\ncontext_length = 16\n"
                   f"[train]\nout_dir = '{tmp_path / 'demo'}'\ndata = '{corpus}'\n"
                   f"tokenizer = 'char'\nmax_steps = 2\neval_interval = 2\nckpt_interval = 2\n"
                   f"eval_batches = 1\nbatch_size = 2\nwarmup_steps = 0\nprogress = false\n")
    assert main(["demo", "--config", str(cfg)]) == 0
    assert main(["demo", "--config", str(cfg)]) == 0  # a second `make demo` is not refused
    out = capsys.readouterr().out
    assert "continuing it" in out and "nothing to train" in out and out.count("sample 1") == 2


def test_a_failed_overwrite_puts_the_old_run_back(capsys, run, tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("x")
    before = tree(run)
    refused(capsys, ["train", "--out-dir", str(run), "--data", str(tiny), "--tokenizer", "char",
                     "--overwrite", "--no-progress"], "training split has")
    assert tree(run) == before
    assert not [p for p in run.parent.iterdir() if p.name.startswith("run.old-")]


def test_an_unwritable_out_dir_is_refused_by_name(tmp_path, monkeypatch):
    # (root ignores chmod, so the permission error is injected where the lock is written)
    out = tmp_path / "ro"
    out.mkdir()

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_text", denied)
    with pytest.raises(ValueError, match=r"cannot write in .*ro.*Permission denied"):
        RunDir.open(out)
    assert list(out.iterdir()) == []
