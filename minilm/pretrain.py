"""``minilm pretrain-mlm``: pretrain a BERT encoder with the masked-language-model
objective on the built-in corpus or your texts, in an owned run directory, with the
GPT's Trainer (checkpoints, exact resume, metrics.jsonl, loss plot, SIGINT/SIGTERM).

    minilm pretrain-mlm --out-dir runs/mlm --max-steps 2000           # WordPiece trained here
    minilm pretrain-mlm --out-dir runs/mlm --vocab all-MiniLM-L6-v2   # BERT's uncased vocab
    minilm pretrain-mlm --out-dir runs/mlm --resume --max-steps 4000
    minilm pretrain-mlm --out-dir runs/mlm2 --init all-MiniLM-L6-v2 --data my_texts/
        # domain-adaptive: continue MiniLM's own pretraining on your texts

The tokenizer is a WordPiece vocabulary trained on the corpus (``--vocab-size``) or an
existing one (``--vocab`` a vocab.txt or a pretrained model's name). With ``--init``
the encoder starts from a pretrained model's weights (its vocabulary and shape are then
the model's). See minilm/train/mlm.py for the data path and docs/pretrained.md.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from . import backends
from .nn.bert import BertConfig, BertForMaskedLM
from .train.config import TrainConfig
from .train.mlm import MLMOptions, MLMTrainer, load_mlm_run, mlm_loader
from .train.run_dir import RunDir, data_digest
from .train.trainer import CKPT_NAME
from .train.training_state import load_training_state

__all__ = ["add_pretrain_mlm_parser", "init_from_pretrained", "load_mlm_run", "pretrain_mlm"]


def _tokenizer(vocab: str | None, vocab_size: int, text: str, say: Any) -> Any:
    from .data.wordpiece import WordPieceTokenizer
    from .models.pretrained import resolve_model_dir

    if vocab is None:
        say(f"training a WordPiece vocabulary ({vocab_size} tokens) on {len(text):,} characters …")
        return WordPieceTokenizer.train(text.split("\n\n"), vocab_size=vocab_size)
    p = Path(vocab)
    if p.is_file():
        return WordPieceTokenizer.from_vocab_file(p)
    return WordPieceTokenizer.from_vocab_file(resolve_model_dir(vocab) / "vocab.txt")


def _encode(tokenizer: Any, text: str) -> Any:
    import numpy as np

    ids: list[int] = []
    for para in text.split("\n\n"):  # paragraph by paragraph: the tokenizer's lists stay small
        ids.extend(tokenizer.encode(para, add_special_tokens=False))
    return np.asarray(ids, dtype=np.int32 if tokenizer.vocab_size < 2 ** 31 else np.int64)


def pretrain_mlm(model_cfg: BertConfig, cfg: TrainConfig, options: MLMOptions,
                 vocab: str | None = None, vocab_size: int = 8000, init: str | None = None,
                 resume: bool = False, overwrite: bool = False, log: Any = print,
                 dp: int = 1) -> tuple:
    """Pretrain into ``cfg.out_dir``; returns (trainer, last metrics). A resumed run
    takes its own settings from the checkpoint (only ``max_steps`` and the launch
    settings may change). ``dp`` > 1: data parallel over the ``mpiexec`` job's
    processes (exactly ``dp`` of them); rank 0 owns the run directory and writes the
    files (see :class:`~minilm.train.mlm.MLMTrainer`)."""
    from .backends import manual_seed
    from .data import load_corpus, split_tokens
    from .data.tokenizer import tokenizer_from_dict

    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it; give one")
    extra = None
    if resume:
        ckpt = Path(cfg.out_dir) / CKPT_NAME
        if not ckpt.exists():
            raise ValueError(f"--resume: no checkpoint at {str(ckpt)!r}; pretrain first "
                             "without --resume")
        extra = load_training_state(ckpt)
        if extra.get("objective") != "mlm":
            raise ValueError(f"--resume: {ckpt} is not an MLM run (written by minilm train?); "
                             "resume it with the command that made it")
        saved = TrainConfig.from_dict(extra["train_config"])
        cfg = dataclasses.replace(saved, max_steps=cfg.max_steps, progress=cfg.progress,
                                  backend=cfg.backend)  # where to run: a launch setting
        if cfg.max_steps < int(extra["step"]):
            raise ValueError(f"--max-steps {cfg.max_steps} is below the checkpoint's step "
                             f"{extra['step']}")
        model_cfg = BertConfig(**extra["model_config"])
        options = MLMOptions(**extra["mlm"])
    if cfg.backend:
        backends.use_backend(cfg.backend)
    comm = _dp_comm(dp)
    main = comm is None or comm.rank == 0
    log = log if main else (lambda *a, **k: None)
    run = _open_run(cfg.out_dir, resume, overwrite, log, comm)
    try:
        manual_seed(cfg.seed)
        text = load_corpus(cfg.data)
        data = {"source": cfg.data or "<built-in: Python's pydoc topics>",
                "sha256": data_digest(text), "chars": len(text)}
        if extra is not None:
            if extra.get("data_sha256") not in (None, data["sha256"]):
                raise ValueError(f"--resume: the data {data['source']!r} changed since the run "
                                 "started (its SHA-256 differs); resume with the same data")
            tokenizer = tokenizer_from_dict(extra["tokenizer"])
        else:
            tokenizer = _tokenizer(vocab, vocab_size, text, log) if init is None else None
        if extra is not None:
            model = BertForMaskedLM(model_cfg)  # the weights come with trainer.resume
        elif init is not None:
            model, tokenizer = init_from_pretrained(init)
        else:
            model = BertForMaskedLM(dataclasses.replace(model_cfg,
                                                        vocab_size=tokenizer.vocab_size))
        model_cfg = model.config
        if cfg.dtype != "float32":
            model.to(cfg.dtype)
        if model_cfg.vocab_size < tokenizer.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's "
                             f"vocabulary {model_cfg.vocab_size}")
        if options.context_length > model_cfg.max_length:
            if init is None:
                raise ValueError(f"--context-length {options.context_length} exceeds the model's "
                                 f"{model_cfg.max_length} positions")
            options = dataclasses.replace(options, context_length=model_cfg.max_length)
        tokens = _encode(tokenizer, text)
        train_tokens, val_tokens = split_tokens(tokens, cfg.val_fraction)
        L = options.context_length
        for name, toks in (("training", train_tokens), ("validation", val_tokens)):
            if len(toks) < L:
                raise ValueError(f"the {name} split has {len(toks)} tokens, fewer than one "
                                 f"window of {L}; give more data or a shorter --context-length")
        log(f"data: {len(text):,} characters -> {len(tokens):,} WordPiece tokens, vocab "
            f"{tokenizer.vocab_size}; train {len(train_tokens):,} / val {len(val_tokens):,}")
        log(f"model: BertForMaskedLM, {model.num_parameters():,} parameters "
            f"({model_cfg.num_hidden_layers} layers, hidden {model_cfg.hidden_size}); "
            f"masking {options.mlm_probability:.0%}"
            + (", whole words" if options.whole_word else ""))
        source = mlm_loader(train_tokens, tokenizer, cfg.batch_size, L, options, cfg.seed)
        from .data import DataLoader

        trainer = MLMTrainer(model, DataLoader(source, prefetch=cfg.prefetch), val_tokens, cfg,
                             tokenizer, options, data_sha256=data["sha256"], comm=comm)
        if extra is not None:
            from .run import _stretch_schedule

            trainer.resume(Path(cfg.out_dir) / CKPT_NAME)
            _stretch_schedule(trainer.scheduler, cfg.max_steps, log)
            log(f"resumed from {Path(cfg.out_dir) / CKPT_NAME} at step {trainer.step}")
        elif run is not None:
            run.created(model_cfg.to_dict(), cfg.to_dict(), tokenizer, data)
        return trainer, trainer.fit()
    except BaseException:
        if run is not None:
            run.abandon()
        raise
    finally:
        if run is not None:
            run.close()


def _dp_comm(dp: int) -> Any:
    """The world communicator for ``--dp`` > 1 (checked against the job's size)."""
    if not isinstance(dp, int) or dp < 1:
        raise ValueError(f"--dp must be an integer >= 1, got {dp!r}")
    if dp == 1:
        return None
    from .parallel import world

    comm = world()
    if comm.size != dp:
        raise ValueError(f"--dp {dp}, but the job has {comm.size} process(es); launch with "
                         f"mpiexec -n {dp}")
    return comm


def _open_run(out_dir: Any, resume: bool, overwrite: bool, log: Any, comm: Any) -> Any:
    """Rank 0 opens (owns) the run directory; the others learn whether it could, so a
    refusal ends every rank with the same error instead of leaving them waiting."""
    if comm is None:
        return RunDir.open(out_dir, resume, overwrite, log=log)
    import numpy as np

    run, error = None, None
    if comm.rank == 0:
        try:
            run = RunDir.open(out_dir, resume, overwrite, log=log)
        except ValueError as exc:
            error = exc
    flag = np.array([0.0 if error is None else 1.0])
    comm.allreduce(flag)
    if error is not None:
        raise error
    if flag[0]:
        raise ValueError("rank 0 could not open the run directory (its error is above)")
    return run


def init_from_pretrained(name_or_path: str) -> tuple:
    """(BertForMaskedLM, tokenizer) whose encoder is a pretrained model's (its config,
    weights and vocabulary; the MLM head's transform is new when the file has none, as
    sentence-transformers checkpoints do; the decoder is tied to the loaded embeddings)."""
    import json

    from .data.wordpiece import WordPieceTokenizer
    from .models.pretrained import load_hf_state_dict, read_safetensors_arrays, resolve_model_dir

    folder = resolve_model_dir(name_or_path)
    try:
        config = BertConfig.from_hf_config(json.loads((folder / "config.json").read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--init {name_or_path!r}: cannot read {folder / 'config.json'} "
                         f"({exc})") from None
    model = BertForMaskedLM(config)
    tensors = read_safetensors_arrays(folder / "model.safetensors")
    encoder = {k: v for k, v in tensors.items() if not k.startswith(("pooler.", "cls."))}
    load_hf_state_dict(model.bert, encoder)
    return model, WordPieceTokenizer.from_vocab_file(folder / "vocab.txt")


# ---------------------------------------------------------------------------- the command
def add_pretrain_mlm_parser(sub: Any) -> None:
    """The ``minilm pretrain-mlm`` subcommand (registered by minilm/cli.py)."""
    p = sub.add_parser("pretrain-mlm", help="pretrain a BERT encoder with masked-language "
                                            "modelling (dynamic masking)")
    p.add_argument("--out-dir", required=True, help="the run directory")
    p.add_argument("--data", default=None, help="a text file or folder (default: the built-in "
                                                "corpus, Python's pydoc topics)")
    g = p.add_argument_group("tokenizer and initialisation")
    g.add_argument("--vocab", default=None, help="a vocab.txt or a pretrained model's name "
                                                 "(default: train a WordPiece vocabulary)")
    g.add_argument("--vocab-size", type=int, default=8000, help="WordPiece tokens to train")
    g.add_argument("--init", default=None, help="start from a pretrained encoder (a name such "
                   "as all-MiniLM-L6-v2, or a folder): domain-adaptive continued pretraining")
    g = p.add_argument_group("model (ignored with --init)")
    g.add_argument("--d-model", type=int, default=128)
    g.add_argument("--n-layers", type=int, default=2)
    g.add_argument("--n-heads", type=int, default=4)
    g.add_argument("--d-ff", type=int, default=None, help="default 4 x d-model")
    g.add_argument("--context-length", type=int, default=128, help="tokens per window, "
                   "[CLS] and [SEP] included")
    g.add_argument("--dropout", type=float, default=0.1)
    g = p.add_argument_group("masking and training")
    g.add_argument("--mask-prob", type=float, default=0.15)
    g.add_argument("--whole-word", action="store_true", help="mask whole words")
    g.add_argument("--max-steps", type=int, default=1000)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--lr", type=float, default=5e-4)
    g.add_argument("--min-lr", type=float, default=None, help="end of the cosine decay "
                                                            "(default lr / 10)")
    g.add_argument("--warmup-steps", type=int, default=100)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--eval-interval", type=int, default=200)
    g.add_argument("--ckpt-interval", type=int, default=200)
    g.add_argument("--log-interval", type=int, default=10)
    g.add_argument("--seed", type=int, default=1337)
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    g.add_argument("--backend", default=None, help="numpy | numba | cupy (the GPU) "
                                                   "(default: MINILM_BACKEND or numba)")
    p.add_argument("--dp", type=int, default=1, help="data-parallel processes (run under "
                                                     "mpiexec -n DP)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir")
    p.add_argument("--overwrite", action="store_true",
                   help="move the run already in --out-dir aside and start afresh")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_pretrain_mlm)


def _pretrain_mlm(args: argparse.Namespace) -> int:
    for flag, v in (("--vocab-size", args.vocab_size), ("--context-length", args.context_length)):
        if v < (3 if flag == "--context-length" else 16):
            raise ValueError(f"{flag} {v} is too small")
    model_cfg = BertConfig(vocab_size=args.vocab_size, hidden_size=args.d_model,
                           num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads,
                           intermediate_size=args.d_ff or 4 * args.d_model,
                           max_position_embeddings=args.context_length,
                           hidden_dropout_prob=args.dropout,
                           attention_probs_dropout_prob=args.dropout)
    cfg = TrainConfig(out_dir=args.out_dir, data=args.data, batch_size=args.batch_size,
                      max_steps=args.max_steps, lr=args.lr,
                      min_lr=args.lr / 10 if args.min_lr is None else args.min_lr,
                      warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
                      beta2=0.999, eval_interval=args.eval_interval,
                      ckpt_interval=args.ckpt_interval, log_interval=args.log_interval,
                      seed=args.seed, progress=not args.no_progress, dtype=args.dtype,
                      backend=args.backend)
    options = MLMOptions(mlm_probability=args.mask_prob, whole_word=args.whole_word,
                         mask_seed=args.seed, context_length=args.context_length)
    trainer, last = pretrain_mlm(model_cfg, cfg, options, vocab=args.vocab,
                                 vocab_size=args.vocab_size, init=args.init,
                                 resume=args.resume, overwrite=args.overwrite, dp=args.dp)
    if trainer is not None and not trainer.is_main:
        return 0
    msg = f"done: step {last.get('step')}"
    if "val_loss" in last:
        msg += f", val MLM loss {last['val_loss']:.4f}"
    print(msg + f"; checkpoints in {args.out_dir}")
    return 0
