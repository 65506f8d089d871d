"""The plan: :func:`plan` turns tasks into a :class:`Plan` (graph + schedule + analysis).

``Plan.model_dump(mode="json")`` is the ``forkyard plan --json`` document of docs/architecture.md
(plus extras: risks, recommendation, score_factors, speedup_bounds, dependencies,
conflicts, durations).  The run loop reads ``batches``, ``assignments``,
``dependencies`` and ``conflicts`` from it.

Goals:

- ``minimize-time``: smallest makespan (then the most even agent loads).
- ``minimize-conflicts``: conflicting tasks become real orderings, so the later one
  starts from the earlier one's merged work instead of merely not overlapping it; the
  order is the one the minimize-time schedule chose, so makespan does not suffer.
  Batches never hold two conflicting tasks (true for every goal here).
- ``balance-load``: the most even agent loads among schedules within 10% of the best
  makespan; a starting task takes the least-loaded free agent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from planner import analysis
from planner import optimal as optimal_mod
from planner.errors import PlannerError
from planner.graph import TaskGraph, build_graph
from planner.schedule import EPS, GOALS, Schedule, default_passes, search
from planner.tasks import Task, TaskFile

Goal = Literal["minimize-time", "minimize-conflicts", "balance-load"]


class BadPlanRequestError(PlannerError, ValueError):
    """An impossible request: zero agents, an unknown goal, a duration for no task."""


class ImplicitDependency(BaseModel):
    """Two tasks that touch a common file: a lock (``from`` is scheduled first)."""

    # serialize_by_alias: a plain model_dump() must say "from", as the JSON contract does.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True, frozen=True)

    from_: str = Field(alias="from")
    to: str
    reason: str


class Batch(BaseModel):
    """A wave: tasks with no dependency or conflict among them, in schedule order."""

    model_config = ConfigDict(frozen=True)

    index: int
    tasks: list[str]


class Assignment(BaseModel):
    """One task on one agent, from ``start`` to ``end`` (the task file's unit)."""

    model_config = ConfigDict(frozen=True)

    task: str
    agent: int
    start: float
    end: float


class Plan(BaseModel):
    """A schedule of tasks on agents, with its analysis.  See the module docstring."""

    model_config = ConfigDict(frozen=True)

    agents: int
    goal: Goal
    total_work: float
    makespan: float
    lower_bound: float
    critical_path: list[str]
    critical_path_length: float
    estimated_speedup: float
    parallelizable: bool
    score: int
    implicit_dependencies: list[ImplicitDependency]
    batches: list[Batch]
    assignments: list[Assignment]
    # Extras beyond the documented fields.
    speedup_bounds: tuple[float, float] = Field(description="(low, high) estimated speedup")
    score_factors: dict[str, float]
    max_parallelism: int = Field(description="Most tasks running at once in this schedule.")
    risks: list[str]
    recommendation: str
    dependencies: dict[str, list[str]] = Field(
        description="Each task's dependencies, including conflicts ordered by minimize-conflicts.")
    conflicts: list[tuple[str, str]] = Field(description="Pairs that never run at the same time.")
    durations: dict[str, float] = Field(description="Duration used per task (estimate or measured).")
    optimal: bool = Field(False, description="Proven optimal (lower bound reached, or CP-SAT).")
    solver: str = Field("list", description="list | cp-sat")
    passes: int = Field(0, description="Improvement passes run.")

    def assignment(self, task: str) -> Assignment:
        """The assignment of ``task``."""
        for a in self.assignments:
            if a.task == task:
                return a
        raise KeyError(task)

    def agent_load(self) -> list[float]:
        """Busy time per agent."""
        out = [0.0] * self.agents
        for a in self.assignments:
            out[a.agent] += a.end - a.start
        return out


def _batches(graph: TaskGraph, sched: Schedule) -> list[list[int]]:
    """Cut the schedule into waves: a new wave starts when a task depends on, or
    conflicts with, a task already in the current one (tasks taken in start order)."""
    order = sorted(range(len(graph)), key=lambda i: (sched.start[i], sched.agent[i], i))
    waves: list[list[int]] = []
    current: set[int] = set()
    for i in order:
        if not waves or any(p in current for p in graph.preds[i]) or any(
                j in current for j in graph.conflict_adj[i]):
            waves.append([])
            current = set()
        waves[-1].append(i)
        current.add(i)
    return waves


def plan(
    tasks: TaskFile | Sequence[Task],
    agents: int = 4,
    goal: str = "minimize-time",
    *,
    optimal: bool = False,
    passes: int | None = None,
    seed: int = 0,
    durations: Mapping[str, float] | None = None,
    time_limit_s: float = 10.0,
) -> Plan:
    """Plan ``tasks`` onto ``agents`` agents for ``goal``.

    ``durations`` overrides estimates per task id (the run loop feeds measured history);
    ``passes`` bounds the improvement passes (default: by plan size); ``seed`` makes the
    randomised passes reproducible; ``optimal`` also runs CP-SAT (plans up to
    :data:`planner.optimal.MAX_TASKS` tasks, ``time_limit_s`` seconds).
    Raises :class:`~planner.errors.PlannerError` subclasses for bad input.
    """
    task_list = list(tasks.tasks if isinstance(tasks, TaskFile) else tasks)
    if agents < 1:
        raise BadPlanRequestError(f"agents must be at least 1, got {agents}")
    if goal not in GOALS:
        raise BadPlanRequestError(f"unknown goal {goal!r}; choose one of {', '.join(GOALS)}")
    graph = build_graph(task_list)
    overrides = dict(durations or {})
    unknown = sorted(set(overrides) - set(graph.index))
    if unknown:
        raise BadPlanRequestError(f"durations given for unknown task(s): {', '.join(unknown)}")
    bad = [k for k, v in overrides.items() if not v > 0]
    if bad:
        raise BadPlanRequestError(f"durations must be positive: {', '.join(sorted(bad))}")
    dur = [float(overrides.get(t.id, t.estimated_minutes)) for t in task_list]
    b = analysis.bounds(graph, dur, agents)
    n = len(task_list)
    # With whole-number durations some optimal schedule has whole-number starts (shift
    # every task left until it touches an end), so the bound rounds up; reaching it stops
    # the search and proves optimality.
    target = math.ceil(b.lower_bound - EPS) if all(d == int(d) for d in dur) else b.lower_bound
    budget = default_passes(n) if passes is None else max(0, passes)

    def makespan_first(s: Schedule) -> tuple[float, ...]:
        loads = s.loads(agents)
        return (round(s.makespan, 9), round(max(loads) - min(loads), 9))

    if n == 0:
        sched = Schedule((), (), (), 0.0)
        used = 0
    else:
        result = search(graph, dur, agents, key=makespan_first, lower_bound=target,
                        passes=budget, seed=seed)
        sched, used = result.schedule, result.passes_run
    solver, proven = "list", n == 0 or sched.makespan <= target + EPS
    if optimal and n and not proven:
        if n > optimal_mod.MAX_TASKS:
            raise BadPlanRequestError(
                f"--optimal is for small plans (up to {optimal_mod.MAX_TASKS} tasks); this one has {n}")
        found = optimal_mod.solve(graph, dur, agents, sched, time_limit_s=time_limit_s)
        if found is not None and found[0].makespan < sched.makespan - EPS:
            sched, solver = found[0], "cp-sat"
        if found is not None:
            proven = proven or found[1]
    if goal == "minimize-conflicts" and graph.conflicts:
        # Orient each lock along the chosen schedule and make it an ordering; the chosen
        # schedule stays feasible, so the search can only match or beat it.
        edges = [(a, c) if sched.start[a] <= sched.start[c] else (c, a) for a, c in graph.conflicts]
        graph = graph.with_edges(edges)
        result = search(graph, dur, agents, key=makespan_first, lower_bound=target,
                        passes=budget, seed=seed)
        if makespan_first(result.schedule) <= makespan_first(sched):
            sched = result.schedule
        used += result.passes_run
    elif goal == "balance-load" and n:
        limit = sched.makespan * 1.1 + EPS

        def even_first(s: Schedule) -> tuple[float, ...]:
            loads = s.loads(agents)
            return (0.0 if s.makespan <= limit else 1.0, round(max(loads) - min(loads), 9),
                    round(s.makespan, 9))

        result = search(graph, dur, agents, key=even_first, lower_bound=-1.0, passes=budget,
                        seed=seed, least_loaded=True)
        if even_first(result.schedule) < even_first(sched):
            sched = result.schedule
        used += result.passes_run
    built = _build(task_list, graph, dur, sched, agents, goal, b, solver, proven, used)
    if isinstance(tasks, TaskFile):
        short = timeout_risks(tasks, built.durations)
        if short:
            built = built.model_copy(update={"risks": [*built.risks, *short]})
    return built


def timeout_risks(taskfile: TaskFile, minutes: Mapping[str, float]) -> list[str]:
    """Tasks whose ``timeout_s`` is below what they are expected to take: killed before
    they can finish, unless the estimate is pessimistic."""
    out = []
    for task in taskfile.tasks:
        timeout = taskfile.limits_for(task).timeout_s
        expected = minutes.get(task.id, task.estimated_minutes) * 60.0
        if timeout is not None and timeout < expected:
            out.append(f"task {task.id!r} has timeout_s {timeout:g} but is expected to take "
                       f"{expected:g}s: it will likely be killed first")
    return out


def _build(tasks: Sequence[Task], graph: TaskGraph, dur: Sequence[float], sched: Schedule,
           agents: int, goal: str, b: analysis.Bounds, solver: str, proven: bool,
           used: int) -> Plan:
    ids = graph.ids
    defaulted = [t.id for t in tasks if "estimated_minutes" not in t.model_fields_set]
    a = analysis.assess(graph, dur, sched, agents, b, defaulted=defaulted)
    implicit = []
    for (i, j), reason in sorted(graph.conflicts.items()):
        first, second = (i, j) if (sched.start[i], i) <= (sched.start[j], j) else (j, i)
        implicit.append(ImplicitDependency(from_=ids[first], to=ids[second], reason=reason))
    order = sorted(range(len(ids)), key=lambda i: (sched.start[i], sched.agent[i], i))
    return Plan(
        agents=agents,
        goal=goal,  # type: ignore[arg-type]  # validated against GOALS above
        total_work=round(b.total_work, 6),
        makespan=round(sched.makespan, 6),
        lower_bound=round(b.lower_bound, 6),
        critical_path=[ids[i] for i in b.critical_path],
        critical_path_length=round(b.critical_path_length, 6),
        estimated_speedup=a.estimated_speedup,
        parallelizable=a.parallelizable,
        score=a.score,
        implicit_dependencies=implicit,
        batches=[Batch(index=k, tasks=[ids[i] for i in w]) for k, w in enumerate(_batches(graph, sched))],
        assignments=[Assignment(task=ids[i], agent=sched.agent[i], start=round(sched.start[i], 6),
                                end=round(sched.end[i], 6)) for i in order],
        speedup_bounds=a.speedup_bounds,
        score_factors=a.score_factors,
        max_parallelism=a.max_parallelism,
        risks=a.risks,
        recommendation=a.recommendation,
        dependencies=graph.dependencies(),
        conflicts=[(ids[i], ids[j]) for i, j in sorted(graph.conflicts)],
        durations={ids[i]: dur[i] for i in range(len(ids))},
        optimal=proven,
        solver=solver,
        passes=used,
    )
