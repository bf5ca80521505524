"""Planted bugs the test suite must catch (see ``tests/mutate.py``).

Each area has a module here with a list ``MUTATIONS`` of :class:`Mutation`: a one-line
change to the package (``old`` must occur exactly once in ``file``) and the tests that
are expected to fail once it is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mutation:
    name: str  # what bug this plants, in words ("data parallel: gradients not divided by dp")
    file: str  # path from the repository root
    old: str  # exact text, found exactly once in ``file``
    new: str  # what replaces it
    tests: list[str] = field(default_factory=list)  # pytest node ids expected to kill it
