"""The pairwise conflict matrix: every pair of branches merged with each other, in memory.

Which branches of a set conflict with which?  One ``git merge-tree`` per pair costs a
process each (n(n-1)/2 of them: 496 for 32 branches).  Most pairs of agent branches
touch disjoint files, and for those merge-ort's answer is forced (see
:mod:`merge.fastpath`): such a pair is clean without writing anything.  Each branch's
changes against a merge base are diffed once and shared by every pair with that base;
only pairs that touch a common path (or delete, or have several merge bases) go to
merge-tree.  Semantic checks run on pairs that merge cleanly, since a clean textual merge
is exactly where a broken call hides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import combinations
from typing import Literal

import pygit2
from pydantic import BaseModel, ConfigDict, Field

from gitproc.git import Repo
from merge.fastpath import Changes, merge_bases, tree_changes, trivially_mergeable
from merge.models import Conflict, SemanticFinding
from merge.semantic import Analyzer, analyze, default_analyzers
from merge.transaction import resolve_commits
from merge.tree_merge import merge_commits

PairStatus = Literal["clean", "conflict", "unrelated"]


class PairMerge(BaseModel):
    """Branch ``b`` merged into branch ``a`` (the order does not change the verdict)."""

    model_config = ConfigDict(frozen=True)

    a: str
    b: str
    a_sha: str
    b_sha: str
    base_sha: str | None
    status: PairStatus
    """``clean``: merges without a textual conflict; ``unrelated``: no common history."""
    conflicts: list[Conflict] = Field(default_factory=list)
    semantic: list[SemanticFinding] = Field(default_factory=list)

    @property
    def semantic_errors(self) -> list[SemanticFinding]:
        return [f for f in self.semantic if f.severity == "error"]

    @property
    def ok(self) -> bool:
        """Merges cleanly, textually and semantically."""
        return self.status == "clean" and not self.semantic_errors


class ConflictMatrix(BaseModel):
    """Every unordered pair of ``branches``, in the order ``(0,1), (0,2), ... (1,2), ...``."""

    model_config = ConfigDict(frozen=True)

    branches: list[str]
    pairs: list[PairMerge]

    def pair(self, a: str, b: str) -> PairMerge | None:
        """The entry for ``a`` and ``b`` in either order (None when not both listed)."""
        for p in self.pairs:
            if {p.a, p.b} == {a, b}:
                return p
        return None

    @property
    def conflicting(self) -> list[PairMerge]:
        """Pairs that conflict textually or semantically."""
        return [p for p in self.pairs if not p.ok]


class _Diffs:
    """Tree diffs by (base, commit), each computed once for all the pairs sharing it."""

    def __init__(self, odb: pygit2.Repository) -> None:
        self.odb = odb
        self._cache: dict[tuple[str, str], Changes] = {}

    def __call__(self, base: str, commit: str) -> Changes:
        key = (base, commit)
        if key not in self._cache:
            self._cache[key] = tree_changes(self.odb[base].peel(pygit2.Commit).tree,
                                            self.odb[commit].peel(pygit2.Commit).tree)
        return self._cache[key]


def _pair(repo: Repo, diffs: _Diffs, analyzers: list[Analyzer] | None,
          a: tuple[str, str], b: tuple[str, str]) -> PairMerge:
    (name_a, sha_a), (name_b, sha_b) = a, b
    out = {"a": name_a, "b": name_b, "a_sha": sha_a, "b_sha": sha_b}
    bases = merge_bases(repo.odb, sha_a, sha_b)
    if not bases:
        return PairMerge(**out, base_sha=None, status="unrelated")
    if sha_a in bases or sha_b in bases:
        # One contains the other: the merge is the newer one, nothing can conflict.
        return PairMerge(**out, base_sha=bases[0], status="clean")
    changes: tuple[Changes, Changes] | None = None
    if len(bases) == 1:
        base = bases[0]
        changes = (diffs(base, sha_a), diffs(base, sha_b))
        clean = trivially_mergeable(*changes)
    else:
        base, clean = None, False  # criss-cross: merge-ort's virtual base decides
    conflicts: list[Conflict] = []
    if not clean:
        tm = merge_commits(repo, sha_a, sha_b, labels=(name_a, name_b))
        clean = tm.clean
        conflicts = list(tm.conflicts)
        if base is None:
            found = repo.odb.merge_base(sha_a, sha_b)
            base = str(found) if found is not None else None
    findings: list[SemanticFinding] = []
    if clean and analyzers is not None:
        findings = analyze(repo, base, sha_a, sha_b, analyzers=analyzers, ours_label=name_a,
                           theirs_label=name_b, changes=changes)
    return PairMerge(**out, base_sha=base, status="clean" if clean else "conflict",
                     conflicts=conflicts, semantic=findings)


def conflict_matrix(
    repo: Repo | str | os.PathLike[str],
    branches: Sequence[str],
    *,
    semantic: bool = True,
) -> ConflictMatrix:
    """Merge every pair of ``branches`` with each other in memory; nothing is referenced.

    Raises :class:`gitproc.errors.UnknownRefError` (bad input) for a name that is not a
    commit.  Duplicate names are checked once.
    """
    r = repo if isinstance(repo, Repo) else Repo(repo)
    names = list(dict.fromkeys(branches))
    shas = resolve_commits(r, names) if names else []
    diffs = _Diffs(r.odb)
    analyzers = default_analyzers() if semantic else None
    items = list(zip(names, shas, strict=True))
    pairs = [_pair(r, diffs, analyzers, a, b) for a, b in combinations(items, 2)]
    return ConflictMatrix(branches=names, pairs=pairs)
