"""``forkyard mcp``: forkyard's tools over the Model Context Protocol (stdio).

A thin layer over the Python API, built on the official ``mcp`` SDK.  Parameters are
camelCase; results are structured content (JSON objects, with their output schemas);
every error reaches the client as its reason, the one line the CLI would print
(:mod:`forkyard.mcp.errors`).

Planning (no repository needed): ``analyze_task_parallelizability``,
``create_dependency_graph``, ``optimize_batch_distribution``, ``aggregate_progress``.
Runs: ``execute_parallel_workflow`` (starts a run in the background and returns its id),
``get_workflow_status``, ``cancel_workflow``, ``rollback_run``.  Merging:
``detect_conflicts``.  Task files: ``plan``, ``status``, ``merge``, ``check`` (the same
JSON documents as the matching ``--json`` commands).  Paths are relative to the
repository the server was started for, which is also every ``repoPath``'s default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from forkyard.mcp import conflicts, planning, runs
from forkyard.mcp.errors import OneLineServer, reporting_errors
from forkyard.mcp.models import MAX_AGENTS, Subtask
from gitproc.git import Repo

_PURE = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
_UNDO = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)

RepoPath = Annotated[str | None, Field(
    description="The git repository (default: the one the server was started for).")]
RunId = Annotated[str, Field(description="A run id from execute_parallel_workflow.")]


def create_server(repo: str | os.PathLike[str]) -> OneLineServer:
    """An MCP server exposing forkyard's tools, its default repository ``repo``."""
    root = Repo(repo)
    server = OneLineServer(
        "forkyard",
        instructions="Analyse and plan parallel work, run coding agents in parallel, watch "
                     "and cancel runs, detect merge conflicts between branches and roll "
                     f"runs back, in git repositories (default: {root.path}).")
    run_repos: dict[str, Repo] = {}  # runs started here: where they live

    def _repo(path: str | None) -> Repo:
        if path is None:
            return root
        p = Path(path)
        return Repo(p if p.is_absolute() else root.path / p)

    def _run_repo(run_id: str, path: str | None) -> Repo:
        return _repo(path) if path is not None else run_repos.get(run_id, root)

    def add(fn: Any, annotations: ToolAnnotations) -> None:
        server.add_tool(reporting_errors(fn), name=fn.__name__, annotations=annotations,
                        structured_output=True)

    for fn in (planning.analyze_task_parallelizability, planning.create_dependency_graph,
               planning.optimize_batch_distribution, planning.aggregate_progress):
        add(fn, _PURE)

    async def execute_parallel_workflow(
        tasks: Annotated[list[Subtask] | None, Field(
            description="Tasks with a command (a shell command run in the task's worktree) "
                        "or an agent (preset or template); or give analysisResult.")] = None,
        analysisResult: Annotated[dict[str, Any] | None, Field(  # noqa: N803
            description="The result of analyze_task_parallelizability (its subtasks run).")] = None,
        executionStrategy: runs.ExecutionStrategy = "aggressive",  # noqa: N803
        maxParallelAgents: Annotated[int, Field(ge=1, le=MAX_AGENTS)] = 4,  # noqa: N803
        constraints: runs.Constraints | None = None,
        into: Annotated[str | None, Field(description="Target branch (default: current).")] = None,
        validate: Annotated[str | None, Field(
            description="Command run on each merged batch before it lands.")] = None,
        agent: Annotated[str | None, Field(
            description="Default agent for tasks without command or agent: a preset (claude, "
                        "codex, aider, gemini, shell) or a command template.")] = None,
        executor: Annotated[runs.Executor, Field(
            description="Where sandboxes are made: local (this machine) or ray (the "
                        "workers of a Ray cluster; needs forkyard[ray]).")] = "local",
        rayAddress: Annotated[str | None, Field(  # noqa: N803
            description="The Ray cluster for executor ray (default: a local Ray instance "
                        "for the run).")] = None,
        repoPath: RepoPath = None,  # noqa: N803
    ) -> runs.Started:
        """Start a real parallel run in the background and return its runId at once.

        Each task runs in its own sandbox (worktree, limits, confinement); finished work is
        merged into the target as transactions.  The run lives on if the client goes away;
        follow it with get_workflow_status, stop it with cancel_workflow.
        """
        r = _repo(repoPath)
        started: runs.Started = await anyio.to_thread.run_sync(
            lambda: runs.start(r, tasks, analysisResult, executionStrategy, maxParallelAgents,
                               constraints, into, validate, agent, executor, rayAddress))
        run_repos[started.run_id] = r
        return started

    async def get_workflow_status(
        runId: RunId,  # noqa: N803
        waitSeconds: Annotated[float, Field(  # noqa: N803
            ge=0, le=3600, description="Follow the run up to this long (or until it ends), "
                                       "sending progress notifications; 0: answer at once.")] = 0,
        repoPath: RepoPath = None,  # noqa: N803
        ctx: Context | None = None,
    ) -> runs.WorkflowStatus:
        """Progress of a run: per task, per agent, bottlenecks, ETA; the run JSON once it
        has finished."""
        return await runs.follow(_run_repo(runId, repoPath), runId, waitSeconds, ctx)

    async def cancel_workflow(runId: RunId, repoPath: RepoPath = None) -> runs.Cancelled:  # noqa: N803
        """Stop a running run cleanly: agents are stopped, finished work stays on its
        branches, the journal records the run as cancelled."""
        r = _run_repo(runId, repoPath)
        return await anyio.to_thread.run_sync(runs.cancel, r, runId)

    async def rollback_run(runId: RunId, repoPath: RepoPath = None) -> runs.RolledBack:  # noqa: N803
        """Put the run's target back where the run found it, if nothing else has moved it
        since (compare-and-swap; otherwise a refusal and nothing changes)."""
        r = _run_repo(runId, repoPath)
        return await anyio.to_thread.run_sync(runs.rollback, r, runId)

    async def detect_conflicts(
        branches: Annotated[list[str] | None, Field(description="Branch names, in order.")] = None,
        agentResults: Annotated[list[conflicts.AgentResult] | None, Field(  # noqa: N803
            description="Agents' results with their branch (e.g. the run JSON's results).")] = None,
        into: Annotated[str, Field(description="The target (any commit-ish).")] = "HEAD",
        semantic: bool = True,
        validate: Annotated[str | None, Field(
            description="Command run on the integrated tree.")] = None,
        repoPath: RepoPath = None,  # noqa: N803
    ) -> conflicts.ConflictReport:
        """Would these branches merge?  Per pair (which conflict with which, textually or
        semantically) and per branch onto the target: the dry-run merge report with
        conflicts, file overlaps and semantic findings.  Nothing moves."""
        names = conflicts.branches_from(branches, agentResults)
        r = _repo(repoPath)
        return await anyio.to_thread.run_sync(
            lambda: conflicts.detect(r, names, into, semantic, validate))

    add(execute_parallel_workflow, _WRITE)
    add(get_workflow_status, _READ)
    add(cancel_workflow, _WRITE)
    add(rollback_run, _UNDO)
    add(detect_conflicts, _READ)
    _task_file_tools(server, root, add)
    return server


def _task_file_tools(server: OneLineServer, root: Repo, add: Any) -> None:
    """The tools over task files and branches that return the CLI's JSON documents."""

    def _path(p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else root.path / path

    def plan(tasks: str, agents: int = 4, goal: str = "minimize-time") -> dict[str, Any]:
        """Plan a task file (YAML, JSON or spec-kit tasks.md) onto N agents: the
        `forkyard plan --json` document."""
        from forkyard.views.history import History
        from planner import load_tasks
        from planner import plan as make_plan

        tf = load_tasks(_path(tasks))
        durations = History.measured(root, tf.tasks)
        return make_plan(tf, agents=agents, goal=goal,
                         durations=durations or None).model_dump(mode="json")

    def status(run_id: str | None = None) -> dict[str, Any]:
        """Progress of a run (default: the latest): the `forkyard status --json` document."""
        from forkyard.views.status import run_status

        return run_status(root, run_id).model_dump(mode="json")

    async def merge(into: str, sources: list[str], dry_run: bool = False,
                    validate: str | None = None) -> dict[str, Any]:
        """Merge source branches into a target as one transaction (or only check, with
        dry_run): the `forkyard merge --json` document.  A validation runs in a sandbox of
        the merged commit, as on the command line."""
        from forkyard.run.validation import VALIDATE_SLOTS, validator_for
        from merge import merge_sources

        def go() -> dict[str, Any]:
            # The validation runs in a sandbox of the merged commit, as on the CLI.
            return merge_sources(root, into, sources, dry_run=dry_run, validate=validate,
                                 validator=validator_for(root, validate),
                                 validate_slots=VALIDATE_SLOTS).model_dump(mode="json")

        result: dict[str, Any] = await anyio.to_thread.run_sync(go)
        return result

    async def check(sources: list[str] | None = None, into: str = "HEAD",
                    validate: str | None = None) -> dict[str, Any]:
        """Do these branches (names or globs; default: every open forkyard branch)
        integrate into the target?  The `forkyard check --json` document."""
        from forkyard.commands.check import run_check

        def go() -> dict[str, Any]:
            return run_check(root, into=into, branches=sources or (),
                             validate=validate).model_dump(mode="json")

        result: dict[str, Any] = await anyio.to_thread.run_sync(go)
        return result

    add(plan, _PURE)
    add(status, _READ)
    add(merge, _WRITE)
    add(check, _READ)


def serve(repo: str | os.PathLike[str]) -> int:
    """Serve over stdio until the client hangs up."""
    create_server(repo).run("stdio")
    return 0
