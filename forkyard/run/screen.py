"""What a task's commit may bring to the target, checked before its batch merges.

Each task's recorded commit is screened on its own, so that one bad branch is held back
alone and its batch-mates still land: a commit that shares no history with the target,
one that adds a file larger than the run's limit (a few hundred kilobytes of compressed
object can be gigabytes in the user's checkout), and one that deletes more than a
share of the files (unless its task allows it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pygit2

from gitproc.git import Repo

_BLOB_MODES = (pygit2.enums.FileMode.BLOB, pygit2.enums.FileMode.BLOB_EXECUTABLE)


@dataclass(frozen=True)
class ScreenLimits:
    """The run's limits on what one task's commit may bring."""

    max_file_bytes: int | None = 100 * 1024 * 1024
    max_delete_share: float | None = 0.5


def screen(repo: Repo, tip: str, task: str, commit: str, limits: ScreenLimits,
           allow_deletes: bool = False) -> dict[str, Any] | None:
    """Why ``commit`` (task ``task``'s) must not land on ``tip`` -- a conflict entry as
    the run JSON lists them -- or None when it may be merged."""
    def held(kind: str, message: str, path: str | None = None) -> dict[str, Any]:
        return {"task": task, "path": path, "kind": kind, "message": message}

    # In process (libgit2): this runs for every task, on integration's critical path.
    odb = repo.odb
    try:
        found = odb.merge_base(tip, commit)
        if found is None:
            return held("unrelated", f"{commit[:12]} shares no history with the target "
                                     f"{tip[:12]}; held back")
        base = str(found)
        diff = odb[base].peel(pygit2.Commit).tree.diff_to_tree(
            odb[commit].peel(pygit2.Commit).tree)
        deleted = 0
        for delta in diff.deltas:
            if delta.status == pygit2.enums.DeltaStatus.DELETED:
                deleted += 1
                continue
            new = delta.new_file
            if limits.max_file_bytes is None or new.mode not in _BLOB_MODES:
                continue
            # The header only: a huge blob is never read whole here.
            size = odb.odb.read_header(new.id)[1]
            if size > limits.max_file_bytes:
                return held("file_too_large",
                            f"{new.path} would be {size} bytes, more than the limit of "
                            f"{limits.max_file_bytes}; held back", new.path)
    except (pygit2.GitError, KeyError, ValueError) as exc:
        return held("unreadable", f"cannot read {commit[:12]}: {exc}")
    if limits.max_delete_share is not None and deleted and not allow_deletes:
        total = len([n for n in repo.git("ls-tree", "-r", "-z", "--name-only", base)
                     .stdout.split(b"\0") if n])
        if total and deleted / total > limits.max_delete_share:
            return held("mass_delete",
                        f"deletes {deleted} of {total} files (more than "
                        f"{limits.max_delete_share:.0%}); held back: allow it with "
                        "`allow_deletes: true` in the task")
    return None
