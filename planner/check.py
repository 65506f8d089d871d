"""An independent feasibility check of a plan, used by the tests on every schedule.

It rebuilds the graph and the conflicts from the tasks themselves rather than trusting
what the plan says about them.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from planner.graph import build_graph
from planner.plans import Plan
from planner.tasks import Task, TaskFile

#: Plans round times to 6 decimals; allow for that.
TOLERANCE = 1e-5


def check_schedule(plan: Plan, tasks: TaskFile | Sequence[Task]) -> list[str]:
    """Every way ``plan`` breaks the rules for ``tasks``; an empty list when it is feasible.

    Checks: every task assigned exactly once, with its duration; agent numbers in range;
    dependencies finish before dependents start; no agent runs two tasks at once; no two
    conflicting tasks overlap; batches hold every task once, after its dependencies, and
    never two conflicting tasks.
    """
    task_list = list(tasks.tasks if isinstance(tasks, TaskFile) else tasks)
    graph = build_graph(task_list)
    ids = graph.ids
    problems: list[str] = []
    by_task: dict[str, list[tuple[float, float, int]]] = {}
    for asg in plan.assignments:
        by_task.setdefault(asg.task, []).append((asg.start, asg.end, asg.agent))
    for t in ids:
        n = len(by_task.get(t, []))
        if n != 1:
            problems.append(f"task {t} is assigned {n} times")
    for t in sorted(set(by_task) - set(ids)):
        problems.append(f"assignment for unknown task {t}")
    when = {t: v[0] for t, v in by_task.items() if v}
    for i, task in enumerate(task_list):
        if task.id not in when:
            continue
        s, e, agent = when[task.id]
        want = plan.durations.get(task.id, task.estimated_minutes)
        if abs((e - s) - want) > TOLERANCE:
            problems.append(f"task {task.id} lasts {e - s:g}, expected {want:g}")
        if s < -TOLERANCE:
            problems.append(f"task {task.id} starts before 0")
        if not 0 <= agent < plan.agents:
            problems.append(f"task {task.id} on agent {agent}, but there are {plan.agents}")
        for p in graph.preds[i]:
            dep = ids[p]
            if dep in when and when[dep][1] > s + TOLERANCE:
                problems.append(f"task {task.id} starts at {s:g} before its dependency {dep} ends at {when[dep][1]:g}")
    per_agent: dict[int, list[tuple[float, float, str]]] = {}
    for t, (s, e, agent) in when.items():
        per_agent.setdefault(agent, []).append((s, e, t))
    for agent, items in per_agent.items():
        items.sort()
        for (_, e1, t1), (s2, _, t2) in pairwise(items):
            if e1 > s2 + TOLERANCE:
                problems.append(f"agent {agent} runs {t1} and {t2} at the same time")
    for (i, j), reason in graph.conflicts.items():
        a, b = ids[i], ids[j]
        if a in when and b in when:
            (s1, e1, _), (s2, e2, _) = when[a], when[b]
            if s1 < e2 - TOLERANCE and s2 < e1 - TOLERANCE:
                problems.append(f"conflicting tasks {a} and {b} overlap ({reason})")
    if abs(plan.makespan - max((v[1] for v in when.values()), default=0.0)) > TOLERANCE:
        problems.append(f"makespan {plan.makespan:g} is not the last end time")
    wave: dict[str, int] = {}
    for batch in plan.batches:
        for t in batch.tasks:
            if t in wave:
                problems.append(f"task {t} is in batches {wave[t]} and {batch.index}")
            wave[t] = batch.index
    missing = [t for t in ids if t not in wave]
    if missing:
        problems.append(f"tasks in no batch: {', '.join(missing)}")
    for i, t in enumerate(ids):
        for p in graph.preds[i]:
            if t in wave and ids[p] in wave and wave[ids[p]] >= wave[t]:
                problems.append(f"task {t} is in batch {wave[t]}, not after its dependency {ids[p]}")
    for i, j in graph.conflicts:
        a, b = ids[i], ids[j]
        if a in wave and wave.get(a) == wave.get(b):
            problems.append(f"conflicting tasks {a} and {b} share batch {wave[a]}")
    return problems
