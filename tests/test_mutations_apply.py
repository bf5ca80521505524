"""Every planted bug in tests/mutations still applies (its text occurs exactly once in
its file), so a refactor that moves code cannot silently disarm the mutation checker;
run ``tests/mutate.py`` to see that the suite kills them."""

from pathlib import Path

import pytest

from tests.mutate import load_mutations

ROOT = Path(__file__).resolve().parents[1]
ALL = [(area, m) for area, ms in load_mutations().items() for m in ms]


def test_there_are_mutations_in_every_area():
    assert {area for area, _ in ALL} >= {"core", "ops", "parallel", "resume"}
    assert len(ALL) >= 60


@pytest.mark.parametrize("area,mutation", ALL, ids=[f"{a}:{m.name[:50]}" for a, m in ALL])
def test_mutation_applies_once(area, mutation):
    text = (ROOT / mutation.file).read_text()
    assert text.count(mutation.old) == 1, (
        f"[{area}] {mutation.name}: its text occurs {text.count(mutation.old)} times in "
        f"{mutation.file}; update tests/mutations/{area}.py to the moved code")
    assert mutation.new != mutation.old and mutation.tests
