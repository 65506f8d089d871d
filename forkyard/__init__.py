"""forkyard: run many coding agents in parallel against one git repository.

The application: the command line (``forkyard.cli``), the run loop (``forkyard.run``),
the run's journal (``forkyard.journal``), the views of runs (``forkyard.views``), the MCP
server (``forkyard.mcp``), gc and the demo.  The engines below it: ``planner`` (what runs
when), ``sandbox`` (where and how one agent runs), ``merge`` (how results come back), all
on ``gitproc`` (git, processes, errors, locks).

Python API::

    from forkyard import RunOptions, run_workflow, resume_run
    result = run_workflow("path/to/repo", "tasks.yaml", RunOptions(agents=4))
    result.model_dump(mode="json")   # the `forkyard run --json` document
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forkyard.journal.models import RunResult
    from forkyard.run.options import RunOptions
    from forkyard.run.workflow import resume_run, run_workflow

__all__ = ["RunOptions", "RunResult", "resume_run", "run_workflow"]

_WHERE = {
    "RunOptions": "forkyard.run.options",
    "RunResult": "forkyard.journal.models",
    "resume_run": "forkyard.run.workflow",
    "run_workflow": "forkyard.run.workflow",
}


def __getattr__(name: str) -> Any:
    # Lazy: `forkyard --help` does not pay for the planner, the engines and pydantic.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'forkyard' has no attribute {name!r}")
