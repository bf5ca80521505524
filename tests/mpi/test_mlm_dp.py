"""`mpiexec -n 2 minilm pretrain-mlm --dp 2` equals one process on the same global
batches (float64, 1e-9): every rank draws the global batch and trains on its rows, the
loss is scaled so the averaged gradient is the global mean's; then a resume under
mpiexec continues exactly; a run directory that rank 0 refuses ends both ranks with one
error line."""

import json
import subprocess
import sys

import numpy as np

from minilm.train.training_state import load_model_weights
from tests.mpi.conftest import ROOT, mpi_env, mpiexec_or_fail

TEXT = ("The quick brown fox jumps over the lazy dog. Python is a programming language "
        "with classes, functions and modules. A function returns a value to its caller.")


def _args(tmp_path, out, steps):
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text("\n\n".join([TEXT] * 30))
    return ["pretrain-mlm", "--out-dir", str(out), "--data", str(corpus), "--vocab-size", "120",
            "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--context-length", "16",
            "--batch-size", "4", "--eval-interval", "3", "--ckpt-interval", "3", "--lr", "3e-3",
            "--min-lr", "3e-3", "--warmup-steps", "0", "--dropout", "0", "--dtype", "float64",
            "--max-steps", str(steps), "--no-progress", "--log-interval", "1"]


def _mpi(n, *args):
    cmd = [mpiexec_or_fail(), "-n", str(n), sys.executable, "-m", "minilm", *args]
    return subprocess.run(cmd, cwd=ROOT, env=mpi_env(), capture_output=True, text=True,
                          timeout=240)


def _one(*args):
    return subprocess.run([sys.executable, "-m", "minilm", *args], cwd=ROOT, env=mpi_env(),
                          capture_output=True, text=True, timeout=240)


def test_dp2_equals_one_process_and_resumes(tmp_path):
    p = _one(*_args(tmp_path, tmp_path / "one", 6))
    assert p.returncode == 0, p.stdout + p.stderr
    p = _mpi(2, *_args(tmp_path, tmp_path / "dp", 3), "--dp", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("done: step 3") == 1                       # rank 0 reports
    p = _mpi(2, *_args(tmp_path, tmp_path / "dp", 6), "--dp", "2", "--resume")
    assert p.returncode == 0, p.stdout + p.stderr
    a = load_model_weights(tmp_path / "one" / "ckpt.safetensors")
    b = load_model_weights(tmp_path / "dp" / "ckpt.safetensors")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-12, err_msg=k)
    rows = [json.loads(r) for r in (tmp_path / "dp" / "metrics.jsonl").read_text().splitlines()]
    ones = [json.loads(r) for r in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    got = [r["loss"] for r in rows if "loss" in r]
    want = [r["loss"] for r in ones if "loss" in r]
    assert len(got) == 6 and np.allclose(got, want, rtol=1e-9)       # logged once per step


def test_refused_run_dir_ends_both_ranks_with_one_error(tmp_path):
    out = tmp_path / "taken"
    assert _one(*_args(tmp_path, out, 1)).returncode == 0
    p = _mpi(2, *_args(tmp_path, out, 2), "--dp", "2")
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.count("already holds a run") == 1, p.stderr
    p = _mpi(2, *_args(tmp_path, tmp_path / "x", 2), "--dp", "3")
    assert p.returncode == 2 and p.stderr.count("--dp 3, but the job has 2") == 1, p.stderr
