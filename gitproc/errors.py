"""The error roots every forkyard package builds on, and the exit codes they map to.

Each package keeps its own root (``MergeError``, ``SandboxError``, ``PlannerError``) as a
subclass of :class:`ForkyardError`, so a caller can catch one package's errors or all of
forkyard's.  Every error carries ``exit_code``: the CLI's single handler exits with it,
so bad input never shows a traceback.  Errors also inherit the matching built-in
(``BadInputError`` is a ``ValueError``) so callers can catch either.
"""

from __future__ import annotations

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

