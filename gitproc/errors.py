"""The error roots every forkyard package builds on, and the exit codes they map to.

Each package keeps its own root (``MergeError``, ``SandboxError``, ``PlannerError``) as a
subclass of :class:`ForkyardError`, so a caller can catch one package's errors or all of
forkyard's.  Every error carries ``exit_code``: the CLI's single handler exits with it,
so bad input never shows a traceback.  Errors also inherit the matching built-in
(``BadInputError`` is a ``ValueError``) so callers can catch either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gitproc.process import Completed

#: The work was done and nothing went wrong.
EXIT_OK = 0
#: The work was done and found conflicts or failures.
EXIT_FAILED = 1
#: Bad input: nothing was changed.
EXIT_BAD_INPUT = 2
#: A bug or an environment forkyard cannot work in.
EXIT_INTERNAL = 3
#: Ctrl-C (or SIGTERM) stopped it.
EXIT_INTERRUPTED = 130


class ForkyardError(Exception):
    """Root of every error forkyard raises on purpose."""

    exit_code = EXIT_INTERNAL


class BadInputError(ForkyardError, ValueError):
    """The caller asked for something that cannot be done; nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class ProcessError(ForkyardError, RuntimeError):
    """A process exited non-zero (or timed out) where success was required."""

    def __init__(self, result: Completed) -> None:
        self.argv = result.argv
        self.returncode = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.timed_out = result.timed_out
        what = "timed out" if result.timed_out else f"exited {result.returncode}"
        detail = result.err.strip().splitlines()
        tail = f": {detail[-1]}" if detail else ""
        super().__init__(f"{' '.join(result.argv)} {what}{tail}")


class ExecutableNotFoundError(ForkyardError, FileNotFoundError):
    exit_code = EXIT_BAD_INPUT

    def __init__(self, argv0: str) -> None:
        super().__init__(f"executable not found: {argv0}")
        self.argv0 = argv0


class GitError(ProcessError):
    """A git command failed; carries argv, exit code and both streams."""


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


class GitVersionError(ForkyardError, RuntimeError):
    """The installed git is too old for forkyard."""

    exit_code = EXIT_BAD_INPUT


class RefMovedError(ForkyardError):
    """A compare-and-swap ref update found the ref somewhere other than expected."""

    def __init__(self, ref: str, expected: str, actual: str | None) -> None:
        super().__init__(f"{ref} moved: expected {expected[:12]}, found {(actual or 'nothing')[:12]}")
        self.ref = ref
        self.expected = expected
        self.actual = actual
