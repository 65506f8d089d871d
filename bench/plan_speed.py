"""Planning speed: 10,000 tasks with 50,000 dependency edges in under 2 s.

The graph is a random DAG (edges only from lower to higher index, so acyclic by
construction); a fifth of the tasks also name one of 2,000 files, so file conflicts are
part of the work.  The time covers :func:`planner.plan` end to end (validation, conflict
detection, scheduling with the default improvement passes, analysis, the Plan model);
building the Task models is reported separately.

Run: ``.venv/bin/python -m bench.plan_speed``.  Prints a markdown table;
:func:`main` returns its rows.
"""

from __future__ import annotations

import random
import sys
import time
from typing import Any

from planner import Task, check_schedule, plan

TASKS = 10_000
EDGES = 50_000
TARGET_S = 2.0


def big_instance(n: int = TASKS, m: int = EDGES, seed: int = 0, *, wide: bool = False) -> list[Task]:
    """``n`` tasks, ``m`` distinct edges: mostly local (a dependency a few hundred back),
    or with ``wide`` from anywhere earlier (a shallow, wide DAG)."""
    rng = random.Random(seed)
    deps: list[set[int]] = [set() for _ in range(n)]
    count = 0
    while count < m:
        b = rng.randrange(1, n)
        a = rng.randrange(b) if wide else max(0, b - rng.randint(1, 400))
        if a not in deps[b]:
            deps[b].add(a)
            count += 1
    return [Task(id=f"t{i}", estimated_minutes=rng.randint(5, 60),
                 depends_on=[f"t{j}" for j in sorted(deps[i])],
                 files=[f"src/mod{rng.randrange(2000)}.py"] if rng.random() < 0.2 else [])
            for i in range(n)]


def main() -> list[dict[str, Any]]:
    """Run the speed benchmark; print and return the table rows."""
    t0 = time.perf_counter()
    tasks = big_instance()
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = plan(tasks, agents=8)
    elapsed = time.perf_counter() - t0
    problems = check_schedule(p, tasks)
    # A wide DAG on 64 agents: the lower bound is out of reach, so every default
    # improvement pass runs (no early stop at the bound).
    wide = big_instance(wide=True)
    t0 = time.perf_counter()
    pw = plan(wide, agents=64)
    elapsed_wide = time.perf_counter() - t0
    problems += check_schedule(pw, wide)
    rows: list[dict[str, Any]] = [
        {"figure": f"plan {TASKS:,} tasks / {EDGES:,} edges, 8 agents (s)", "target": TARGET_S,
         "measured": round(elapsed, 3), "pass": elapsed < TARGET_S},
        {"figure": f"same size, wide DAG, 64 agents, all {pw.passes} passes (s)",
         "target": TARGET_S, "measured": round(elapsed_wide, 3), "pass": elapsed_wide < TARGET_S},
        {"figure": "schedules feasible", "target": "yes", "measured": "yes" if not problems else "no",
         "pass": not problems},
    ]
    print("| figure | target | measured | ratio | pass |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['measured'] / r['target']:.2f}" if isinstance(r["target"], float) else "-"
        print(f"| {r['figure']} | {'< ' if isinstance(r['target'], float) else ''}{r['target']} | "
              f"{r['measured']} | {ratio} | {'yes' if r['pass'] else 'NO'} |")
    print(f"\n(building the Task models: {built:.2f} s; 8 agents: makespan {p.makespan:g}, "
          f"lower bound {p.lower_bound:g}, {p.passes} improvement pass(es), "
          f"{len(p.conflicts)} conflicting pairs; wide: makespan {pw.makespan:g}, "
          f"lower bound {pw.lower_bound:g})")
    return rows


if __name__ == "__main__":
    sys.exit(0 if all(r["pass"] for r in main()) else 1)
