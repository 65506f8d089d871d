"""Errors of the merge package: ``MergeError`` and its bad-input branch.

Git's own errors (an unknown ref, a path that is no repository, a git too old) live with
the git wrapper in :mod:`gitproc.git`; the exit codes in :mod:`gitproc.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence

from gitproc.errors import BadInputError as _BadInput
from gitproc.errors import ForkyardError
from gitproc.git import RefMovedError


class MergeError(ForkyardError):
    """Root of the merge package's errors."""


class BadInputError(MergeError, _BadInput):
    """The caller asked for a merge that cannot be done; nothing was changed."""


class TargetNotBranchError(BadInputError):
    """A non-dry-run merge needs a branch to move, not an arbitrary commit-ish."""

    def __init__(self, into: str) -> None:
        super().__init__(f"--into {into!r} is not a branch (use --dry-run to merge into a commit)")
        self.into = into


class DirtyWorktreeError(BadInputError):
    """The target is checked out with local changes to files the batch would change."""

    def __init__(self, worktree: str, paths: Sequence[str]) -> None:
        shown = ", ".join(paths[:5]) + (" ..." if len(paths) > 5 else "")
        super().__init__(f"{worktree} has the target checked out with local changes to files "
                         f"this merge changes ({shown}); commit or stash them first")
        self.worktree = worktree
        self.paths = list(paths)


class UnrelatedHistoriesError(BadInputError):
    """A source shares no history with the target (``git merge`` refuses it too)."""

    def __init__(self, source: str, into: str) -> None:
        super().__init__(f"{source!r} shares no history with {into!r}; refusing to merge")
        self.source = source
        self.into = into


class RetriesExhaustedError(RefMovedError):
    """The target kept moving under us; nothing was changed (exit 1: the work was done,
    it just could not land; the sources are untouched and can be merged again)."""

    exit_code = 1
