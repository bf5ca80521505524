"""dp x tp x pp through the ParallelEngine equals one process (float64, 1e-9), with
global-norm clipping active; the CLI under mpiexec; grid errors before any work."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, _mpiexec

CASES = [  # ranks, dp, tp, pp, zero, schedule, micro-batches
    (2, 2, 1, 1, 0, "1f1b", 1),
    (2, 1, 2, 1, 0, "1f1b", 1),
    (2, 1, 1, 2, 0, "gpipe", 4),
    (2, 1, 1, 2, 0, "1f1b", 4),
    (2, 2, 1, 1, 1, "1f1b", 1),
    (4, 2, 2, 1, 0, "1f1b", 2),
    (4, 1, 2, 2, 0, "1f1b", 2),
    (4, 2, 1, 2, 1, "gpipe", 2),
]


@pytest.mark.parametrize("n,dp,tp,pp,zero,schedule,micro", CASES)
def test_engine_equals_one_process_with_clipping(mpi, n, dp, tp, pp, zero, schedule, micro):
    # clip at 0.5: the gradient norm of this model is ~1-3, so clipping is active
    res = mpi(n, "scripts.engine_train", str(dp), str(tp), str(pp), str(zero), schedule,
              str(micro), "0.5")
    assert res["ok"], res
    assert res["last_grad_norm"] > 0


def test_engine_without_clipping_zero_uses_reduce_scatter(mpi):
    res = mpi(2, "scripts.engine_train", "2", "1", "1", "1", "1f1b", "1", "0")
    assert res["ok"], res


def _cli(n, *args, timeout=240):
    exe = _mpiexec()
    if exe is None:
        pytest.skip("mpiexec not found")
    cmd = [exe, "-n", str(n), sys.executable, "-m", "minilm", "train", *args]
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MINILM_BACKEND": "numpy",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_cli_parallel_train_then_sample_in_one_process(tmp_path):
    pytest.importorskip("mpi4py")
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    out = tmp_path / "run"
    common = ["--data", str(corpus), "--out-dir", str(out), "--tokenizer", "char",
              "--n-layers", "2", "--n-heads", "2", "--d-model", "16", "--context-length", "16",
              "--batch-size", "8", "--eval-interval", "4", "--ckpt-interval", "4",
              "--warmup-steps", "2", "--no-progress", "--log-interval", "1"]
    p = _cli(4, *common, "--max-steps", "4", "--dp", "2", "--pp", "2", "--micro-batches", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("done: step 4") == 1  # only rank 0 reports
    files = sorted(f.name for f in out.iterdir())
    assert "ckpt.safetensors" in files and "ckpt.optim-rank3-of-4.safetensors" in files
    # resume on another grid (tp 2): the weights are resharded, the optimizer restarts
    p = _cli(2, *common, "--max-steps", "6", "--tp", "2", "--resume")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "resumed from" in p.stdout and "starts afresh" in p.stdout
    # and the result loads in one process
    from minilm.cli import main

    assert main(["sample", "--out-dir", str(out), "--max-new-tokens", "5", "--prompt", "the"]) == 0
    losses = [float(line.split("train loss ")[1].split(",")[0])
              for line in p.stdout.splitlines() if "train loss" in line]
    assert losses and np.isfinite(losses).all()


def test_grid_mismatch_is_refused_before_any_work(tmp_path):
    pytest.importorskip("mpi4py")
    p = _cli(3, "--out-dir", str(tmp_path / "r"), "--dp", "2", "--tp", "2", "--no-progress")
    assert p.returncode != 0
    assert "dp (2) x tp (2) x pp (1) = 4 processes, but the job has 3" in p.stderr
    assert not (tmp_path / "r").exists()
