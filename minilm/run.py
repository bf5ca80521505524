"""End-to-end runs: data -> tokenizer -> token cache -> model -> Trainer (one process)
or ParallelEngine + ParallelTrainer (an MPI process grid), and loading a finished run
back for sampling and evaluation. The CLI (``cli.py``) is a thin layer over these.

This is the one place that picks the engine: it sits above both ``train`` and
``parallel``; ``parallel`` never imports ``train``, and ``train`` reaches the engine only
through the object it is handed."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from . import backends
from .nn.transformer import GPT, GPTConfig
from .train.config import TrainConfig
from .train.parallel_trainer import ParallelTrainer
from .train.run_dir import (
    LAUNCH_SETTINGS,
    RECORD_NAME,
    RESUME_MAY_CHANGE,
    RunDir,
    config_differences,
    data_digest,
    read_record,
    tokenizer_digest,
)
from .train.trainer import BEST_NAME, CKPT_NAME, Trainer
from .train.training_state import load_model_weights, load_training_state

__all__ = ["load_run", "prepare_data", "train"]


def prepare_data(cfg: TrainConfig, log: Any = print, tokenizer: Any = None,
                 save_tokenizer: bool = True, check: Any = None) -> tuple:
    """(tokenizer, train_tokens, val_tokens, data record): the corpus read, the
    tokenizer trained (unless one is given; ``save_tokenizer`` writes it to
    ``out_dir/tokenizer.json``) and the tokens cached in a memmap. The data record is
    ``{"source", "sha256", "chars"}`` (the run record keeps it); ``check(data)`` runs
    before anything is written."""
    from .data import ByteBPETokenizer, CharTokenizer, encode_to_memmap, load_corpus, split_tokens

    out = Path(cfg.out_dir)
    text = load_corpus(cfg.data)
    data = {"source": cfg.data or "<built-in: Python's pydoc topics>",
            "sha256": data_digest(text), "chars": len(text)}
    if check is not None:
        check(data)
    if tokenizer is None:
        if cfg.tokenizer == "char":
            tokenizer = CharTokenizer.train(text)
        else:
            log(f"training a byte-level BPE tokenizer (vocab {cfg.bpe_vocab_size}) on "
                f"{len(text):,} characters …")
            tokenizer = ByteBPETokenizer.train(text, vocab_size=cfg.bpe_vocab_size)
    if save_tokenizer:
        tokenizer.save(out / "tokenizer.json")
    tokens = encode_to_memmap(tokenizer, text, out / "tokens.bin")
    train_tokens, val_tokens = split_tokens(tokens, cfg.val_fraction)
    log(f"data: {len(text):,} characters -> {len(tokens):,} tokens "
        f"({len(text) / max(len(tokens), 1):.2f} chars/token), vocab {tokenizer.vocab_size}; "
        f"train {len(train_tokens):,} / val {len(val_tokens):,}")
    return tokenizer, train_tokens, val_tokens, data


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


def _resume_settings(model_cfg: GPTConfig, cfg: TrainConfig, given: dict | None) -> tuple:
    """(model config, train config, checkpoint extra) to resume ``cfg.out_dir`` with:
    the checkpoint's own settings, with the ones given again (``given``: name -> the
    flag or TOML key it came from; None: every field of the configs passed) checked
    against them. Only :data:`RESUME_MAY_CHANGE` may differ; anything else is a
    ValueError listing every difference."""
    ckpt = Path(cfg.out_dir) / CKPT_NAME
    if not ckpt.exists():
        raise ValueError(f"--resume: no checkpoint at {str(ckpt)!r}; train first without "
                         "--resume")
    extra = load_training_state(ckpt)
    for key in ("model_config", "train_config", "step"):
        if key not in extra:
            raise ValueError(f"--resume: {ckpt} has no {key!r} (not written by minilm train); "
                             "start a new run with --overwrite")
    saved_model, saved_train = dict(extra["model_config"]), dict(extra["train_config"])
    mine_model, mine_train = model_cfg.to_dict(), cfg.to_dict()
    if given is not None:
        mine_model = {k: v for k, v in mine_model.items() if k in given}
        mine_train = {k: v for k, v in mine_train.items() if k in given}
    skip = RESUME_MAY_CHANGE | {"data"}  # the data is checked by content
    diffs = (config_differences(saved_model, {k: v for k, v in mine_model.items()
                                              if k != "vocab_size"}, given)
             + config_differences(saved_train, mine_train, given, skip))
    if diffs:
        raise ValueError(
            f"--resume: {'; '.join(diffs)} differ from the run in {str(cfg.out_dir)!r}. On "
            f"resume only these may change: {', '.join(sorted(RESUME_MAY_CHANGE - {'out_dir'}))}"
            f"; to train with other settings start a new run (another --out-dir, or --overwrite)")
    keep = {k: v for k, v in mine_train.items() if k in skip}
    launch = {k: v for k, v in cfg.to_dict().items() if k in LAUNCH_SETTINGS}
    train_d = {**saved_train, **keep, **launch}
    if given is not None and "data" not in given:
        train_d["data"] = saved_train.get("data")
    new_cfg = TrainConfig.from_dict(train_d)
    step = int(extra["step"])
    if new_cfg.max_steps < step:
        who = (given or {}).get("max_steps", "max_steps")
        raise ValueError(f"{who} = {new_cfg.max_steps}: below the checkpoint's step {step}; "
                         f"give a larger value to continue the run")
    return GPTConfig.from_dict(saved_model), new_cfg, extra


def _check_resumed_inputs(run: RunDir, tokenizer: Any, data: dict, extra: dict) -> None:
    """The tokenizer file and the training text are those the run was trained with."""
    tok_path = run.path / "tokenizer.json"
    saved = tokenizer_digest(tokenizer)
    if tok_path.exists():
        from .data import load_tokenizer

        if load_tokenizer(tok_path).fingerprint() != saved:
            raise ValueError(f"--resume: {tok_path} is not the tokenizer this run was trained "
                             f"with (its checkpoint holds another); restore the file, or delete "
                             f"it and it is rewritten from the checkpoint")
    record = run.record
    if record is None:
        return  # a run made before records: nothing to compare the data with
    if record.get("tokenizer_sha256") not in (None, saved):
        raise ValueError(f"--resume: the checkpoint's tokenizer is not the one recorded in "
                         f"{run.path / RECORD_NAME}")
    want = (record.get("data") or {}).get("sha256")
    if want is not None and want != data["sha256"]:
        raise ValueError(
            f"--resume: the training text {data['source']!r} is not the one this run was "
            f"trained on (sha256 {data['sha256'][:12]}…, recorded {want[:12]}… from "
            f"{record['data'].get('source')!r}); give the original with --data, or start a "
            f"new run")


def train(model_cfg: GPTConfig, cfg: TrainConfig, resume: bool = False,
          log: Any = print, overwrite: bool = False, given: dict | None = None) -> tuple:
    """Train a GPT as configured into the run directory ``cfg.out_dir`` (see
    :mod:`minilm.train.run_dir`: a new run, ``overwrite`` moving an old one aside, or
    with ``resume`` continuing the last checkpoint, whose settings win; ``given`` names
    the settings given explicitly, checked against it). Under mpiexec with
    ``dp``/``tp``/``pp``/``zero`` set, trains on that process grid. Returns (trainer,
    last metrics); (None, {"step": N}) when a resumed run is already at max_steps."""
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it; give one")
    if resume:
        model_cfg, cfg, extra = _resume_settings(model_cfg, cfg, given)
        if int(extra["step"]) >= cfg.max_steps:
            return None, {"step": int(extra["step"]), "max_steps": cfg.max_steps}
    if (cfg.backend or os.environ.get("MINILM_BACKEND")) == "cupy":
        from .parallel import setup_rank_device, world

        setup_rank_device(cfg.backend, world())  # under mpiexec: one GPU per rank
    if cfg.backend:
        backends.use_backend(cfg.backend)
    else:
        backends.current_backend()  # MINILM_BACKEND naming one that cannot run: say so now
    backends.tune_allocator()  # reuse freed activation memory (see docs/performance.md)
    grid = _grid(cfg)
    if grid is not None and cfg.amp != "off":
        raise ValueError(f"--amp {cfg.amp} runs in one process (with batch threads) for "
                         "now; the MPI engine (dp / tp / pp) trains in float32: drop --amp "
                         "or run without mpiexec")
    main = grid is None or grid.world.rank == 0
    say = log if main else (lambda *a, **k: None)
    run = RunDir.open(cfg.out_dir, resume, overwrite, log=say) if main else None
    try:
        return _train(model_cfg, cfg, resume, grid, run, say, extra if resume else None)
    except BaseException:
        if run is not None:
            run.abandon()  # a new run that never got going leaves nothing behind
        raise
    finally:
        if run is not None:
            run.close()


def _train(model_cfg: GPTConfig, cfg: TrainConfig, resume: bool, grid: Any, run: Any,
           say: Any, extra: dict | None) -> tuple:
    from .backends import manual_seed
    from .data import DataLoader, RandomWindowBatches, load_tokenizer, tokenizer_from_dict

    main = run is not None
    teacher = _load_teacher(cfg, model_cfg, grid) if cfg.teacher else None
    manual_seed(cfg.seed)
    if grid is not None and not main:
        grid.world.barrier()  # rank 0 trains the tokenizer and writes the token cache first
    if resume:
        tokenizer = tokenizer_from_dict(extra["tokenizer"])
    elif teacher is not None:  # the student reads the teacher's token ids
        tokenizer = teacher[1]
    else:
        tokenizer = None if main else load_tokenizer(Path(cfg.out_dir) / "tokenizer.json")
    check = (lambda data: _check_resumed_inputs(run, tokenizer, data, extra)) \
        if resume and main else None
    tokenizer, train_tokens, val_tokens, data = prepare_data(
        cfg, say, tokenizer, main and (not resume or not (run.path / "tokenizer.json").exists()),
        check)
    if grid is not None and main:
        grid.world.barrier()
    min_tokens = model_cfg.context_length + 1
    for name, toks in (("training", train_tokens), ("validation", val_tokens)):
        if len(toks) < min_tokens:
            raise ValueError(
                f"the {name} split has {len(toks)} tokens, fewer than context_length + 1 = "
                f"{min_tokens}; give more data, a shorter context or a larger val_fraction"
            )
    vocab = max(tokenizer.vocab_size, model_cfg.vocab_size if resume else 0)
    if cfg.tp > 1:  # vocab-parallel layers need vocab % tp == 0: pad with unused rows
        vocab = -(-vocab // cfg.tp) * cfg.tp
    model_cfg = dataclasses.replace(model_cfg, vocab_size=vocab)
    model = GPT(model_cfg)
    if cfg.dtype != "float32":
        model.to(cfg.dtype)
    say(f"model: {model.num_parameters():,} parameters; backend "
        f"{backends.current_backend().name}")
    source = RandomWindowBatches(train_tokens, cfg.batch_size, model_cfg.context_length,
                                 rng=cfg.seed)
    loader = DataLoader(source, prefetch=cfg.prefetch)
    if teacher is not None:
        from .train.distill import DistillTrainer

        if teacher[0].config.vocab_size != model_cfg.vocab_size:
            raise ValueError(f"--teacher {cfg.teacher!r}: its vocabulary "
                             f"({teacher[0].config.vocab_size}) is not the student's "
                             f"({model_cfg.vocab_size})")
        trainer = DistillTrainer(teacher[0], model, loader, val_tokens, cfg, tokenizer=tokenizer)
        say(f"distilling from {cfg.teacher} ({teacher[0].num_parameters():,} parameters), "
            f"T {cfg.distill_temperature}, alpha {cfg.distill_alpha}")
    elif grid is None:
        trainer = Trainer(model, loader, val_tokens, cfg, tokenizer=tokenizer)
    else:
        from .parallel.engine import ParallelEngine

        engine = ParallelEngine(model, grid, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                weight_decay=cfg.weight_decay, zero=cfg.zero,
                                micro_batches=cfg.micro_batches * cfg.grad_accum_steps,
                                schedule=cfg.schedule, bucket_size_mb=cfg.bucket_mb,
                                grad_clip=cfg.grad_clip, skip_nonfinite=cfg.skip_nonfinite)
        trainer = ParallelTrainer(engine, loader, val_tokens, cfg, tokenizer=tokenizer)
        say(f"grid: dp {grid.dp} x tp {grid.tp} x pp {grid.pp} ({grid.world.size} ranks), "
            f"ZeRO-{cfg.zero}, {cfg.micro_batches} micro-batches ({cfg.schedule}); "
            f"{engine.parameters_per_rank:,} parameters on rank 0")
    if resume:
        ckpt = Path(cfg.out_dir) / CKPT_NAME
        trainer.resume(ckpt)
        _stretch_schedule(trainer.scheduler, cfg.max_steps, say)
        say(f"resumed from {ckpt} at step {trainer.step}")
    elif main:
        run.created(model_cfg.to_dict(), cfg.to_dict(), tokenizer, data)
    return trainer, trainer.fit()


def _load_teacher(cfg: TrainConfig, model_cfg: GPTConfig, grid: Any) -> tuple:
    """(teacher model, its tokenizer) for a distillation run, checked against the
    student before any work."""
    if grid is not None:
        raise ValueError("--teacher: distillation runs in one process (no --dp/--tp/--pp)")
    if Path(cfg.teacher).resolve() == Path(cfg.out_dir).resolve():
        raise ValueError("--teacher is the student's own --out-dir; give the teacher's run")
    model, tokenizer, extra = load_run(cfg.teacher, "best")
    if "method" in extra:
        raise ValueError(f"--teacher {cfg.teacher!r}: give a run directory; its float "
                         "checkpoint is the teacher")
    if model_cfg.context_length > model.config.context_length:
        raise ValueError(f"--context-length {model_cfg.context_length}: longer than the "
                         f"teacher's {model.config.context_length}")
    if cfg.dtype != "float32":
        model.to(cfg.dtype)
    return model, tokenizer


def _stretch_schedule(scheduler: Any, max_steps: int, say: Any) -> None:
    """A resume with another ``max_steps`` gives the LR schedule that length (the decay
    is recomputed from the resumed step on)."""
    total = getattr(scheduler, "total_steps", None)
    if total is None or total == max_steps:
        return
    scheduler.total_steps = max_steps
    for g, lr in zip(scheduler.optimizer.param_groups, scheduler.get_lr()):
        g["lr"] = lr
    say(f"learning-rate schedule: {total} -> {max_steps} steps")


def load_run(out_dir: str | Path, which: str = "best") -> tuple:
    """(model in eval mode, tokenizer, checkpoint metadata) of a finished run; ``which``
    is ``best`` (lowest validation loss, falling back to the last) or ``last``. A
    checkpoint whose metadata does not describe its weights, or that has no tokenizer,
    is a ValueError naming the file (checked before the model is built)."""
    from .data import tokenizer_from_dict

    out = Path(out_dir)
    if which not in ("best", "last"):
        return _load_compressed_run(out, which)
    path = out / BEST_NAME if which == "best" and (out / BEST_NAME).exists() else out / CKPT_NAME
    if not path.exists():
        raise ValueError(f"no checkpoint in {str(out)!r} (looked for {BEST_NAME} and {CKPT_NAME});"
                         " train first with `minilm train --out-dir …`")
    extra = load_training_state(path)
    if extra.get("objective") == "mlm":
        raise ValueError(f"{path} is a masked-language-model run (a BERT encoder from minilm "
                         "pretrain-mlm): it cannot generate or score text left to right; "
                         "load it with minilm.pretrain.load_mlm_run")
    if not isinstance(extra.get("model_config"), dict):
        raise ValueError(f"{path}: no model_config in its metadata (not written by minilm train)")
    try:
        config = GPTConfig.from_dict(extra["model_config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: its model_config is not valid: {exc}") from None
    weights = load_model_weights(path)
    _check_config_fits(path, config, weights)
    if not isinstance(extra.get("tokenizer"), dict):
        raise ValueError(f"{path}: the checkpoint holds no tokenizer, so its ids cannot be "
                         "turned into text")
    try:
        tokenizer = tokenizer_from_dict(extra["tokenizer"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: its tokenizer is not valid: {exc}") from None
    model = GPT(config)
    model.load_state_dict(weights)
    model.eval()
    return model, tokenizer, extra


def run_tokens(out_dir: str | Path, extra: dict, tokenizer: Any) -> tuple:
    """(train tokens, validation tokens) of a run's own data, split as in training;
    a ValueError if the text has changed since (its validation split is then gone)."""
    import numpy as np

    from .data import load_corpus, split_tokens

    cfg = extra.get("train_config")
    if not isinstance(cfg, dict):
        raise ValueError(f"the checkpoint in {str(out_dir)!r} has no train_config, so its "
                         "validation split is unknown; give --data")
    text = load_corpus(cfg.get("data"))
    record = read_record(out_dir)
    data = (record or {}).get("data") or {}
    if data.get("sha256") not in (None, data_digest(text)):
        raise ValueError(f"the run's training text {data.get('source')!r} has changed "
                         f"since it was trained, so its validation split is gone; evaluate "
                         f"on a text of your choice with --data PATH")
    return split_tokens(np.asarray(tokenizer.encode(text)), cfg["val_fraction"])


def validation_tokens(out_dir: str | Path, extra: dict, tokenizer: Any) -> Any:
    """The run's validation split (see :func:`run_tokens`)."""
    return run_tokens(out_dir, extra, tokenizer)[1]


def compressed_tags(out_dir: str | Path) -> list[str]:
    """The compressed models (``minilm quantize`` / ``prune`` / ``low-rank``) of a run."""
    out = Path(out_dir)
    skip = {BEST_NAME, CKPT_NAME}
    return sorted(p.name[: -len(".safetensors")] for p in out.glob("*.safetensors")
                  if p.name not in skip and ".optim-" not in p.name)


def _load_compressed_run(out: Path, tag: str) -> tuple:
    from .data import tokenizer_from_dict
    from .train.compressed import compressed_path, load_compressed

    path = compressed_path(out, tag[: -len(".safetensors")] if tag.endswith(".safetensors")
                           else tag)
    if "/" in tag or not path.is_file():
        have = ", ".join(["best", "last", *compressed_tags(out)])
        raise ValueError(f"--checkpoint {tag!r}: no such checkpoint in {str(out)!r} "
                         f"(it has: {have})")
    model, extra = load_compressed(path)
    if not isinstance(extra.get("tokenizer"), dict):
        raise ValueError(f"{path}: holds no tokenizer")
    return model, tokenizer_from_dict(extra["tokenizer"]), extra


def _check_config_fits(path: Path, cfg: GPTConfig, weights: dict) -> None:
    """The sizes a GPT allocates that the weights fix (vocabulary, width, depth, MLP
    width, learned positions) match them, so a damaged config cannot make ``GPT(cfg)``
    allocate far more than the checkpoint holds; load_state_dict checks the rest."""
    import numpy as np

    def shape(key: str) -> tuple | None:
        return tuple(np.shape(weights[key])) if key in weights else None

    depth = len({k.split(".")[1] for k in weights if k.startswith("blocks.")})
    want = [("tok_emb.weight", shape("tok_emb.weight"), (cfg.vocab_size, cfg.d_model)),
            ("number of blocks", depth, 1 if getattr(cfg, "share_layers", False) else cfg.n_layers),
            ("blocks.0.mlp.fc.weight", shape("blocks.0.mlp.fc.weight"), (cfg.d_ff, cfg.d_model))]
    if cfg.positional == "learned":
        want.append(("pos_emb.weight", shape("pos_emb.weight"), (cfg.context_length, cfg.d_model)))
    bad = [f"{name}: weights {got} vs config {exp}" for name, got, exp in want
           if got is not None and got != exp]
    if bad:
        raise ValueError(f"{path}: its model_config does not describe its weights ("
                         + "; ".join(bad) + ")")
