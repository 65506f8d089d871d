"""The run tools: execute_parallel_workflow, get_workflow_status, cancel_workflow,
rollback_run.  A thin layer over :mod:`forkyard.detached`, :func:`run_status` and
:mod:`forkyard.rollback`.

A run started here is a process of its own (its own session): ``execute_parallel_workflow``
returns its id once it has passed its input checks, and the run goes on whether or not the
client stays.  Its state is its journal, which ``get_workflow_status`` reads; with
``waitSeconds`` that tool follows the run and sends progress notifications to a client
that asked for them (a progress token), until the run ends or the time is up.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

import anyio
from pydantic import ConfigDict, Field, field_validator

from forkyard.detached import (
    cancel_run,
    detached_dir,
    reap_finished,
    start_detached_run,
    start_error,
)
from forkyard.mcp.errors import ToolInputError
from forkyard.mcp.models import MAX_AGENTS, Camel, StrictCamel, Subtask
from forkyard.mcp.planning import subtasks_from
from forkyard.rollback import rollback_run as do_rollback
from forkyard.run.options import ExecutorName as Executor
from forkyard.run.options import RunOptions
from forkyard.views.status import RunStatus, run_status
from gitproc.git import Repo
from planner import Limits, TaskFile
from planner.tasks import Defaults, Network, network_value

Strategy = Literal["conservative", "aggressive", "batched"]
#: executionStrategy -> (the run's strategy, its integration mode).
STRATEGIES: dict[str, tuple[str, str]] = {
    "conservative": ("conservative", "stream"), "aggressive": ("aggressive", "stream"),
    "batched": ("conservative", "waves")}


class ResourceLimits(StrictCamel):
    memory_mb: int | None = Field(None, ge=4, description="Memory per agent, MiB (swap off).")
    cpus: float | None = Field(None, gt=0, description="CPU quota per agent, in cores.")
    pids: int | None = Field(None, ge=1, description="Processes per agent.")


class Constraints(StrictCamel):
    resource_limits: ResourceLimits | None = None
    timeout_minutes: float | None = Field(None, gt=0, description="Per task; the tree is killed.")
    network: Network | None = Field(
        None, description="auto (a preset's model API only), none, full, or {allow: [hosts]} "
        "through the run's proxy; true/false mean full/none.")

    _net = field_validator("network", mode="before")(
        classmethod(lambda cls, v: None if v is None else network_value(v)))


class AnalysisInput(Camel):
    """An ``analyze_task_parallelizability`` result; only its ``subtasks`` are used."""

    model_config = ConfigDict(extra="ignore")
    subtasks: list[Subtask] = Field(default_factory=list)


class Started(Camel):
    run_id: str
    repo_path: str
    pid: int


class TaskRow(Camel):
    task_id: str
    status: str
    agent_id: str | None
    elapsed_seconds: float
    progress: float | None
    integrated: bool
    last_line: str


class AgentRow(Camel):
    agent_id: str
    current_task: str | None
    status: Literal["busy", "idle"]
    tasks_done: list[str]


class WorkflowStatus(Camel):
    run_id: str
    state: str = Field(description="running | finished | interrupted | crashed")
    outcome: str | None
    target: str
    percent_complete: float = Field(description="Duration-weighted, 0-100.")
    progress: dict[str, float] = Field(description="simple, weighted, critical_path (0-1).")
    counts: dict[str, int]
    elapsed_seconds: float
    eta_seconds: float
    tasks: list[TaskRow]
    agents: list[AgentRow]
    bottlenecks: list[dict[str, Any]]
    batches: list[dict[str, Any]]
    result: dict[str, Any] | None = Field(
        None, description="Once finished: the run JSON (forkyard run --json).")


class Cancelled(Camel):
    run_id: str
    stopped: bool
    state: str
    outcome: str | None


class RolledBack(Camel):
    run_id: str
    target: str
    restored_sha: str
    undone_sha: str
    kept_ref: str
    worktrees_synced: list[str]


def _agent_id(n: int | None) -> str | None:
    return None if n is None else f"agent-{n + 1}"


def task_file_from(tasks: Any, analysis: Any, constraints: Constraints | None,
                   agent: str | None) -> TaskFile:
    """The task file a run executes, from ``tasks`` or an analysis result's subtasks."""
    if (tasks is None) == (analysis is None):
        raise ToolInputError("give either tasks or analysisResult (the result of "
                             "analyze_task_parallelizability)")
    if tasks is None:
        given = AnalysisInput.model_validate(analysis).subtasks
        if not given:
            raise ToolInputError("analysisResult has no subtasks: pass the whole result of "
                                 "analyze_task_parallelizability")
    else:
        given = subtasks_from(tasks, "tasks")
    missing = [s.id for s in given if s.command is None and s.agent is None]
    if missing and agent is None:
        raise ToolInputError(f"task(s) {', '.join(missing)} have neither command nor agent: "
                             "give each one, or a default agent (e.g. agent='claude')")
    limits: dict[str, Any] = {}
    if constraints is not None:
        if constraints.resource_limits is not None:
            limits.update(constraints.resource_limits.model_dump(exclude_none=True,
                                                                 by_alias=False))
        if constraints.timeout_minutes is not None:
            limits["timeout_s"] = constraints.timeout_minutes * 60
        if constraints.network is not None:
            limits["network"] = constraints.network
    defaults = Defaults(limits=Limits().merged(limits))
    return TaskFile(defaults=defaults, tasks=[s.to_task() for s in given])


def start(repo: Repo, tasks: Any, analysis: Any, strategy: Strategy, agents: int,
          constraints: Constraints | None, into: str | None, validate: str | None,
          agent: str | None, executor: Executor = "local",
          ray_address: str | None = None) -> Started:
    """Start the run in the background; see the module docstring."""
    if not 1 <= agents <= MAX_AGENTS:
        raise ToolInputError(f"maxParallelAgents must be between 1 and {MAX_AGENTS}")
    run_strategy, mode = STRATEGIES[strategy]
    options = RunOptions.model_validate({
        "agents": agents, "strategy": run_strategy, "mode": mode, "into": into,
        "validate_command": validate, "agent": agent, "executor": executor,
        "ray_address": ray_address})
    taskfile = task_file_from(tasks, analysis, constraints, agent)
    run = start_detached_run(repo, taskfile, options)
    return Started(run_id=run.run_id, repo_path=str(repo.path), pid=run.pid)


def _agents(st: RunStatus) -> list[AgentRow]:
    rows: dict[int, AgentRow] = {}
    for t in st.tasks:
        if t.agent is None:
            continue
        row = rows.setdefault(t.agent, AgentRow(agent_id=f"agent-{t.agent + 1}",
                                                current_task=None, status="idle", tasks_done=[]))
        if t.status == "running":
            rows[t.agent] = row.model_copy(update={"current_task": t.task, "status": "busy"})
        elif t.status in ("succeeded", "failed", "timed_out", "oom_killed", "cancelled"):
            rows[t.agent] = row.model_copy(update={"tasks_done": [*row.tasks_done, t.task]})
    return [rows[k] for k in sorted(rows)]


def status(repo: Repo, run_id: str) -> WorkflowStatus:
    """A run's progress from its journal; with the run JSON once it has finished."""
    reap_finished()
    if not (repo.forkyard_dir / "runs" / run_id).exists():
        # Not started (yet): a background start that failed says why.
        err = start_error(detached_dir(repo, run_id))
        if err is not None:
            raise err
    st = run_status(repo, run_id)
    result = None
    result_file = repo.forkyard_dir / "runs" / st.run_id / "result.json"
    if st.state != "running" and result_file.exists():
        result = json.loads(result_file.read_text())
    return WorkflowStatus(
        run_id=st.run_id, state=st.state, outcome=st.outcome, target=st.target,
        percent_complete=round(100 * st.progress.get("weighted", 0.0), 2),
        progress=st.progress, counts=st.counts, elapsed_seconds=st.elapsed_s,
        eta_seconds=st.eta_s,
        tasks=[TaskRow(task_id=t.task, status=t.status, agent_id=_agent_id(t.agent),
                       elapsed_seconds=t.elapsed_s, progress=t.progress,
                       integrated=t.integrated, last_line=t.last_line) for t in st.tasks],
        agents=_agents(st), bottlenecks=st.bottlenecks,
        batches=[b.model_dump() for b in st.batches], result=result)


async def follow(repo: Repo, run_id: str, wait_s: float, ctx: Any) -> WorkflowStatus:
    """Status, after following the run for up to ``wait_s`` seconds (progress sent to
    ``ctx`` as tasks finish)."""
    deadline = time.monotonic() + wait_s
    last: tuple[int, str] | None = None
    while True:
        st = await anyio.to_thread.run_sync(status, repo, run_id)
        done = sum(1 for t in st.tasks if t.status not in ("queued", "running", "retry_wait"))
        running = [t.task_id for t in st.tasks if t.status == "running"]
        mark = (done, ",".join(running))
        if ctx is not None and mark != last:
            msg = f"{done}/{len(st.tasks)} tasks done" + (
                f"; running: {', '.join(running)}" if running else "")
            await ctx.report_progress(done, len(st.tasks), msg)
            last = mark
        if st.state != "running" or time.monotonic() >= deadline:
            return st
        await anyio.sleep(0.25)


def cancel(repo: Repo, run_id: str) -> Cancelled:
    stopped = cancel_run(repo, run_id)
    st = run_status(repo, run_id)
    return Cancelled(run_id=st.run_id, stopped=stopped, state=st.state, outcome=st.outcome)


def rollback(repo: Repo, run_id: str) -> RolledBack:
    rb = do_rollback(repo, run_id)
    return RolledBack(run_id=rb.run_id, target=rb.target, restored_sha=rb.restored_sha,
                      undone_sha=rb.undone_sha, kept_ref=rb.kept_ref,
                      worktrees_synced=rb.worktrees_synced)


ExecutionStrategy = Annotated[Strategy, Field(
    description="conservative: integrate finished work as it comes, stop at the first "
                "failure; aggressive: bisect a bad batch, land the rest; batched: one "
                "batch per planned wave.")]
