"""Schedule quality: gap to a known optimum, and to CP-SAT when tasks share files.

Instances with a known optimum are built backwards: fill each of N agents' timelines
with back-to-back tasks up to the same length L, then add dependency edges only from a
task that ends no later than another starts.  That schedule is feasible and has no idle
time, so the optimum is exactly L (= total work / N).  With shared files there is no
such construction, so small random instances are compared with OR-Tools CP-SAT.

Run: ``.venv/bin/python -m bench.plan_quality``.  Prints a markdown table;
:func:`main` returns its rows.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from typing import Any

from planner import Task, check_schedule, plan

INSTANCES = 100
CPSAT_INSTANCES = 20


def known_optimum_instance(rng: random.Random) -> tuple[list[Task], int, float]:
    """Tasks, agents and the optimum makespan of one generated instance."""
    agents = rng.randint(2, 8)
    length = rng.choice([60, 100, 150])
    slots: list[tuple[float, float]] = []  # (start, end) per task
    for _ in range(agents):
        t = 0
        while t < length:
            d = min(rng.randint(1, 25), length - t)
            slots.append((t, t + d))
            t += d
    rng.shuffle(slots)
    n = len(slots)
    deps: list[set[int]] = [set() for _ in range(n)]
    by_end: dict[float, list[int]] = {}
    for i, (_, e) in enumerate(slots):
        by_end.setdefault(e, []).append(i)
    density = rng.choice([0.5, 1.0, 2.0, 3.0])
    for _ in range(int(density * n)):
        b = rng.randrange(n)
        sb = slots[b][0]
        if sb == 0:
            continue
        # Half the edges are tight (the dependency ends exactly when b starts): those are
        # what make the optimum hard to find.
        if rng.random() < 0.5 and by_end.get(sb):
            a = rng.choice(by_end[sb])
        else:
            cands = [i for i in range(n) if slots[i][1] <= sb]
            a = rng.choice(cands)
        deps[b].add(a)
    tasks = [Task(id=f"t{i}", estimated_minutes=slots[i][1] - slots[i][0],
                  depends_on=[f"t{j}" for j in sorted(deps[i])]) for i in range(n)]
    return tasks, agents, float(length)


def shared_files_instance(rng: random.Random) -> tuple[list[Task], int]:
    """A small random DAG whose tasks share a few files."""
    n = rng.randint(8, 14)
    agents = rng.randint(2, 4)
    files = [f"src/f{k}.py" for k in range(rng.randint(2, 5))]
    tasks = []
    for i in range(n):
        deps = [f"t{j}" for j in range(i) if rng.random() < 0.15]
        touched = [f for f in files if rng.random() < 0.25]
        tasks.append(Task(id=f"t{i}", estimated_minutes=rng.randint(5, 40), depends_on=deps,
                          files=touched))
    return tasks, agents


def run_known(instances: int = INSTANCES, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    gaps: list[float] = []
    greedy: list[float] = []
    below = infeasible = 0
    seconds = 0.0
    for _ in range(instances):
        tasks, agents, opt = known_optimum_instance(rng)
        t0 = time.perf_counter()
        p = plan(tasks, agents=agents)
        seconds += time.perf_counter() - t0
        infeasible += bool(check_schedule(p, tasks))
        below += p.makespan < p.lower_bound - 1e-9
        gaps.append(p.makespan / opt - 1)
        greedy.append(plan(tasks, agents=agents, passes=0).makespan / opt - 1)
    return {"gaps": gaps, "greedy": greedy, "below": below, "infeasible": infeasible,
            "seconds": seconds}


def run_cpsat(instances: int = CPSAT_INSTANCES, seed: int = 2) -> dict[str, Any]:
    rng = random.Random(seed)
    gaps: list[float] = []
    infeasible = proven = 0
    for _ in range(instances):
        tasks, agents = shared_files_instance(rng)
        ours = plan(tasks, agents=agents)
        best = plan(tasks, agents=agents, optimal=True, time_limit_s=10)
        infeasible += bool(check_schedule(ours, tasks)) + bool(check_schedule(best, tasks))
        proven += best.optimal
        gaps.append(ours.makespan / best.makespan - 1)
    return {"gaps": gaps, "infeasible": infeasible, "proven": proven}


def main() -> list[dict[str, Any]]:
    """Run the quality benchmark; print and return the table rows."""
    known = run_known()
    cp = run_cpsat()
    g = known["gaps"]
    rows: list[dict[str, Any]] = [
        {"figure": f"mean gap to optimum ({len(g)} instances)", "target": 0.01,
         "measured": statistics.mean(g)},
        {"figure": "worst gap to optimum", "target": 0.10, "measured": max(g)},
        {"figure": "schedules below the lower bound", "target": 0, "measured": known["below"]},
        {"figure": "infeasible schedules", "target": 0,
         "measured": known["infeasible"] + cp["infeasible"]},
        {"figure": f"mean gap to CP-SAT, shared files ({len(cp['gaps'])} instances)",
         "target": 0.05, "measured": statistics.mean(cp["gaps"])},
        {"figure": "worst gap to CP-SAT, shared files", "target": 0.05, "measured": max(cp["gaps"])},
        {"figure": "CP-SAT runs proven optimal", "target": None,
         "measured": f"{cp['proven']}/{len(cp['gaps'])}"},
        {"figure": "greedy pass alone: mean gap to optimum (for comparison)", "target": None,
         "measured": statistics.mean(known["greedy"])},
        {"figure": "greedy pass alone: worst gap to optimum", "target": None,
         "measured": max(known["greedy"])},
    ]
    for r in rows:
        r["pass"] = r["target"] is None or r["measured"] <= r["target"]
    print("| figure | target | measured | pass |")
    print("|---|---|---|---|")
    for r in rows:
        if r["target"] is None:
            shown = f"{r['measured']:.2%}" if isinstance(r["measured"], float) else r["measured"]
            print(f"| {r['figure']} | - | {shown} | - |")
            continue
        fmt = (lambda v: f"{v:.2%}") if isinstance(r["target"], float) else str
        print(f"| {r['figure']} | <= {fmt(r['target'])} | {fmt(r['measured'])} | "
              f"{'yes' if r['pass'] else 'NO'} |")
    print(f"\n({known['seconds']:.2f} s planning the {len(g)} known-optimum instances)")
    return rows


if __name__ == "__main__":
    sys.exit(0 if all(r["pass"] for r in main()) else 1)
