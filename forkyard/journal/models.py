"""What a run returns (pydantic, at the boundary): ``forkyard run --json`` is exactly
``RunResult.model_dump(mode="json")`` (the run JSON of docs/architecture.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskStatus = Literal["succeeded", "failed", "timed_out", "oom_killed", "cancelled", "skipped",
                     "rejected"]
RunOutcome = Literal["succeeded", "partial", "failed", "cancelled"]
Strategy = Literal["conservative", "aggressive"]
Mode = Literal["stream", "waves"]


class FileChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    added: int
    removed: int


class LimitsReport(BaseModel):
    """The limits a task ran under and what enforced them."""

    model_config = ConfigDict(frozen=True)

    memory_mb: int | None = None
    cpus: float | None = None
    pids: int | None = None
    network: str = "none"  # the policy it ran under: none, full, "allow: host, ..."
    enforced_by: str = "none"


class Attempt(BaseModel):
    """One attempt at a task; ``ref`` keeps its commit reachable whatever becomes of the
    task's branch (``refs/forkyard/attempts/<run>/<task>/<n>``)."""

    n: int
    status: str
    agent: int | None = None
    duration_s: float = 0.0
    commit: str | None = None
    ref: str | None = None


class TokenUsage(BaseModel):
    """Tokens an agent CLI reported using (its stream's totals)."""

    input: int = 0
    output: int = 0


class TaskResult(BaseModel):
    """One task's outcome in a run."""

    task: str
    status: TaskStatus
    exit_code: int | None = None
    duration_s: float = 0.0
    agent: int | None = Field(None, description="Agent slot (0..agents-1) that ran it.")
    branch: str | None = None
    commit: str | None = None
    integrated: bool = False
    reason: str = Field("", description="Why its work did not land (rejected, failed...).")
    attempts: list[Attempt] = Field(default_factory=list)
    files_modified: list[FileChange] = Field(default_factory=list)
    limits: LimitsReport = Field(default_factory=LimitsReport)
    log_tail: str = ""
    message: str = Field("", description="Why it ended as it did (killed, no changes ...).")
    no_changes: bool = Field(False, description="Succeeded (exit 0) having changed nothing.")
    final_message: str | None = Field(None, description="The agent CLI's last message.")
    tokens: TokenUsage | None = Field(None, description="Tokens the agent CLI reported.")


class BatchResult(BaseModel):
    """One integration transaction.  ``outcome`` is ``committed`` when anything landed;
    ``landed`` and ``rejected`` say which of its tasks did (a task rolled back here may
    land in a later batch, e.g. after ``--resume``)."""

    index: int
    tasks: list[str]
    outcome: Literal["committed", "rolled_back"]
    landed: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    conflicts: list[dict[str, Any]] = Field(default_factory=list)
    validation: dict[str, Any] | None = Field(
        None, description="The --validate command's outcome on the batch (also when it passed).")


class Metrics(BaseModel):
    wall_s: float
    total_task_s: float = Field(description="Sum of task durations.")
    actual_speedup: float = Field(description="total_task_s / wall_s.")
    estimated_speedup: float = Field(description="The plan's estimate.")
    overhead_s: float = Field(
        description="wall_s minus the ideal wall time: the makespan of the measured task "
                    "durations list-scheduled on the same agents and dependency graph.")
    agents_used: int
    agent_utilisation: float = Field(
        0.0, description="total_task_s / (wall_s * agents): how busy the agent slots were.")


class RunResult(BaseModel):
    """The result of :func:`sandbox.run_workflow` and ``forkyard run --json``."""

    run_id: str
    outcome: RunOutcome
    target: str
    target_sha_before: str
    target_sha_after: str
    results: list[TaskResult]
    batches: list[BatchResult]
    metrics: Metrics
    tokens: TokenUsage | None = Field(None, description="All tasks' tokens, where reported.")

    def exit_code(self) -> int:
        """0 all landed, 1 failures or conflicts, 130 interrupted."""
        return {"succeeded": 0, "partial": 1, "failed": 1, "cancelled": 130}[self.outcome]

    def result(self, task: str) -> TaskResult:
        for r in self.results:
            if r.task == task:
                return r
        raise KeyError(task)
