"""Run metrics: speedup, coordination overhead, agent utilisation."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from forkyard.journal.models import Metrics


def ideal_wall(
    order: Sequence[str], deps: Mapping[str, Sequence[str]], durations: Mapping[str, float],
    agents: int,
) -> float:
    """Makespan of ``durations`` list-scheduled on ``agents`` in ``order`` with ``deps``.

    What a run with zero coordination cost would have taken for the work it measured; the
    difference to the real wall time is the overhead (sandboxes, merges, dispatch).
    """
    finish: dict[str, float] = {}
    free = [0.0] * max(1, agents)
    heapq.heapify(free)
    remaining = list(order)
    while remaining:
        # The first task in order whose dependencies are scheduled (order is topological
        # for plans; fall back to any ready task otherwise).
        pick = next((i for i, t in enumerate(remaining)
                     if all(d in finish or d not in durations for d in deps.get(t, ()))), None)
        if pick is None:
            break
        t = remaining.pop(pick)
        ready = max((finish[d] for d in deps.get(t, ()) if d in finish), default=0.0)
        slot = heapq.heappop(free)
        end = max(slot, ready) + durations.get(t, 0.0)
        finish[t] = end
        heapq.heappush(free, end)
    return max(finish.values(), default=0.0)


def compute(
    wall_s: float,
    busy_s: Mapping[str, float],
    last_s: Mapping[str, float],
    order: Sequence[str],
    deps: Mapping[str, Sequence[str]],
    agents: int,
    estimated_speedup: float,
    agents_used: int | None = None,
) -> Metrics:
    """Metrics of a run: ``busy_s`` counts every attempt, ``last_s`` the final one."""
    total = sum(busy_s.values())
    ran = {t: d for t, d in last_s.items() if d > 0}
    ideal = ideal_wall(order, deps, ran, agents)
    used = agents_used if agents_used is not None else min(agents, len(ran))
    wall = max(wall_s, 1e-9)
    return Metrics(
        wall_s=round(wall_s, 3),
        total_task_s=round(total, 3),
        actual_speedup=round(total / wall, 3),
        estimated_speedup=round(estimated_speedup, 3),
        overhead_s=round(max(0.0, wall_s - ideal), 3),
        agents_used=used,
        agent_utilisation=round(total / (wall * max(1, agents)), 3),
    )
