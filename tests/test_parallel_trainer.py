"""The one Trainer: ParallelTrainer is the Trainer with six hooks overridden (step,
validation batch loss, checkpoint write and read, the per-step agreement on a stop signal
and the report of a refused non-finite step), run here on a one-process grid (no
mpiexec; the MPI tests in tests/mpi/test_engine.py run it on real grids). Its loop,
resume and evaluation are the Trainer's own, so the Trainer's checks apply to it too."""

import math

import numpy as np
import pytest

import minilm as ml
from minilm.data import CharTokenizer, DataLoader, RandomWindowBatches, split_tokens
from minilm.nn import GPT, GPTConfig
from minilm.parallel import ProcessGrid
from minilm.parallel.engine import ParallelEngine
from minilm.train.config import TrainConfig
from minilm.train.parallel_trainer import ParallelTrainer
from minilm.train.trainer import Trainer

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
HOOKS = {"_optimizer_step", "_batch_loss", "_write_checkpoint", "_read_checkpoint",
         "_stop_requested", "_nonfinite_step"}


def _trainer(tmp_path, val=None):
    ml.use_backend("numpy")
    ml.manual_seed(0)
    tok = CharTokenizer.train(TEXT)
    tokens = np.asarray(tok.encode(TEXT), dtype=np.uint16)
    train, val_tokens = split_tokens(tokens, 0.1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layers=2,
                          n_heads=2, d_model=16))
    cfg = TrainConfig(out_dir=str(tmp_path), batch_size=4, max_steps=4, warmup_steps=1,
                      eval_interval=2, eval_batches=2, ckpt_interval=2, log_interval=1,
                      progress=False, plot=False)
    engine = ParallelEngine(model, ProcessGrid(dp=1, tp=1, pp=1), lr=cfg.lr)
    loader = DataLoader(RandomWindowBatches(train, 4, 16, rng=7), prefetch=0)
    return ParallelTrainer(engine, loader, val_tokens if val is None else val, cfg,
                           tokenizer=tok)


def test_parallel_trainer_overrides_only_the_hooks():
    own = {k for k, v in vars(ParallelTrainer).items() if callable(v) and k != "__init__"}
    assert own - {"_extra", "_grid_dict", "_rank_file"} == HOOKS
    for name in ("fit", "train_step", "resume", "save", "evaluate"):
        assert getattr(ParallelTrainer, name) is getattr(Trainer, name), name


def test_parallel_evaluation_refuses_an_empty_split(tmp_path):
    # the parallel evaluation used to divide by zero tokens here (ZeroDivisionError)
    t = _trainer(tmp_path, val=np.arange(5, dtype=np.uint16))  # < context_length + 1
    with pytest.raises(ValueError, match="no evaluation batch"):
        t.evaluate()


def test_parallel_trainer_trains_evaluates_and_resumes(tmp_path):
    t = _trainer(tmp_path)
    last = t.fit()
    assert t.step == 4 and math.isfinite(last["val_loss"])
    files = sorted(p.name for p in tmp_path.glob("ckpt*"))
    assert files == ["ckpt.optim-step4-rank0-of-1.safetensors", "ckpt.safetensors"]
    (tmp_path / "metrics.jsonl").write_text(
        (tmp_path / "metrics.jsonl").read_text() + '{"step": 9, "loss": 1.0}\n')
    r = _trainer(tmp_path)
    r.resume(tmp_path / "ckpt.safetensors")  # the Trainer's resume, through the hooks
    assert r.step == 4 and r.tokens_seen == t.tokens_seen
    for (n, p), (_, q) in zip(t.model.named_parameters(), r.model.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    assert '"step": 9' not in (tmp_path / "metrics.jsonl").read_text()  # trimmed
