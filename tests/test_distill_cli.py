"""``minilm distill --teacher RUN --out-dir STUDENT`` (issue 11): a student run trained
on alpha T^2 KL(teacher || student) + (1 - alpha) CE with the teacher's tokenizer and
data; an owned run like any other (record, resume, refusals)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minilm.cli import main
from minilm.run import load_run
from minilm.train.distill import DistillTrainer, teacher_kl
from minilm.train.trainer import Trainer
from minilm.train.training_state import load_training_state
from tests.test_cli_validation import _refused as refused

CORPUS = "the quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\n" * 30
STUDENT = ["--n-layers", "1", "--n-heads", "2", "--d-model", "16", "--context-length", "16",
           "--eval-interval", "10", "--ckpt-interval", "5", "--eval-batches", "2",
           "--batch-size", "8", "--warmup-steps", "2", "--lr", "3e-3", "--log-interval", "1",
           "--no-progress"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    data = root / "corpus.txt"
    data.write_text(CORPUS)
    out = root / "teacher"
    assert main(["train", "--out-dir", str(out), "--data", str(data), "--tokenizer", "char",
                 "--n-layers", "2", "--n-heads", "2", "--d-model", "32", "--context-length", "16",
                 "--max-steps", "40", "--eval-interval", "40", "--ckpt-interval", "40",
                 "--eval-batches", "2", "--batch-size", "8", "--warmup-steps", "2",
                 "--lr", "3e-3", "--no-progress"]) == 0
    return out


def test_distill_trains_a_student_from_the_teacher(capsys, teacher, tmp_path):
    student = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--out-dir", str(student),
                 "--max-steps", "10", *STUDENT]) == 0
    out = capsys.readouterr().out
    assert "distilling from" in out
    extra = load_training_state(student / "ckpt.safetensors")
    assert extra["train_config"]["teacher"] == str(teacher)
    t_extra = load_training_state(teacher / "ckpt.safetensors")
    assert extra["tokenizer"] == t_extra["tokenizer"]  # the teacher's ids
    assert extra["train_config"]["data"] == t_extra["train_config"]["data"]
    record = json.loads((student / "run.json").read_text())
    assert record["train_config"]["distill_alpha"] == 0.5
    # and it resumes as a distillation run (the teacher comes from the record)
    assert main(["distill", "--out-dir", str(student), "--resume", "--max-steps", "14",
                 "--no-progress"]) == 0
    assert load_training_state(student / "ckpt.safetensors")["step"] == 14
    assert main(["eval", "--out-dir", str(student)]) == 0


def test_distilled_student_is_closer_to_the_teacher(teacher, tmp_path, capsys):
    common = ["--max-steps", "20", *STUDENT, "--seed", "3"]
    t_model = load_run(teacher)[0]
    data = str(teacher.parent / "corpus.txt")
    assert main(["train", "--out-dir", str(tmp_path / "plain"), "--data", data,
                 "--tokenizer", "char", *common]) == 0
    assert main(["distill", "--teacher", str(teacher), "--out-dir", str(tmp_path / "kd"),
                 "--distill-alpha", "1.0", "--distill-temperature", "1.0", *common]) == 0
    rng = np.random.default_rng(0)
    ids = rng.integers(0, t_model.config.vocab_size, (8, 17))
    batches = [(ids[:, :-1], ids[:, 1:])]
    kd = teacher_kl(t_model, load_run(tmp_path / "kd", "last")[0], batches)
    plain = teacher_kl(t_model, load_run(tmp_path / "plain", "last")[0], batches)
    assert kd < plain, (kd, plain)


def test_distill_refusals(capsys, teacher, tmp_path):
    refused(capsys, ["distill", "--out-dir", str(tmp_path / "s")], "--teacher")
    refused(capsys, ["distill", "--teacher", str(tmp_path / "nothing"), "--out-dir",
                     str(tmp_path / "s"), *STUDENT], "no checkpoint")
    refused(capsys, ["distill", "--teacher", str(teacher), "--out-dir", str(tmp_path / "s"),
                     *STUDENT, "--context-length", "32"], "longer than the teacher's 16")
    refused(capsys, ["distill", "--teacher", str(teacher), "--out-dir", str(tmp_path / "s"),
                     *STUDENT, "--distill-alpha", "1.5"], "--distill-alpha", "1.5")
    refused(capsys, ["distill", "--teacher", str(teacher), "--out-dir", str(tmp_path / "s"),
                     *STUDENT, "--distill-temperature", "0"], "--distill-temperature")
    assert not (tmp_path / "s").exists()


def test_distill_trainer_only_changes_the_training_loss():
    # validation, checkpoints, resume and signals are the Trainer's own
    assert DistillTrainer._batch_loss is Trainer._batch_loss
    assert DistillTrainer._optimizer_step is Trainer._optimizer_step
    assert DistillTrainer._micro_loss is not Trainer._micro_loss
