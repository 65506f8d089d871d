"""Errors of the sandbox package.

Classes also inherit the matching built-in so callers can catch either
(``AgentTimeoutError`` is a ``TimeoutError``).  ``exit_code`` is what the CLI's single
error handler exits with.
"""

from __future__ import annotations

from gitproc.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, BadInputError, ForkyardError


class SandboxError(ForkyardError):
    """Root of the sandbox package's errors."""


class SandboxBadInputError(SandboxError, BadInputError):
    """Bad input (a dirty repository, a missing image, a bad option): nothing changed."""


class ImageNotFoundError(SandboxBadInputError, LookupError):
    def __init__(self, image: str) -> None:
        super().__init__(f"docker image not found: {image!r} (build or pull it first)")
        self.image = image


class BackendUnavailableError(SandboxError, RuntimeError):
    """The chosen backend cannot run here (no Docker engine, no git worktree support)."""

    exit_code = EXIT_BAD_INPUT


class AgentTimeoutError(SandboxError, TimeoutError):
    def __init__(self, task: str, timeout_s: float) -> None:
        super().__init__(f"task {task!r} exceeded its {timeout_s:g}s timeout")
        self.task = task
        self.timeout_s = timeout_s


class ConfinementError(SandboxError, PermissionError):
    """Confinement was required but neither bubblewrap nor Landlock is usable."""

    exit_code = EXIT_BAD_INPUT


class RunInterrupted(SandboxError, KeyboardInterrupt):
    exit_code = EXIT_INTERRUPTED
