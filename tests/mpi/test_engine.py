"""dp x tp x pp through the ParallelEngine equals one process (float64, 1e-9): the full
gradient before clipping and its global norm at every step, then losses and parameters,
with AdamW and global-norm clipping and with plain SGD; the CLI under mpiexec, a
parallel run resumed from its checkpoint equal to the uninterrupted one; grid errors
before any work."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.mpi.common import STEPS
from tests.mpi.conftest import ROOT, mpi_env, mpiexec_or_fail

CASES = {  # name: (ranks, dp, tp, pp, zero, schedule, micro-batches)
    "dp2": (2, 2, 1, 1, 0, "1f1b", 1),
    "tp2": (2, 1, 2, 1, 0, "1f1b", 1),
    "pp2-gpipe": (2, 1, 1, 2, 0, "gpipe", 4),
    "pp2-1f1b": (2, 1, 1, 2, 0, "1f1b", 4),
    "dp2-zero": (2, 2, 1, 1, 1, "1f1b", 1),
    "dp2-tp2": (4, 2, 2, 1, 0, "1f1b", 2),
    "tp2-pp2": (4, 1, 2, 2, 0, "1f1b", 2),
    "dp2-pp2-zero-gpipe": (4, 2, 1, 2, 1, "gpipe", 2),
}
# AdamW clipped at 0.5 (the gradient norm of this model is 0.57-1.13 over the 3 steps,
# so clipping is active at every step); plain SGD (the update is -lr g: a gradient off
# by a constant factor cannot hide); with ZeRO also AdamW unclipped (ZeRO then
# reduce-scatters the gradients itself instead of DataParallel averaging them)
VARIANTS = ["adamw:0.5", "sgd:0"]


@pytest.mark.parametrize("case", list(CASES))
def test_engine_gradients_and_training_equal_one_process(mpi, case):
    n, dp, tp, pp, zero, schedule, micro = CASES[case]
    variants = VARIANTS + (["adamw:0"] if zero else [])
    res = mpi(n, "scripts.engine_train", str(dp), str(tp), str(pp), str(zero), schedule,
              str(micro), *variants)
    assert sorted(res) == sorted(variants)
    for name, r in res.items():
        assert r["ok"], (name, r)
        assert r["steps"] == STEPS and r["grad_err"] <= 1e-9 and r["param_err"] <= 1e-9
        assert r["dp_identical"], (name, r)  # every replica holds the averaged gradient
        clip = float(name.split(":")[1])
        if clip:
            assert r["clip_active"], r  # the reference clipped at every step
            assert r["clipped_err"] <= 1e-9, r
        if zero and not clip:  # ZeRO's own reduction: checked through its averaged slices
            assert r["norms_checked"] == 0
        else:  # the engine's global norm (what clipping divides by) at every step
            assert r["norms_checked"] == STEPS and r["norm_err"] <= 1e-9, r


def _cli(n, *args, timeout=240):
    exe = mpiexec_or_fail()
    cmd = [exe, "-n", str(n), sys.executable, "-m", "minilm", "train", *args]
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MINILM_BACKEND": "numpy",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_cli_parallel_train_then_sample_in_one_process(tmp_path):
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
    assert "ckpt.safetensors" in files and "ckpt.optim-step4-rank3-of-4.safetensors" in files
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
    p = _cli(3, "--out-dir", str(tmp_path / "r"), "--dp", "2", "--tp", "2", "--no-progress")
    assert p.returncode != 0
    # every rank fails alike: the job ends normally with one message (from rank 0), which
    # the launcher always delivers (an MPI abort could cut the forwarded output short)
    assert p.stderr.count("dp (2) x tp (2) x pp (1) = 4 processes, but the job has 3") == 1
    assert p.returncode == 2, p.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- resume

RESUME_GRIDS = {"dp2": ["--dp", "2"], "tp2": ["--tp", "2"],
                "pp2": ["--pp", "2", "--micro-batches", "2"]}


def _resume_args(tmp_path, out):
    corpus = tmp_path / "c.txt"
    if not corpus.exists():
        corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
        (tmp_path / "run.toml").write_text("[train]\nplot = false\n")
    # a constant learning rate (min-lr = lr, no warmup): a checkpoint stores its run's
    # schedule, whose length is that run's --max-steps, and a resumed run continues
    # that schedule; with a constant rate the interrupted and the whole run agree
    return ["--config", str(tmp_path / "run.toml"), "--data", str(corpus), "--out-dir",
            str(out), "--tokenizer", "char", "--n-layers", "2", "--n-heads", "2",
            "--d-model", "16", "--context-length", "16", "--batch-size", "4",
            "--dropout", "0.1",  # the dropout RNG stream must be restored too
            "--dtype", "float64", "--lr", "3e-3", "--min-lr", "3e-3", "--warmup-steps", "0",
            "--grad-clip", "1.0", "--eval-interval", "2", "--eval-batches", "2",
            "--ckpt-interval", "2", "--log-interval", "1", "--no-progress"]


def _rows(out):
    """metrics.jsonl without the timing column."""
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if r]
    for r in rows:
        r.pop("tokens_per_s", None)
    return rows


def _training_state(path):
    """Everything a checkpoint file holds (weights, optimizer, schedule, step, RNG
    streams, configs), nested, with its run directory's name taken out."""
    from minilm.train.checkpoint import load_checkpoint, unflatten_state

    state = unflatten_state(*load_checkpoint(path))
    state["extra"].get("train_config", {}).pop("out_dir", None)
    # the schedule's length is that of the run that wrote the first checkpoint (the
    # --max-steps 2 segment): a resumed run keeps its schedule (hence the constant lr)
    state.get("scheduler", {}).pop("total_steps", None)
    return state


def _assert_same(a, b, where="state"):
    """Nested dicts/lists of arrays and scalars equal exactly (arrays bit for bit)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), (where, list(a), list(b))
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape"):
        assert np.asarray(a).dtype == np.asarray(b).dtype, where
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=where)
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("grid", list(RESUME_GRIDS))
def test_parallel_resume_equals_the_uninterrupted_run(tmp_path, grid):
    """A run that stopped at step 2, resumed to step 4, then crashed (its step-4
    checkpoint lost: the files of step 2 are put back) and resumed again to step 6 ends
    exactly as one uninterrupted 6-step run: the same logged rows, each step once (the
    rows logged after the checkpoint are dropped on resume), bitwise the same
    weights, per-rank optimizer state, schedule and RNG states."""
    flags = RESUME_GRIDS[grid]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    p = _cli(2, *_resume_args(tmp_path, whole), *flags, "--max-steps", "6")
    assert p.returncode == 0, p.stdout + p.stderr
    p = _cli(2, *_resume_args(tmp_path, parts), *flags, "--max-steps", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    saved = tmp_path / "step2"
    saved.mkdir()
    ckpts = sorted(f.name for f in parts.glob("ckpt*.safetensors"))
    assert ckpts == ["ckpt.optim-step2-rank0-of-2.safetensors",
                     "ckpt.optim-step2-rank1-of-2.safetensors", "ckpt.safetensors"]
    for name in ckpts:
        shutil.copy2(parts / name, saved / name)
    p = _cli(2, *_resume_args(tmp_path, parts), *flags, "--max-steps", "4", "--resume")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "resumed from" in p.stdout and "starts afresh" not in p.stdout
    assert [r["step"] for r in _rows(parts) if "loss" in r] == [1, 2, 3, 4]
    for name in ckpts:  # the crash: the checkpoint of step 4 never reached the disk
        shutil.copy2(saved / name, parts / name)
    p = _cli(2, *_resume_args(tmp_path, parts), *flags, "--max-steps", "6", "--resume")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "at step 2" in p.stdout

    want, got = _rows(whole), _rows(parts)
    assert [r["step"] for r in want if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in got] == [r["step"] for r in want]  # no step logged twice
    assert got == want  # losses, lr, token counts, validation losses: exactly equal
    final = sorted(f.name for f in whole.glob("ckpt*.safetensors"))
    # the same set, step 6's; the step-4 rank files the crash left beside it are gone
    assert sorted(f.name for f in parts.glob("ckpt*.safetensors")) == final
    for name in final:  # the full model and schedule, and each rank's optimizer state
        a, b = _training_state(whole / name), _training_state(parts / name)
        assert a["extra"]["step"] == 6 and ("model" in a or "optimizer" in a), name
        _assert_same(a, b, name)


# ------------------------------------------------------------ failure handshake

def test_all_failed_when_every_rank_fails(mpi):
    res = mpi(3, "scripts.fail_handshake", "all")
    assert res == {"answer": True, "sum": 3.0}


def test_all_failed_is_false_when_others_wait_and_the_job_aborts(tmp_path):
    exe = mpiexec_or_fail()
    cmd = [exe, "-n", "3", sys.executable, "-m", "tests.mpi.scripts.fail_handshake", "one",
           str(tmp_path)]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=mpi_env(), capture_output=True, text=True,
                           timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the job hung after one rank failed:\n{exc.stdout}{exc.stderr}")
    assert p.returncode != 0
    got = json.loads((tmp_path / "rank1.txt").read_text())
    assert got["answer"] is False
    assert 0.5 <= got["seconds"] < 5  # waited 2 x timeout for rank 0's answer, no longer
