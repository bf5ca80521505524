"""A stop signal that reaches one rank only: ``minilm.run.train`` on dp=2, where rank 1
(alone) sends itself SIGTERM during step K. Every rank must stop after step K (the
Trainer's per-step agreement), write the one checkpoint set together and raise
TrainingInterrupted; the set must then resume on the same grid.

Run: mpiexec -n 2 python -m tests.mpi.scripts.signal_stop OUT_DIR CORPUS K
"""

import os
import signal
import sys
from pathlib import Path

from minilm.nn import GPTConfig
from minilm.parallel import world
from minilm.run import train
from minilm.train.config import TrainConfig
from minilm.train.trainer import Trainer, TrainingInterrupted, read_log
from minilm.train.training_state import load_training_state
from tests.mpi.common import report

out, data, K = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
comm = world()
step = Trainer.train_step


def hooked(self: Trainer, batches: object) -> float:
    loss = step(self, batches)
    if comm.rank == 1 and self.step == K:
        os.kill(os.getpid(), signal.SIGTERM)  # this rank only
    return loss


def config(max_steps: int) -> TrainConfig:
    return TrainConfig(out_dir=str(out), data=data, tokenizer="char", batch_size=4,
                       max_steps=max_steps, warmup_steps=2, eval_interval=100000,
                       eval_batches=1, ckpt_interval=100000, log_interval=1, progress=False,
                       plot=False, prefetch=0, dp=2)


def quiet(*args: object, **kwargs: object) -> None:
    pass


model = GPTConfig(vocab_size=1, context_length=16, n_layers=2, n_heads=2, d_model=16)
Trainer.train_step = hooked
mine: dict = {"rank": comm.rank}
try:
    train(model, config(100000), log=quiet)
    mine["error"] = "not interrupted"
except TrainingInterrupted as e:
    mine.update(step=e.step, code=e.code, path=str(e.path))
views = comm.allgather_json(mine)
comm.barrier()
ckpt = out / "ckpt.safetensors"
main_step = int(load_training_state(ckpt)["step"])
rank_steps = sorted(int(load_training_state(f)["step"]) for f in out.glob("ckpt.optim-*"))
logged = max(r["step"] for r in read_log(out / "metrics.jsonl") if "loss" in r)
comm.barrier()
Trainer.train_step = step
trainer, last = train(model, config(K + 2), resume=True, log=quiet)
if comm.rank == 0:
    report({"views": views, "main_step": main_step, "rank_steps": rank_steps, "logged": logged,
            "resumed_to": trainer.step,
            "log_steps": [r["step"] for r in read_log(out / "metrics.jsonl") if "loss" in r]})
