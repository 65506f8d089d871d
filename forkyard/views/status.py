"""A run's progress, from its journal: what ``forkyard status`` and the MCP ``status`` tool show.

Works while the run is going (from another process: the journal is append-only, whole
lines) and after it ended or crashed.  Progress is aggregated with the planner's strategies
(simple, duration-weighted, critical path) and comes with the planner's bottlenecks and ETA.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from forkyard.journal.events import resolve_run
from forkyard.journal.state import RunManifest, RunView, TaskView, load_view
from gitproc.git import Repo
from gitproc.lock import held_by_its_writer
from planner import Plan, aggregate_progress

# planner.progress speaks "done"; the run speaks "succeeded" (and "retry_wait" is pending).
_STATE = {"succeeded": "done", "queued": "pending", "retry_wait": "pending", "lost": "pending"}


class TaskStatusRow(BaseModel):
    task: str
    status: str
    agent: int | None
    elapsed_s: float
    progress: float | None
    integrated: bool
    last_line: str
    reason: str = ""
    no_changes: bool = False      # succeeded having changed nothing
    tokens: dict[str, int] | None = None   # {"input": n, "output": n} from the agent CLI


class BatchStatusRow(BaseModel):
    index: int
    tasks: list[str]
    outcome: str
    landed: list[str]
    rejected: list[str]
    conflicts: list[dict[str, Any]]


class RunStatus(BaseModel):
    """``forkyard status --json``."""

    run_id: str
    state: str              # running | finished | interrupted | crashed
    outcome: str | None
    target: str
    elapsed_s: float
    counts: dict[str, int]
    progress: dict[str, float]      # simple, weighted, critical_path (0..1)
    eta_s: float
    bottlenecks: list[dict[str, Any]]
    tasks: list[TaskStatusRow]
    batches: list[BatchStatusRow]
    dead_for_s: float = 0.0
    """crashed: how long ago the run's last event was written (its process is gone)."""


def _elapsed(t: TaskView, now: float) -> float:
    if t.status in ("running", "lost") and t.started:
        return now - t.started
    return t.duration_s


def _row_status(t: TaskView) -> str:
    if t.status == "succeeded" and t.rejected and not t.integrated:
        return "rejected"
    return t.status


def progress_summary(plan: Plan, view: RunView, now: float | None = None) -> Any:
    """The planner's :class:`ProgressSummary` for this run (times in the plan's minutes)."""
    now = now or time.time()
    progress: dict[str, dict[str, Any]] = {}
    for tid, t in view.tasks.items():
        if tid not in plan.durations:
            continue
        state = _STATE.get(t.status, t.status)
        fraction = 1.0 if state == "done" else t.progress
        progress[tid] = {"state": state, "fraction": fraction,
                         "elapsed": max(0.0, _elapsed(t, now)) / 60.0}
    return aggregate_progress(plan, progress, elapsed=view.wall_s / 60.0)


def run_status(repo: Repo, run_id: str | None = None) -> RunStatus:
    """The status of run ``run_id`` (default: the latest run in ``repo``)."""
    paths = resolve_run(repo, run_id)
    manifest = RunManifest.load(paths)
    plan = Plan.model_validate(manifest.plan)
    view = load_view(paths)
    now = time.time()
    if view.finished:
        state = "finished"
    elif view.interrupted:
        state = "interrupted"
    else:
        state = "running" if _lock_held(paths.lock) else "crashed"
    if state == "running" and view.segments:
        view.segments[-1][1] = now
    # A crashed run: its tasks are not running any more, whatever the journal's last
    # word was; their clocks stop at the last event, the run's too.
    task_now = now if state == "running" else view.last_ts
    if state == "crashed":
        for t in view.tasks.values():
            if t.status in ("running", "retry_wait"):
                t.status = "lost"
    summary = progress_summary(plan, view, now)
    counts: dict[str, int] = {}
    for t in view.tasks.values():
        counts[t.status] = counts.get(t.status, 0) + 1
    return RunStatus(
        run_id=view.run_id, state=state, outcome=view.outcome, target=manifest.target,
        elapsed_s=round(view.wall_s, 3), counts=counts,
        progress={"simple": summary.simple, "weighted": summary.weighted,
                  "critical_path": summary.critical_path},
        eta_s=round(summary.eta * 60.0, 1) if state == "running" else 0.0,
        bottlenecks=[b.model_dump() for b in summary.bottlenecks] if state == "running" else [],
        tasks=[TaskStatusRow(task=t.id, status=_row_status(t), agent=t.agent,
                             elapsed_s=round(_elapsed(t, task_now), 2), progress=t.progress,
                             integrated=t.integrated, last_line=t.last_line,
                             reason=t.reason or t.skip_reason, no_changes=t.no_changes,
                             tokens=None if t.tokens is None else
                             {"input": t.tokens[0], "output": t.tokens[1]})
               for t in view.tasks.values()],
        dead_for_s=round(now - view.last_ts, 1) if state == "crashed" else 0.0,
        batches=[BatchStatusRow(index=b.index, tasks=b.tasks, outcome=b.outcome,
                                landed=b.landed, rejected=b.rejected, conflicts=b.conflicts)
                 for b in view.batches],
    )


def _lock_held(path: Any) -> bool:
    """Whether the run's process is alive and holds the run's lock (so a silent run is
    running, not dead; a child it was starting when killed does not count)."""
    return held_by_its_writer(path)
