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

from gitproc.git import GitError, Repo

_BLOB_MODES = ("100644", "100755")


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

    base = repo.merge_base(tip, commit)
    if base is None:
        return held("unrelated", f"{commit[:12]} shares no history with the target "
                                 f"{tip[:12]}; held back")
    try:
        raw = repo.git("diff-tree", "-r", "-z", "--no-renames", base, commit).stdout
    except GitError as exc:
        return held("unreadable", f"cannot read {commit[:12]}: {exc}")
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    added: list[tuple[str, str]] = []   # (blob, path) written by the commit
    deleted = 0
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        parts = meta.lstrip(":").split(" ")
        if len(parts) != 5:
            continue
        _, new_mode, _, new_sha, status = parts
        if status.startswith("D"):
            deleted += 1
        elif new_mode in _BLOB_MODES:
            added.append((new_sha, path))
    if limits.max_file_bytes is not None and added:
        sizes = repo.git("cat-file", "--batch-check=%(objectsize)",
                         input="".join(f"{sha}\n" for sha, _ in added).encode()).out.split()
        for (_, path), size in zip(added, sizes, strict=False):
            if size.isdigit() and int(size) > limits.max_file_bytes:
                return held("file_too_large",
                            f"{path} would be {int(size)} bytes, more than the limit of "
                            f"{limits.max_file_bytes}; held back", path)
    if limits.max_delete_share is not None and deleted and not allow_deletes:
        total = len([n for n in repo.git("ls-tree", "-r", "-z", "--name-only", base)
                     .stdout.split(b"\0") if n])
        if total and deleted / total > limits.max_delete_share:
            return held("mass_delete",
                        f"deletes {deleted} of {total} files (more than "
                        f"{limits.max_delete_share:.0%}); held back: allow it with "
                        "`allow_deletes: true` in the task")
    return None
