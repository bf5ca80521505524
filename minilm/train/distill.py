"""Knowledge distillation: train a (smaller) student to match a trained teacher.

One step on a batch (x, y) of token ids::

    z_t = teacher(x)                     # eval mode, no graph: constants
    z_s = student(x)
    loss = distillation_loss(z_s, z_t, y, T, alpha)
         = alpha T^2 KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) CE(z_s, y)
    loss.backward(); clip; optimizer.step(); optimizer.zero_grad()

The loss is :func:`minilm.functional.distillation_loss`; :func:`teacher_kl` measures
how close the student is (mean KL(p_t || p_s) per token at T = 1), and
:func:`~minilm.train.trainer.evaluate_loss` its own perplexity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import functional as F
from .. import optim
from ..autograd import no_grad
from ..nn.module import model_backend
from ..tensor import Tensor
from .trainer import Trainer

__all__ = ["DistillTrainer", "distill", "distill_step", "teacher_kl"]


def _ids(a: Any, model: Any) -> Tensor:
    """Token ids as a Tensor: a Tensor as it is, an array / list on ``model``'s backend."""
    return a if isinstance(a, Tensor) else Tensor(a, backend=model_backend(model))


def distill_step(teacher: Any, student: Any, x: Any, y: Any, optimizer: Any, T: float = 2.0,
                 alpha: float = 0.5, grad_clip: float | None = None) -> float:
    """One optimizer step of ``student`` on the distillation loss of batch (x, y);
    returns the loss. The teacher runs in eval mode without a graph."""
    x, y = _ids(x, student), _ids(y, student)
    was = teacher.training
    teacher.eval()
    try:
        with no_grad():
            z_t = teacher(x)
    finally:
        teacher.train(was)
    z_s = student(x)
    loss = F.distillation_loss(z_s, z_t, y, T=T, alpha=alpha)
    loss.backward()
    if grad_clip:
        optim.clip_grad_norm_(list(student.parameters()), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.item())


def distill(teacher: Any, student: Any, batches: Iterable, optimizer: Any, steps: int,
            T: float = 2.0, alpha: float = 0.5, grad_clip: float | None = 1.0,
            scheduler: Any = None, log_every: int = 0,
            callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``student`` for ``steps`` steps on (x, y) batches drawn from ``batches``
    (stops early if they run out); returns the loss of every step. ``scheduler.step()``
    follows each update; every ``log_every`` steps (0: never) the loss is printed;
    ``callback(step, loss)`` runs after each step."""
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"distill: steps must be an integer >= 0, got {steps!r}")
    losses: list[float] = []
    it = iter(batches)
    student.train()
    for step in range(1, steps + 1):
        try:
            x, y = next(it)
        except StopIteration:
            break
        loss = distill_step(teacher, student, x, y, optimizer, T, alpha, grad_clip)
        if scheduler is not None:
            scheduler.step()
        losses.append(loss)
        if log_every and (step % log_every == 0 or step == steps):
            print(f"distill step {step:5d}  loss {loss:.4f}")
        if callback is not None:
            callback(step, loss)
    return losses


@no_grad()
def teacher_kl(teacher: Any, student: Any, batches: Iterable, T: float = 1.0,
               max_batches: int | None = None) -> float:
    """Mean over tokens of KL(softmax(z_t/T) || softmax(z_s/T)): how far the student's
    next-token distribution is from the teacher's (0 when they agree)."""
    modes = teacher.training, student.training
    teacher.eval()
    student.eval()
    total, count = 0.0, 0
    try:
        for i, (x, _) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x = _ids(x, student)
            z_t, z_s = teacher(x), student(x)
            c = z_s.shape[-1]
            kl = F.kl_div(F.log_softmax(z_s.reshape(-1, c) / T, dim=-1),
                          F.log_softmax(z_t.reshape(-1, c) / T, dim=-1),
                          reduction="sum", log_target=True)
            total += float(kl.item())
            count += int(np.prod(z_s.shape[:-1]))
    finally:
        teacher.train(modes[0])
        student.train(modes[1])
    if count == 0:
        raise ValueError("teacher_kl: no batch")
    return total / count


class DistillTrainer(Trainer):
    """The :class:`~minilm.train.trainer.Trainer` (loop, logs, checkpoints, exact
    resume, signals) training ``model`` on the distillation loss against ``teacher``
    (kept in eval mode, no graph): ``TrainConfig.distill_temperature`` is T and
    ``distill_alpha`` is alpha. Validation stays the student's own cross-entropy, so
    its perplexity compares with any other run's. ``minilm distill --teacher RUN``
    builds one (see minilm/run.py)."""

    def __init__(self, teacher: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        teacher.eval()

    def _micro_loss(self, x: Any, y: Any) -> Any:
        x, y = _ids(x, self.model), _ids(y, self.model)
        with no_grad():
            z_t = self.teacher(x)
        c = self.config
        return F.distillation_loss(self.model(x), z_t, y, T=c.distill_temperature,
                                   alpha=c.distill_alpha)
