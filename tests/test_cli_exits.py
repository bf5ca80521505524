"""What the ``minilm`` command prints and returns when training stops early (issue 10,
items 6 and 11, through the real console entry point): SIGINT -> exit 130, SIGTERM ->
exit 143, each with one line naming the checkpoint; a NaN loss -> exit 1 with one
``error:`` line; never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minilm.train.training_state import load_training_state

ROOT = Path(__file__).resolve().parents[1]
TEXT = "the quick brown fox jumps over the lazy dog. " * 60


def _argv(tmp_path, *extra):
    data = tmp_path / "corpus.txt"
    data.write_text(TEXT)
    return [sys.executable, "-m", "minilm", "train", "--out-dir", str(tmp_path / "run"),
            "--data", str(data), "--tokenizer", "char", "--n-layers", "1", "--n-heads", "2",
            "--d-model", "16", "--context-length", "16", "--batch-size", "2",
            "--warmup-steps", "0", "--eval-batches", "1", "--log-interval", "1",
            "--no-progress", *extra]


def _env():
    return dict(os.environ, MINILM_BACKEND="numpy", OMP_NUM_THREADS="1",
                OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))


@pytest.mark.parametrize("name, sig, code", [("SIGINT", signal.SIGINT, 130),
                                             ("SIGTERM", signal.SIGTERM, 143)])
def test_a_signal_stops_the_cli_with_its_exit_code_and_one_line(tmp_path, name, sig, code):
    p = subprocess.Popen(_argv(tmp_path, "--max-steps", "100000", "--eval-interval", "100000",
                               "--ckpt-interval", "100000"),
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("minilm train:")]
    assert len(lines) == 1 and f"interrupted by {name}" in lines[0], err
    step = load_training_state(tmp_path / "run" / "ckpt.safetensors")["step"]
    assert f"after step {step};" in lines[0] and "--resume" in lines[0]
    rows = [json.loads(r) for r in log.read_text().splitlines()]
    assert max(r["step"] for r in rows) == step
    assert not (tmp_path / "run" / "run.lock").exists()  # released on the way out


def test_a_nan_loss_stops_the_cli_with_one_error_line(tmp_path):
    # a learning rate of a million diverges within a few steps
    argv = _argv(tmp_path, "--max-steps", "40", "--eval-interval", "2", "--ckpt-interval", "2",
                 "--lr", "1e6", "--min-lr", "0", "--grad-clip", "0")
    p = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, p.stderr
    line = lines[0]
    assert "at step" in line and "--lr" in line and "--skip-nonfinite" in line, line
    bad = int(line.split("at step ")[1].split()[0])
    ckpt = tmp_path / "run" / "ckpt.safetensors"
    if ckpt.exists():  # the last good checkpoint: written before the bad step
        saved = load_training_state(ckpt)["step"]
        assert saved < bad and f"(step {saved})" in line
    else:
        assert "no checkpoint" in line
