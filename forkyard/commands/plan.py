"""``forkyard plan``: load a task file, plan it, show the plan.

With ``--json`` the plan document (docs/architecture.md) goes to stdout; otherwise a table, a text
Gantt chart and the analysis go to stderr.  Bad input raises a planner error, which the
CLI's one handler turns into exit code 2 and a one-line message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from planner import Plan, TaskFile, load_tasks, plan

#: Rows shown in the human table and chart before "... and N more".
MAX_ROWS = 40
GANTT_WIDTH = 60


def plan_command(tasks_path: Path, *, agents: int = 4, goal: str = "minimize-time",
                 optimal: bool = False, as_json: bool = False, repo: Path | None = None,
                 use_history: bool = True) -> int:
    """Plan ``tasks_path`` onto ``agents`` agents; print it; return the exit code (0).

    Durations measured by earlier runs in ``repo`` replace estimates, as ``forkyard run``
    plans (a directory that is no repository simply has no history)."""
    tf = load_tasks(tasks_path)
    durations = _history(repo, tf) if use_history and repo is not None else {}
    result = plan(tf, agents=agents, goal=goal, optimal=optimal, durations=durations or None)
    if as_json:
        sys.stdout.write(json.dumps(result.model_dump(mode="json")) + "\n")
    else:
        render(result, Console(stderr=True, highlight=False, soft_wrap=True))
    return 0


def _history(repo: Path, tf: TaskFile) -> dict[str, float]:
    from forkyard.views.history import History
    from gitproc.git import GitError, Repo

    try:
        r = Repo(repo)
    except (GitError, OSError, ValueError):
        return {}
    return History.measured(r, tf.tasks)


def _fmt(t: float) -> str:
    return f"{t:g}"


def render(p: Plan, console: Console) -> None:
    """The human form of a plan: table, Gantt chart, figures, risks, recommendation."""
    wave = {t: b.index for b in p.batches for t in b.tasks}
    on_path = set(p.critical_path)
    table = Table(title=f"Plan: {len(p.assignments)} tasks on {p.agents} agents ({p.goal})")
    for col, justify in (("task", "left"), ("agent", "right"), ("start", "right"),
                         ("end", "right"), ("wave", "right"), ("depends on", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for a in p.assignments[:MAX_ROWS]:
        name = f"[bold]{a.task}[/bold] *" if a.task in on_path else a.task
        table.add_row(name, str(a.agent), _fmt(a.start), _fmt(a.end), str(wave.get(a.task, "")),
                      ", ".join(p.dependencies.get(a.task, [])))
    console.print(table)
    if len(p.assignments) > MAX_ROWS:
        console.print(f"... and {len(p.assignments) - MAX_ROWS} more tasks")
    console.print("* on the critical path")
    console.print()
    label = max((len(a.task) for a in p.assignments[:MAX_ROWS]), default=4)
    for line in gantt(p, width=max(20, min(GANTT_WIDTH, console.width - label - 12))):
        console.print(line, markup=False)
    console.print()
    lo, hi = p.speedup_bounds
    console.print(f"total work {_fmt(p.total_work)} min · makespan {_fmt(p.makespan)} min · "
                  f"lower bound {_fmt(p.lower_bound)} min{' (optimal)' if p.optimal else ''}")
    console.print(f"critical path {' -> '.join(p.critical_path)} ({_fmt(p.critical_path_length)} min)")
    console.print(f"estimated speedup {p.estimated_speedup:.2f}x (bounds {lo:.2f}x-{hi:.2f}x) · "
                  f"score {p.score}/100 · {len(p.batches)} wave(s)")
    for dep in p.implicit_dependencies[:MAX_ROWS]:
        console.print(f"lock: {dep.from_} before {dep.to}: {dep.reason}", markup=False)
    for risk in p.risks:
        console.print(f"[yellow]risk:[/yellow] {risk}")
    console.print(f"[bold]recommendation:[/bold] {p.recommendation}")


def gantt(p: Plan, width: int = GANTT_WIDTH) -> list[str]:
    """A text Gantt chart, one row per task in start order, scaled to ``width`` columns."""
    if not p.assignments or p.makespan <= 0:
        return ["(nothing to schedule)"]
    scale = width / p.makespan
    label = max(len(a.task) for a in p.assignments[:MAX_ROWS])
    rows = [f"{'':{label}}  agent  0{'':{width - len(_fmt(p.makespan)) - 1}}{_fmt(p.makespan)}"]
    for a in p.assignments[:MAX_ROWS]:
        lo = min(width - 1, int(a.start * scale))
        hi = max(lo + 1, min(width, round(a.end * scale)))
        bar = " " * lo + "█" * (hi - lo) + " " * (width - hi)
        rows.append(f"{a.task:<{label}}  {a.agent:>5}  |{bar}|")
    return rows
