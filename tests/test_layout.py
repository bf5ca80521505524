"""The layout stays readable: no module of minilm grows past 600 lines (DESIGN.md: a file
past ~500 lines is a sign to split; 600 is where this test draws the line)."""

from pathlib import Path

import minilm

MAX_LINES = 600


def test_no_module_over_the_line_limit():
    root = Path(minilm.__file__).parent
    sizes = {p.relative_to(root.parent).as_posix(): len(p.read_text().splitlines())
             for p in root.rglob("*.py")}
    assert len(sizes) > 50  # the walk found the package
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"split these modules (lines > {MAX_LINES}): {too_long}"
