"""The run JSON, built from the journal (so a finished, resumed or crashed run reads alike)."""

from __future__ import annotations

from forkyard.journal.metrics import compute
from forkyard.journal.models import (
    Attempt,
    BatchResult,
    FileChange,
    LimitsReport,
    RunResult,
    TaskResult,
    TokenUsage,
)
from forkyard.journal.state import RunManifest, RunView, TaskView
from planner import Plan, TaskFile
from sandbox.network import policy_for


def _task_result(t: TaskView, limits: LimitsReport) -> TaskResult:
    status = t.status if t.done else "cancelled"  # still running when the run ended: cut off
    reason = t.reason or t.skip_reason or (t.message if status != "succeeded" else "")
    if status == "succeeded" and t.rejected and not t.integrated:
        status = "rejected"  # it ran fine, but its batch would not take it
    report = t.agent_report if isinstance(t.agent_report, dict) else {}
    tokens = None
    if report:
        tokens = TokenUsage(input=int(report.get("input_tokens") or 0),
                            output=int(report.get("output_tokens") or 0))
    return TaskResult(
        task=t.id, status=status,  # type: ignore[arg-type]
        exit_code=t.exit_code, duration_s=round(t.duration_s, 3), agent=t.agent,
        branch=t.branch, commit=t.commit, integrated=t.integrated and status == "succeeded",
        reason=reason,
        attempts=[Attempt(n=a["n"], status=a["status"], agent=a["agent"], commit=a["commit"],
                          ref=a["ref"], duration_s=round((a["end"] or a["start"]) - a["start"], 3))
                  for a in t.history],
        files_modified=[FileChange(path=p, added=a, removed=r) for p, a, r in t.files_modified],
        limits=limits.model_copy(update={"enforced_by": t.enforced_by}),
        log_tail=t.log_tail, message=t.message,
        no_changes=status == "succeeded" and not t.commit and not t.files_modified,
        final_message=str(report["final_message"]) if report.get("final_message") else None,
        tokens=tokens,
    )


def outcome_of(view: RunView, results: list[TaskResult]) -> str:
    if view.interrupted:
        return "cancelled"
    if results and all(r.status == "succeeded" and r.integrated for r in results):
        return "succeeded"
    if any(r.integrated and r.commit for r in results):
        return "partial"
    return "failed" if results else "succeeded"


def build_result(manifest: RunManifest, view: RunView, plan: Plan, tip_after: str) -> RunResult:
    """The :class:`RunResult` of a run, from its manifest, replayed events and final tip."""
    taskfile = TaskFile.model_validate(manifest.taskfile)
    order = [a.task for a in sorted(plan.assignments, key=lambda a: (a.start, a.agent))]
    order += [t.id for t in taskfile.tasks if t.id not in order]
    results = []
    for tid in order:
        task = next(t for t in taskfile.tasks if t.id == tid)
        lim = taskfile.limits_for(task)
        view_t = view.tasks.get(tid) or TaskView(tid, status="cancelled")
        try:
            network = str(policy_for(lim.network, taskfile.agent_for(task).preset))
        except ValueError:  # (a task file validated when the run started)
            network = str(lim.network)
        results.append(_task_result(view_t, LimitsReport(
            memory_mb=lim.memory_mb, cpus=lim.cpus, pids=lim.pids, network=network)))
    batches = [
        BatchResult(index=b.index, tasks=b.tasks,
                    outcome="committed" if b.outcome == "committed" else "rolled_back",
                    landed=b.landed, rejected=b.rejected if b.outcome == "committed" else b.tasks,
                    conflicts=b.conflicts, validation=b.validation)
        for b in sorted(view.batches, key=lambda b: b.index)
    ]
    deps = {t.id: list(plan.dependencies.get(t.id, t.depends_on)) for t in taskfile.tasks}
    agents = manifest.options.agents
    metrics = compute(
        wall_s=view.wall_s,
        busy_s={t.id: t.busy_s for t in view.tasks.values()},
        last_s={t.id: t.duration_s for t in view.tasks.values() if t.done},
        order=order, deps=deps, agents=agents,
        estimated_speedup=plan.estimated_speedup,
        agents_used=len({t.agent for t in view.tasks.values() if t.agent is not None}),
    )
    counted = [r.tokens for r in results if r.tokens is not None]
    return RunResult(
        run_id=manifest.run_id, outcome=outcome_of(view, results),  # type: ignore[arg-type]
        target=manifest.target, target_sha_before=manifest.target_sha_before,
        target_sha_after=tip_after, results=results, batches=batches, metrics=metrics,
        tokens=TokenUsage(input=sum(c.input for c in counted),
                          output=sum(c.output for c in counted)) if counted else None,
    )
