"""The whole command-line surface, property-tested (issue 10): drawn flag values and
TOML documents for ``train``, ``sample`` and ``eval`` on a tiny run either succeed
(exit 0) or are refused (exit 2 with exactly one ``error:`` line on stderr) — never a
traceback, never another exit code (but 1, one ``error:`` line, for a training stopped
by a non-finite loss: see docs/reliability.md), never a hang — and the existing run's
files are byte-identical afterwards: ``sample`` and ``eval`` never change them, a
refused ``train --resume`` neither, ``train --overwrite`` moves the old run aside whole.
Damaged runs (edited checkpoint metadata, truncated checkpoints) are read the same way.

Each drawn command runs in-process (``minilm.cli.main``) under a SIGALRM deadline;
argparse's own refusals (``--max-steps abc``) are ``SystemExit(2)`` with a ``usage:``
and an ``error:`` line, which count as refusals like the CLI's own. A few refusals also
go through a real ``python -m minilm`` process.

Runs stay tiny whatever is drawn: the settings that set the cost of a run (steps, width,
depth, context, batch, vocabulary, tokenizer, data, backend, prefetch: ``TRAIN_BUDGET``,
``SAMPLE_BUDGET`` and the ``b_int``/``b_str`` TOML keys) are drawn only among small
valid values or invalid ones, never among large valid ones. Everything else may be
drawn huge.

"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import struct
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import examples

import minilm as ml
from minilm.cli import main
from minilm.nn.transformer import GPTConfig
from minilm.train.config import TrainConfig

try:  # the TOML tests parse what they write, as minilm reads it
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

CORPUS = "the quick brown fox jumps over the lazy dog.\n" * 40
SECONDS = 30  # one drawn command; a tiny run takes well under a second

# the run every sample/eval example reads, and what train examples start from
TINY_MODEL = {"n_layers": 2, "n_heads": 2, "d_model": 16, "context_length": 16}
TINY_TRAIN = {"tokenizer": "char", "max_steps": 2, "eval_interval": 2, "ckpt_interval": 2,
              "eval_batches": 1, "batch_size": 2, "warmup_steps": 0}


def _flags(d: dict) -> list[str]:
    return [x for k, v in d.items() for x in ("--" + k.replace("_", "-"), str(v))]


class _Deadline(BaseException):
    """Raised by SIGALRM in the command under test (not an Exception: no handler in the
    code under test may swallow it)."""


def _on_alarm(signum, frame):
    raise _Deadline


def _run(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``minilm <argv>``, in-process, under a deadline;
    an exception that escapes main, or the deadline, fails with the argv."""
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse's refusals
                rc = exc.code
    except _Deadline:
        raise AssertionError(f"minilm {argv} ran past {SECONDS} s") from None
    except BaseException:  # noqa: BLE001 - whatever escapes is the failure under test
        raise AssertionError(f"minilm {argv} raised instead of an error line:\n"
                             f"{traceback.format_exc()}\nstderr:\n{err.getvalue()}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        ml.use_backend("numpy")  # a drawn --backend must not leak into the next example
    return rc, out.getvalue(), err.getvalue()


# exit 1 is training stopped by a non-finite loss (docs/reliability.md, "Exit codes"):
# a drawn huge --lr can do it; one error line too
_NONFINITE = re.compile(r"error: .* became (nan|inf|-inf) at step \d+")


def _succeeds_or_refuses(argv: list[str]) -> int:
    rc, _, err = _run(argv)
    assert rc in (0, 1, 2), f"minilm {argv}: exit {rc!r}\n{err}"
    assert "Traceback" not in err, f"minilm {argv}:\n{err}"
    if rc != 0:
        lines = [ln for ln in err.splitlines() if "error:" in ln]
        assert len(lines) == 1, f"minilm {argv}: {len(lines)} error lines\n{err}"
    if rc == 1:
        assert argv[0] == "train" and _NONFINITE.search(lines[0]), f"minilm {argv}:\n{err}"
    return rc


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (new, lost and changed files
    all show)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _edit_checkpoint(path: Path, edit) -> None:
    """Rewrite the training metadata (``extra``: step, model_config, tokenizer …) in the
    safetensors header of the checkpoint ``path`` with ``edit(extra)``, where ``extra``
    is the metadata's list of [key, value] pairs; the weights stay as they are."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    tree = json.loads(header["__metadata__"]["minilm"])
    edit(dict(tree["tree"]["dict"])["extra"]["dict"])
    header["__metadata__"]["minilm"] = json.dumps(tree)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def _set_model_config(key: str, value):
    def edit(extra: list) -> None:
        for pair in dict(extra)["model_config"]["dict"]:
            if pair[0] == key:
                pair[1] = value
    return edit


def _drop(name: str):
    def edit(extra: list) -> None:
        extra[:] = [pair for pair in extra if pair[0] != name]
    return edit


# damaged copies of the run, each with a note of what must happen (a refusal, or a
# loud success); both checkpoints get the same damage
DAMAGE = {
    "activation relu": _set_model_config("activation", "relu"),
    "vocab_size 30": _set_model_config("vocab_size", 30),        # weights say 29
    "d_model 8": _set_model_config("d_model", 8),
    "no tokenizer": _drop("tokenizer"),
    "norm unknown": _set_model_config("norm", "batchnorm"),
    "n_layers '2'": _set_model_config("n_layers", "2"),   # refused, naming the file
    "no model_config": _drop("model_config"),
    "vocab_size 1e12": _set_model_config("vocab_size", 10**12),  # refused before allocating
}


def _digest_runs(w) -> dict[str, str]:
    """_digest of every run and data file of the module (not the scratch folders)."""
    return {k: v for k, v in _digest(w.root).items()
            if not k.startswith(("fresh" + os.sep, "cwd" + os.sep))}


class World:
    """Paths of the module's scratch directory: one tiny trained run and some data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = root / "run"
        self.corpus = root / "corpus.txt"
        self.empty = root / "empty.txt"
        self.one_char = root / "one.txt"
        self.short = root / "short.txt"        # fewer tokens than the context
        self.foreign = root / "foreign.txt"    # characters outside the run's vocabulary
        self.folder = root / "texts"           # a data folder holding the corpus
        self.fifo = root / "fifo"              # reading it would block forever
        self.damaged = {name: root / f"damaged{i}" for i, name in enumerate(DAMAGE)}
        self.truncated = root / "truncated"    # checkpoints cut short
        self.fresh_count = 0

    def fresh(self) -> Path:
        self.fresh_count += 1
        return self.root / "fresh" / f"out{self.fresh_count}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("cli_surface"))
    w.corpus.write_text(CORPUS)
    w.empty.write_text("")
    w.one_char.write_text("a")
    w.short.write_text("the fox")
    w.foreign.write_text("ZZZ QQQ ÅÄÖ 123 \t ~~~\n" * 20)
    w.folder.mkdir()
    (w.folder / "a.txt").write_text(CORPUS)
    os.mkfifo(w.fifo)
    with pytest.MonkeyPatch.context() as mp:
        # a drawn relative path (a TOML data value, a bad out-dir) lands here, never in
        # the repository
        scratch = w.root / "cwd"
        scratch.mkdir()
        mp.chdir(scratch)
        rc = main(["train", "--out-dir", str(w.run), "--data", str(w.corpus),
                   "--no-progress", *_flags(TINY_MODEL), *_flags(TINY_TRAIN)])
        assert rc == 0
        for name, edit in DAMAGE.items():
            shutil.copytree(w.run, w.damaged[name])
            for ckpt in ("best.safetensors", "ckpt.safetensors"):
                _edit_checkpoint(w.damaged[name] / ckpt, edit)
        shutil.copytree(w.run, w.truncated)
        for ckpt in ("best.safetensors", "ckpt.safetensors"):
            raw = (w.truncated / ckpt).read_bytes()
            (w.truncated / ckpt).write_bytes(raw[:len(raw) // 2])
        yield w


# ---------------------------------------------------------------------------- flag values
#
# Every flag has two strategies: ``valid`` (small values the rules allow) and ``wild``
# (values to be refused, and for a flag that does not set the cost of a run, anything:
# huge, NaN, infinities, junk text). An example gives every cost-setting flag, a few
# others, all valid, then makes 0 … 4 of them wild; so examples that train, sample and
# evaluate are as common as the ones that must be refused.

INVALID_NUMBER_TEXT = ["0", "-1", "-7", "nan", "inf", "-inf", "1e309", "abc", "", "1.5",
                       "2.0", "0x10", " ", "1_000", "--", "None", "true"]
HUGE_TEXT = ["99999999999999999999", "1e300", str(2**63), str(2**32)]
BAD_WORDS = ["", "abc", "NONE", " ", "-x"]
HOW_MANY_WILD = st.sampled_from([0, 0, 0, 1, 1, 2, 4])


def _ints(lo: int, hi: int) -> st.SearchStrategy:
    return st.integers(lo, hi).map(str)


def _choices(*values: str) -> st.SearchStrategy:
    return st.sampled_from(values)


def _any_number_text() -> st.SearchStrategy:
    """Any int or float as a flag value, from tiny to huge, NaN and the infinities."""
    return st.one_of(st.integers(-10, 10**20).map(str),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.sampled_from(INVALID_NUMBER_TEXT + HUGE_TEXT))


BUDGET_WILD = st.sampled_from(INVALID_NUMBER_TEXT)  # never a large valid value
FREE_WILD = _any_number_text()
WORD_WILD = st.one_of(st.sampled_from(BAD_WORDS), st.text(max_size=6))

# flag -> (valid, wild); the cost-setting ones are always given (a default is large)
TRAIN_BUDGET = {
    "max-steps": (_ints(1, 3), BUDGET_WILD),
    "d-model": (_choices("4", "8", "16"), BUDGET_WILD),
    "n-layers": (_ints(1, 2), BUDGET_WILD),
    "context-length": (_ints(1, 16), BUDGET_WILD),
    "batch-size": (_ints(1, 4), BUDGET_WILD),
    "grad-accum-steps": (_ints(1, 2), BUDGET_WILD),
    "eval-batches": (_ints(1, 2), BUDGET_WILD),
    "tokenizer": (st.just("char"),  # BPE training is too slow for a property test
                  st.sampled_from(["bpe2", "CHAR", "", "word"])),
}
TRAIN_FREE = {
    "d-ff": (_ints(1, 32), BUDGET_WILD),
    "backend": (st.just("numpy"), st.sampled_from(["cupy", "torch", "", "NumPy"])),
    "n-heads": (_choices("1", "2", "4"), FREE_WILD),
    "dropout": (_choices("0", "0.1", "0.5"), FREE_WILD),
    "positional": (_choices("learned", "sinusoidal", "rope"), WORD_WILD),
    "norm": (_choices("layernorm", "rmsnorm"), WORD_WILD),
    "window": (_ints(1, 20), FREE_WILD),
    "bpe-vocab-size": (_ints(256, 1000), FREE_WILD),
    "val-fraction": (_choices("0.05", "0.1", "0.5", "0.9", "1e-9"), FREE_WILD),
    "lr": (_choices("0.001", "0", "0.1", "1e-30", "1e30"), FREE_WILD),
    "min-lr": (_choices("0", "0.0001"), FREE_WILD),
    "warmup-steps": (_ints(0, 5), FREE_WILD),
    "weight-decay": (_choices("0", "0.1", "10"), FREE_WILD),
    "grad-clip": (_choices("0", "1.0", "1e-9"), FREE_WILD),
    "eval-interval": (_ints(1, 3), FREE_WILD),
    "ckpt-interval": (_ints(1, 3), FREE_WILD),
    "early-stopping-patience": (_ints(1, 3), FREE_WILD),
    "log-interval": (_ints(1, 3), FREE_WILD),
    "seed": (_ints(0, 2**32 + 5), FREE_WILD),
    "dtype": (_choices("float32", "float64"), st.sampled_from(["float16", "int8", "", "f32"])),
    "dp": (st.just("1"), FREE_WILD),
    "tp": (st.just("1"), FREE_WILD),
    "pp": (st.just("1"), FREE_WILD),
    "zero": (_choices("0", "1"), FREE_WILD),
    "micro-batches": (_ints(1, 4), FREE_WILD),
    "schedule": (_choices("gpipe", "1f1b"), WORD_WILD),
    "bucket-mb": (_choices("25", "0.001", "1e9"), FREE_WILD),
}


@st.composite
def _argv(draw, command: str, given_always: dict, optional: dict,
          most_optional: int = 5) -> list[str]:
    """``command`` with every flag of ``given_always`` and some of ``optional``, valid
    values, then 0 … 4 of them wild."""
    names = list(given_always) + draw(st.lists(st.sampled_from(sorted(optional)),
                                               unique=True, max_size=most_optional))
    specs = {**given_always, **optional}
    k = min(draw(HOW_MANY_WILD), len(names))
    wild = set(draw(st.lists(st.sampled_from(names), unique=True, min_size=k, max_size=k)))
    argv = [command]
    for name in names:
        valid, bad = specs[name]
        argv += [f"--{name}", draw(bad if name in wild else valid)]
    return argv


def _paths(*paths) -> st.SearchStrategy:
    return st.sampled_from([str(p) for p in paths])


def _train_paths(w: World, out: Path) -> dict:
    return {
        "out-dir": (st.just(str(out)),
                    _paths("", w.corpus / "sub", w.corpus, w.folder, w.root / "cwd")),
        "data": (st.just(str(w.corpus)),
                 _paths(w.empty, w.one_char, w.short, w.folder, w.root / "no" / "such.txt",
                        "", w.run / "tokenizer.json", w.run / "ckpt.safetensors", w.foreign,
                        w.fifo, w.root / "fresh")),
    }


@examples(0.75)
@given(st.data())
def test_train_flags_succeed_or_are_refused(world, data):
    out = world.fresh()
    argv = data.draw(_argv("train", {**_train_paths(world, out), **TRAIN_BUDGET}, TRAIN_FREE))
    argv.append("--no-progress")
    if data.draw(st.booleans()):
        argv.append("--skip-nonfinite")
    before = _digest(world.run)
    try:
        _succeeds_or_refuses(argv)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert _digest(world.run) == before, f"minilm {argv} changed the existing run"


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_a_nonfinite_stop_is_the_one_exit_1(world):
    # the one outcome besides 0 and 2 that the contract allows, reached on purpose
    out = world.fresh()
    argv = ["train", "--out-dir", str(out), "--data", str(world.corpus), "--no-progress",
            *_flags(TINY_MODEL), *_flags(TINY_TRAIN), "--lr", "1e30"]
    try:
        assert _succeeds_or_refuses(argv) == 1
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_train_into_the_existing_run_is_refused_and_leaves_it_byte_identical(world):
    before = _digest(world.run)
    for extra in ([], ["--max-steps", "3"], ["--tokenizer", "bpe"], ["--d-model", "8"]):
        argv = ["train", "--out-dir", str(world.run), "--data", str(world.corpus),
                "--no-progress", *_flags(TINY_MODEL), *_flags(TINY_TRAIN), *extra]  # last wins
        rc, _, err = _run(argv)
        assert rc == 2, f"minilm {argv}: exit {rc}\n{err}"
        lines = [ln for ln in err.splitlines() if "error:" in ln]
        assert len(lines) == 1 and "--resume" in lines[0], err
        assert _digest(world.run) == before


RESUME_SAME = {  # the run's own settings: a resume may repeat them
    "d-model": (st.just("16"), _choices("8", "4", "0", "abc")),
    "n-layers": (st.just("2"), _choices("1", "0", "")),
    "context-length": (st.just("16"), _choices("8", "-1")),
    "n-heads": (st.just("2"), _choices("1", "4", "0")),
    "tokenizer": (st.just("char"), _choices("bpe", "bpe2")),
    "batch-size": (st.just("2"), _choices("1", "3", "0")),
    "lr": (st.just("0.001"), _choices("0.01", "nan", "-1")),
}


@examples(0.5)
@given(st.data())
def test_resume_or_overwrite_succeeds_or_is_refused_without_touching_the_run(world, data):
    """``--resume`` with the run's settings (or changed ones) continues it or is refused;
    a refusal leaves every file as it was. ``--overwrite`` moves the old run aside
    byte-identical."""
    mode = data.draw(st.sampled_from(["--resume", "--resume", "--overwrite"]))
    copy = world.fresh()
    shutil.copytree(world.run, copy)
    (copy / "run.lock").unlink(missing_ok=True)
    before = _digest(copy)
    given_always = {"out-dir": (st.just(str(copy)), _paths("", world.corpus)),
                    "data": (st.just(str(world.corpus)), _paths(world.short, world.folder)),
                    "max-steps": (_ints(1, 4), BUDGET_WILD)}
    optional = {**RESUME_SAME,
                **{k: TRAIN_FREE[k] for k in ("eval-interval", "ckpt-interval", "log-interval",
                                              "seed", "warmup-steps", "backend")}}
    argv = data.draw(_argv("train", given_always, optional, most_optional=3))
    if mode == "--overwrite":  # a new run: the tiny settings first (a later flag wins)
        argv[1:1] = [*_flags(TINY_MODEL), *_flags(TINY_TRAIN)]
    argv += [mode, "--no-progress", "--eval-batches", "1"]
    try:
        rc = _succeeds_or_refuses(argv)
        aside = [p for p in copy.parent.iterdir() if p.name.startswith(copy.name + ".old")]
        if mode == "--resume" or str(copy) not in argv:
            assert not aside and (rc != 2 or _digest(copy) == before), \
                f"minilm {argv} refused but changed the run"
        else:
            # the old run is kept whole: where it was (refused, even after the move: it
            # is moved back) or moved aside (a new run was made)
            kept = [_digest(p) for p in [copy, *aside] if p.exists()]
            assert before in kept and len(aside) <= 1, f"minilm {argv}: old run lost"
            assert rc != 2 or (not aside and _digest(copy) == before), \
                f"minilm {argv} refused but changed the run"
            assert rc == 2 or len(aside) == 1, f"minilm {argv}: nothing moved aside"
    finally:
        for p in copy.parent.glob(copy.name + "*"):
            shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------------------- sample, eval

def _run_dirs(w: World) -> tuple:
    return (st.just(str(w.run)),
            _paths(w.root / "missing", "", w.corpus, w.folder, w.root / "cwd", w.truncated,
                   *w.damaged.values()))


SAMPLE_BUDGET = {
    # the default, 200 new tokens, is slow enough here to be always given
    "max-new-tokens": (_ints(0, 24), BUDGET_WILD),
}
SAMPLE_FREE = {
    "checkpoint": (_choices("best", "last"), st.sampled_from(["first", "", "BEST"])),
    "prompt": (st.one_of(_choices("the ", "fox", "\n", "the fox " * 3, "t"),
                         st.text(alphabet="the quickbrownfxjmpsvlazydg.\n", max_size=16)),
               st.one_of(_choices("", "ZZZ", "the fox " * 10, "-", "--beam"),
                         st.text(max_size=12))),
    "num-samples": (_ints(1, 2), BUDGET_WILD),
    "temperature": (_choices("0", "0.5", "1", "2", "1e300", "1e-300"), FREE_WILD),
    "top-k": (st.one_of(_ints(1, 40), _choices(str(2**40))), FREE_WILD),
    "top-p": (_choices("1", "0.5", "1e-9", "0.999"), FREE_WILD),
    "beam": (_ints(0, 3), BUDGET_WILD),
    "seed": (st.one_of(_ints(0, 100), _choices(str(2**40), str(2**64 + 1))), FREE_WILD),
}


@examples(1.0)
@given(st.data())
def test_sample_flags_succeed_or_are_refused_and_never_touch_the_run(world, data):
    argv = data.draw(_argv("sample", {"out-dir": _run_dirs(world), **SAMPLE_BUDGET},
                           SAMPLE_FREE))
    before = _digest_runs(world)
    _succeeds_or_refuses(argv)
    assert _digest_runs(world) == before, f"minilm {argv} changed the run"


@pytest.mark.parametrize("damage", [*DAMAGE, "truncated"])
@pytest.mark.parametrize("command", ["sample", "eval", "eval --data"])
def test_a_damaged_run_is_refused_or_read_and_never_changed(world, damage, command):
    """Every damaged run under every reading command, not only the ones drawn."""
    run = world.truncated if damage == "truncated" else world.damaged[damage]
    argv = [command.split()[0], "--out-dir", str(run)]
    argv += ["--max-new-tokens", "3"] if command == "sample" else []
    if command == "eval --data":
        argv += ["--data", str(world.corpus)]
    before = _digest_runs(world)
    _succeeds_or_refuses(argv)
    assert _digest_runs(world) == before


def _eval_free(w: World) -> dict:
    return {
        "checkpoint": (_choices("best", "last"), st.sampled_from(["first", ""])),
        "data": (_paths(w.corpus, w.folder),
                 _paths(w.empty, w.one_char, w.short, w.foreign, w.root / "no" / "such.txt",
                        "", w.run / "ckpt.safetensors", w.fifo)),
        "batch-size": (st.one_of(_ints(1, 8), _choices("100000")), FREE_WILD),
        "max-batches": (st.one_of(_ints(1, 3), _choices(str(2**63))), FREE_WILD),
    }


@examples(1.0)
@given(st.data())
def test_eval_flags_succeed_or_are_refused_and_never_touch_the_run(world, data):
    valid, wild = _run_dirs(world)
    argv = data.draw(_argv("eval", {"out-dir": (valid, wild)}, _eval_free(world)))
    before = _digest_runs(world)
    _succeeds_or_refuses(argv)
    assert _digest_runs(world) == before, f"minilm {argv} changed the run"


# ---------------------------------------------------------------------------- a real process

@pytest.mark.parametrize("argv", [
    ["train", "--max-steps", "abc"],                     # argparse's refusal
    ["train", "--tokenizer", "char", "--n-heads", "0"],  # the rules' refusal
    ["sample", "--out-dir", "RUN", "--beam", "-1"],
    ["eval", "--out-dir", "MISSING"],
])
def test_the_console_command_exits_2_with_one_error_line(world, argv):
    """The same contract through ``python -m minilm`` (exit status, stderr), for a few."""
    import subprocess
    import sys

    argv = [str(world.run) if a == "RUN" else str(world.root / "no") if a == "MISSING" else a
            for a in argv]
    out = world.fresh()
    if argv[0] == "train":
        argv += ["--out-dir", str(out)]
    proc = subprocess.run([sys.executable, "-m", "minilm", *argv], capture_output=True,
                          text=True, timeout=120, cwd=world.root / "cwd")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "error:" in ln]) == 1, proc.stderr
    assert not out.exists()  # refused before any file


# ---------------------------------------------------------------------------- TOML

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _toml_str(k)


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v) -> str:
    """A tiny TOML writer (tomllib only reads): the value as inline TOML."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {v!r}")


def _toml_document(doc: dict) -> str:
    """Top-level non-table keys first, then one ``[table]`` per dict."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"\n[{_toml_key(name)}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


_scalars = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
                     st.booleans(), st.text(max_size=8))
_any_toml = st.recursive(
    _scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=2)),
    max_leaves=4)
# a cost-setting int key takes no large valid value: <= 0, or any other type
_BUDGET_INT_WILD = st.one_of(st.integers(-10**20, 0), st.floats(allow_nan=True,
                             allow_infinity=True), st.booleans(), st.text(max_size=8),
                             st.lists(st.integers(), max_size=2),
                             st.dictionaries(st.text(min_size=1, max_size=3), st.integers(),
                                             max_size=1))
_BUDGET_STR_WILD = st.one_of(st.sampled_from(["", "abc", "CHAR", "bpe2", "no/such/file.txt"]),
                             st.integers(), st.booleans(), st.lists(st.text(max_size=3),
                                                                    max_size=2))


def _i(lo: int, hi: int) -> st.SearchStrategy:
    return st.integers(lo, hi)


def _c(*values) -> st.SearchStrategy:
    return st.sampled_from(values)


def _toml_keys(w: World) -> dict:
    """table -> key -> (valid, wild) for every known key (``out_dir`` aside: the
    --out-dir flag always given overrides it)."""
    b_int, b_str, free = _BUDGET_INT_WILD, _BUDGET_STR_WILD, _any_toml
    keys = {
        "model": {
            "vocab_size": (_i(1, 64), b_int), "context_length": (_i(1, 16), b_int),
            "n_layers": (_i(1, 2), b_int), "d_model": (_c(4, 8, 16), b_int),
            "d_ff": (_i(1, 32), b_int), "n_heads": (_c(1, 2, 4), free),
            "dropout": (_c(0.0, 0.1, 0.5, 0), free), "bias": (st.booleans(), free),
            "positional": (_c("learned", "sinusoidal", "rope"), free),
            "tie_weights": (st.booleans(), free), "norm": (_c("layernorm", "rmsnorm"), free),
            "activation": (_c("gelu", "gelu_tanh"), free), "window": (_i(1, 20), free),
            "init_std": (_c(0.02, 0.5, 1e-3), free),
            "checkpoint_activations": (st.booleans(), free),
        },
        "train": {
            "data": (_c(str(w.corpus), str(w.folder)), b_str),
            "tokenizer": (st.just("char"), b_str), "bpe_vocab_size": (_i(256, 1000), free),
            "val_fraction": (_c(0.05, 0.1, 0.5), free), "batch_size": (_i(1, 4), b_int),
            "grad_accum_steps": (_i(1, 2), b_int), "max_steps": (_i(1, 3), b_int),
            "lr": (_c(0.001, 0, 0.1, 1, 1e30), free), "min_lr": (_c(0, 1e-4), free),
            "warmup_steps": (_i(0, 5), free), "weight_decay": (_c(0, 0.1), free),
            "beta1": (_c(0.9, 0.0), free), "beta2": (_c(0.95, 0.5), free),
            "grad_clip": (_c(0, 1.0), free), "eval_interval": (_i(1, 3), free),
            "eval_batches": (_i(1, 2), b_int), "ckpt_interval": (_i(1, 3), free),
            "early_stopping_patience": (_i(1, 3), free), "log_interval": (_i(1, 3), free),
            "seed": (_i(0, 2**33), free), "backend": (st.just("numpy"), b_str),
            "dtype": (_c("float32", "float64"), free), "prefetch": (_i(0, 2), b_int),
            "progress": (st.booleans(), free), "plot": (st.booleans(), free),
            "dp": (st.just(1), free), "tp": (st.just(1), free), "pp": (st.just(1), free),
            "zero": (_c(0, 1), free), "micro_batches": (_i(1, 4), free),
            "schedule": (_c("gpipe", "1f1b"), free), "bucket_mb": (_c(25.0, 0.5, 1), free),
            "skip_nonfinite": (st.booleans(), free),
        },
    }
    for table, cls in (("model", GPTConfig), ("train", TrainConfig)):
        for f in fields(cls):  # a setting added later: its default is valid, anything wild
            default = getattr(cls(), f.name)
            if f.name not in keys[table] and f.name != "out_dir" and default is not None:
                # (a None default cannot be written in TOML: leaving the key out is it)
                keys[table][f.name] = (st.just(default), free)
    return keys


# keys whose default is cheap may go missing; these may not
_MUST_STAY = {"model": {"context_length", "n_layers", "d_model"},
              "train": {"data", "tokenizer", "batch_size", "max_steps"}}
_KNOWN = {f.name for f in fields(GPTConfig)} | {f.name for f in fields(TrainConfig)}
_UNKNOWN_NAMES = st.text(min_size=1, max_size=6).filter(
    lambda s: s not in _KNOWN and s not in ("model", "train"))
_WILD_KINDS = ["value", "value", "value", "unknown key", "other table's key",
               "not a table", "unknown table", "unknown top-level key"]


@st.composite
def _toml_text(draw, w: World) -> str:
    """A TOML document: the tiny run's settings, some valid changes, some keys missing,
    then 0 … 4 wild changes (a value of any type or range, an unknown key, a key of the
    other table, a table that is not a table, an unknown table or top-level key)."""
    keys = _toml_keys(w)
    doc: dict = {"model": dict(TINY_MODEL),
                 "train": {**TINY_TRAIN, "data": str(w.corpus), "progress": False,
                           "plot": False}}
    pairs = [(t, k) for t in ("model", "train") for k in sorted(keys[t])]
    for table, key in draw(st.lists(st.sampled_from(pairs), unique=True, max_size=4)):
        doc[table][key] = draw(keys[table][key][0])
    droppable = [(t, k) for t in ("model", "train") for k in sorted(doc[t])
                 if k not in _MUST_STAY[t]]
    for table, key in draw(st.lists(st.sampled_from(droppable), unique=True, max_size=2)):
        del doc[table][key]
    for _ in range(draw(HOW_MANY_WILD)):
        kind = draw(st.sampled_from(_WILD_KINDS))
        table = draw(st.sampled_from(["model", "train"]))
        if not isinstance(doc[table], dict):
            continue
        if kind == "value":
            key = draw(st.sampled_from(sorted(keys[table])))
            doc[table][key] = draw(keys[table][key][1])
        elif kind == "unknown key":
            doc[table][draw(_UNKNOWN_NAMES)] = draw(_any_toml)
        elif kind == "other table's key":
            other = "train" if table == "model" else "model"
            key = draw(st.sampled_from(sorted(keys[other])))
            doc[table][key] = draw(keys[other][key][0])
        elif kind == "not a table":
            doc[table] = draw(_scalars)
        elif kind == "unknown table":
            doc[draw(_UNKNOWN_NAMES)] = draw(st.dictionaries(
                st.text(min_size=1, max_size=4), _scalars, max_size=2))
        else:
            doc[draw(_UNKNOWN_NAMES)] = draw(_scalars)
    text = _toml_document(doc)
    tomllib.loads(text)  # the writer writes TOML (a failure here is the test's own bug)
    return text


_BROKEN = ["[model\n", "x = \n", "= 3\n", "[train]\n[train]\n", "a = 1\na = 2\n",
           "k = [1, 2\n", 'k = "unterminated\n', "k = 1979-13-45\n", "[[model]]\n"]


@st.composite
def _malformed_toml(draw, w: World) -> str:
    good = draw(_toml_text(w))
    cut = draw(st.integers(0, len(good)))
    text = good[:cut] + draw(st.sampled_from(_BROKEN)) + good[cut:]
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return text
    assume(False)  # a fragment can land where it still parses (inside a string)


@examples(0.75)
@given(st.data())
def test_toml_documents_succeed_or_are_refused(world, data):
    text = data.draw(st.one_of(_toml_text(world), _toml_text(world), _malformed_toml(world)))
    cfg = world.root / "cwd" / "drawn.toml"
    cfg.write_text(text, encoding="utf-8")
    out = world.fresh()
    argv = ["train", "--config", str(cfg), "--out-dir", str(out)]
    before = _digest(world.run)
    try:
        rc, _, err = _run(argv)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert rc in (0, 1, 2), f"exit {rc!r} for the TOML document\n{text}\n{err}"
    assert "Traceback" not in err, f"{text}\n{err}"
    if rc != 0:
        lines = [ln for ln in err.splitlines() if "error:" in ln]
        assert len(lines) == 1, f"{len(lines)} error lines for\n{text}\n{err}"
    if rc == 1:
        assert _NONFINITE.search(lines[0]), f"{text}\n{err}"
    assert _digest(world.run) == before


def test_toml_writer_round_trips():
    doc = {"model": {"n_layers": 2, "dropout": 0.5, "bias": False, "norm": 'a"b\\c\n\x7f',
                     "w": [1, "x", [2.5]], "t": {"k-1": True, "odd key": -3}},
           "top": -7}
    assert tomllib.loads(_toml_document(doc)) == doc
    assert json.dumps(tomllib.loads(_toml_document({"x": {"f": float("inf")}}))) \
        == '{"x": {"f": Infinity}}'


# ---------------------------------------------------------------------------- compression
COMPRESS = {
    "quantize": {
        "method": (_choices("int8", "int4", "w8a8", "llm-int8", "gptq"),
                   st.sampled_from(["int2", "fp8", "", "GPTQ"])),
        "bits": (_choices("4", "8"), FREE_WILD),
        "group-size": (_choices("2", "4", "8", "16"), FREE_WILD),
        "calib-batches": (_ints(1, 2), BUDGET_WILD),
        "act": (_choices("token", "tensor"), WORD_WILD),
        "threshold": (_choices("0", "6", "1e30"), FREE_WILD),
    },
    "prune": {
        "sparsity": (_choices("0", "0.5", "0.9", "1"), FREE_WILD),
        "scope": (_choices("global", "layer"), WORD_WILD),
        "fine-tune-steps": (_ints(0, 2), BUDGET_WILD),
        "lr": (_choices("0.001", "0"), FREE_WILD),
    },
    "low-rank": {
        "rank": (_ints(1, 20), FREE_WILD),
        "energy": (_choices("0.5", "0.9", "1"), FREE_WILD),
    },
}


@examples(0.75)
@given(st.data())
def test_compress_commands_succeed_or_are_refused_and_only_add_their_file(world, data):
    """``quantize`` / ``prune`` / ``low-rank`` with drawn flags: exit 0 with exactly one
    new ``<tag>.safetensors`` beside the run (which ``eval --checkpoint`` then reads),
    or a refusal that writes nothing; the run's own files never change."""
    command = data.draw(st.sampled_from(sorted(COMPRESS)))
    copy = world.fresh()
    shutil.copytree(world.run, copy)
    before = _digest(copy)
    given_always = {"out-dir": (st.just(str(copy)), _paths("", world.corpus, world.folder)),
                    "eval-batches": (_ints(1, 2), BUDGET_WILD),
                    "batch-size": (_ints(1, 4), BUDGET_WILD)}
    optional = {**COMPRESS[command],
                "checkpoint": (_choices("best", "last"), st.sampled_from(["", "int8", "x/y"]))}
    if command == "low-rank":  # exactly one of --rank / --energy, else argparse refuses
        which = data.draw(st.sampled_from(["rank", "energy"]))
        given_always[which] = optional.pop(which)
        optional.pop("energy" if which == "rank" else "rank")
    argv = data.draw(_argv(command, given_always, optional, most_optional=4))
    try:
        rc = _succeeds_or_refuses(argv)
        after = _digest(copy)
        added = sorted(set(after) - set(before))
        assert {k: after[k] for k in before} == before, f"minilm {argv} changed the run"
        if rc == 0:
            assert len(added) == 1 and added[0].endswith(".safetensors"), (argv, added)
            tag = added[0][: -len(".safetensors")]
            assert _run(["eval", "--out-dir", str(copy), "--checkpoint", tag,
                         "--max-batches", "1", "--batch-size", "2"])[0] == 0
        else:
            assert not added, f"minilm {argv} refused but wrote {added}"
    finally:
        shutil.rmtree(copy, ignore_errors=True)
