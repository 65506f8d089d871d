"""The in-process fast path for merges merge-ort would resolve trivially.

Why: git 2.39 has no ``merge-tree --stdin``, so every merge through git costs a process
(~5 ms on a 5,000-file tree), which alone eats the batch's 10x budget against
``git merge``.  Most agent branches in a batch touch their own files, and for those
merge-ort's answer is fully determined: when

- the merge base is unique (no criss-cross, so no virtual base),
- neither side deletes a path (so there are no rename sources, hence no renames and no
  directory renames; a type change is a delete plus an add in a tree diff), and
- no path is changed on both sides, and no path one side changes is a directory
  prefix of a path the other side changes (file/directory),

the result is the base with both sides' changes applied: merge drivers, renormalisation
and content merges only ever run on paths changed on both sides.  Anything else goes to
``git merge-tree``.  The property test checks this path against git tree for tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pygit2

# libgit2 delta statuses we accept: added, modified (deleted/renamed/typechange are not).
_ADDED, _MODIFIED = 1, 3


@dataclass(frozen=True)
class Changes:
    """One side's changes against the base: path -> (oid, mode) for adds and modifies."""

    entries: Mapping[str, tuple[pygit2.Oid, int]]
    deletes: frozenset[str]
    old: Mapping[str, pygit2.Oid]
    """Base blob ids of the paths that existed at the base (modified or deleted)."""

    @property
    def paths(self) -> set[str]:
        return set(self.entries) | set(self.deletes)

    def version(self, path: str, at_base: str | None) -> str | None:
        """This side's blob id at ``path`` (None: absent); ``at_base`` when unchanged."""
        if path in self.entries:
            return str(self.entries[path][0])
        if path in self.deletes:
            return None
        return at_base


def tree_changes(old: pygit2.Tree, new: pygit2.Tree) -> Changes:
    """Paths that differ from ``old`` to ``new`` (no rename detection)."""
    entries: dict[str, tuple[pygit2.Oid, int]] = {}
    deletes: set[str] = set()
    before: dict[str, pygit2.Oid] = {}
    for d in old.diff_to_tree(new).deltas:
        if d.status != _ADDED:
            before[d.old_file.path] = d.old_file.id
        if d.status in (_ADDED, _MODIFIED) and d.old_file.path == d.new_file.path:
            entries[d.new_file.path] = (d.new_file.id, d.new_file.mode)
        else:
            deletes.add(d.old_file.path)
            if d.status != 2:  # anything but a plain delete also writes new_file
                entries[d.new_file.path] = (d.new_file.id, d.new_file.mode)
    return Changes(entries, frozenset(deletes), before)


def merge_bases(odb: pygit2.Repository, a: str, b: str) -> list[str]:
    """All best common ancestors of ``a`` and ``b`` (``git merge-base --all``), in process.

    ``b`` already contained in ``a`` gives ``[b]``; unrelated histories give ``[]``.
    """
    one = odb.merge_base(a, b)
    if one is None:
        return []
    base = str(one)
    if base == b:
        return [b]
    # Common case first: if ``b`` reaches ``base`` by a chain of single-parent commits,
    # the commits only ``b`` has are a prefix of that chain, so the merge base is unique.
    # (Cheap: this walk stops at ``base``, while hiding ``a`` walks a's whole batch.)
    walker = odb.walk(pygit2.Oid(hex=b), pygit2.enums.SortMode.NONE)
    walker.hide(one)
    if all(len(c.parent_ids) == 1 for c in walker):
        return [base]
    # General case: the parents, outside the set, of the commits reachable from ``b``
    # but not ``a`` are common ancestors, and every best common ancestor is one of them.
    walker = odb.walk(pygit2.Oid(hex=b), pygit2.enums.SortMode.NONE)
    walker.hide(pygit2.Oid(hex=a))
    only_b = {str(c.id): c for c in walker}
    boundary = {str(p) for c in only_b.values() for p in c.parent_ids if str(p) not in only_b}
    if len(boundary) <= 1:
        return sorted(boundary)
    # Drop boundary commits that are ancestors of other boundary commits.
    best = [x for x in boundary
            if not any(y != x and odb.descendant_of(y, x) for y in boundary)]
    return sorted(best)


def _dirs(paths: set[str]) -> set[str]:
    out: set[str] = set()
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            out.add("/".join(parts[:i]))
    return out


def trivially_mergeable(ours: Changes, theirs: Changes) -> bool:
    """The conditions in the module docstring (the merge base's uniqueness aside)."""
    if ours.deletes or theirs.deletes:
        return False
    mine, other = set(ours.entries), set(theirs.entries)
    if mine & other:
        return False
    return not (other & _dirs(mine) or mine & _dirs(other))


def _apply(odb: pygit2.Repository, tree: pygit2.Tree | None,
           changes: Mapping[str, tuple[pygit2.Oid, int]]) -> pygit2.Oid:
    direct: dict[str, tuple[pygit2.Oid, int]] = {}
    nested: dict[str, dict[str, tuple[pygit2.Oid, int]]] = {}
    for path, value in changes.items():
        head, sep, rest = path.partition("/")
        if sep:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    builder = odb.TreeBuilder(tree) if tree is not None else odb.TreeBuilder()
    for name, (oid, mode) in direct.items():
        builder.insert(name, oid, mode)
    for name, sub in nested.items():
        existing = None
        if tree is not None and name in tree:
            obj = tree[name]
            existing = obj if isinstance(obj, pygit2.Tree) else None
        builder.insert(name, _apply(odb, existing, sub), pygit2.enums.FileMode.TREE)
    return builder.write()


def apply_changes(odb: pygit2.Repository, ours: pygit2.Tree, theirs: Changes) -> str:
    """``ours`` with ``theirs``' adds and modifies applied; returns the new tree's id."""
    if not theirs.entries:
        return str(ours.id)
    return str(_apply(odb, ours, theirs.entries))
