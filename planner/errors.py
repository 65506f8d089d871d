"""Errors of the planner package.  All of them are bad input (exit code 2)."""

from __future__ import annotations

from gitproc.errors import BadInputError


class PlannerError(BadInputError):
    """Root of the planner's errors: the task list cannot be planned as given."""


class TaskFileError(PlannerError, ValueError):
    """A task file that cannot be read or does not match the task schema."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class UnknownDependencyError(PlannerError, KeyError):
    def __init__(self, task: str, dependency: str) -> None:
        super().__init__(f"task {task!r} depends on unknown task {dependency!r}")
        self.task = task
        self.dependency = dependency

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateTaskError(PlannerError, ValueError):
    def __init__(self, task: str) -> None:
        super().__init__(f"duplicate task id {task!r}")
        self.task = task


class CycleError(PlannerError, ValueError):
    """The dependencies form cycles; each is a closed path, "a -> b" reading "a depends on b"."""

    def __init__(self, cycles: list[list[str]]) -> None:
        named = "; ".join(" -> ".join(c) for c in cycles)
        super().__init__(f"dependency cycle: {named}")
        self.cycles = cycles
