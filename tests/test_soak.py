"""Kill-and-resume soak (issue 10): a small run started with the real command line
(``python -m minilm train``) is killed with SIGKILL at random moments, resumed with
``--resume`` each time, and must end exactly where an uninterrupted run of the same
command ends: the same final weights, optimizer state, schedule and RNG streams
(``ckpt.safetensors`` and ``best.safetensors``, apart from the run directory they name,
and on a process grid every rank file of the final set) and the same ``metrics.jsonl``
rows (apart from the timing column), each step logged once.

A kill is drawn as a step (seeded): the driver watches ``metrics.jsonl`` and, once that
step's row is there, waits a drawn few milliseconds and kills, so the kill lands while
the run evaluates, writes a checkpoint or trains the next step, whatever the speed of
the machine. Dropout is on, so the RNG streams must resume too.

This file runs one process; tests/mpi/test_soak_dp.py runs the same soak with ``--dp 2``
under ``mpiexec`` (killing the ranks themselves, as an OOM killer or a dying node would).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from minilm.train.checkpoint import load_checkpoint, unflatten_state
from tests.test_resume import _plain, assert_identical, jsonl, saved_state

STEPS = 16
CKPT_EVERY = 3  # checkpoints at 3, 6, 9, 12, 15, 16; evaluations (and best) every 4
KILLS = 3
TEXT = ("the quick brown fox jumps over the lazy dog. " * 40
        + "pack my box with five dozen liquor jugs. " * 40)


def soak_env() -> dict:
    """One thread, the NumPy reference backend (no JIT compile per launch)."""
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1", MINILM_BACKEND="numpy")


def train_args(tmp_path: Path, out: Path) -> list:
    corpus, config = tmp_path / "corpus.txt", tmp_path / "run.toml"
    if not corpus.exists():
        corpus.write_text(TEXT)
        config.write_text("[train]\nplot = false\n")
    return ["-m", "minilm", "train", "--config", str(config), "--data", str(corpus),
            "--out-dir", str(out), "--tokenizer", "char", "--n-layers", "2", "--n-heads", "2",
            "--d-model", "32", "--context-length", "32", "--batch-size", "8",
            "--dropout", "0.1", "--max-steps", str(STEPS), "--warmup-steps", "2",
            "--eval-interval", "4", "--eval-batches", "2", "--ckpt-interval", str(CKPT_EVERY),
            "--log-interval", "1", "--seed", "3", "--no-progress"]


def logged_step(log: Path) -> int:
    """The last training step in ``log`` (0 when none; a torn last line is skipped)."""
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return 0
    last = 0
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "loss" in row:
            last = max(last, int(row["step"]))
    return last


def _children(pid: int) -> list:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _leaves(pid: int) -> list:
    """The processes under ``pid`` that have no children: the trainers themselves (the
    ranks under mpiexec's proxy, or ``pid`` itself for one process)."""
    kids = _children(pid)
    return [pid] if not kids else [leaf for k in kids for leaf in _leaves(k)]


def run_until_killed(cmd: list, env: dict, log: Path, kill_at: int, delay: float,
                     transcript: Path, timeout: float = 120) -> int:
    """Start ``cmd``; once ``log`` has step ``kill_at``, wait ``delay`` seconds and
    SIGKILL the trainer processes (not their launcher, whose orphans would linger);
    return the exit status after the kill."""
    with open(transcript, "a") as out:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while logged_step(log) < kill_at:
            if p.poll() is not None:
                raise AssertionError(f"{' '.join(cmd)} ended (exit {p.returncode}) before "
                                     f"step {kill_at}:\n{transcript.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"step {kill_at} not reached in {timeout} s")
            time.sleep(0.002)
        time.sleep(delay)
        for pid in _leaves(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def rank_files(run: Path) -> dict:
    """Every per-rank optimizer file of ``run``'s checkpoints, by name, as nested state."""
    return {f.name: _plain(unflatten_state(*load_checkpoint(f)))
            for f in sorted(run.glob("*.optim-*.safetensors"))}


def soak(tmp_path: Path, launcher: list, seed: int, killed_status, extra: tuple = ()) -> dict:
    """The uninterrupted run, then the same command killed ``KILLS`` times at drawn
    steps and resumed until it finishes; asserts both end the same. ``launcher`` goes
    before ``python -m minilm train`` (mpiexec …) and ``extra`` after it (--dp 2 …),
    ``killed_status(rc)`` says whether an exit status is that of a killed job. Returns
    what was drawn and how long it took."""
    env = soak_env()
    rng = random.Random(seed)
    # each after the first checkpoint, and two steps before the end (a kill never misses)
    kill_steps = sorted(rng.sample(range(CKPT_EVERY + 1, STEPS - 1), KILLS))
    delays = [rng.uniform(0.0, 0.03) for _ in kill_steps]
    whole, run = tmp_path / "whole", tmp_path / "killed"
    transcript = tmp_path / "transcript.txt"
    t0 = time.monotonic()
    p = subprocess.run([*launcher, sys.executable, *train_args(tmp_path, whole), *extra],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr

    for i, (step, delay) in enumerate(zip(kill_steps, delays)):
        cmd = [*launcher, sys.executable, *train_args(tmp_path, run), *extra]
        cmd += ["--resume"] if i else []
        rc = run_until_killed(cmd, env, run / "metrics.jsonl", step, delay, transcript)
        assert killed_status(rc), (f"kill {i + 1} at step {step}: exit {rc}\n"
                                   f"{transcript.read_text()[-4000:]}")
    p = subprocess.run([*launcher, sys.executable, *train_args(tmp_path, run), *extra,
                        "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (kill_steps, p.stdout + p.stderr)
    assert "resumed from" in p.stdout, p.stdout

    where = f"killed at steps {kill_steps} (seed {seed})"
    rows = jsonl(run / "metrics.jsonl")
    keys = [(r["step"], "val_loss" in r) for r in rows]
    assert len(keys) == len(set(keys)), f"{where}: rows logged twice: {keys}"
    assert_identical(rows, jsonl(whole / "metrics.jsonl"), f"{where}: metrics.jsonl")
    for name in ("ckpt.safetensors", "best.safetensors"):
        got = saved_state(run / name)
        assert name == "best.safetensors" or got["extra"]["step"] == STEPS
        assert_identical(got, saved_state(whole / name), f"{where}: {name}")
    assert_identical(rank_files(run), rank_files(whole), f"{where}: rank files")
    # a kill mid-save leaves a temporary directory; the next save to that name (the step
    # is redone after the resume) removes it
    assert sorted(f.name for f in run.iterdir() if f.name.endswith(".tmp")) == [], where
    return {"kill_steps": kill_steps, "seconds": round(time.monotonic() - t0, 1)}


def test_one_process_run_killed_three_times_ends_as_the_uninterrupted_run(tmp_path):
    got = soak(tmp_path, [], seed=10, killed_status=lambda rc: rc == -signal.SIGKILL)
    assert len(got["kill_steps"]) == KILLS
