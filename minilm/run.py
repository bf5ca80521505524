"""End-to-end runs: data -> tokenizer -> token cache -> model -> Trainer (one process)
or ParallelEngine + ParallelTrainer (an MPI process grid), and loading a finished run
back for sampling and evaluation. The CLI (``cli.py``) is a thin layer over these.

This is the one place that picks the engine: it sits above both ``train`` and
``parallel``; ``parallel`` never imports ``train``, and ``train`` reaches the engine only
through the object it is handed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from . import backends
from .nn.transformer import GPT, GPTConfig
from .train.config import TrainConfig
from .train.parallel_trainer import ParallelTrainer
from .train.trainer import BEST_NAME, CKPT_NAME, Trainer
from .train.training_state import load_model_weights, load_training_state

__all__ = ["load_run", "prepare_data", "train"]


def prepare_data(cfg: TrainConfig, log: Any = print) -> tuple:
    """(tokenizer, train_tokens, val_tokens): the corpus read, the tokenizer trained (or
    reused from ``out_dir/tokenizer.json``) and the tokens cached in a memmap."""
    from .data import (
        ByteBPETokenizer,
        CharTokenizer,
        encode_to_memmap,
        load_corpus,
        load_tokenizer,
        split_tokens,
    )

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = load_corpus(cfg.data)
    tok_path = out / "tokenizer.json"
    if tok_path.exists():
        tokenizer = load_tokenizer(tok_path)
    elif cfg.tokenizer == "char":
        tokenizer = CharTokenizer.train(text)
        tokenizer.save(tok_path)
    else:
        log(f"training a byte-level BPE tokenizer (vocab {cfg.bpe_vocab_size}) on "
            f"{len(text):,} characters …")
        tokenizer = ByteBPETokenizer.train(text, vocab_size=cfg.bpe_vocab_size)
        tokenizer.save(tok_path)
    tokens = encode_to_memmap(tokenizer, text, out / "tokens.bin")
    train_tokens, val_tokens = split_tokens(tokens, cfg.val_fraction)
    log(f"data: {len(text):,} characters -> {len(tokens):,} tokens "
        f"({len(text) / max(len(tokens), 1):.2f} chars/token), vocab {tokenizer.vocab_size}; "
        f"train {len(train_tokens):,} / val {len(val_tokens):,}")
    return tokenizer, train_tokens, val_tokens


def _grid(cfg: TrainConfig) -> Any:
    """The process grid of an MPI run (None for one process), checked before any work."""
    from .parallel import ProcessGrid, install_abort_handler, world

    w = world()
    if w.size == 1 and cfg.tp == 1 and cfg.pp == 1 and (cfg.dp or 1) == 1 and not cfg.zero:
        return None
    install_abort_handler()
    dp = cfg.dp if cfg.dp is not None else max(w.size // (cfg.tp * cfg.pp), 1)
    grid = ProcessGrid(dp=dp, tp=cfg.tp, pp=cfg.pp, comm=w)
    configure_threads(grid)
    return grid


def configure_threads(grid: Any) -> int:
    """Give each rank an equal share of its node's cores, so that ranks on one node do
    not oversubscribe them (BLAS and Numba threads both follow set_num_threads)."""
    import os

    from .backends import set_num_threads

    local = grid.world.split_shared()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = max(1, (cores or 1) // max(local.size, 1))
    set_num_threads(n)
    return n


def train(model_cfg: GPTConfig, cfg: TrainConfig, resume: bool = False,
          log: Any = print) -> tuple:
    """Train a GPT as configured; with ``resume``, continue from ``out_dir``'s last
    checkpoint. Under mpiexec with ``dp``/``tp``/``pp``/``zero`` set, trains on that
    process grid. Returns (trainer, last metrics)."""
    from .backends import manual_seed
    from .data import DataLoader, RandomWindowBatches

    if cfg.backend:
        backends.use_backend(cfg.backend)
    backends.tune_allocator()  # reuse freed activation memory (see docs/performance.md)
    grid = _grid(cfg)
    main = grid is None or grid.world.rank == 0
    say = log if main else (lambda *a, **k: None)
    manual_seed(cfg.seed)
    if grid is not None and not main:
        grid.world.barrier()  # rank 0 trains the tokenizer and writes the token cache first
    tokenizer, train_tokens, val_tokens = prepare_data(cfg, say)
    if grid is not None and main:
        grid.world.barrier()
    ckpt = Path(cfg.out_dir) / CKPT_NAME
    if resume:
        if not ckpt.exists():
            raise ValueError(f"--resume: no checkpoint at {str(ckpt)!r}")
        saved = load_training_state(ckpt)["model_config"]
        model_cfg = GPTConfig.from_dict(saved)  # the run's own shape wins
    vocab = max(tokenizer.vocab_size, model_cfg.vocab_size if resume else 0)
    if cfg.tp > 1:  # vocab-parallel layers need vocab % tp == 0: pad with unused rows
        vocab = -(-vocab // cfg.tp) * cfg.tp
    model_cfg = dataclasses.replace(model_cfg, vocab_size=vocab)
    model = GPT(model_cfg)
    if cfg.dtype != "float32":
        model.to(cfg.dtype)
    say(f"model: {model.num_parameters():,} parameters; backend "
        f"{backends.current_backend().name}")
    min_tokens = model_cfg.context_length + 1
    for name, toks in (("training", train_tokens), ("validation", val_tokens)):
        if len(toks) < min_tokens:
            raise ValueError(
                f"the {name} split has {len(toks)} tokens, fewer than context_length + 1 = "
                f"{min_tokens}; give more data, a shorter context or a larger val_fraction"
            )
    source = RandomWindowBatches(train_tokens, cfg.batch_size, model_cfg.context_length,
                                 rng=cfg.seed)
    loader = DataLoader(source, prefetch=cfg.prefetch)
    if grid is None:
        trainer = Trainer(model, loader, val_tokens, cfg, tokenizer=tokenizer)
    else:
        from .parallel.engine import ParallelEngine

        engine = ParallelEngine(model, grid, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                weight_decay=cfg.weight_decay, zero=cfg.zero,
                                micro_batches=cfg.micro_batches * cfg.grad_accum_steps,
                                schedule=cfg.schedule, bucket_size_mb=cfg.bucket_mb,
                                grad_clip=cfg.grad_clip)
        trainer = ParallelTrainer(engine, loader, val_tokens, cfg, tokenizer=tokenizer)
        say(f"grid: dp {grid.dp} x tp {grid.tp} x pp {grid.pp} ({grid.world.size} ranks), "
            f"ZeRO-{cfg.zero}, {cfg.micro_batches} micro-batches ({cfg.schedule}); "
            f"{engine.parameters_per_rank:,} parameters on rank 0")
    if resume:
        trainer.resume(ckpt)
        say(f"resumed from {ckpt} at step {trainer.step}")
    return trainer, trainer.fit()


def load_run(out_dir: str | Path, which: str = "best") -> tuple:
    """(model in eval mode, tokenizer, checkpoint metadata) of a finished run; ``which``
    is ``best`` (lowest validation loss, falling back to the last) or ``last``."""
    from .data import tokenizer_from_dict

    out = Path(out_dir)
    path = out / BEST_NAME if which == "best" and (out / BEST_NAME).exists() else out / CKPT_NAME
    if not path.exists():
        raise ValueError(f"no checkpoint in {str(out)!r} (looked for {BEST_NAME} and {CKPT_NAME});"
                         " train first with `minilm train --out-dir …`")
    extra = load_training_state(path)
    model = GPT(GPTConfig.from_dict(extra["model_config"]))
    model.load_state_dict(load_model_weights(path))
    model.eval()
    tokenizer = tokenizer_from_dict(extra["tokenizer"]) if extra.get("tokenizer") else None
    return model, tokenizer, extra


