"""Exact scheduling with OR-Tools CP-SAT, for small plans (``forkyard plan --optimal``).

OR-Tools is the ``ortools`` extra and is imported here only, when asked for.  Tasks
are intervals; agents are a cumulative resource of capacity N; each conflicting pair
gets a no-overlap constraint; dependencies are precedences.  The heuristic schedule is
given as a hint, so the solver never returns anything worse than it.  Durations are
scaled to integers (CP-SAT works on integers) at 1/100 of the file's unit.
"""

from __future__ import annotations

from collections.abc import Sequence

from planner.errors import PlannerError
from planner.graph import TaskGraph
from planner.schedule import Schedule

#: Plans larger than this are not given to the solver: the model grows quadratically.
MAX_TASKS = 300
SCALE = 100


class OptionalDependencyError(PlannerError, ImportError):
    """``--optimal`` needs the ``ortools`` extra."""

    def __init__(self) -> None:
        super().__init__("--optimal needs OR-Tools: pip install 'forkyard[ortools]'")


def solve(
    graph: TaskGraph,
    durations: Sequence[float],
    agents: int,
    hint: Schedule,
    *,
    time_limit_s: float = 10.0,
    workers: int = 2,
) -> tuple[Schedule, bool] | None:
    """The CP-SAT schedule and whether it is proven optimal; None when it found nothing."""
    try:
        from ortools.sat.python import cp_model
    except ImportError as exc:  # pragma: no cover - the dev install has it
        raise OptionalDependencyError() from exc

    n = len(durations)
    dur = [max(1, round(d * SCALE)) for d in durations]
    horizon = sum(dur)
    model = cp_model.CpModel()
    starts = [model.new_int_var(0, horizon, f"s{i}") for i in range(n)]
    ends = [model.new_int_var(0, horizon, f"e{i}") for i in range(n)]
    intervals = [model.new_interval_var(starts[i], dur[i], ends[i], f"x{i}") for i in range(n)]
    model.add_cumulative(intervals, [1] * n, agents)
    for i, ps in enumerate(graph.preds):
        for p in ps:
            model.add(starts[i] >= ends[p])
    for a, b in graph.conflicts:
        model.add_no_overlap([intervals[a], intervals[b]])
    makespan = model.new_int_var(0, horizon, "makespan")
    model.add_max_equality(makespan, ends)
    model.minimize(makespan)
    for i in range(n):
        model.add_hint(starts[i], round(hint.start[i] * SCALE))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = 0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    # Rebuild from integer starts in real units: duration stays exact, only starts round.
    start = [solver.value(starts[i]) / SCALE for i in range(n)]
    return assign_agents(graph, durations, start, agents), status == cp_model.OPTIMAL


def assign_agents(graph: TaskGraph, durations: Sequence[float], start: Sequence[float],
                  agents: int) -> Schedule:
    """Give intervals to agents (interval partitioning: the cumulative bound makes N enough).

    Starts are re-timed to be at least every dependency's end and every earlier
    conflicting task's end, so rounding can never make the schedule infeasible.
    """
    import heapq

    n = len(durations)
    order = sorted(range(n), key=lambda i: (start[i], i))
    s = [0.0] * n
    e = [0.0] * n
    agent = [0] * n
    free: list[tuple[float, int]] = [(0.0, a) for a in range(agents)]
    placed = [False] * n
    for i in order:
        t = start[i]
        for p in graph.preds[i]:
            t = max(t, e[p])
        for j in graph.conflict_adj[i]:
            if placed[j]:
                t = max(t, e[j])
        avail, a = heapq.heappop(free)
        t = max(t, avail)
        s[i], e[i], agent[i] = t, t + durations[i], a
        placed[i] = True
        heapq.heappush(free, (e[i], a))
    return Schedule(tuple(s), tuple(e), tuple(agent), max(e, default=0.0))
