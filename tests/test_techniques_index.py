"""docs/techniques.md links only what exists.

Every row of the techniques index names a code symbol (``path.py:Symbol`` or
``path.py:Class.method``), a docs section (``docs/file.md#anchor``), a way to run it (an
example script or a ``minilm`` command) and a test (``tests/file.py::test_name``). These
tests check each non-empty cell against the repository: the file exists, the symbol is
defined there (read with ``ast``, nothing imported), the anchor is the slug of a heading
of that doc, the example exists or the command is a real ``minilm`` subcommand, and the
test function is defined in that file. A renamed symbol, heading or test fails them, and
the message names the row and what is missing.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from minilm.techniques import default_path, format_index, load_index, split_row

ROOT = Path(__file__).resolve().parent.parent
INDEX = ROOT / "docs" / "techniques.md"
ROADMAP = ROOT.parent / "shared" / "TECHNIQUES.md"
MIN_ROWS = 140


# ----------------------------------------------------------------------------- helpers

@functools.cache
def _rows() -> tuple:
    return tuple(load_index(INDEX))


def _where(row: dict) -> str:
    return f"docs/techniques.md:{row['line']} [{row['subsystem']} / {row['technique']}]"


@functools.cache
def defined_symbols(path: Path) -> frozenset:
    """Top-level function and class names of a Python file, plus ``Class.method`` for
    every function defined in a top-level class body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f"{node.name}.{item.name}")
    return frozenset(names)


def heading_slug(text: str) -> str:
    """GitHub's anchor of a heading: lower-case, punctuation other than ``-`` and ``_``
    dropped, spaces turned into ``-``."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@functools.cache
def doc_anchors(path: Path) -> frozenset:
    """The slugs of the headings of a markdown file (outside fenced code blocks), with
    GitHub's ``-1``, ``-2`` suffixes for repeated headings."""
    seen: dict = {}
    anchors = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or not m:
            continue
        slug = heading_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(anchors)


@functools.cache
def cli_subcommands() -> frozenset:
    import argparse

    from minilm.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return frozenset(action.choices)
    return frozenset()


@functools.cache
def defined_tests(path: Path) -> frozenset:
    return frozenset(re.findall(r"^\s*(?:async\s+)?def\s+(test\w*)\s*\(",
                                path.read_text(encoding="utf-8"), flags=re.M))


def _inside_repo(rel: str) -> Path | None:
    p = (ROOT / rel).resolve()
    return p if p.is_relative_to(ROOT) else None


# ------------------------------------------------------------------- cell checkers
# Each returns a list of problems (empty when the cell is fine), so that the same
# functions check the real table and the planted mistakes below.

def check_code(cell: str) -> list[str]:
    path, sep, symbol = cell.partition(":")
    if not sep or not path.endswith(".py") or not symbol:
        return [f"code cell {cell!r} is not 'path/to/file.py:Symbol'"]
    p = _inside_repo(path)
    if p is None or not p.is_file():
        return [f"code file {path} does not exist"]
    if symbol not in defined_symbols(p):
        return [f"symbol {symbol} is not defined in {path} (top-level def/class or "
                "Class.method)"]
    return []


def check_docs(cell: str) -> list[str]:
    path, sep, anchor = cell.partition("#")
    if not sep or not path.startswith("docs/") or not path.endswith(".md") or not anchor:
        return [f"docs cell {cell!r} is not 'docs/file.md#anchor'"]
    p = _inside_repo(path)
    if p is None or not p.is_file():
        return [f"docs file {path} does not exist"]
    if anchor not in doc_anchors(p):
        return [f"anchor #{anchor} matches no heading of {path}"]
    return []


def check_run(cell: str) -> list[str]:
    if cell.startswith("minilm "):
        words = cell.split()
        if words[1] not in cli_subcommands():
            return [f"run command {cell!r}: {words[1]!r} is not a minilm subcommand "
                    f"({', '.join(sorted(cli_subcommands()))})"]
        return []
    if cell.startswith("examples/") and cell.endswith(".py"):
        p = _inside_repo(cell)
        if p is None or not p.is_file():
            return [f"example {cell} does not exist"]
        return []
    return [f"run cell {cell!r} is neither examples/....py nor a `minilm ...` command"]


def check_test(cell: str) -> list[str]:
    path, sep, name = cell.partition("::")
    if not sep or not path.startswith("tests/") or not path.endswith(".py") or not name:
        return [f"test cell {cell!r} is not 'tests/file.py::test_name'"]
    p = _inside_repo(path)
    if p is None or not p.is_file():
        return [f"test file {path} does not exist"]
    if name not in defined_tests(p):
        return [f"test file {path} has no 'def {name}('"]
    return []


CHECKS = {"code": check_code, "docs": check_docs, "run": check_run, "test": check_test}


def row_problems(row: dict) -> list[str]:
    problems = []
    for column, check in CHECKS.items():
        if row[column]:
            problems += check(row[column])
    if row["status"] == "done":
        missing = [c for c in ("code", "docs", "test") if not row[c]]
        if missing:
            problems.append(f"status done but {', '.join(missing)} empty")
    if row["status"] == "partial" and not row["note"]:
        problems.append("status partial without a note of what is missing "
                        "('partial: no docs section')")
    if not row["technique"]:
        problems.append("empty technique name")
    if row["status"] != "planned" and not row["formula"]:
        problems.append("empty formula")
    return problems


def _report(problems: list[str]) -> str:
    return f"{len(problems)} broken link(s) in docs/techniques.md:\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------- tests

def test_index_has_enough_rows_and_known_statuses():
    rows = _rows()
    assert len(rows) >= MIN_ROWS, f"docs/techniques.md has {len(rows)} rows, expected >= {MIN_ROWS}"
    for row in rows:
        assert row["status"] in ("done", "partial", "planned"), _where(row)


@pytest.mark.parametrize("column", ["code", "docs", "run", "test"])
def test_every_cell_links_to_something_that_exists(column):
    problems = []
    for row in _rows():
        if row[column]:
            problems += [f"{_where(row)}: {p}" for p in CHECKS[column](row[column])]
    assert not problems, _report(problems)


def test_done_rows_have_code_docs_and_test_and_partial_rows_say_what_is_missing():
    problems = []
    for row in _rows():
        for p in row_problems(row):
            if "status" in p or "empty" in p:
                problems.append(f"{_where(row)}: {p}")
    assert not problems, _report(problems)


def test_techniques_are_unique_within_a_subsystem():
    seen: dict = {}
    dups = []
    for row in _rows():
        key = (row["subsystem"], row["technique"].lower())
        if key in seen:
            dups.append(f"{_where(row)}: also on line {seen[key]}")
        seen[key] = row["line"]
    assert not dups, "\n".join(dups)


def test_every_roadmap_section_has_a_section_in_the_index():
    if not ROADMAP.is_file():
        pytest.skip(f"{ROADMAP} is absent (a clean clone has no ../shared)")
    wanted = [line[3:].strip() for line in ROADMAP.read_text(encoding="utf-8").splitlines()
              if line.startswith("## ")]
    have = {row["subsystem"] for row in _rows()}
    missing = [s for s in wanted if s not in have]
    assert wanted, f"{ROADMAP} has no '## ' sections"
    assert not missing, (f"docs/techniques.md has no '## ' section (with table rows) for "
                         f"these sections of {ROADMAP}: {missing}")


def test_every_index_section_has_a_table():
    text = INDEX.read_text(encoding="utf-8")
    sections = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    with_rows = {row["subsystem"] for row in _rows()}
    empty = [s for s in sections if s not in with_rows]
    assert not empty, f"sections of docs/techniques.md without table rows: {empty}"


# ----------------------------------------------- the checks can fail: planted mistakes

def _a_done_row() -> dict:
    return dict(next(r for r in _rows() if r["status"] == "done"))


def test_a_renamed_symbol_fails():
    row = _a_done_row()
    path, _, symbol = row["code"].partition(":")
    row["code"] = f"{path}:{symbol}_renamed"
    problems = row_problems(row)
    assert any(f"{symbol}_renamed is not defined in {path}" in p for p in problems), problems
    assert check_code("minilm/no_such_file.py:X") == ["code file minilm/no_such_file.py "
                                                      "does not exist"]
    assert check_code("minilm/nn/attention.py:KVCache.no_such_method")
    assert not check_code("minilm/nn/attention.py:KVCache.update")
    assert check_code("minilm/nn/attention.py") != []


def test_a_wrong_anchor_test_example_or_command_fails():
    row = _a_done_row()
    doc = row["docs"].partition("#")[0]
    row["docs"] = f"{doc}#no-such-heading"
    row["test"] = row["test"] + "_gone"
    row["run"] = "minilm no-such-command --flag"
    problems = row_problems(row)
    assert any("#no-such-heading matches no heading" in p for p in problems), problems
    assert any("_gone(" in p for p in problems), problems
    assert any("'no-such-command' is not a minilm subcommand" in p for p in problems), problems
    assert check_run("examples/no_such_example.py") == ["example examples/no_such_example.py "
                                                         "does not exist"]
    assert check_run("python train.py")
    assert check_docs("docs/no_such.md#x") == ["docs file docs/no_such.md does not exist"]
    assert check_test("tests/test_techniques_index.py::test_a_renamed_symbol_fails") == []


def test_a_done_row_without_docs_fails():
    row = _a_done_row()
    row["docs"] = ""
    assert "status done but docs empty" in row_problems(row)


def test_slugs_follow_github():
    assert heading_slug("4. Adam, bias correction, AMSGrad, Adamax") == \
        "4-adam-bias-correction-amsgrad-adamax"
    assert heading_slug("ZeRO stage 1 (`--zero 1`)") == "zero-stage-1---zero-1"
    assert heading_slug("5. Prune → fine-tune: measured") == "5-prune--fine-tune-measured"


# ----------------------------------------------------------- minilm.techniques itself

def test_load_index_default_path_and_missing_file(tmp_path):
    assert default_path() == INDEX
    assert len(load_index()) == len(_rows())
    with pytest.raises(FileNotFoundError, match="techniques index not found"):
        load_index(tmp_path / "nope.md")


def test_load_index_parses_cells_escapes_and_refuses_bad_rows(tmp_path):
    assert split_row(r"| a | `x \| y` | c |") == ["a", "`x | y`", "c"]
    good = tmp_path / "t.md"
    good.write_text("# T\n\n## Sub\n\n| technique | formula | code | docs | run | test | status |\n"
                    "|---|---|---|---|---|---|---|\n"
                    "| L1 | `λΣ\\|w\\|` | `a.py:f` | — | `minilm train` | — | partial: no docs |\n",
                    encoding="utf-8")
    (row,) = load_index(good)
    assert row["formula"] == "λΣ|w|" and row["code"] == "a.py:f" and row["docs"] == ""
    assert row["run"] == "minilm train" and row["status"] == "partial"
    assert row["note"] == "no docs" and row["subsystem"] == "Sub" and row["line"] == 7
    bad = tmp_path / "bad.md"
    bad.write_text("## S\n| a | b |\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs 7 cells"):
        load_index(bad)
    bad.write_text("## S\n| a | b | c | d | e | f | finished |\n", encoding="utf-8")
    with pytest.raises(ValueError, match="status must start with"):
        load_index(bad)


def test_format_index_groups_and_filters():
    rows = list(_rows())
    text = format_index(rows)
    sections = list(dict.fromkeys(r["subsystem"] for r in rows))
    for s in sections:
        assert f"\n{s}\n" in f"\n{text}\n"
    assert len(text.splitlines()) == len(rows) + 2 * len(sections) - 1
    losses = format_index(rows, subsystem="losses")
    assert losses.splitlines()[0] == "Losses"
    assert "Distillation loss — " in losses and "Data" not in losses.splitlines()
    for status in ("planned", "partial"):  # a row not done shows its status
        row = next((r for r in rows if r["status"] == status), None)
        if row is not None:
            shown = format_index(rows, subsystem=row["subsystem"])
            assert f"{row['technique']} — " in shown and f"[{status}" in shown
    with pytest.raises(ValueError, match="no subsystem matches"):
        format_index(rows, subsystem="no such subsystem")
