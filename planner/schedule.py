"""Scheduling a task graph onto N agents.

The core is an event-driven list scheduler (the "parallel schedule generation scheme"):
at each moment some agent is free, it starts the highest-priority task whose
dependencies are done and none of whose conflicting tasks is running.  Priority is
the bottom level (the duration-weighted longest path from the task to the end), ties
broken by the number of successors.

A single greedy pass can miss the optimum by a few percent, so :func:`search` then
runs forward-backward improvement (schedule the reversed graph with priorities taken
from the last schedule's finish times, then forward again from the reversed starts —
each pass pulls tasks toward the side they are late on) and a number of passes with
randomly perturbed priorities, seeded so a plan is reproducible.  It stops early at the
lower bound, which is then provably optimal.

The hot loop uses plain lists and heaps: 10,000 tasks must plan in well under 2 s.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from planner.graph import TaskGraph

GOALS = ("minimize-time", "minimize-conflicts", "balance-load")

# Floating-point slack when comparing times: durations are sums of user estimates.
EPS = 1e-9


@dataclass(frozen=True)
class Schedule:
    """Start, end and agent per task index, and the makespan."""

    start: tuple[float, ...]
    end: tuple[float, ...]
    agent: tuple[int, ...]
    makespan: float

    def loads(self, agents: int) -> list[float]:
        """Busy time per agent."""
        out = [0.0] * agents
        for s, e, a in zip(self.start, self.end, self.agent, strict=True):
            out[a] += e - s
        return out


def bottom_levels(graph: TaskGraph, durations: Sequence[float]) -> list[float]:
    """Duration-weighted longest path from each task to the end, the task included."""
    bl = list(durations)
    for i in reversed(graph.topo):
        best = 0.0
        for s in graph.succs[i]:
            if bl[s] > best:
                best = bl[s]
        bl[i] = durations[i] + best
    return bl


def top_levels(graph: TaskGraph, durations: Sequence[float]) -> list[float]:
    """Earliest start of each task with unlimited agents (longest path into it)."""
    tl = [0.0] * len(durations)
    for i in graph.topo:
        best = 0.0
        for p in graph.preds[i]:
            v = tl[p] + durations[p]
            if v > best:
                best = v
        tl[i] = best
    return tl


def list_schedule(
    durations: Sequence[float],
    preds: Sequence[Sequence[int]],
    succs: Sequence[Sequence[int]],
    conflict_adj: Sequence[Sequence[int]],
    agents: int,
    priority: Sequence[float],
    tie: Sequence[float],
    *,
    least_loaded: bool = False,
) -> Schedule:
    """One event-driven list-scheduling pass; higher ``priority`` (then ``tie``) first.

    With ``least_loaded`` a starting task takes the free agent with the least work so
    far (balance-load); otherwise the lowest-numbered free agent (stable Gantt charts).
    """
    n = len(durations)
    indeg = [len(p) for p in preds]
    ready = [(-priority[i], -tie[i], i) for i in range(n) if indeg[i] == 0]
    heapq.heapify(ready)
    free: list[tuple[float, int]] = [(0.0, a) for a in range(agents)]  # (load or 0, agent)
    load = [0.0] * agents
    running: list[tuple[float, int, int]] = []  # (end, task, agent)
    locked = [0] * n  # how many conflicting tasks are running
    start = [0.0] * n
    end = [0.0] * n
    agent_of = [0] * n
    now = 0.0
    done = 0
    push, pop = heapq.heappush, heapq.heappop
    while done < n:
        if free and ready:
            skipped = []
            while free and ready:
                item = pop(ready)
                i = item[2]
                if locked[i]:
                    skipped.append(item)
                    continue
                a = pop(free)[1]
                start[i] = now
                end[i] = f = now + durations[i]
                agent_of[i] = a
                load[a] += durations[i]
                push(running, (f, i, a))
                for j in conflict_adj[i]:
                    locked[j] += 1
            for item in skipped:
                push(ready, item)
        if not running:  # pragma: no cover - impossible for a validated DAG
            raise RuntimeError("scheduler stalled: no running task and nothing startable")
        now = running[0][0]
        while running and running[0][0] <= now + EPS:
            _, i, a = pop(running)
            done += 1
            push(free, (load[a] if least_loaded else 0.0, a))
            for j in conflict_adj[i]:
                locked[j] -= 1
            for s in succs[i]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    push(ready, (-priority[s], -tie[s], s))
    return Schedule(tuple(start), tuple(end), tuple(agent_of), max(end, default=0.0))


def _reverse(sched: Schedule) -> Schedule:
    """Mirror a schedule of the reversed graph back into forward time."""
    m = sched.makespan
    return Schedule(tuple(m - e for e in sched.end), tuple(m - s for s in sched.start),
                    sched.agent, m)


ScoreFn = Callable[[Schedule], tuple[float, ...]]


@dataclass(frozen=True)
class SearchResult:
    schedule: Schedule
    passes_run: int


def search(
    graph: TaskGraph,
    durations: Sequence[float],
    agents: int,
    *,
    key: ScoreFn,
    lower_bound: float,
    passes: int,
    seed: int = 0,
    least_loaded: bool = False,
) -> SearchResult:
    """The best schedule (smallest ``key``) over the greedy pass and its improvements.

    ``passes`` counts list-scheduling passes after the first; the search stops as soon
    as a schedule reaches ``lower_bound`` (when ``key`` ranks by makespan first).
    """
    preds, succs, adj = graph.preds, graph.succs, graph.conflict_adj
    n = len(durations)
    bl = bottom_levels(graph, durations)
    nsucc = [float(len(s)) for s in succs]
    # Reversed-graph priorities for backward passes: the top level plays the bottom level.
    npred = [float(len(p)) for p in preds]

    def forward(prio: Sequence[float], tie: Sequence[float] = nsucc) -> Schedule:
        return list_schedule(durations, preds, succs, adj, agents, prio, tie, least_loaded=least_loaded)

    def backward(prio: Sequence[float]) -> Schedule:
        return _reverse(list_schedule(durations, succs, preds, adj, agents, prio, npred,
                                      least_loaded=least_loaded))

    best = forward(bl)
    best_key = key(best)
    used = 0

    def optimal(s: Schedule) -> bool:
        return s.makespan <= lower_bound + EPS

    def consider(s: Schedule) -> None:
        nonlocal best, best_key
        k = key(s)
        if k < best_key:
            best, best_key = s, k

    def improve(s: Schedule, rounds: int) -> None:
        # Forward-backward improvement: finish times order the backward pass, its start
        # times (mirrored) order the next forward pass.
        nonlocal used
        cur = s
        for _ in range(rounds):
            if used >= passes or optimal(best):
                return
            back = backward(cur.end)
            used += 1
            consider(back)
            if used >= passes or optimal(best):
                return
            fwd = forward([-x for x in back.start], bl)
            used += 1
            consider(fwd)
            if fwd.makespan >= cur.makespan - EPS and back.makespan >= cur.makespan - EPS:
                return
            cur = fwd if fwd.makespan <= back.makespan else back

    rng = random.Random(seed)
    improve(best, 3)
    while used < passes and not optimal(best):
        # Perturb the bottom levels multiplicatively, by a random amount each pass, so
        # some passes stay near the greedy order and others wander further.
        spread = 0.1 + 0.4 * rng.random()
        prio = [b * (1.0 + spread * (rng.random() - 0.5)) for b in bl]
        cand = forward(prio, [rng.random() for _ in range(n)])
        used += 1
        consider(cand)
        improve(cand, 2)
    return SearchResult(best, used)


def default_passes(n: int) -> int:
    """How many improvement passes by default: many for small plans, few for huge ones."""
    if n <= 0:
        return 0
    return max(4, min(200, 150_000 // n))
