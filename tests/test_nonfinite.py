"""A NaN/inf loss or gradient never reaches the optimizer (issue 10): by default the run
stops with NonFiniteLoss (one line: the step, the value, the lr, the last good
checkpoint, the fixes) and the checkpoint on disk stays the last good one; with
``skip_nonfinite`` the step leaves parameters and optimizer moments exactly as they
were, is counted in ``skipped_steps`` (logged, checkpointed, restored on resume) and the
run goes on. One process here, and the ParallelTrainer / ParallelEngine on a one-process
grid; dp=2 and pp=2 (one rank's gradient poisoned) in tests/mpi/test_run_safety.py."""

import copy

import numpy as np
import pytest

import minilm as ml
from minilm.data import CharTokenizer, DataLoader, RandomWindowBatches, split_tokens
from minilm.nn import GPT, GPTConfig
from minilm.parallel import ProcessGrid
from minilm.parallel.engine import ParallelEngine
from minilm.train import NonFiniteLoss
from minilm.train.config import TrainConfig
from minilm.train.parallel_trainer import ParallelTrainer
from minilm.train.trainer import Trainer, read_log
from minilm.train.training_state import load_model_weights, load_training_state

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
BAD = 5  # the poisoned step


def _parts(seed=0):
    ml.use_backend("numpy")
    ml.manual_seed(seed)
    tok = CharTokenizer.train(TEXT)
    tokens = np.asarray(tok.encode(TEXT), dtype=np.uint16)
    train, val = split_tokens(tokens, 0.1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layers=2, n_heads=2,
                          d_model=16))
    loader = DataLoader(RandomWindowBatches(train, 4, 16, rng=7), prefetch=0)
    return tok, model, loader, val


def _config(tmp_path, **kw):
    base = dict(out_dir=str(tmp_path), batch_size=4, max_steps=8, warmup_steps=2,
                eval_interval=100, eval_batches=1, ckpt_interval=2, log_interval=1,
                progress=False, plot=False)
    base.update(kw)
    return TrainConfig(**base)


def _trainer(tmp_path, parallel=False, **kw):
    tok, model, loader, val = _parts()
    cfg = _config(tmp_path, **kw)
    if parallel:
        engine = ParallelEngine(model, ProcessGrid(dp=1, tp=1, pp=1), lr=cfg.lr,
                                grad_clip=cfg.grad_clip, skip_nonfinite=cfg.skip_nonfinite)
        return ParallelTrainer(engine, loader, val, cfg, tokenizer=tok)
    return Trainer(model, loader, val, cfg, tokenizer=tok)


def _poison(t, kind, step=BAD):
    """At ``step``: the loss becomes NaN ("loss"), or one gradient entry +inf while the
    loss stays finite ("grad")."""
    if kind == "loss":
        forward = t.model.forward

        def nan_loss(x, *args):
            bad = t.step + 1 == step
            if isinstance(t, ParallelTrainer):  # the stage returns logits; NaN logits
                out = forward(x, *args)
                return out * float("nan") if bad else out
            logits, loss = forward(x, *args)
            return logits, (loss * float("nan") if bad else loss)

        t.model.forward = nan_loss
    else:
        p = next(iter(t.model.parameters()))

        def inf_grad(param):
            if t.step + 1 == step:
                param.grad.data.flat[0] = np.inf

        p.register_post_accumulate_grad_hook(inf_grad)


def _state(t):
    """(parameters, optimizer state) as exact copies."""
    params = {n: p.numpy().copy() for n, p in t.model.named_parameters()}
    return params, copy.deepcopy(t.optimizer.state_dict()["state"])  # not the lr: it goes on


def _assert_same(a, b):
    pa, oa = a
    pb, ob = b
    assert pa.keys() == pb.keys()
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    assert _flat(oa) == _flat(ob)


def _flat(obj):
    """A comparable form of an optimizer state dict (arrays as bytes)."""
    if isinstance(obj, dict):
        return {k: _flat(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_flat(v) for v in obj]
    if hasattr(obj, "tobytes"):
        return (str(obj.dtype), obj.shape, obj.tobytes())
    return obj


@pytest.mark.parametrize("parallel", [False, True], ids=["trainer", "parallel-trainer"])
@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_default_stops_before_the_update_and_keeps_the_last_good_checkpoint(tmp_path, kind,
                                                                            parallel):
    t = _trainer(tmp_path, parallel=parallel)
    _poison(t, kind)
    ckpt = tmp_path / "ckpt.safetensors"
    seen = {}
    step = t.train_step

    def watch(batches):
        if t.step + 1 == BAD:
            seen["bytes"], seen["state"] = ckpt.read_bytes(), _state(t)
        return step(batches)

    t.train_step = watch
    with pytest.raises(NonFiniteLoss) as info:
        t.fit()
    e = info.value
    assert isinstance(e, FloatingPointError)
    assert (e.step, e.checkpoint, e.checkpoint_step) == (BAD, ckpt, 4)
    assert e.what == ("loss" if kind == "loss" else "gradient norm") and not np.isfinite(e.value)
    msg = str(e)
    assert "\n" not in msg
    for part in (f"at step {BAD}", f"(lr {e.lr:.3g})", f"{ckpt} (step 4) is kept",
                 "lower --lr", "--grad-clip", "--skip-nonfinite"):
        assert part in msg, (part, msg)
    assert t.step == BAD - 1
    assert ckpt.read_bytes() == seen["bytes"]  # nothing written after the bad step
    assert load_training_state(ckpt)["step"] == 4
    _assert_same(_state(t), seen["state"])  # the update never happened
    weights = load_model_weights(ckpt)
    for n, p in t.model.named_parameters():
        assert np.array_equal(weights[n], p.numpy()), n
    assert max(r["step"] for r in read_log(tmp_path / "metrics.jsonl")) == BAD - 1


def test_no_checkpoint_yet_is_said(tmp_path):
    t = _trainer(tmp_path, ckpt_interval=100)
    _poison(t, "loss", step=2)
    with pytest.raises(NonFiniteLoss, match="no checkpoint was written yet"):
        t.fit()
    assert not (tmp_path / "ckpt.safetensors").exists()


@pytest.mark.parametrize("parallel", [False, True], ids=["trainer", "parallel-trainer"])
@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_skip_leaves_weights_and_moments_unchanged_counts_and_resumes(tmp_path, kind,
                                                                     parallel, capsys):
    t = _trainer(tmp_path, parallel=parallel, skip_nonfinite=True, max_steps=7)
    _poison(t, kind)
    step = t.train_step
    seen = {}

    def watch(batches):
        before = _state(t) if t.step + 1 in (BAD, BAD + 1) else None
        loss = step(batches)
        if t.step == BAD:
            _assert_same(_state(t), before)  # exactly as before the bad step
            seen["skipped"] = True
        elif t.step == BAD + 1:  # and the next step updates again
            seen["moved"] = any(not np.array_equal(before[0][n], p.numpy())
                                for n, p in t.model.named_parameters())
        return loss

    t.train_step = watch
    last = t.fit()
    assert seen == {"skipped": True, "moved": True}
    assert t.step == last["step"] == 7 and t.skipped_steps == 1
    assert t.scheduler.last_epoch == 7  # the schedule went on
    rows = [r for r in read_log(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r.get("skipped", 0) for r in rows] == [0] * (BAD - 1) + [1] * (8 - BAD)
    assert f"step {BAD}: " in capsys.readouterr().out
    assert load_training_state(tmp_path / "ckpt.safetensors")["skipped_steps"] == 1
    # the count survives a resume and keeps being logged
    r = _trainer(tmp_path, parallel=parallel, skip_nonfinite=True, max_steps=9)
    r.resume(tmp_path / "ckpt.safetensors")
    assert r.skipped_steps == 1
    r.fit()
    rows = [row for row in read_log(tmp_path / "metrics.jsonl") if "loss" in row]
    assert [row["step"] for row in rows] == list(range(1, 10))
    assert rows[-1]["skipped"] == 1 and r.skipped_steps == 1


def test_engine_refuses_a_nonfinite_update_by_itself(tmp_path):
    _, model, _, _ = _parts()
    engine = ParallelEngine(model, ProcessGrid(dp=1, tp=1, pp=1), grad_clip=1.0)
    x = np.zeros((2, 16), dtype=np.int64)
    engine.step(x, x)
    before = {n: p.numpy().copy() for n, p in engine.stage.named_parameters()}
    p = next(iter(engine.stage.parameters()))
    handle = p.register_post_accumulate_grad_hook(
        lambda q: q.grad.data.__setitem__((0,) * q.grad.data.ndim, np.nan))
    with pytest.raises(FloatingPointError, match="gradient norm is nan; the parameters"):
        engine.step(x, x)
    assert engine.skipped_steps == 1 and engine.last_nonfinite[0] == "gradient norm"
    for n, q in engine.stage.named_parameters():
        assert np.array_equal(before[n], q.numpy()), n
        assert q.grad is None, n
    handle.remove()
    engine.step(x, x)
    assert engine.last_nonfinite is None


def test_skip_nonfinite_is_a_checked_bool():
    assert TrainConfig().skip_nonfinite is False
    with pytest.raises(ValueError, match="skip_nonfinite = 'yes': must be true or false"):
        TrainConfig(skip_nonfinite="yes")
