"""Errors of the merge package.

Every error carries an ``exit_code``: the CLI's single error handler maps it to the
process exit status (2 bad input, 3 internal error), so no command prints a traceback
at a user for bad input.
"""

from __future__ import annotations


class MergeError(Exception):
    """Root of the merge package's errors."""

    exit_code = 3


class BadInputError(MergeError, ValueError):
    """The caller asked for something that cannot be done; nothing was changed."""

    exit_code = 2


class UnknownRefError(BadInputError, LookupError):
    """A ref or commit-ish does not resolve to a commit."""

    def __init__(self, ref: str, repo: str = "") -> None:
        where = f" in {repo}" if repo else ""
        super().__init__(f"unknown ref or commit: {ref!r}{where}")
        self.ref = ref


class NotARepositoryError(BadInputError, FileNotFoundError):
    """The path is not a git repository."""

    def __init__(self, path: str) -> None:
        super().__init__(f"not a git repository: {path}")
        self.path = path


class GitVersionError(MergeError, RuntimeError):
    """The installed git is too old for the merge engine."""

    exit_code = 2
