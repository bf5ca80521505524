"""Masked-language-model pretraining of a BERT encoder with the same Trainer as the GPT
(checkpoints, exact resume, metrics.jsonl, loss plot, signals): ``minilm pretrain-mlm``.

The data path, per step::

    token stream (WordPiece ids of the corpus, no specials)
      -> RandomWindowBatches: B windows of L - 2 tokens         (FramedWindows)
      -> [CLS] window [SEP]: (B, L)
      -> DynamicMasking: 15% of the non-special positions -> 80% [MASK] / 10% random /
         10% unchanged, labels -100 elsewhere               (minilm/data/masking.py)
      -> BertForMaskedLM(x, labels=y): mean cross-entropy over the selected positions

Validation uses the first windows of the validation split, masked with a fixed seed, so
every evaluation scores the same predictions; the mean is over selected positions.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..autograd import no_grad
from ..backends import to_host
from ..data.batches import RandomWindowBatches
from ..data.masking import IGNORE_INDEX, DynamicMasking, mask_tokens
from ..nn.module import model_backend
from ..tensor import Tensor
from .trainer import Trainer

__all__ = ["FramedWindows", "MLMOptions", "MLMTrainer", "load_mlm_run", "mlm_loader"]


@dataclasses.dataclass
class MLMOptions:
    """What the masking needs (kept in the checkpoint, so a resume masks alike)."""

    mlm_probability: float = 0.15
    whole_word: bool = False
    mask_seed: int = 0
    context_length: int = 128  # tokens per window, [CLS] and [SEP] included

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"--mask-prob must be in (0, 1), got {self.mlm_probability}")
        if self.context_length < 3:
            raise ValueError(f"--context-length must be >= 3 ([CLS], a token, [SEP]), got "
                             f"{self.context_length}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def frame(x: np.ndarray, cls_id: int, sep_id: int) -> np.ndarray:
    """Rows of token ids (B, n) as ``[CLS] row [SEP]`` (B, n + 2), int64."""
    B = x.shape[0]
    return np.concatenate([np.full((B, 1), cls_id, np.int64), x.astype(np.int64),
                           np.full((B, 1), sep_id, np.int64)], axis=1)


class FramedWindows:
    """Random windows of ``context_length - 2`` tokens framed as ``[CLS] … [SEP]``; the
    state is the inner window source's."""

    def __init__(self, tokens: Any, batch_size: int, context_length: int, cls_id: int,
                 sep_id: int, rng: Any = 0) -> None:
        if context_length < 3:
            raise ValueError(f"MLM windows: context_length must be >= 3 ([CLS] + a token + "
                             f"[SEP]), got {context_length}")
        self.inner = RandomWindowBatches(tokens, batch_size, context_length - 2, rng=rng)
        self.cls_id, self.sep_id = int(cls_id), int(sep_id)

    def next_batch(self) -> tuple:
        x, _ = self.inner.next_batch()
        x = frame(to_host(x), self.cls_id, self.sep_id)
        return x, x

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def mlm_loader(tokens: Any, tokenizer: Any, batch_size: int, context_length: int,
               options: MLMOptions, seed: int) -> DynamicMasking:
    """The training batch source: framed random windows, dynamically masked."""
    from ..data.masking import word_start_table

    windows = FramedWindows(tokens, batch_size, context_length, tokenizer.cls_id,
                            tokenizer.sep_id, rng=seed)
    starts = word_start_table(tokenizer.vocab) if options.whole_word else None
    return DynamicMasking(windows, tokenizer.vocab_size, tokenizer.mask_id,
                          tokenizer.special_ids, options.mlm_probability,
                          seed=options.mask_seed, word_starts=starts)


class MLMTrainer(Trainer):
    """The Trainer with the MLM loss: batches are (masked ids, labels).

    Data parallel (``comm`` of W > 1 processes, under mpiexec): every rank draws the
    same *global* batch (windows and masks from the same seeded generators: cheap) and
    trains on its block of rows, through :class:`~minilm.parallel.DataParallel`, which
    averages the gradients over the ranks during backward. Rank r's loss is scaled to
    ``W * sum_r(CE over its masked positions) / (masked positions in the global
    batch)``, so the averaged gradient is exactly that of the global batch's mean loss,
    as one process computes it. All ranks hold the same parameters, optimizer and loader
    state; rank 0 alone writes checkpoints and logs; a stop signal on any rank stops all
    after the same step."""

    def __init__(self, model: Any, train_loader: Any, val_tokens: Any, config: Any,
                 tokenizer: Any, options: MLMOptions, data_sha256: str | None = None,
                 comm: Any = None, **kwargs: Any) -> None:
        super().__init__(model, train_loader, val_tokens, config, tokenizer=tokenizer,
                         **kwargs)
        self.options, self.data_sha256 = options, data_sha256
        self.comm = comm if comm is not None and comm.size > 1 else None
        self.replica = model
        if self.comm is not None:
            from ..parallel import DataParallel

            if config.batch_size % self.comm.size:
                raise ValueError(f"--batch-size {config.batch_size} is not divisible by the "
                                 f"{self.comm.size} data-parallel ranks")
            if config.grad_accum_steps != 1:
                raise ValueError("data-parallel MLM pretraining takes grad_accum_steps = 1")
            self.replica = DataParallel(model, self.comm)
            self.is_main = self.comm.rank == 0

    def _rows(self, a: Any) -> np.ndarray:
        a = to_host(a)
        n = a.shape[0] // self.comm.size
        return a[self.comm.rank * n:(self.comm.rank + 1) * n]

    def _after_backward(self, mean_loss: float) -> float:
        if self.comm is None:
            return mean_loss
        self.replica.finish()  # p.grad <- the average over the ranks
        buf = np.array([mean_loss])
        self.comm.allreduce(buf)
        return float(buf[0]) / self.comm.size

    def save(self, path: Any) -> None:
        if self.comm is None or self.is_main:
            super().save(path)
        elif Path(path).name == "ckpt.safetensors":
            self._last_ckpt = (Path(path), self.step)
        if self.comm is not None:
            self.comm.barrier()  # the file exists for every rank once save returns

    def _stop_requested(self, signum: int) -> int:
        if self.comm is None:
            return signum
        flag = np.array([signum], dtype=np.int64)
        self.comm.allreduce(flag, op="max")
        return int(flag[0])

    def _extra(self) -> dict:
        extra = super()._extra()
        extra["objective"] = "mlm"
        extra["mlm"] = self.options.to_dict()
        extra["data_sha256"] = self.data_sha256
        return extra

    def _batch_threads(self) -> int:
        # over MPI ranks the rows are already split (_rows), with the loss scaled by the
        # masked positions of the whole batch: no second split inside the rank
        return 1 if self.comm is not None else super()._batch_threads()

    def _micro_loss(self, x: Any, y: Any) -> Tensor:
        if self.comm is None:
            return self.model(x, labels=y)[1]
        labels = to_host(y)
        total = int((labels != IGNORE_INDEX).sum())
        mine = self._rows(labels)
        here = int((mine != IGNORE_INDEX).sum())
        if here == 0:  # nothing masked in my rows: a zero loss that still has a graph
            logits = self.replica(Tensor(self._rows(x), backend=model_backend(self.model)))
            return (logits * 0.0).sum()
        be = model_backend(self.model)
        _, loss = self.replica(Tensor(self._rows(x), backend=be),
                               labels=Tensor(mine, backend=be))
        return loss * (self.comm.size * here / max(total, 1))

    @no_grad()
    def evaluate(self) -> dict:
        """Mean MLM loss over the selected positions of the first ``eval_batches``
        windows of the validation split (masked with a fixed seed)."""
        c, tok = self.config, self.tokenizer
        L = self.options.context_length
        n = L - 2
        toks = np.asarray(self.val_tokens)
        starts = range(0, max(len(toks) - n, 0) + 1, n)
        rng = np.random.default_rng(12345)
        was = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        try:
            rows = [toks[s:s + n] for s in starts][: c.eval_batches * c.batch_size]
            for b in range(0, len(rows), c.batch_size):
                x = frame(np.stack(rows[b:b + c.batch_size]), tok.cls_id, tok.sep_id)
                inputs, labels = mask_tokens(x, rng, tok.vocab_size, tok.mask_id,
                                             tok.special_ids, self.options.mlm_probability)
                k = int((labels != IGNORE_INDEX).sum())
                if k == 0:
                    continue
                _, loss = self.model(inputs, labels=labels)  # onto the model's backend
                total += float(loss.item()) * k
                count += k
        finally:
            self.model.train(was)
        if count == 0:
            raise ValueError("MLM evaluation: the validation split holds no window of "
                             f"{n} tokens; give more data or a shorter --context-length")
        mean = total / count
        return {"loss": mean, "ppl": math.exp(min(mean, 700.0)), "tokens": count}


def load_mlm_run(out_dir: str | Path, which: str = "best") -> tuple:
    """(BertForMaskedLM in eval mode, tokenizer, checkpoint metadata) of a pretrain-mlm
    run (``best`` falls back to the last checkpoint)."""
    from ..data.tokenizer import tokenizer_from_dict
    from ..nn.bert import BertConfig, BertForMaskedLM
    from .trainer import BEST_NAME, CKPT_NAME
    from .training_state import load_model_weights, load_training_state

    out = Path(out_dir)
    path = out / BEST_NAME if which == "best" and (out / BEST_NAME).exists() else out / CKPT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {str(out)!r}: pretrain first with "
                                "`minilm pretrain-mlm --out-dir …`")
    extra = load_training_state(path)
    if extra.get("objective") != "mlm":
        raise ValueError(f"{path} is not a pretrain-mlm run")
    model = BertForMaskedLM(BertConfig(**extra["model_config"]))
    model.load_state_dict(load_model_weights(path))
    model.eval()
    return model, tokenizer_from_dict(extra["tokenizer"]), extra
