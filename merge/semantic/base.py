"""The interface every language's semantic analyser implements.

An analyser sees only the files changed on either side of one three-way merge, as
blobs read from the object database (no checkout), and returns findings.  Python is
the first implementation (:mod:`merge.semantic.python`); another language is one more
module behind the same Protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from merge.models import SemanticFinding


@dataclass(frozen=True)
class FileVersions:
    """One path's blob ids at the merge base, on ours and on theirs (None: absent).

    Ids, not contents: an analyser reads (through :attr:`MergeInput.read`) only the
    versions it needs, and caches what it parsed by blob id across a batch.
    """

    path: str
    base: str | None
    ours: str | None
    theirs: str | None

    @property
    def ours_changed(self) -> bool:
        return self.ours != self.base

    @property
    def theirs_changed(self) -> bool:
        return self.theirs != self.base


@dataclass(frozen=True)
class MergeInput:
    """What an analyser gets: every handled path changed on either side."""

    files: Mapping[str, FileVersions]
    read: Callable[[str], bytes]
    """Blob id -> content."""
    ours_label: str = "ours"
    theirs_label: str = "theirs"


class Analyzer(Protocol):
    """A language's semantic conflict detector."""

    name: str

    def handles(self, path: str) -> bool:
        """True for paths this analyser reads (e.g. ``*.py``)."""
        ...

    def analyze(self, merge: MergeInput) -> list[SemanticFinding]:
        """Findings for one three-way merge: clean as text, broken as a program."""
        ...
