"""Conflict classification and detection.

merge-ort reports each logical conflict with a stable type string (``type_short_descriptions``
in git's merge-ort.c); :func:`classify` maps those to forkyard's conflict kinds (docs/architecture.md).  Two kinds need
more than the type string: add/add is reported as ``CONFLICT (contents)`` with an
``add/add`` message, and a 100644/100755 mode clash has no message at all (merge-ort
leaves the path unmerged silently), so it is recognised from the index stages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pygit2

from merge.models import Conflict, ConflictKind, Message, Overlap, Stage

if TYPE_CHECKING:
    from gitproc.git import Repo

# Exact type strings from merge-ort.c (git 2.38 - 2.47); note the missing space in the
# two directory-rename ones, which is how git spells them.
TYPE_KINDS: dict[str, ConflictKind] = {
    "CONFLICT (contents)": "content",
    "CONFLICT (binary)": "binary",
    "CONFLICT (file/directory)": "file/directory",
    "CONFLICT (distinct modes)": "mode",
    "CONFLICT (modify/delete)": "modify/delete",
    "CONFLICT (rename/rename)": "rename/rename",
    "CONFLICT (rename involved in collision)": "add/add",
    "CONFLICT (rename/delete)": "rename/delete",
    "CONFLICT (directory rename suggested)": "directory_rename",
    "CONFLICT (file in way of directory rename)": "directory_rename",
    "CONFLICT(directory rename collision)": "directory_rename",
    "CONFLICT(directory rename unclear split)": "directory_rename",
    "CONFLICT (submodule)": "submodule",
    "CONFLICT (submodule with possible resolution)": "submodule",
    "CONFLICT (submodule not initialized)": "submodule",
    "CONFLICT (submodule history not available)": "submodule",
    "CONFLICT (submodule may have rewinds)": "submodule",
    "CONFLICT (submodule lacks merge base)": "submodule",
}


def kind_of(type_string: str, text: str) -> ConflictKind | None:
    """The conflict kind for one merge-ort message; None for informational messages."""
    if not type_string.startswith("CONFLICT"):
        return None
    kind = TYPE_KINDS.get(type_string)
    if kind is None:
        # A conflict type newer than this table: still a conflict, never dropped.
        return "submodule" if "submodule" in type_string else "content"
    if kind == "content" and text.startswith("CONFLICT (add/add)"):
        return "add/add"
    if kind == "content" and text.startswith("CONFLICT (submodule)"):
        return "submodule"
    return kind


def classify(stages: Sequence[Stage], messages: Sequence[Message]) -> list[Conflict]:
    """merge-tree's conflicted stages and messages as classified :class:`Conflict` s.

    Every conflicted path is covered by at least one conflict, so callers can trust
    ``{c.path for c in conflicts} | paths`` to equal git's unmerged paths.
    """
    by_path: dict[str, list[Stage]] = {}
    for s in stages:
        by_path.setdefault(s.path, []).append(s)
    out: list[Conflict] = []
    seen: set[tuple[str, str]] = set()
    binary = {m.paths[0] for m in messages if m.type == "CONFLICT (binary)" and m.paths}
    for m in messages:
        kind = kind_of(m.type, m.text)
        if kind is None or not m.paths:
            continue
        path = m.paths[0]
        if kind in ("content", "add/add"):
            if path in binary:
                continue  # a binary clash also produces a generic contents message
            if _only_mode_differs(by_path.get(path, [])):
                kind = "mode"  # same bytes, 100644 vs 100755: merge-ort says add/add
        if (path, kind) in seen:
            continue  # e.g. "submodule not initialized" then "CONFLICT (submodule)"
        seen.add((path, kind))
        out.append(Conflict(path=path, kind=kind, paths=list(m.paths), message=m.text))
    covered = {p for c in out for p in c.paths}
    for path, entries in sorted(by_path.items()):
        if path in covered:
            continue
        modes = {s.mode for s in entries}
        kind = "mode" if len(modes) > 1 else "content"
        out.append(Conflict(path=path, kind=kind, paths=[path],
                            message=f"CONFLICT ({kind}): {path} left unmerged "
                                    f"(modes {', '.join(sorted(modes))})"))
    return out


def _only_mode_differs(entries: Sequence[Stage]) -> bool:
    sides = {s.stage: s for s in entries}
    ours, theirs = sides.get(2), sides.get(3)
    return (ours is not None and theirs is not None and ours.oid == theirs.oid
            and ours.mode != theirs.mode)


def touched_paths(repo: Repo, base: str | None, commit: str) -> set[str]:
    """Paths that differ between ``base`` and ``commit`` (renames count as both paths)."""
    odb = repo.odb
    new = odb[commit].peel(pygit2.Commit).tree
    if base is None:
        return {p for p in _walk(odb, new)}
    old = odb[base].peel(pygit2.Commit).tree
    diff = old.diff_to_tree(new)
    paths: set[str] = set()
    for patch in diff.deltas:
        paths.add(patch.old_file.path)
        paths.add(patch.new_file.path)
    return paths


def _walk(odb: object, tree: object, prefix: str = "") -> Iterable[str]:
    for entry in tree:  # type: ignore[attr-defined]
        path = f"{prefix}{entry.name}"
        if entry.type_str == "tree":
            yield from _walk(odb, entry, f"{path}/")
        else:
            yield path


def overlaps(touched: Sequence[tuple[str, set[str]]]) -> list[Overlap]:
    """Every path touched by more than one source, with those sources in batch order."""
    seen: dict[str, list[str]] = {}
    for source, paths in touched:
        for p in paths:
            seen.setdefault(p, []).append(source)
    return [Overlap(path=p, sources=s) for p, s in sorted(seen.items()) if len(s) > 1]
