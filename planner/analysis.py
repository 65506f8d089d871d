"""What a plan is worth: bounds, speedup, a parallelizability score, risks, advice.

Everything here is arithmetic over a validated :class:`~planner.graph.TaskGraph`, the
task durations and a schedule.  The lower bound is the best any schedule could do:
``max(critical path, total work / agents, heaviest single file)`` — the last because
the tasks touching one file lock each other and so run one after another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from planner.graph import TaskGraph
from planner.schedule import EPS, Schedule, bottom_levels

#: Below this estimated speedup, running in parallel is not worth the merging.
MIN_USEFUL_SPEEDUP = 1.5

#: Weights of the score's factors (they sum to 1).
SCORE_WEIGHTS = {
    "independence": 0.25,
    "dependency_depth": 0.20,
    "file_conflicts": 0.20,
    "task_size": 0.15,
    "balance": 0.20,
}


@dataclass(frozen=True)
class Bounds:
    total_work: float
    critical_path: tuple[int, ...]
    critical_path_length: float
    heaviest_file: str | None
    heaviest_file_work: float
    lower_bound: float


def critical_path(graph: TaskGraph, durations: Sequence[float]) -> tuple[tuple[int, ...], float]:
    """The duration-weighted longest dependency chain and its length."""
    if not len(graph):
        return (), 0.0
    bl = bottom_levels(graph, durations)
    # Start at the root with the largest bottom level (first in file order on ties) and
    # follow the successor that carries the rest of it.
    i = max((r for r in graph.topo if not graph.preds[r]), key=lambda r: (bl[r], -r))
    path = [i]
    while graph.succs[i]:
        i = max(graph.succs[i], key=lambda s: (bl[s], -s))
        path.append(i)
    return tuple(path), bl[path[0]]


def bounds(graph: TaskGraph, durations: Sequence[float], agents: int) -> Bounds:
    """Total work, the critical path and the lower bound on any schedule's makespan."""
    work = float(sum(durations))
    path, length = critical_path(graph, durations)
    heavy, heavy_work = None, 0.0
    for name, owners in sorted(graph.resources.items()):
        if len(owners) > 1:
            w = sum(durations[i] for i in owners)
            if w > heavy_work + EPS:
                heavy, heavy_work = name, w
    lower = max(length, work / agents if agents else work, heavy_work)
    return Bounds(work, path, length, heavy, heavy_work, lower)


@dataclass(frozen=True)
class Assessment:
    estimated_speedup: float
    speedup_bounds: tuple[float, float]
    parallelizable: bool
    score: int
    score_factors: dict[str, float]
    max_parallelism: int
    risks: list[str]
    recommendation: str


def _levels(graph: TaskGraph) -> int:
    """Tasks on the longest chain, counting tasks rather than minutes."""
    depth = [1] * len(graph)
    for i in graph.topo:
        for p in graph.preds[i]:
            if depth[p] + 1 > depth[i]:
                depth[i] = depth[p] + 1
    return max(depth, default=0)


def peak_concurrency(schedule: Schedule) -> int:
    """Most tasks running at one moment in ``schedule``."""
    # At equal times an end (-1) sorts before a start (+1): back-to-back is not overlap.
    events = sorted([(s, 1) for s in schedule.start] + [(e, -1) for e in schedule.end])
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def assess(
    graph: TaskGraph,
    durations: Sequence[float],
    schedule: Schedule,
    agents: int,
    b: Bounds,
    *,
    defaulted: Sequence[str] = (),
) -> Assessment:
    """Speedup, score, risks and a recommendation for ``schedule``.

    ``defaulted`` names tasks whose estimate is the default (a risk worth saying).
    """
    n = len(graph)
    work = b.total_work
    makespan = schedule.makespan
    speedup = work / makespan if makespan > 0 else 1.0
    high = work / b.lower_bound if b.lower_bound > 0 else 1.0
    # Graham's bound: any list schedule without locks is within work/N + (1-1/N)*CP.
    low = 1.0
    if not graph.conflicts and agents > 0 and work > 0:
        low = max(1.0, work / (work / agents + (1 - 1 / agents) * b.critical_path_length))
    low = min(low, speedup)
    in_conflict = {i for pair in graph.conflicts for i in pair}
    biggest = max(durations, default=0.0)
    factors = {
        # Share of the work that can overlap the critical path.
        "independence": 1.0 - b.critical_path_length / work if work > 0 else 0.0,
        # 1 when every task could start at once, 0 for one long chain.
        "dependency_depth": 1.0 - (_levels(graph) - 1) / (n - 1) if n > 1 else 0.0,
        "file_conflicts": 1.0 - len(in_conflict) / n if n else 1.0,
        # A task larger than one agent's fair share dominates the plan.
        "task_size": min(1.0, (work / agents) / biggest) if biggest > 0 and agents else 0.0,
        # Agent utilisation of the schedule.
        "balance": work / (agents * makespan) if makespan > 0 and agents else 0.0,
    }
    factors = {k: round(max(0.0, min(1.0, v)), 3) for k, v in factors.items()}
    score = round(100 * sum(SCORE_WEIGHTS[k] * v for k, v in factors.items()))
    if n <= 1 or agents <= 1:
        score = 0 if n <= 1 else score
    peak = peak_concurrency(schedule)
    ids = graph.ids
    risks: list[str] = []
    if work > 0 and b.critical_path_length / work >= 0.5 and n > 1:
        risks.append(f"the critical path ({' -> '.join(ids[i] for i in b.critical_path)}) "
                     f"is {b.critical_path_length / work:.0%} of all work")
    if n > 1 and biggest > work / max(agents, 1) and work > 0:
        big = ids[max(range(n), key=lambda i: durations[i])]
        risks.append(f"task {big!r} alone is {biggest / work:.0%} of all work; consider splitting it")
    if graph.conflicts:
        risks.append(f"{len(graph.conflicts)} file conflict(s) serialize {len(in_conflict)} task(s)"
                     + (f"; {b.heaviest_file} alone needs {b.heaviest_file_work:g} min"
                        if b.heaviest_file else ""))
    if peak < agents and n > 0:
        risks.append(f"at most {peak} task(s) ever run at once; {agents - peak} agent(s) stay idle")
    if defaulted:
        shown = ", ".join(defaulted[:5]) + (" ..." if len(defaulted) > 5 else "")
        risks.append(f"{len(defaulted)} task(s) have no estimate (30 min assumed): {shown}")
    parallelizable = speedup >= MIN_USEFUL_SPEEDUP
    if n == 0:
        advice = "nothing to do: the task list is empty"
    elif not parallelizable:
        advice = (f"sequential is better: speedup below {MIN_USEFUL_SPEEDUP}x "
                  f"(estimated {speedup:.2f}x); merging parallel work would cost more than it saves")
    elif peak < agents:
        advice = (f"run with {peak} agent(s): estimated {speedup:.2f}x faster; "
                  f"more agents would stay idle")
    elif makespan > b.lower_bound * 1.05 + EPS:
        advice = (f"parallel with {agents} agents: estimated {speedup:.2f}x faster "
                  f"(the bound allows up to {high:.2f}x)")
    else:
        advice = f"parallel with {agents} agents: estimated {speedup:.2f}x faster (near the bound)"
    return Assessment(round(speedup, 3), (round(low, 3), round(high, 3)), parallelizable, score,
                      factors, peak, risks, advice)
