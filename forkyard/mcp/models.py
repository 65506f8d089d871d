"""The MCP tools' wire models: camelCase on the wire, snake_case in Python.

Inputs are strict (an unknown or misspelt key is an error rather than a silently ignored
dependency); outputs are what the SDK turns into each tool's output schema and
``structuredContent``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from planner import Task

#: Agents assumed when ``maxParallelAgents`` is not given (the CLI's default too).
DEFAULT_AGENTS = 4
#: Minutes assumed for a task without an estimate (the planner's default).
DEFAULT_MINUTES = 30.0
#: Upper bound on agents: a typo like 10000 fails at once instead of planning for minutes.
MAX_AGENTS = 1000

Goal = Literal["minimize-time", "minimize-conflicts", "balance-load"]
Aggregation = Literal["simple", "weighted", "critical-path"]
AgentStatus = Literal["idle", "pending", "running", "blocked", "completed", "failed", "cancelled"]


class Camel(BaseModel):
    """camelCase on the wire; either spelling accepted on the way in."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True, frozen=True)


class StrictCamel(Camel):
    model_config = ConfigDict(extra="forbid")


def _id_text(value: Any) -> Any:
    # JSON clients often number their subtasks (1, 2, 3): a number is an id too.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


TaskId = Annotated[str, BeforeValidator(_id_text),
                   Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                         description="Task id: letters, digits, '.', '_' or '-'.")]


class Subtask(StrictCamel):
    """One unit of agent work, as the tools take it."""

    id: TaskId
    description: str = ""
    depends_on: list[TaskId] = Field(default_factory=list,
                                     description="Ids of the subtasks that must finish first.")
    estimated_minutes: float | None = Field(
        None, gt=0, description=f"Estimated duration; {DEFAULT_MINUTES:g} minutes when omitted.")
    files: list[str] = Field(default_factory=list,
                             description="Paths or globs the subtask expects to touch.")
    command: str | None = Field(
        None, description="execute_parallel_workflow only: the agent command for this task "
                          "(a shell command, run in the task's worktree).")
    agent: str | None = Field(
        None, description="execute_parallel_workflow only: an agent preset (claude, codex, "
                          "aider, gemini, shell) or a command template.")

    def to_task(self) -> Task:
        """The planner's :class:`~planner.Task` for this subtask."""
        fields: dict[str, Any] = {"id": self.id, "description": self.description,
                                  "depends_on": list(self.depends_on), "files": list(self.files)}
        # Only an estimate that was given: the planner flags defaulted ones as a risk.
        if self.estimated_minutes is not None:
            fields["estimated_minutes"] = self.estimated_minutes
        if self.command is not None:
            fields["command"] = self.command
        if self.agent is not None:
            fields["agent"] = self.agent
        return Task(**fields)


class BatchOut(Camel):
    """A wave of tasks with no dependency or file conflict among them (numbered from 1)."""

    batch_number: int
    tasks: list[str]


class ImplicitDependencyOut(Camel):
    """Two tasks touching a common file: a lock, ``from`` scheduled before ``to``."""

    from_: str = Field(alias="from")
    to: str
    reason: str


class GraphNode(Camel):
    id: str
    description: str = ""
    estimated_minutes: float = DEFAULT_MINUTES
    files: list[str] = Field(default_factory=list)


class GraphEdge(Camel):
    """``from`` finishes before ``to`` starts."""

    from_: str = Field(alias="from")
    to: str


class DependencyGraph(Camel):
    """Nodes and explicit dependency edges (``create_dependency_graph``'s ``graph``)."""

    nodes: list[GraphNode] = Field(default_factory=list)
    edges: list[GraphEdge] = Field(default_factory=list)


class AnalysisResult(Camel):
    parallelizable: bool = Field(description="The estimated speedup is worth the merging (>= 1.5x).")
    parallelization_score: int = Field(ge=0, le=100)
    estimated_speedup: float
    suggested_batches: list[BatchOut]
    has_cycles: bool
    cycles: list[list[str]] = Field(description="Closed paths; a -> b reads 'a depends on b'.")
    implicit_dependencies: list[ImplicitDependencyOut]
    critical_path: list[str]
    risks: list[str]
    reasoning: str
    excluded_tasks: list[str] = Field(
        default_factory=list, description="Tasks on or behind a cycle, left out of the batches.")
    subtasks: list[Subtask] = Field(
        default_factory=list, description="The subtasks analyzed, as given: pass this whole "
                                          "result to execute_parallel_workflow to run them.")


class DependencyGraphResult(Camel):
    graph: DependencyGraph
    implicit_dependencies: list[ImplicitDependencyOut]
    has_cycles: bool
    cycles: list[list[str]]
    critical_path: list[str]
    excluded_tasks: list[str] = Field(default_factory=list)


class AgentAssignment(Camel):
    agent_id: str
    tasks: list[str] = Field(description="In the order the agent runs them.")
    total_minutes: float


class DistributionResult(Camel):
    batches: list[BatchOut]
    agent_assignments: list[AgentAssignment]
    estimated_makespan: float = Field(description="Minutes until the last task ends.")
    lower_bound: float = Field(description="No schedule can finish sooner (minutes).")


class AgentProgress(StrictCamel):
    """What one agent reports."""

    agent_id: str = Field(min_length=1)
    current_task: TaskId | None = None
    percent_complete: float = Field(0.0, ge=0, le=100)
    status: AgentStatus = "running"


class BottleneckOut(Camel):
    task_id: str
    agent_id: str | None
    reason: str
    remaining_minutes: float


class ProgressResult(Camel):
    overall_progress: float = Field(ge=0, le=100, description="Percent, by the chosen strategy.")
    bottlenecks: list[BottleneckOut]
    estimated_time_remaining: float = Field(description="Minutes until every task is resolved.")
