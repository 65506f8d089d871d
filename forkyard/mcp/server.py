"""``forkyard mcp``: forkyard's tools over the Model Context Protocol (stdio).

A thin layer over the same library functions the CLI calls; every tool returns the same
JSON document as the matching ``--json`` command.  Tools: ``plan``, ``run``, ``status``,
``merge``, ``check``.  Paths are relative to the repository the server was started for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio

from gitproc.errors import BadInputError
from gitproc.git import Repo


def create_server(repo: str | os.PathLike[str]) -> Any:
    """An ``MCPServer`` (mcp 2.x) exposing forkyard's tools for ``repo``."""
    from mcp.server.mcpserver import MCPServer

    root = Repo(repo)
    server: Any = MCPServer(
        "forkyard",
        instructions="Plan task files, run parallel coding agents, watch runs, and merge "
                     f"branches transactionally in the git repository {root.path}.",
    )

    def _path(p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else root.path / path

    @server.tool()
    def plan(tasks: str, agents: int = 4, goal: str = "minimize-time") -> dict[str, Any]:
        """Plan a task file (YAML, JSON or spec-kit tasks.md) onto N agents: the schedule,
        waves, critical path and estimated speedup (the `forkyard plan --json` document)."""
        from forkyard.views.history import History
        from planner import load_tasks
        from planner import plan as make_plan

        tf = load_tasks(_path(tasks))
        durations = History.measured(root, tf.tasks)
        return make_plan(tf, agents=agents, goal=goal,
                         durations=durations or None).model_dump(mode="json")

    @server.tool()
    async def run(tasks: str, agents: int = 4, strategy: str = "aggressive",
                  mode: str = "stream", into: str | None = None,
                  validate: str | None = None) -> dict[str, Any]:
        """Run a task file with parallel agents and integrate their work into a branch
        (default: the current one).  Returns the `forkyard run --json` document."""
        from forkyard.run.options import RunOptions
        from forkyard.run.workflow import run_workflow

        def go() -> dict[str, Any]:
            options = RunOptions.model_validate({
                "agents": agents, "strategy": strategy, "mode": mode, "into": into,
                "validate_command": validate})
            return run_workflow(root, _path(tasks), options).model_dump(mode="json")

        # A run takes minutes: keep the server's event loop answering meanwhile.
        try:
            result: dict[str, Any] = await anyio.to_thread.run_sync(go)
        except BadInputError as exc:  # the caller's mistake, said in one line
            from mcp.server.mcpserver.exceptions import ToolError

            raise ToolError(f"bad input: {exc}") from None
        return result

    @server.tool()
    def status(run_id: str | None = None) -> dict[str, Any]:
        """Progress of a run (default: the latest): per-task state, aggregated progress,
        bottlenecks, ETA and batch outcomes."""
        from forkyard.views.status import run_status

        return run_status(root, run_id).model_dump(mode="json")

    @server.tool()
    async def merge(into: str, sources: list[str], dry_run: bool = False,
                    validate: str | None = None) -> dict[str, Any]:
        """Merge source branches into a target as one transaction (or just check with
        dry_run).  Returns the `forkyard merge --json` document."""
        from forkyard.run.validation import command_validator
        from merge import merge_sources

        def go() -> dict[str, Any]:
            # The validation runs in a sandbox of the merged commit, as on the CLI.
            validator = command_validator(root, validate) if validate is not None else None
            return merge_sources(root, into, sources, dry_run=dry_run, validate=validate,
                                 validator=validator, validate_slots=4
                                 ).model_dump(mode="json")

        result: dict[str, Any] = await anyio.to_thread.run_sync(go)
        return result

    @server.tool()
    async def check(sources: list[str], into: str = "HEAD") -> dict[str, Any]:
        """Dry-run merge of sources into a target: conflicts and semantic findings, nothing
        moves."""
        from merge import merge_sources

        def go() -> dict[str, Any]:
            return merge_sources(root, into, sources, dry_run=True).model_dump(mode="json")

        result: dict[str, Any] = await anyio.to_thread.run_sync(go)
        return result

    return server


def serve(repo: str | os.PathLike[str]) -> int:
    """Serve over stdio until the client hangs up."""
    create_server(repo).run("stdio")
    return 0
