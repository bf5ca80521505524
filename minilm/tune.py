"""``minilm search``: hyperparameter search over GPT training runs.

Each trial trains a small GPT (:class:`minilm.train.trainer.Trainer`) with the fixed
``[model]`` / ``[train]`` settings of the config, the trial's parameters on top, for
``budget`` steps (``max_steps``); its loss is the validation loss at the last step.
A strategy from :mod:`minilm.search` proposes the trials (ask/tell). Under
``mpiexec -n P``, rank 0 asks and tells and writes the log, and ranks 1..P-1 train
one trial at a time each: rank 0 sends a worker a trial spec as JSON bytes
(``send``: its length, then the bytes) and posts a non-blocking receive for its
result. With one process the trials run in turn.

The run directory holds ``search.json`` (the config), ``trials.jsonl`` (one record
per finished trial, see :class:`minilm.search.TrialLog`), ``search.png``, ``data/``
(the tokenizer and token cache, shared by every trial) and ``trials/NNNN/`` (each
trial's training log and checkpoints). ``resume=True`` replays the log into the
strategy and runs only what is missing. The config (TOML)::

    [search]
    strategy = "bayes"          # bayes | random | grid | hyperband
    trials = 8
    seed = 0

    [space]
    lr = {type = "float", low = 1e-4, high = 1e-2, log = true}
    n_layers = {type = "int", low = 1, high = 3}
    positional = {type = "choice", values = ["learned", "rope"]}

    [model]
    d_model = 64

    [train]
    max_steps = 60
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .search import (
    BayesianOptimization,
    Choice,
    Float,
    GridSearch,
    Hyperband,
    Int,
    RandomSearch,
    Space,
    TrialLog,
    trial_record,
)

__all__ = ["add_search_parser", "build_space", "build_strategy", "format_table",
           "load_search_config", "plot_search", "run_search"]

STRATEGIES = ("bayes", "random", "grid", "hyperband")
SEARCH_KEYS = {"strategy", "trials", "seed", "kernel", "n_initial", "xi", "grid_points",
               "eta", "min_budget", "max_budget"}
# settings a trial may not change: every trial reads the same tokens
FIXED_ONLY = {"data", "tokenizer", "bpe_vocab_size", "val_fraction", "out_dir", "max_steps",
              "backend", "vocab_size", "dp", "tp", "pp", "zero", "teacher"}
LOG_NAME, PLOT_NAME, CONFIG_NAME = "trials.jsonl", "search.png", "search.json"


# ---------------------------------------------------------------------------- config
def load_search_config(path: str | Path) -> dict:
    """Read a search config (TOML: ``[search]``, ``[space]``, ``[model]``, ``[train]``)
    and check it (:func:`check_config`); a missing file or a bad entry is a ValueError."""
    from .train.config import read_toml

    return check_config(read_toml(path), where=str(Path(path)))


def check_config(config: dict, where: str = "config") -> dict:
    """The config with defaults filled in, or a one-line ValueError naming what is wrong."""
    from .nn.transformer import GPTConfig
    from .train.config import TrainConfig, merge_config

    unknown = set(config) - {"search", "space", "model", "train"}
    if unknown:
        raise ValueError(f"{where}: unknown tables {sorted(unknown)}; use [search], [space], "
                         "[model] and [train]")
    for t in ("search", "space", "model", "train"):
        if not isinstance(config.get(t, {}), dict):
            raise ValueError(f"{where}: [{t}] must be a table")
    search = dict(config.get("search", {}))
    bad = sorted(set(search) - SEARCH_KEYS)
    if bad:
        raise ValueError(f"{where}: unknown [search] setting(s) {bad}; known: {sorted(SEARCH_KEYS)}")
    strategy = search.setdefault("strategy", "bayes")
    if strategy not in STRATEGIES:
        raise ValueError(f"{where}: [search] strategy = {strategy!r}: must be one of "
                         f"{', '.join(STRATEGIES)}")
    # a grid runs all its points unless trials caps it; the other strategies default to 8
    trials = search.get("trials", None if strategy == "grid" else 8)
    if trials is not None:
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            raise ValueError(f"{where}: [search] trials = {trials!r}: must be an integer >= 1")
        search["trials"] = trials
    if not isinstance(search.setdefault("seed", 0), int):
        raise ValueError(f"{where}: [search] seed = {search['seed']!r}: must be an integer")
    if not config.get("space"):
        raise ValueError(f"{where}: [space] is empty; give at least one parameter, e.g. "
                         "lr = {type = \"float\", low = 1e-4, high = 1e-2, log = true}")
    model, train = dict(config.get("model", {})), dict(config.get("train", {}))
    try:
        merge_config({"model": model, "train": train})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    fields = {f.name for f in dataclasses.fields(GPTConfig)} | {
        f.name for f in dataclasses.fields(TrainConfig)}
    for name in config["space"]:
        if name in FIXED_ONLY:
            raise ValueError(f"{where}: [space] {name}: cannot be searched (every trial "
                             f"shares it); set it in [model] / [train]")
        if name not in fields:
            raise ValueError(f"{where}: [space] {name}: not a [model] or [train] setting")
    build_space(config["space"], where)
    if strategy == "hyperband":
        mx = search.setdefault("max_budget", train.get("max_steps", TrainConfig.max_steps))
        mn = search.setdefault("min_budget", max(1, int(mx) // 9))
        eta = search.setdefault("eta", 3)
        for k, v in (("min_budget", mn), ("max_budget", mx)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{where}: [search] {k} = {v!r}: must be an integer >= 1 "
                                 "(training steps)")
        if mn > mx or not isinstance(eta, (int, float)) or eta <= 1:
            raise ValueError(f"{where}: [search] needs min_budget <= max_budget and eta > 1, "
                             f"got {mn}, {mx}, {eta}")
    if search.get("kernel", "matern52") not in ("matern52", "rbf"):
        raise ValueError(f"{where}: [search] kernel = {search['kernel']!r}: must be matern52 "
                         "or rbf")
    for key, ok, what in (
            ("n_initial", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            ("grid_points", lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
            ("xi", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
             and 0 <= v < float("inf"), "a finite number >= 0")):
        if key in search and not ok(search[key]):
            raise ValueError(f"{where}: [search] {key} = {search[key]!r}: must be {what}")
    return {"search": search, "space": dict(config["space"]), "model": model, "train": train}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def build_space(entries: dict, where: str = "config") -> Space:
    """``[space]`` entries -> a :class:`Space`: ``{type = "float" | "int", low, high,
    log = false}`` or ``{type = "choice", values = [...]}``."""
    dims = {}
    for name, e in entries.items():
        label = f"{where}: [space] {name}"
        if not isinstance(e, dict) or "type" not in e:
            raise ValueError(f"{label}: must be a table with a type, e.g. "
                             "{type = \"float\", low = 1e-4, high = 1e-2, log = true}")
        kind = e["type"]
        keys = {"float": {"type", "low", "high", "log"}, "int": {"type", "low", "high", "log"},
                "choice": {"type", "values"}}.get(kind)
        if keys is None:
            raise ValueError(f"{label}: type = {kind!r}: must be float, int or choice")
        extra = sorted(set(e) - keys)
        if extra:
            raise ValueError(f"{label}: unknown key(s) {extra} for type {kind!r}; known: "
                             f"{sorted(keys)}")
        try:
            if kind == "choice":
                if not isinstance(e.get("values"), list):
                    raise ValueError("needs values = [...]")
                dims[name] = Choice(e["values"])
            else:
                if "low" not in e or "high" not in e:
                    raise ValueError("needs low and high")
                if not all(isinstance(e[k], (int, float)) and not isinstance(e[k], bool)
                           for k in ("low", "high")):
                    raise ValueError("low and high must be numbers")
                if not isinstance(e.get("log", False), bool):
                    raise ValueError(f"log = {e['log']!r}: must be true or false")
                dims[name] = (Float if kind == "float" else Int)(e["low"], e["high"],
                                                                 e.get("log", False))
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None
    return Space(dims)


def build_strategy(config: dict) -> Any:
    """The strategy a (checked) config names, fresh, seeded."""
    from .train.config import TrainConfig

    s, space = config["search"], build_space(config["space"])
    budget = config["train"].get("max_steps", TrainConfig.max_steps)
    if s["strategy"] == "random":
        return RandomSearch(space, s["trials"], s["seed"], budget=budget)
    if s["strategy"] == "grid":
        return GridSearch(space, s.get("grid_points", 3), budget=budget,
                          max_trials=s.get("trials"))
    if s["strategy"] == "hyperband":
        return Hyperband(space, s["min_budget"], s["max_budget"], s["eta"], s["seed"])
    return BayesianOptimization(space, s["trials"], s["seed"], budget=budget,
                                n_initial=s.get("n_initial"), kernel=s.get("kernel", "matern52"),
                                xi=s.get("xi", 0.01))


# ---------------------------------------------------------------------------- trials
class _Objective:
    """Trains one trial: the shared data is prepared once per process."""

    def __init__(self, config: dict, out: Path, rank: int, log: Any) -> None:
        from .data import load_tokenizer
        from .run import prepare_data
        from .train.config import merge_config

        self.config, self.out = config, out
        _, cfg = merge_config({"model": config["model"], "train": config["train"]})
        cfg = dataclasses.replace(cfg, out_dir=str(out / "data"))
        if cfg.backend:
            from . import backends

            backends.use_backend(cfg.backend)
        tok_path = out / "data" / "tokenizer.json"
        tokenizer = load_tokenizer(tok_path) if tok_path.exists() else None
        quiet = log if rank == 0 else (lambda *a, **k: None)
        self.tokenizer, self.train_tokens, self.val_tokens, _ = prepare_data(
            cfg, quiet, tokenizer, save_tokenizer=tokenizer is None and rank == 0)

    def __call__(self, spec: dict) -> dict:
        """{"loss", "seconds"[, "error"]} of one trial; an exception is a failed trial."""
        t0 = time.perf_counter()
        from .train.trainer import TrainingInterrupted

        try:
            loss = self._train(spec)
            return {"loss": loss, "seconds": time.perf_counter() - t0}
        except TrainingInterrupted:  # a stop signal stops the search, it is no result
            raise
        except Exception as exc:  # any other error is this trial's failure, logged
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return {"loss": None, "seconds": time.perf_counter() - t0, "error": msg}

    def _train(self, spec: dict) -> float:
        from .backends import manual_seed
        from .data import DataLoader, RandomWindowBatches
        from .nn.transformer import GPT, GPTConfig
        from .train.config import TrainConfig, merge_config
        from .train.trainer import Trainer

        model_keys = {f.name for f in dataclasses.fields(GPTConfig)}
        params = spec["params"]
        model_d = {**self.config["model"], **{k: v for k, v in params.items() if k in model_keys}}
        train_d = {**self.config["train"],
                   **{k: v for k, v in params.items() if k not in model_keys}}
        model_cfg, cfg = merge_config({"model": model_d, "train": train_d})
        budget = int(spec["budget"] if spec.get("budget") is not None else cfg.max_steps)
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "out_dir": str(
            self.out / "trials" / f"{int(spec['trial']):04d}"), "max_steps": budget,
            "eval_interval": budget, "ckpt_interval": budget, "progress": False, "plot": False,
            "log_interval": max(1, budget // 10)})
        model_cfg = dataclasses.replace(model_cfg, vocab_size=self.tokenizer.vocab_size)
        manual_seed(cfg.seed)
        model = GPT(model_cfg)
        source = RandomWindowBatches(self.train_tokens, cfg.batch_size,
                                     model_cfg.context_length, rng=cfg.seed)
        trainer = Trainer(model, DataLoader(source, prefetch=cfg.prefetch), self.val_tokens, cfg,
                          tokenizer=self.tokenizer)
        last = trainer.fit()
        return float(last.get("val_loss", math.nan))


# ---------------------------------------------------------------------------- messages
def _send_json(comm: Any, obj: Any, dest: int) -> None:
    data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8).copy()
    comm.send(np.array([data.size], dtype=np.int64), dest, tag=1)
    comm.send(data, dest, tag=2)


def _recv_json(comm: Any, source: int, n: int | None = None) -> Any:
    if n is None:
        buf = np.zeros(1, dtype=np.int64)
        comm.recv(buf, source, tag=1)
        n = int(buf[0])
    data = np.empty(n, dtype=np.uint8)
    comm.recv(data, source, tag=2)
    return json.loads(data.tobytes().decode())


# ---------------------------------------------------------------------------- the search
def run_search(config: dict, out_dir: str | Path, resume: bool = False,
               log: Any = print) -> dict | None:
    """Run the search a config describes (a dict as :func:`load_search_config` returns,
    checked again here) into ``out_dir``; ``resume`` continues the one there. Returns
    ``{"records": [...], "best": record | None}`` on rank 0 (None on the workers)."""
    from .parallel import world

    config = check_config(config)
    comm = world()
    if comm.size > 1:  # an error on one rank ends the job, not a hang of the others
        from .parallel import install_abort_handler

        install_abort_handler()
    out = Path(out_dir)
    log_file = TrialLog(out / LOG_NAME)
    if comm.rank == 0:
        _open_dir(out, config, resume)
    comm.barrier()
    if comm.rank == 0:
        objective = _Objective(config, out, 0, log)  # rank 0 writes the tokenizer first
        comm.barrier()
    else:
        comm.barrier()
        objective = _Objective(config, out, comm.rank, log)
        _worker(comm, objective)
        return None
    strategy = build_strategy(config)
    records = log_file.read()
    todo = log_file.replay(strategy, records) if records else []
    if records:
        log(f"resuming: {len(records)} trials in {log_file.path}, {len(todo)} to rerun")
    by_id = {r["trial"]: r for r in records}

    def finish(spec: dict, result: dict) -> None:
        rec = trial_record(spec, result.get("loss"), result.get("seconds", 0.0),
                           result.get("error"))
        log_file.append(rec)
        strategy.tell(rec)
        by_id[rec["trial"]] = rec
        best = strategy.best()
        note = f"loss {rec['loss']:.4f}" if rec["status"] == "ok" else f"failed ({rec['error']})"
        so_far = f"; best {best['loss']:.4f}" if best else ""
        log(f"trial {rec['trial']:>3} budget {rec['budget']} {_fmt_params(rec['params'])}: "
            f"{note} in {rec['seconds']:.1f}s{so_far}")

    def next_spec() -> dict | None:
        return todo.pop(0) if todo else strategy.ask()

    if comm.size == 1:
        while True:
            spec = next_spec()
            if spec is None:
                break
            finish(spec, objective(spec))
    else:
        _coordinate(comm, next_spec, finish)
    records = sorted(by_id.values(), key=lambda r: r["trial"])
    plot_search(records, out / PLOT_NAME)
    return {"records": records, "best": strategy.best()}


def _coordinate(comm: Any, next_spec: Any, finish: Any) -> None:
    """Rank 0 of an MPI search: hand trials to idle workers, collect their results."""
    idle = list(range(1, comm.size))
    busy: dict[int, tuple] = {}
    exhausted = False
    while True:
        while idle and not exhausted:
            spec = next_spec()
            if spec is None:
                exhausted = True  # until a result arrives (a rung may be waiting)
                break
            w = idle.pop(0)
            _send_json(comm, spec, w)
            n = np.zeros(1, dtype=np.int64)
            busy[w] = (spec, n, comm.irecv(n, w, tag=1))
        if not busy:
            break
        for w in list(busy):
            spec, n, req = busy[w]
            if req.test():
                del busy[w]
                finish(spec, _recv_json(comm, w, int(n[0])))
                idle.append(w)
                exhausted = False
        time.sleep(0.02)
    for w in range(1, comm.size):
        _send_json(comm, None, w)


def _worker(comm: Any, objective: Any) -> None:
    while True:
        spec = _recv_json(comm, 0)
        if spec is None:
            return
        result = objective(spec)  # (a failed trial is a result; a stop signal raises)
        if result.get("error"):
            print(f"rank {comm.rank}: trial {spec.get('trial')} failed: {result['error']}",
                  file=sys.stderr, flush=True)
        _send_json(comm, result, 0)


def _open_dir(out: Path, config: dict, resume: bool) -> None:
    saved = out / CONFIG_NAME
    if resume:
        if not saved.exists():
            raise ValueError(f"--resume: no search in {str(out)!r} (no {CONFIG_NAME}); start "
                             "one without --resume")
        old = json.loads(saved.read_text())
        if old != json.loads(json.dumps(config)):
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ValueError(f"--resume: the config's {', '.join(f'[{k}]' for k in diff)} "
                             f"differ from the search in {str(out)!r}; resume with the same "
                             "config, or use another --out-dir")
        return
    if (out / LOG_NAME).exists() or saved.exists():
        raise ValueError(f"{str(out)!r} already holds a search; continue it with --resume or "
                         "give another --out-dir")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(config, indent=2) + "\n")


# ---------------------------------------------------------------------------- reporting
def _fmt_params(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())


def format_table(records: list[dict]) -> str:
    """The trials as a text table, best marked with ``*``."""
    ok = [r for r in records if r.get("status") == "ok"]
    best = min(ok, key=lambda r: r["loss"])["trial"] if ok else None
    lines = [f"{'trial':>5}  {'budget':>6}  {'loss':>8}  {'s':>6}  params"]
    for r in sorted(records, key=lambda r: r["trial"]):
        loss = f"{r['loss']:.4f}" if r.get("status") == "ok" else "failed"
        mark = "*" if r["trial"] == best else " "
        lines.append(f"{r['trial']:>4}{mark}  {str(r.get('budget')):>6}  {loss:>8}  "
                     f"{r.get('seconds', 0):>6.1f}  {_fmt_params(r['params'])}")
    return "\n".join(lines)


def plot_search(records: list[dict], png: str | Path, title: str = "search") -> bool:
    """Loss per trial (dots) and the best so far (a step line) to ``png``; False (and
    nothing written) when matplotlib is missing or no trial succeeded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = sorted((r for r in records if r.get("status") == "ok"), key=lambda r: r["trial"])
    if not ok:
        return False
    ids = [r["trial"] for r in ok]
    losses = [r["loss"] for r in ok]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    budgets = [r.get("budget") or 0 for r in ok]
    sc = ax.scatter(ids, losses, c=budgets, cmap="viridis", s=18, label="trial")
    if len(set(budgets)) > 1:
        fig.colorbar(sc, ax=ax, label="budget (steps)")
    ax.step(ids, np.minimum.accumulate(losses), where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------- command
def add_search_parser(sub: Any) -> None:
    """The ``minilm search`` subcommand (registered by minilm/cli.py)."""
    p = sub.add_parser("search", help="hyperparameter search over GPT training runs "
                                      "(bayes, random, grid, hyperband)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True, help="the search config (TOML: [search], "
                                                   "[space], [model], [train])")
    p.add_argument("--out-dir", default="runs/search", help="the search directory")
    p.add_argument("--resume", action="store_true", help="continue the search in --out-dir "
                                                         "(finished trials are not rerun)")
    p.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    config = load_search_config(args.config)
    result = run_search(config, args.out_dir, resume=args.resume)
    if result is not None:
        print(format_table(result["records"]))
        best = result["best"]
        if best is not None:
            print(f"best: trial {best['trial']}, loss {best['loss']:.4f}, "
                  f"{_fmt_params(best['params'])}")
        print(f"wrote {Path(args.out_dir) / LOG_NAME}")
    return 0
