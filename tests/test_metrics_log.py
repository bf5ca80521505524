"""The metrics log on resume: a torn last line (a kill mid-write) is dropped with a warning
naming the file, a bad line elsewhere is an error naming the file and line, and the
trimmed log is rewritten atomically (issue 10, item 4)."""

import json

import pytest

from minilm.cli import main
from minilm.train.trainer import read_log


def _train(tmp_path, out, steps, *extra):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 100)
    return main(["train", "--data", str(corpus), "--out-dir", str(out), "--tokenizer", "char",
                 "--n-layers", "1", "--n-heads", "2", "--d-model", "16", "--context-length", "16",
                 "--batch-size", "4", "--eval-interval", "2", "--ckpt-interval", "2",
                 "--warmup-steps", "1", "--log-interval", "1", "--no-progress",
                 "--backend", "numpy", "--max-steps", str(steps), *extra])


def test_torn_last_line_is_dropped_with_a_warning_and_resume_goes_on(tmp_path):
    out = tmp_path / "run"
    assert _train(tmp_path, out, 2) == 0
    log = out / "metrics.jsonl"
    with open(log, "a") as f:
        f.write('{"step": 3, "loss": 2.')  # what a kill in the middle of a write leaves
    with pytest.warns(UserWarning, match="metrics.jsonl: dropping a torn last line"):
        assert _train(tmp_path, out, 4, "--resume") == 0
    rows = read_log(log)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # no step twice, none torn
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))  # no leftover temp


def test_a_bad_line_inside_the_log_names_the_file_and_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tmp_path, out, 2) == 0
    log = out / "metrics.jsonl"
    lines = log.read_text().splitlines()
    lines.insert(1, "not json")
    log.write_text("\n".join(lines) + "\n")
    before = log.read_bytes()
    assert _train(tmp_path, out, 4, "--resume") != 0
    err = capsys.readouterr().err
    assert "metrics.jsonl, line 2: not a JSON row" in err and "Traceback" not in err
    assert log.read_bytes() == before  # nothing rewritten


def test_read_log_returns_the_rows(tmp_path):
    log = tmp_path / "m.jsonl"
    log.write_text(json.dumps({"step": 1, "loss": 1.5}) + "\n\n" + json.dumps({"step": 2}) + "\n")
    assert read_log(log) == [{"step": 1, "loss": 1.5}, {"step": 2}]
