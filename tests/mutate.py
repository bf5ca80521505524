"""Plant known bugs in a scratch copy of the repository and report which ones the test
suite kills.

    .venv/bin/python tests/mutate.py                    # every mutation, its own tests
    .venv/bin/python tests/mutate.py --area parallel    # one list (tests/mutations/*.py)
    .venv/bin/python tests/mutate.py -k "1/dp"          # mutations whose name contains this
    .venv/bin/python tests/mutate.py --full             # run the whole suite per mutation
    .venv/bin/python tests/mutate.py --list             # print the mutations, run nothing

Each mutation (:class:`tests.mutations.Mutation`) replaces one exact piece of text,
found exactly once, in one file of the package. The working tree is copied (tracked and
untracked-but-not-ignored files) to a temporary directory once; every mutation is
applied there, the tests it names (or the whole suite with ``--full``) are run with
``pytest -x`` in that copy, and the file is restored. A mutation is *killed* when pytest
reports a failing test (exit 1), *survives* when the tests pass (exit 0); any other exit
(a collection or usage error) is reported as an error, since it says nothing about the
tests. Before the mutations, the named tests are run once unmutated: they must pass, or
the score would mean nothing.

The score (killed / total) is printed and, with ``--json PATH``, written out.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.mutations import Mutation  # noqa: E402


def load_mutations(area: str | None = None) -> dict[str, list[Mutation]]:
    """{area: [Mutation, ...]} from every module of ``tests/mutations`` (or just one)."""
    import tests.mutations as pkg

    found = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if area is not None and info.name != area:
            continue
        module = importlib.import_module(f"tests.mutations.{info.name}")
        found[info.name] = list(getattr(module, "MUTATIONS", []))
    if area is not None and not found:
        names = [i.name for i in pkgutil.iter_modules(pkg.__path__)]
        raise SystemExit(f"mutate: no mutation list {area!r}; there are: {', '.join(names)}")
    return found


def copy_tree(dest: Path) -> None:
    """Copy the files git knows of (tracked, or untracked and not ignored) to ``dest``."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    for rel in filter(None, out.decode().split("\0")):
        src = ROOT / rel
        if not src.is_file():  # deleted in the work tree but still tracked
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def run_pytest(where: Path, tests: list[str], timeout: float) -> tuple[int, str]:
    """pytest -x on ``tests`` inside the copy at ``where``; (exit code, output tail)."""
    env = dict(os.environ, PYTHONPATH=str(where), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        p = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s"
    return p.returncode, (p.stdout + p.stderr)[-3000:]


def failing_tests(output: str) -> list[str]:
    return [line.split()[1] for line in output.splitlines() if line.startswith("FAILED ")]


def check_imports_copy(where: Path) -> None:
    """The copy's ``minilm`` must be the one imported, not the editable install's."""
    env = dict(os.environ, PYTHONPATH=str(where))
    got = subprocess.run([sys.executable, "-c", "import minilm; print(minilm.__file__)"],
                         cwd=where, env=env, capture_output=True, text=True, check=True)
    if not got.stdout.strip().startswith(str(where)):
        raise SystemExit(f"mutate: the scratch copy imports minilm from {got.stdout.strip()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--area", help="one mutation list (a module of tests/mutations)")
    ap.add_argument("-k", dest="keyword", help="only mutations whose name contains this")
    ap.add_argument("--full", action="store_true", help="run the whole suite per mutation")
    ap.add_argument("--list", action="store_true",
                    help="check that every mutation applies, list them and stop")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    areas = load_mutations(args.area)
    todo = [(area, m) for area, ms in areas.items() for m in ms
            if args.keyword is None or args.keyword in m.name]
    if not todo:
        print("mutate: no mutation selected")
        return 2
    for area, m in todo:  # every mutation must apply before anything runs
        text = (ROOT / m.file).read_text()
        if text.count(m.old) != 1:
            raise SystemExit(f"mutate: [{area}] {m.name}: {m.old!r} occurs "
                             f"{text.count(m.old)} times in {m.file} (must be exactly once)")

    if args.list:
        for area, m in todo:
            print(f"[{area}] {m.name}\n    {m.file}: {m.old!r} -> {m.new!r}\n    "
                  f"tests: {' '.join(m.tests) or '(whole suite)'}")
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="minilm-mutate-") as tmp:
        where = Path(tmp)
        copy_tree(where)
        check_imports_copy(where)

        def tests_of(m: Mutation) -> list[str]:
            return ["tests"] if args.full or not m.tests else list(m.tests)

        baseline = sorted({t for _, m in todo for t in tests_of(m)})
        print(f"baseline: {len(baseline)} test targets, unmutated ...", flush=True)
        rc, out = run_pytest(where, baseline, args.timeout)
        if rc != 0:
            print(out)
            raise SystemExit("mutate: the selected tests fail without any mutation")

        for area, m in todo:
            path = where / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new, 1))
            t0 = time.monotonic()
            try:
                rc, out = run_pytest(where, tests_of(m), args.timeout)
            finally:
                path.write_text(original)
            verdict = {0: "SURVIVED", 1: "killed"}.get(rc, f"error (exit {rc})")
            killers = failing_tests(out)
            print(f"{verdict:>9}  [{area}] {m.name}  ({time.monotonic() - t0:.0f} s)"
                  + (f"  <- {killers[0]}" if killers else ""), flush=True)
            if rc not in (0, 1):
                print("    " + out.strip().splitlines()[-1] if out.strip() else "")
            results.append({"area": area, "name": m.name, "file": m.file, "verdict": verdict,
                            "killed_by": killers})

    killed = sum(r["verdict"] == "killed" for r in results)
    print(f"\nscore: {killed}/{len(results)} mutations killed")
    for r in results:
        if r["verdict"] != "killed":
            print(f"  not killed: [{r['area']}] {r['name']} ({r['verdict']})")
    if args.json:
        args.json.write_text(json.dumps({"killed": killed, "total": len(results),
                                         "results": results}, indent=1))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
