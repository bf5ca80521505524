"""SIGINT / SIGTERM during training (issue 10): the first signal finishes the current
step, writes ckpt.safetensors (its step = the last step logged) and raises
TrainingInterrupted (exit code 130 / 143); a second signal exits at once and never
leaves a torn checkpoint; the handlers are restored on every exit from fit. The
subprocess tests drive ``minilm.run.train`` (the CLI's glue around TrainingInterrupted
is the CLI's; the MPI case is tests/mpi/test_run_safety.py)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import minilm as ml
from minilm.data import CharTokenizer, DataLoader, RandomWindowBatches, split_tokens
from minilm.nn import GPT, GPTConfig
from minilm.train import checkpoint as ckpt_mod
from minilm.train.config import TrainConfig
from minilm.train.trainer import Trainer, TrainingInterrupted, read_log
from minilm.train.training_state import load_training_state

ROOT = Path(__file__).resolve().parents[1]
TEXT = "the quick brown fox jumps over the lazy dog. " * 60

# the child: a tiny char-level GPT for "forever"; TrainingInterrupted -> a marker line
# on stdout and its exit code; ``slow`` seconds of sleep in every step keep a step open
CHILD = """
import json, sys, time
from minilm.nn import GPTConfig
from minilm.run import train
from minilm.train.config import TrainConfig
from minilm.train.trainer import Trainer, TrainingInterrupted

out, data, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
if slow:
    step = Trainer._optimizer_step
    def slowed(self, micro):
        time.sleep(slow)
        return step(self, micro)
    Trainer._optimizer_step = slowed
model = GPTConfig(vocab_size=1, context_length=16, n_layers=1, n_heads=2, d_model=16)
cfg = TrainConfig(out_dir=out, data=data, tokenizer="char", batch_size=4, max_steps=100000,
                  warmup_steps=2, eval_interval=100000, eval_batches=1, ckpt_interval=int(sys.argv[4]),
                  log_interval=3, progress=False, plot=False, prefetch=0)
try:
    train(model, cfg, log=lambda *a, **k: None)
except TrainingInterrupted as e:
    print("INTERRUPTED " + json.dumps({"signum": e.signum, "step": e.step, "path": str(e.path),
                                       "code": e.code, "msg": str(e)}), flush=True)
    sys.exit(e.code)
"""

SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}


def _start(tmp_path, slow=0.0, ckpt_interval=100000):
    data = tmp_path / "corpus.txt"
    data.write_text(TEXT)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = tmp_path / "run"
    env = dict(os.environ, MINILM_BACKEND="numpy", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, str(script), str(out), str(data), str(slow),
                          str(ckpt_interval)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    return p, out


def _wait_for_rows(p, out, n=1, timeout=20.0):
    """Until metrics.jsonl has ``n`` training rows (the loop is running)."""
    log = out / "metrics.jsonl"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if p.poll() is not None:
            raise AssertionError(f"the child exited early ({p.returncode}):\n{p.stderr.read()}")
        if log.exists() and sum(1 for r in read_log(log) if "loss" in r) >= n:
            return
        time.sleep(0.02)
    p.kill()
    raise AssertionError("no training row appeared in metrics.jsonl")


def _finish(p, timeout=10.0):
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        stdout, stderr = p.communicate()
        raise AssertionError(f"the child did not exit within {timeout} s:\n{stderr}") from None
    return stdout, stderr


@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_signal_finishes_the_step_writes_a_checkpoint_and_resume_continues(tmp_path, name):
    signum, code = SIGNALS[name]
    p, out = _start(tmp_path)
    _wait_for_rows(p, out, n=2)
    p.send_signal(signum)
    stdout, stderr = _finish(p)
    assert p.returncode == code, stderr
    assert f"{name} received" in stderr
    marker = [line for line in stdout.splitlines() if line.startswith("INTERRUPTED ")]
    assert len(marker) == 1, stdout + stderr
    info = json.loads(marker[0][len("INTERRUPTED "):])
    ckpt = out / "ckpt.safetensors"
    assert info["signum"] == signum and info["code"] == code and Path(info["path"]) == ckpt
    assert info["msg"] == (f"interrupted by {name} after step {info['step']}; checkpoint "
                           f"written to {ckpt}; continue with --resume")
    # the checkpoint (none was due: ckpt_interval is huge) is of the last step logged,
    # although log_interval 3 would not have logged it
    extra = load_training_state(ckpt)
    rows = [r for r in read_log(out / "metrics.jsonl") if "loss" in r]
    assert extra["step"] == info["step"] == rows[-1]["step"]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    # resume continues from it
    from minilm.run import train

    cfg = TrainConfig(out_dir=str(out), data=str(tmp_path / "corpus.txt"), tokenizer="char",
                      batch_size=4, max_steps=info["step"] + 2, warmup_steps=2,
                      eval_interval=100000, eval_batches=1, ckpt_interval=100000,
                      log_interval=1, progress=False, plot=False, prefetch=0)
    model = GPTConfig(vocab_size=1, context_length=16, n_layers=1, n_heads=2, d_model=16)
    trainer, last = train(model, cfg, resume=True, log=lambda *a, **k: None)
    assert trainer.step == last["step"] == info["step"] + 2
    steps = [r["step"] for r in read_log(out / "metrics.jsonl") if "loss" in r]
    assert steps[-3:] == [info["step"], info["step"] + 1, info["step"] + 2]
    assert load_training_state(ckpt)["step"] == info["step"] + 2


@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_second_signal_exits_at_once(tmp_path, name):
    signum, code = SIGNALS[name]
    p, out = _start(tmp_path, slow=0.4, ckpt_interval=2)  # each step sleeps 0.4 s
    _wait_for_rows(p, out, n=2)
    p.send_signal(signum)
    line = p.stderr.readline()
    while line and f"{name} received" not in line:
        line = p.stderr.readline()
    assert line, "the child never acknowledged the first signal"
    t0 = time.monotonic()
    p.send_signal(signum)  # while the step is still sleeping
    stdout, stderr = _finish(p)
    elapsed = time.monotonic() - t0
    assert "INTERRUPTED" not in stdout  # it did not wait for the step and the checkpoint
    # SIGINT: KeyboardInterrupt (Python then ends by the signal itself); SIGTERM: exit 143
    assert p.returncode == (-signal.SIGINT if name == "SIGINT" else code), stderr
    assert elapsed < 3.0
    extra = load_training_state(out / "ckpt.safetensors")  # the earlier one, whole
    assert extra["step"] % 2 == 0 and extra["step"] >= 2
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


# ---------------------------------------------------------------------- in process
def _trainer(tmp_path, max_steps=50, ckpt_interval=2):
    ml.use_backend("numpy")
    ml.manual_seed(0)
    tok = CharTokenizer.train(TEXT)
    tokens = np.asarray(tok.encode(TEXT), dtype=np.uint16)
    train, val = split_tokens(tokens, 0.1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layers=1, n_heads=2,
                          d_model=16))
    cfg = TrainConfig(out_dir=str(tmp_path), batch_size=4, max_steps=max_steps, warmup_steps=2,
                      eval_interval=1000, eval_batches=1, ckpt_interval=ckpt_interval,
                      log_interval=1, progress=False, plot=False)
    loader = DataLoader(RandomWindowBatches(train, 4, 16, rng=7), prefetch=0)
    return Trainer(model, loader, val, cfg, tokenizer=tok)


def _signal_at(trainer, step, signum=signal.SIGINT):
    """Send ``signum`` to this process during step ``step``."""
    inner = trainer._optimizer_step

    def hooked(micro):
        if trainer.step + 1 == step:
            os.kill(os.getpid(), signum)
        return inner(micro)

    trainer._optimizer_step = hooked


def test_in_process_stop_restores_the_handlers(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    t = _trainer(tmp_path)
    _signal_at(t, 3, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        t.fit()
    e = info.value
    assert (e.signum, e.step, e.code) == (signal.SIGTERM, 3, 143) and t.step == 3
    assert e.path == tmp_path / "ckpt.safetensors"
    assert load_training_state(e.path)["step"] == 3
    assert {s: signal.getsignal(s) for s in before} == before
    # a normal run restores them too, and a signal after fit is the old behaviour again
    t = _trainer(tmp_path / "b", max_steps=2)
    t.fit()
    assert {s: signal.getsignal(s) for s in before} == before
    assert TrainingInterrupted(signal.SIGINT, 1, "x").code == 130


def test_second_signal_during_the_checkpoint_write_keeps_the_previous_one(tmp_path,
                                                                         monkeypatch):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    t = _trainer(tmp_path, ckpt_interval=2)
    _signal_at(t, 3)  # the stop then writes the checkpoint of step 3 ...
    ckpt = tmp_path / "ckpt.safetensors"
    fsync = ckpt_mod._fsync_path
    seen = {}

    def interrupted_write(path, **kw):  # ... and a second Ctrl-C lands in the middle of it
        fsync(path, **kw)
        if t.step == 3 and t._signal and not kw:
            seen["old"] = ckpt.read_bytes()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler raises here, before the rename

    monkeypatch.setattr(ckpt_mod, "_fsync_path", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert ckpt.read_bytes() == seen["old"]  # the step-2 checkpoint, untouched
    assert load_training_state(ckpt)["step"] == 2
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert signal.getsignal(signal.SIGINT) is before


def test_fit_outside_the_main_thread_installs_no_handler(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    t = _trainer(tmp_path, max_steps=3)
    errors = []

    def run():
        try:
            t.fit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    th = threading.Thread(target=run)
    th.start()
    th.join(60)
    assert not errors and t.step == 3
    assert signal.getsignal(signal.SIGINT) is before
