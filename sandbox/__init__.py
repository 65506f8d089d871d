"""WHERE and HOW agents run: worktrees, containers, limits, confinement, the run loop.

Public API::

    from sandbox import run_workflow, Limits, RunResult
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from planner.tasks import Limits
    from sandbox.models import RunResult
    from sandbox.run import run_workflow

__all__ = ["Limits", "RunResult", "run_workflow"]


def __getattr__(name: str) -> Any:
    # Lazy: `forkyard --help` and the backends import this package without paying for the
    # planner, the merge engine and pydantic models they do not use.
    if name == "run_workflow":
        from sandbox.run import run_workflow

        return run_workflow
    if name == "RunResult":
        from sandbox.models import RunResult

        return RunResult
    if name == "Limits":
        from planner.tasks import Limits

        return Limits
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
