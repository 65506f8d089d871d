"""The four planning tools: pure computations over :mod:`planner`, no repository needed.

Each tool is a plain function (callable from Python too) whose parameters are the tool's
camelCase arguments and whose result is a model from :mod:`forkyard.mcp.models`; the SDK
turns the signature into the input schema and the model into the output schema.

Cycles.  ``analyze_task_parallelizability`` and ``create_dependency_graph`` report a
dependency cycle instead of failing: ``hasCycles`` is true, ``cycles`` names each one as
a closed path (``["a", "b", "a"]``: a depends on b, b on a), and the derived answers
(batches, critical path, implicit dependencies, score) cover the acyclic part, the tasks
neither on a cycle nor behind one; the rest are listed in ``excludedTasks``.
``optimize_batch_distribution`` must schedule every task and fails on a cycle, naming it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from forkyard.mcp.errors import ToolInputError, summarize_validation
from forkyard.mcp.models import (
    DEFAULT_AGENTS,
    DEFAULT_MINUTES,
    MAX_AGENTS,
    AgentAssignment,
    AgentProgress,
    AgentStatus,
    Aggregation,
    AnalysisResult,
    BatchOut,
    BottleneckOut,
    DependencyGraph,
    DependencyGraphResult,
    DistributionResult,
    Goal,
    GraphEdge,
    GraphNode,
    ImplicitDependencyOut,
    ProgressResult,
    Subtask,
)
from planner import CycleError, Plan, Task, TaskProgress, plan
from planner import aggregate_progress as planner_aggregate_progress
from planner.analysis import critical_path as planner_critical_path
from planner.graph import build_graph
from planner.progress import State

if TYPE_CHECKING:
    # Python callers may pass plain mappings (validated inside each tool); at run time the
    # annotations stay the strict models, which the SDK builds the input schemas from.
    Subtasks = Sequence[Subtask | Mapping[str, Any]]
    AgentProgresses = Sequence[AgentProgress | Mapping[str, Any]]
    GraphInput = DependencyGraph | Mapping[str, Any]
else:
    Subtasks = list[Subtask]
    AgentProgresses = list[AgentProgress]
    GraphInput = DependencyGraph

_SUBTASKS: TypeAdapter[list[Subtask]] = TypeAdapter(list[Subtask])
_PROGRESSES: TypeAdapter[list[AgentProgress]] = TypeAdapter(list[AgentProgress])
_GRAPH: TypeAdapter[DependencyGraph] = TypeAdapter(DependencyGraph)


def validated(adapter: TypeAdapter[Any], value: Any, name: str) -> Any:
    """``value`` through ``adapter``; a failure is one line naming where (``name[0].id``)."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise ToolInputError(summarize_validation(exc, name)) from None


def subtasks_from(value: Any, name: str) -> list[Subtask]:
    """Validated subtasks; an empty list is an error naming ``name``."""
    items: list[Subtask] = validated(_SUBTASKS, value, name)
    if not items:
        raise ToolInputError(f"{name} is empty: give at least one subtask "
                             "{id, description, dependsOn?, estimatedMinutes?, files?}")
    return items


def _tasks_from(value: Any, name: str) -> list[Task]:
    return [s.to_task() for s in subtasks_from(value, name)]


def _blocked_by_cycles(tasks: Sequence[Task]) -> set[str]:
    """Tasks on a dependency cycle or depending on one, transitively: exactly those that
    Kahn's algorithm never peels off."""
    waiting = {t.id: len(set(t.depends_on)) for t in tasks}
    dependents: dict[str, list[str]] = defaultdict(list)
    for t in tasks:
        for dep in set(t.depends_on):
            dependents[dep].append(t.id)
    ready = [tid for tid, n in waiting.items() if n == 0]
    while ready:
        for s in dependents[ready.pop()]:
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.append(s)
    return {tid for tid, n in waiting.items() if n > 0}


def _acyclic_part(tasks: list[Task]) -> tuple[list[Task], list[list[str]], list[str]]:
    """(the tasks that can be scheduled, the cycles, the ids left out).

    ``build_graph`` checks duplicate and unknown ids before cycles, so a ``CycleError``
    here means the ids themselves are sound.
    """
    try:
        build_graph(tasks)
    except CycleError as exc:
        blocked = _blocked_by_cycles(tasks)
        return ([t for t in tasks if t.id not in blocked], exc.cycles,
                [t.id for t in tasks if t.id in blocked])
    return tasks, [], []


def agents_or_default(value: int | None) -> int:
    agents = DEFAULT_AGENTS if value is None else value
    if not 1 <= agents <= MAX_AGENTS:
        raise ToolInputError(f"maxParallelAgents must be between 1 and {MAX_AGENTS}, got {agents}")
    return agents


def batches_of(p: Plan) -> list[BatchOut]:
    return [BatchOut(batch_number=b.index + 1, tasks=list(b.tasks)) for b in p.batches]


def _implicit(p: Plan) -> list[ImplicitDependencyOut]:
    return [ImplicitDependencyOut(from_=d.from_, to=d.to, reason=d.reason)
            for d in p.implicit_dependencies]


def _cycle_text(cycles: Iterable[Sequence[str]]) -> str:
    return "; ".join(" -> ".join(c) for c in cycles)


def _reasoning(p: Plan, description: str, cycles: list[list[str]], excluded: list[str]) -> str:
    """A few sentences a model can relay: the verdict, then the numbers behind it."""
    head = f"{description.strip()[:120]}: " if description.strip() else ""
    if not p.durations:
        return (f"{head}no subtask can be scheduled: every one is on or behind a dependency "
                f"cycle ({_cycle_text(cycles)}). Break the cycle, then analyze again.")
    weakest = min(p.score_factors.items(), key=lambda kv: kv[1])
    parts = [
        f"{head}{p.recommendation}.",
        f"Score {p.score}/100; weakest factor: {weakest[0].replace('_', ' ')} ({weakest[1]:.2f}).",
        f"Critical path {' -> '.join(p.critical_path)} takes {p.critical_path_length:g} of "
        f"{p.total_work:g} minutes of work; with {p.agents} agent(s) no plan can finish "
        f"before {p.lower_bound:g} minutes, this one takes {p.makespan:g}.",
    ]
    if cycles:
        parts.append(f"Dependency cycle(s) {_cycle_text(cycles)} keep {len(excluded)} task(s) "
                     f"out of the batches: {', '.join(excluded)}.")
    return " ".join(parts)


def analyze_task_parallelizability(
    taskDescription: Annotated[str, Field(description="The overall task being split.")],  # noqa: N803
    subtasks: Annotated[Subtasks, Field(description="The subtasks to analyze (at least one).")],
    context: Annotated[str | None, Field(
        description="Notes about the codebase; informational, not used in scoring.")] = None,
    maxParallelAgents: Annotated[int | None, Field(  # noqa: N803
        ge=1, le=MAX_AGENTS, description=f"Agents available (default {DEFAULT_AGENTS}).")] = None,
) -> AnalysisResult:
    """Analyze how well a task's subtasks can run in parallel on several coding agents.

    Returns suggested batches (waves with no dependency or file conflict inside), a 0-100
    parallelization score, the estimated speedup, the critical path, implicit dependencies
    (subtasks touching the same files), risks and a short reasoning.  A dependency cycle is
    reported (hasCycles, cycles), not an error; tasks on or behind it are left out of the
    batches and listed in excludedTasks.
    """
    del context  # part of the contract; the planner works from the subtasks alone
    given = subtasks_from(subtasks, "subtasks")
    tasks = [s.to_task() for s in given]
    kept, cycles, excluded = _acyclic_part(tasks)
    p = plan(kept, agents=agents_or_default(maxParallelAgents))
    risks = list(p.risks)
    if cycles:
        risks.insert(0, f"dependency cycle(s) {_cycle_text(cycles)}: {len(excluded)} task(s) "
                        "cannot be scheduled until it is broken")
    return AnalysisResult(
        parallelizable=p.parallelizable and not cycles,
        parallelization_score=p.score,
        estimated_speedup=p.estimated_speedup,
        suggested_batches=batches_of(p),
        has_cycles=bool(cycles),
        cycles=cycles,
        implicit_dependencies=_implicit(p),
        critical_path=list(p.critical_path),
        risks=risks,
        reasoning=_reasoning(p, taskDescription, cycles, excluded),
        excluded_tasks=excluded,
        subtasks=given,
    )


def create_dependency_graph(
    tasks: Annotated[Subtasks, Field(description="The tasks (at least one).")],
    detectImplicit: Annotated[bool, Field(  # noqa: N803
        description="Also find implicit dependencies: tasks touching the same files.")] = True,
) -> DependencyGraphResult:
    """Build the dependency graph of a task list.

    ``graph.edges`` are the explicit dependencies (``from`` finishes before ``to`` starts).
    ``implicitDependencies`` are pairs of tasks whose files overlap: locks, oriented along
    a topological order so that adding them as edges can never close a cycle.  A cycle is
    reported (hasCycles, cycles), not an error.
    """
    task_list = _tasks_from(tasks, "tasks")
    kept, cycles, excluded = _acyclic_part(task_list)
    graph = build_graph(kept)
    path, _ = planner_critical_path(graph, [t.estimated_minutes for t in kept])
    implicit: list[ImplicitDependencyOut] = []
    if detectImplicit:
        rank = {i: k for k, i in enumerate(graph.topo)}
        for (i, j), reason in sorted(graph.conflicts.items()):
            a, b = (i, j) if rank[i] < rank[j] else (j, i)
            implicit.append(ImplicitDependencyOut(from_=graph.ids[a], to=graph.ids[b],
                                                  reason=reason))
    nodes = [GraphNode(id=t.id, description=t.description, estimated_minutes=t.estimated_minutes,
                       files=list(t.files)) for t in task_list]
    edges = [GraphEdge(from_=dep, to=t.id)
             for t in task_list for dep in dict.fromkeys(t.depends_on)]
    return DependencyGraphResult(
        graph=DependencyGraph(nodes=nodes, edges=edges), implicit_dependencies=implicit,
        has_cycles=bool(cycles), cycles=cycles,
        critical_path=[graph.ids[i] for i in path], excluded_tasks=excluded)


def _with_edges(tasks: list[Task], graph: DependencyGraph) -> list[Task]:
    """``tasks`` with ``graph``'s edges added as dependencies (unknown ids are an error)."""
    ids = {t.id for t in tasks}
    extra: dict[str, list[str]] = defaultdict(list)
    for e in graph.edges:
        for end in (e.from_, e.to):
            if end not in ids:
                raise ToolInputError(
                    f"dependencyGraph edge {e.from_} -> {e.to} names unknown task {end!r}")
        extra[e.to].append(e.from_)
    return [t.model_copy(update={"depends_on": list(dict.fromkeys([*t.depends_on, *extra[t.id]]))})
            if extra.get(t.id) else t for t in tasks]


def _assignments(p: Plan) -> list[AgentAssignment]:
    """One entry per agent, idle ones included, tasks in start order."""
    per_agent: list[list[str]] = [[] for _ in range(p.agents)]
    minutes = [0.0] * p.agents
    for a in p.assignments:  # sorted by start time
        per_agent[a.agent].append(a.task)
        minutes[a.agent] += a.end - a.start
    return [AgentAssignment(agent_id=f"agent-{k + 1}", tasks=per_agent[k],
                            total_minutes=round(minutes[k], 6)) for k in range(p.agents)]


def optimize_batch_distribution(
    tasks: Annotated[Subtasks, Field(description="The tasks to distribute (at least one).")],
    maxParallelAgents: Annotated[int, Field(ge=1, le=MAX_AGENTS, description="Agents available.")],  # noqa: N803
    optimizationGoal: Annotated[Goal, Field(  # noqa: N803
        description="minimize-time: shortest makespan; minimize-conflicts: tasks sharing a "
                    "file never run together; balance-load: most even agent loads.")],
    dependencyGraph: Annotated[GraphInput | None, Field(  # noqa: N803
        description="A graph from create_dependency_graph: its edges are added as "
                    "dependencies; its nodes are ignored (tasks is the source).")] = None,
) -> DistributionResult:
    """Distribute tasks over agents for a goal: batches, per-agent task lists, makespan.

    Batches are waves with no dependency and no file conflict inside, so tasks naming the
    same file never share a batch.  A dependency cycle is an error naming it.
    """
    task_list = _tasks_from(tasks, "tasks")
    if dependencyGraph is not None:
        task_list = _with_edges(task_list, validated(_GRAPH, dependencyGraph, "dependencyGraph"))
    p = plan(task_list, agents=agents_or_default(maxParallelAgents), goal=optimizationGoal)
    return DistributionResult(batches=batches_of(p), agent_assignments=_assignments(p),
                              estimated_makespan=p.makespan, lower_bound=p.lower_bound)


_STATE: dict[AgentStatus, State] = {
    "idle": "pending", "pending": "pending", "running": "running", "blocked": "running",
    "completed": "done", "failed": "failed", "cancelled": "cancelled"}


def _reported(progresses: list[AgentProgress]) -> dict[str, AgentProgress]:
    """Progress by task id; an agent or a task reported twice is an error."""
    agents: set[str] = set()
    by_task: dict[str, AgentProgress] = {}
    for p in progresses:
        if p.agent_id in agents:
            raise ToolInputError(f"agent {p.agent_id!r} is reported twice")
        agents.add(p.agent_id)
        if p.current_task is None:
            continue
        if p.current_task in by_task:
            raise ToolInputError(f"task {p.current_task!r} is reported by agents "
                                 f"{by_task[p.current_task].agent_id!r} and {p.agent_id!r}")
        by_task[p.current_task] = p
    return by_task


def _bottlenecks(found: Iterable[Any], by_task: Mapping[str, AgentProgress],
                 remaining: Mapping[str, float]) -> list[BottleneckOut]:
    """The planner's bottlenecks, then blocked and failed agents (which it cannot see)."""
    out = [BottleneckOut(task_id=b.task,
                         agent_id=by_task[b.task].agent_id if b.task in by_task else None,
                         reason=b.reason, remaining_minutes=b.remaining_path) for b in found]
    listed = {b.task_id: k for k, b in enumerate(out)}
    for task, p in by_task.items():
        if p.status not in ("blocked", "failed"):
            continue
        why = "agent reports it blocked" if p.status == "blocked" else "failed: needs a retry or a fix"
        if task in listed:
            k = listed[task]
            out[k] = out[k].model_copy(update={"reason": f"{out[k].reason}; {why}"})
        else:
            out.append(BottleneckOut(task_id=task, agent_id=p.agent_id, reason=why,
                                     remaining_minutes=round(remaining.get(task, 0.0), 6)))
    return out


def aggregate_progress(
    agentProgresses: Annotated[AgentProgresses, Field(  # noqa: N803
        description="One entry per agent (at least one).")],
    aggregationStrategy: Annotated[Aggregation, Field(  # noqa: N803
        description="simple: mean of task progress; weighted: by estimated minutes; "
                    "critical-path: share of the critical path done.")] = "simple",
    tasks: Annotated[Subtasks | None, Field(
        description="The whole task list, for estimates and dependencies; tasks no agent "
                    "reports are pending.  Without it each reported task counts as an "
                    f"independent {DEFAULT_MINUTES:g}-minute task.")] = None,
) -> ProgressResult:
    """Aggregate the agents' progress into one percentage, bottlenecks and an ETA (minutes).

    The ETA is max(remaining critical path, remaining work / agents).  A bottleneck is an
    unfinished task with the most work hanging on it, a task running past its estimate, or
    a task whose agent reports it blocked or failed.
    """
    progresses: list[AgentProgress] = validated(_PROGRESSES, agentProgresses, "agentProgresses")
    if not progresses:
        raise ToolInputError("agentProgresses is empty: give one entry per agent")
    by_task = _reported(progresses)
    if tasks is not None:
        task_list = _tasks_from(tasks, "tasks")
        unknown = sorted(set(by_task) - {t.id for t in task_list})
        if unknown:
            raise ToolInputError(f"agentProgresses name task(s) not in tasks: {', '.join(unknown)}")
    else:
        task_list = [Task(id=tid) for tid in by_task]
    if not task_list:
        return ProgressResult(overall_progress=100.0, bottlenecks=[], estimated_time_remaining=0.0)
    p = plan(task_list, agents=len(progresses))
    reports = {t: TaskProgress(state=_STATE[a.status],
                               fraction=1.0 if a.status == "completed" else a.percent_complete / 100)
               for t, a in by_task.items()}
    summary = planner_aggregate_progress(p, reports)
    share = {"simple": summary.simple, "weighted": summary.weighted,
             "critical-path": summary.critical_path}[aggregationStrategy]
    return ProgressResult(
        overall_progress=round(100 * share, 2),
        bottlenecks=_bottlenecks(summary.bottlenecks, by_task, summary.remaining),
        estimated_time_remaining=summary.eta)
