"""The index of techniques: where each technique minilm covers lives.

``docs/techniques.md`` has one table row per technique (LayerNorm, GPTQ, ZeRO-1, …),
grouped by subsystem as in the roadmap, with the technique's one-line formula, the
code symbol that implements it (``path.py:Symbol``), the docs section that explains it
(``docs/file.md#anchor``), an example script or ``minilm`` command that runs it, the
test that checks it, and its status (``done``, ``partial: what is missing`` or
``planned``). This module reads that table so that a command (``minilm techniques``)
and the test of the index (``tests/test_techniques_index.py``) share one parser:

    rows = load_index()                       # list of dicts, one per row
    print(format_index(rows, subsystem="Losses"))

Each row dict has the keys ``subsystem``, ``technique``, ``formula``, ``code``,
``docs``, ``run``, ``test``, ``status`` (``done`` / ``partial`` / ``planned``),
``note`` (what a partial row lacks, else ``""``) and ``line`` (its line in the file).
Empty cells (``—``) read as ``""``; backticks around a cell are dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "EMPTY", "STATUSES", "default_path", "format_index", "load_index",
           "split_row"]

COLUMNS = ("technique", "formula", "code", "docs", "run", "test", "status")
STATUSES = ("done", "partial", "planned")
EMPTY = "—"


def default_path() -> Path:
    """``docs/techniques.md`` next to the package (the repository's docs folder)."""
    return Path(__file__).resolve().parent.parent / "docs" / "techniques.md"


def split_row(line: str) -> list[str]:
    """The cells of a markdown table row ``| a | b \\| c |``; ``\\|`` is a literal bar."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    cells, cur, i = [], [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body) and body[i + 1] == "|":
            cur.append("|")
            i += 2
            continue
        if body[i] == "|":
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(body[i])
        i += 1
    cells.append("".join(cur).strip())
    return cells


def _clean(cell: str) -> str:
    cell = cell.strip()
    if cell == EMPTY or cell == "":
        return ""
    if len(cell) >= 2 and cell.startswith("`") and cell.endswith("`") and cell.count("`") == 2:
        cell = cell[1:-1].strip()
    return cell


def _is_separator(cells: list[str]) -> bool:
    return all(c and set(c) <= set("-: ") for c in cells)


def _status(cell: str, where: str) -> tuple[str, str]:
    word, _, note = cell.partition(":")
    word = word.strip().lower()
    if word not in STATUSES:
        raise ValueError(f"{where}: status must start with one of {', '.join(STATUSES)}, "
                         f"got {cell!r}")
    return word, note.strip()


def load_index(path: str | Path | None = None) -> list[dict]:
    """The rows of the techniques table at ``path`` (default: :func:`default_path`).

    Raises FileNotFoundError when the file is missing, ValueError when a table row is
    malformed (wrong number of cells, unknown status, a row outside any ``## `` section).
    """
    p = Path(path) if path is not None else default_path()
    if not p.is_file():
        raise FileNotFoundError(f"techniques index not found: {p} (it is docs/techniques.md "
                                "of the minilm repository; a wheel without docs lacks it)")
    rows: list[dict] = []
    subsystem = None
    in_fence = False
    for n, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if line.startswith("## "):
            subsystem = line[3:].strip()
            continue
        if not line.startswith("|"):
            continue
        cells = split_row(line)
        where = f"{p.name}:{n}"
        if [c.lower() for c in cells] == list(COLUMNS) or _is_separator(cells):
            continue
        if len(cells) != len(COLUMNS):
            raise ValueError(f"{where}: a row needs {len(COLUMNS)} cells "
                             f"({' | '.join(COLUMNS)}), got {len(cells)}: {line!r}")
        if subsystem is None:
            raise ValueError(f"{where}: table row before any '## ' subsystem heading")
        row = dict(zip(COLUMNS, (_clean(c) for c in cells)))
        row["status"], row["note"] = _status(cells[-1], where)
        row["subsystem"] = subsystem
        row["line"] = n
        rows.append(row)
    return rows


def format_index(rows: list[dict], subsystem: str | None = None) -> str:
    """The rows as text grouped by subsystem, one line per technique:
    ``technique — formula — run command`` (backticks dropped), with ``[status: note]``
    unless done.

    ``subsystem`` keeps only the sections whose name contains it (case-insensitive);
    ValueError names the known sections when none matches.
    """
    if subsystem is not None:
        want = subsystem.strip().lower()
        kept = [r for r in rows if want in r["subsystem"].lower()]
        if not kept:
            names = list(dict.fromkeys(r["subsystem"] for r in rows))
            raise ValueError(f"no subsystem matches {subsystem!r}; known: {', '.join(names)}")
        rows = kept
    out: list[str] = []
    current = None
    for r in rows:
        if r["subsystem"] != current:
            if out:
                out.append("")
            current = r["subsystem"]
            out.append(current)
        parts = [r["technique"].replace("`", ""), r["formula"].replace("`", "") or EMPTY,
                 r["run"] or EMPTY]
        line = "  " + " — ".join(parts)
        if r["status"] != "done":
            line += f"  [{r['status']}" + (f": {r['note']}]" if r["note"] else "]")
        out.append(line)
    return "\n".join(out)


def add_techniques_parser(sub: Any) -> None:
    """The techniques subcommand of ``minilm`` (minilm/cli.py)."""
    p = sub.add_parser("techniques", help="the techniques minilm implements, grouped by "
                                          "subsystem: formula and the command that runs each "
                                          "(docs/techniques.md)")
    p.add_argument("--subsystem", default=None,
                   help="only this subsystem (a section of docs/techniques.md)")
    p.set_defaults(func=_techniques)


def _techniques(args: argparse.Namespace) -> int:
    print(format_index(load_index(), args.subsystem))
    return 0
