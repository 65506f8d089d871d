"""In-memory three-way merges through ``git merge-tree --write-tree`` (merge-ort itself).

Why merge-tree rather than libgit2's merge: merge-tree *is* merge-ort, so the trees and
conflicts are git's own (directory renames, rename/rename, rename/delete, merge drivers),
while libgit2 has no directory-rename detection.  git 2.39 (Debian bookworm) has
``--write-tree -z --messages`` but not ``--stdin``/``--merge-base`` (2.40), so a batch
merges source N onto a real (unreferenced) commit holding step N-1's result: one
process per source, which ``bench/merge_batch.py`` measures.

Output format (``-z``, git-merge-tree(1) "OUTPUT"): the tree OID, then one
``<mode> <object> <stage>\\t<path>`` record per conflicted stage, an empty record, then
informational messages as ``<N>\\0<path1>\\0..<pathN>\\0<conflict-type>\\0<message>\\0``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from gitproc.git import Repo, git
from merge.conflicts import classify
from merge.errors import MergeError
from merge.models import Conflict, Message, Stage


class MergeTreeError(MergeError):
    """merge-tree failed (not a conflict: exit status >1 or an ERROR message)."""

    def __init__(self, ours: str, theirs: str, detail: str) -> None:
        super().__init__(f"git merge-tree {ours[:12]} {theirs[:12]} failed: {detail}")
        self.ours = ours
        self.theirs = theirs


@dataclass(frozen=True)
class TreeMerge:
    """A three-way merge's outcome: the tree (with conflict markers if not clean)."""

    tree: str
    clean: bool
    stages: tuple[Stage, ...] = ()
    messages: tuple[Message, ...] = ()
    conflicts: tuple[Conflict, ...] = field(default=())

    @property
    def conflicted_paths(self) -> list[str]:
        """Sorted paths with unmerged stages, as ``git merge`` would leave in the index."""
        return sorted({s.path for s in self.stages})


def parse_output(out: bytes) -> tuple[str, list[Stage], list[Message]]:
    """Split ``merge-tree --write-tree -z --messages`` output into its three sections."""
    fields = out.decode("utf-8", "surrogateescape").split("\0")
    tree = fields[0]
    i = 1
    stages: list[Stage] = []
    while i < len(fields) and fields[i] != "":
        meta, _, path = fields[i].partition("\t")
        mode, oid, stage = meta.split(" ")
        stages.append(Stage(mode, oid, int(stage), path))
        i += 1
    i += 1  # the empty record that ends the conflicted-file section
    messages: list[Message] = []
    # After the messages git may append free text (submodule advice); stop there.
    while i < len(fields) and fields[i].isdigit():
        n = int(fields[i])
        paths = tuple(fields[i + 1:i + 1 + n])
        kind, text = fields[i + 1 + n], fields[i + 2 + n]
        messages.append(Message(paths, kind, text.rstrip("\n")))
        i += 3 + n
    return tree, stages, messages


def _attributes_config(repo: Repo, ours: str) -> list[str]:
    """``-c core.attributesFile=...`` holding the root ``.gitattributes`` of ``ours``.

    merge-tree on git 2.39 reads attributes from the working tree, not from the trees
    it merges (``--attr-source`` is 2.42+).  We run it without a working tree and hand
    it ours' root ``.gitattributes`` instead, which is what ``git merge`` in a checkout
    of ours sees.  Nested ``.gitattributes`` files are not consulted (documented).
    """
    commit = repo.odb[ours].peel(pygit2.Commit)
    try:
        entry = commit.tree[".gitattributes"]
    except KeyError:
        return ["-c", "core.attributesFile=/dev/null"]
    data = repo.odb[entry.id].read_raw()
    digest = hashlib.sha1(data).hexdigest()
    cache = repo.forkyard_dir / "attributes"
    path = cache / digest
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{digest}.{os.getpid()}"
        tmp.write_bytes(data)
        tmp.replace(path)
    return ["-c", f"core.attributesFile={path}"]


def merge_commits(
    repo: Repo, ours: str, theirs: str, *, labels: tuple[str, str] | None = None
) -> TreeMerge:
    """Merge commit ``theirs`` into commit ``ours`` in memory (no worktree, no index).

    Writes the merged tree (and any merged blobs) to the object database; returns it
    with the classified conflicts; ``labels`` (ours, theirs) replace the commit ids in
    git's messages, which name the sides by the arguments it was given.  Raises :class:`MergeTreeError` when git cannot merge
    at all (e.g. unrelated histories, corrupt objects).
    """
    # Run inside the git dir so there is no working tree whose .gitattributes or
    # checked-out state could leak into the merge.
    r = git(
        *_attributes_config(repo, ours),
        "merge-tree", "--write-tree", "-z", "--messages",
        ours, theirs, cwd=Path(repo.common_dir), check=False,
    )
    if r.returncode not in (0, 1):
        raise MergeTreeError(ours, theirs, r.err.strip() or f"exit {r.returncode}")
    tree, stages, messages = parse_output(r.stdout)
    if labels is not None:
        messages = [
            Message(m.paths, m.type, m.text.replace(ours, labels[0]).replace(theirs, labels[1]))
            for m in messages
        ]
    errors = [m for m in messages if m.type.startswith("ERROR")]
    if errors:
        raise MergeTreeError(ours, theirs, errors[0].text)
    clean = r.returncode == 0
    conflicts = () if clean else tuple(classify(stages, messages))
    return TreeMerge(tree, clean, tuple(stages), tuple(messages), conflicts)
