"""Semantic conflicts: merges that are clean as text but broken as a program.

:func:`analyze` reads only the files changed on either side (blobs from the object
database, never a checkout) and hands them to each :class:`Analyzer` that handles them,
so the cost scales with the change, not with the repository.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pygit2

from merge.fastpath import Changes
from merge.models import SemanticFinding
from merge.semantic.base import Analyzer, FileVersions, MergeInput
from merge.semantic.python import PythonAnalyzer

if TYPE_CHECKING:
    import pygit2

    from gitproc.git import Repo

__all__ = ["Analyzer", "FileVersions", "MergeInput", "PythonAnalyzer", "analyze", "default_analyzers"]


def default_analyzers() -> list[Analyzer]:
    return [PythonAnalyzer()]


def _tree(odb: pygit2.Repository, commit: str | None) -> pygit2.Tree | None:
    return odb[commit].peel(pygit2.Commit).tree if commit else None


def _changed(odb: pygit2.Repository, old: pygit2.Tree | None, new: pygit2.Tree) -> set[str]:
    if old is None:
        return {d.new_file.path for d in new.diff_to_tree(swap=True).deltas}
    return {p for d in old.diff_to_tree(new).deltas for p in (d.old_file.path, d.new_file.path)}


def _blob(tree: pygit2.Tree | None, path: str) -> str | None:
    if tree is None:
        return None
    try:
        entry = tree[path]
    except KeyError:
        return None
    return str(entry.id) if entry.type_str == "blob" else None


def analyze(
    repo: Repo,
    base: str | None,
    ours: str,
    theirs: str,
    *,
    analyzers: Sequence[Analyzer] | None = None,
    ours_label: str = "ours",
    theirs_label: str = "theirs",
    changes: tuple[Changes, Changes] | None = None,
) -> list[SemanticFinding]:
    """Semantic findings for merging commit ``theirs`` into ``ours`` from ``base``.

    ``changes`` (ours' and theirs' changes against ``base``) saves the tree diffs and
    lookups when the caller already has them.
    """
    odb = repo.odb

    def read(oid: str) -> bytes:
        return odb[oid].read_raw()

    if changes is None:
        t_base, t_ours, t_theirs = _tree(odb, base), _tree(odb, ours), _tree(odb, theirs)
        assert t_ours is not None and t_theirs is not None
        paths = _changed(odb, t_base, t_ours) | _changed(odb, t_base, t_theirs)

        def versions(p: str) -> FileVersions:
            return FileVersions(p, _blob(t_base, p), _blob(t_ours, p), _blob(t_theirs, p))
    else:
        mine, other = changes
        paths = mine.paths | other.paths

        def versions(p: str) -> FileVersions:
            oid = mine.old.get(p) or other.old.get(p)
            at_base = str(oid) if oid is not None else None
            return FileVersions(p, at_base, mine.version(p, at_base), other.version(p, at_base))

    findings: list[SemanticFinding] = []
    for analyzer in analyzers if analyzers is not None else default_analyzers():
        handled = sorted(p for p in paths if analyzer.handles(p))
        if not handled:
            continue
        files = {p: versions(p) for p in handled}
        findings += analyzer.analyze(MergeInput(files, read, ours_label, theirs_label))
    return findings
