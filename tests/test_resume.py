"""Resume is exact: train N steps without a break, or train, crash, build everything
afresh, load the last checkpoint and continue to N; the two runs must end in the SAME
state, bit for bit: every parameter and buffer by name, every optimizer state entry
(moments, step counts) and parameter-group setting by parameter name, the LR schedule,
the backend RNG (dropout masks), the data loader's position and RNG, the trainer's
counters, and every row logged. Both CPU backends; dropout > 0 so the RNG matters.

Also through the command line (``minilm train … --resume``): the resumed run's
``metrics.jsonl`` and final checkpoint equal the uninterrupted run's, with no row
logged twice.
"""

import copy
import json

import numpy as np
import pytest

import minilm as ml
from minilm.backends import current_backend
from minilm.cli import main as cli
from minilm.data import CharTokenizer, DataLoader, RandomWindowBatches, split_tokens
from minilm.nn import GPT, GPTConfig
from minilm.train.checkpoint import load_checkpoint, unflatten_state
from minilm.train.config import TrainConfig
from minilm.train.trainer import Trainer

BACKENDS = ["numpy", "numba"]
TEXT = ("the quick brown fox jumps over the lazy dog. " * 30
        + "pack my box with five dozen liquor jugs. " * 30)
N_STEPS = 8
CKPT_EVERY = 3  # checkpoints at steps 3 and 6 (and 8, the end); evaluations every 2
CRASH_AT = 4  # the crashed run dies after step 4: step 4 is lost and must be redone


class Crash(Exception):
    """Stands for the process dying (Ctrl-C, OOM kill) between two steps."""


def build(out_dir, backend):
    """Everything from scratch, as a new process would: backend, seed, data, model,
    loader, optimizer, schedule."""
    ml.use_backend(backend)
    ml.manual_seed(0)
    tok = CharTokenizer.train(TEXT)
    tokens = np.asarray(tok.encode(TEXT), dtype=np.uint16)
    train, val = split_tokens(tokens, 0.1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layers=1, n_heads=2,
                          d_model=16, dropout=0.2, positional="rope"))
    cfg = TrainConfig(out_dir=str(out_dir), batch_size=3, grad_accum_steps=2, max_steps=N_STEPS,
                      warmup_steps=2, eval_interval=2, eval_batches=2, ckpt_interval=CKPT_EVERY,
                      log_interval=1, progress=False, plot=False, lr=3e-3, min_lr=3e-4,
                      grad_clip=0.5)
    loader = DataLoader(RandomWindowBatches(train, 3, 16, rng=7), prefetch=2)
    trainer = Trainer(model, loader, val, cfg, tokenizer=tok)
    assert next(iter(model.parameters())).backend.name == backend  # really on that backend
    return trainer


def _plain(v):
    """A comparable copy: arrays copied (dtype kept), NumPy scalars as Python numbers."""
    if isinstance(v, ml.Tensor):
        v = v.data
    if isinstance(v, np.ndarray):
        return v.copy() if v.ndim else v.item()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    return v


def _log_row(row):
    return {k: v for k, v in row.items() if k != "tokens_per_s"}  # wall clock: not state


def snapshot(t):
    """The whole training state of trainer ``t``, keyed by names (never by position)."""
    names = {id(p): n for n, p in t.model.named_parameters()}
    assert len(names) == len(list(t.model.parameters()))
    opt = t.optimizer
    groups = []
    for g in opt.param_groups:
        groups.append({**_plain({k: v for k, v in g.items() if k != "params"}),
                       "params": [names[id(p)] for p in g["params"]]})
    opt_state = {names[id(p)]: _plain(s) for p, s in opt.state.items() if s}
    return {
        "params": {n: p.data.copy() for n, p in t.model.named_parameters()},
        "state_dict": _plain(dict(t.model.state_dict())),  # buffers too
        "optimizer.param_groups": groups,
        "optimizer.state": dict(sorted(opt_state.items())),
        "scheduler": _plain(copy.deepcopy(t.scheduler.state_dict())),
        "backend_rng": _plain(current_backend().get_rng_state()),
        "param_backend_rng": _plain(next(iter(t.model.parameters())).backend.get_rng_state()),
        "loader": _plain(t.loader.state_dict()),
        "counters": {"step": t.step, "tokens_seen": t.tokens_seen, "best_val": t.best_val,
                     "bad_evals": t.bad_evals, "training": t.model.training},
    }


def assert_identical(a, b, where="state"):
    """Exact equality with the same structure: same key names in the same order, same
    types, arrays with equal dtype, shape and bytes, floats equal bit for bit."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, \
            f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if a.tobytes() != b.tobytes():
            bad = int(np.sum(a != b))
            raise AssertionError(f"{where}: {bad} of {a.size} entries differ "
                                 f"(max |diff| {np.max(np.abs(a - b))})")
    elif isinstance(a, float):
        assert a == b or (a != a and b != b), f"{where}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def crash_when(trainer, step, on_step=None):
    """Make ``trainer`` raise Crash just before it would run step ``step + 1``; call
    ``on_step(trainer)`` before every step (to take snapshots)."""
    inner = trainer.train_step

    def train_step(batches):
        if on_step is not None:
            on_step(trainer)
        if trainer.step == step:
            raise Crash(f"killed after step {step}")
        return inner(batches)

    trainer.train_step = train_step


def saved_state(path):
    """Everything a checkpoint file holds (model, optimizer, scheduler, extra), apart
    from the run directory it names."""
    state = _plain(unflatten_state(*load_checkpoint(path)))
    del state["extra"]["train_config"]["out_dir"]
    return state


def jsonl(path):
    return [_log_row(json.loads(r)) for r in path.read_text().splitlines() if r.strip()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_after_a_crash_reproduces_the_full_state_bit_for_bit(tmp_path, backend):
    # 1. the uninterrupted run, with a snapshot at the step the crashed run resumes from
    full = build(tmp_path / "full", backend)
    at_ckpt = {}
    crash_when(full, step=None,
               on_step=lambda t: t.step == CKPT_EVERY and at_ckpt.update(snapshot(t)))
    full.fit()
    reference = snapshot(full)
    assert reference["counters"]["step"] == N_STEPS and at_ckpt
    # the comparison below has teeth: training moved every parameter and every moment
    for name, s in reference["optimizer.state"].items():
        assert s["step"] == N_STEPS, name
        assert np.any(s["exp_avg"] != 0) and np.any(s["exp_avg_sq"] != 0), name
    assert reference["backend_rng"] != at_ckpt["backend_rng"]  # dropout drew masks
    assert reference["loader"] != at_ckpt["loader"]
    assert 0 < at_ckpt["counters"]["best_val"] < 10  # the checkpoint follows an evaluation
    assert set(reference["params"]) == set(reference["optimizer.state"])

    # 2. the crashed run: checkpoint at step 3, steps 4 done (and logged), dies
    run = tmp_path / "crashed"
    crashed = build(run, backend)
    crash_when(crashed, CRASH_AT)
    with pytest.raises(Crash):
        crashed.fit()
    assert crashed.step == CRASH_AT
    assert max(r["step"] for r in jsonl(run / "metrics.jsonl")) == CRASH_AT

    # 3. a new process: everything built afresh, the checkpoint loaded, training continued
    resumed = build(run, backend)
    assert resumed.step == 0
    resumed.resume(run / "ckpt.safetensors")
    after_load = snapshot(resumed)
    # right after loading: exactly the uninterrupted run's state at that step
    for part in ("params", "state_dict", "optimizer.param_groups", "optimizer.state",
                 "scheduler", "backend_rng", "param_backend_rng", "loader"):
        assert_identical(after_load[part], at_ckpt[part], f"after load: {part}")
    assert_identical(after_load["counters"], at_ckpt["counters"], "after load: counters")
    assert after_load["counters"]["step"] == CKPT_EVERY
    resumed.fit()

    # 4. the end states are the same, entry by entry, name by name
    assert_identical(snapshot(resumed), reference)
    assert_identical([_log_row(r) for r in resumed.history],
                     [_log_row(r) for r in full.history if r["step"] > CKPT_EVERY],
                     "logged rows after the checkpoint")
    # the log on disk: the lost step's rows were dropped and redone, none twice
    assert_identical(jsonl(run / "metrics.jsonl"), jsonl(tmp_path / "full" / "metrics.jsonl"),
                     "metrics.jsonl")
    # so is the final checkpoint on disk, apart from the run directory it names
    assert_identical(saved_state(run / "ckpt.safetensors"),
                     saved_state(tmp_path / "full" / "ckpt.safetensors"), "ckpt.safetensors")


@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT * 2)
    return p


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, corpus_file,
                                                               monkeypatch, backend):
    config = tmp_path / "run.toml"
    config.write_text("[train]\nplot = false\n")
    common = ["--config", str(config), "--data", str(corpus_file), "--tokenizer", "char",
              "--n-layers", "1", "--n-heads", "2", "--d-model", "16", "--context-length", "16",
              "--dropout", "0.2", "--batch-size", "3", "--max-steps", "6", "--warmup-steps", "2",
              "--eval-interval", "3", "--eval-batches", "2", "--ckpt-interval", "2",
              "--log-interval", "1", "--seed", "5", "--backend", backend, "--no-progress"]
    full, run = tmp_path / "full", tmp_path / "run"
    assert cli(["train", *common, "--out-dir", str(full)]) == 0

    inner = Trainer.train_step

    def dies_after_step_3(self, batches):
        if self.step == 3:
            raise Crash("killed after step 3")
        return inner(self, batches)

    monkeypatch.setattr(Trainer, "train_step", dies_after_step_3)
    with pytest.raises(Crash):
        cli(["train", *common, "--out-dir", str(run)])
    monkeypatch.undo()
    assert max(r["step"] for r in jsonl(run / "metrics.jsonl")) == 3  # step 3 logged, not saved

    assert cli(["train", *common, "--out-dir", str(run), "--resume"]) == 0
    rows = jsonl(run / "metrics.jsonl")
    keys = [(r["step"], "val_loss" in r) for r in rows]
    assert len(keys) == len(set(keys)), f"rows logged twice: {keys}"
    assert_identical(rows, jsonl(full / "metrics.jsonl"), "metrics.jsonl")
    got = saved_state(run / "ckpt.safetensors")
    assert got["extra"]["step"] == 6 and got["optimizer"]["state"]
    assert_identical(got, saved_state(full / "ckpt.safetensors"), "ckpt.safetensors")
