"""Learning from history: task durations and outcomes in SQLite under ``.git/forkyard/``.

Every run records, per task, the estimate it was planned with and what it measured.  Later
plans use the measurements: a task whose id or description matches an earlier one is
estimated at the median of its last few successful durations (:meth:`History.durations_for`,
passed to ``planner.plan(durations=...)``).  ``forkyard history`` shows estimate versus
actual per task and flags regressions: a task whose latest run took much longer than its
earlier median.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from forkyard.journal.models import TaskResult
from gitproc.git import Repo
from planner.tasks import Task

_SCHEMA = """
CREATE TABLE IF NOT EXISTS task_runs (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    description TEXT NOT NULL,
    estimate_min REAL,
    duration_s REAL NOT NULL,
    status TEXT NOT NULL,
    finished_at REAL NOT NULL,
    PRIMARY KEY (run_id, task_id)
);
CREATE INDEX IF NOT EXISTS task_runs_task ON task_runs(task_id);
CREATE INDEX IF NOT EXISTS task_runs_desc ON task_runs(description);
"""
#: how many recent successful runs the estimate is the median of
WINDOW = 3
#: latest > REGRESSION_FACTOR x earlier median (and by more than REGRESSION_MIN_S) is flagged
REGRESSION_FACTOR = 1.5
REGRESSION_MIN_S = 1.0


class HistoryRow(BaseModel):
    """One task's history, as ``forkyard history --json`` shows it."""

    task: str
    description: str
    runs: int
    estimate_s: float | None
    last_s: float
    median_s: float
    last_status: str
    regression: bool


@dataclass(frozen=True)
class _Sample:
    run_id: str
    task_id: str
    description: str
    estimate_min: float | None
    duration_s: float
    status: str
    finished_at: float


class History:
    """The history database of one repository."""

    def __init__(self, repo: Repo | Path) -> None:
        root = repo.forkyard_dir if isinstance(repo, Repo) else Path(repo)
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "history.db"
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)

    @staticmethod
    def measured(repo: Repo, tasks: Iterable[Task]) -> dict[str, float]:
        """:meth:`durations_for` without creating anything: {} when no run ever
        recorded one (so bad input found later leaves the repository as it was)."""
        if not (repo.forkyard_dir / "history.db").is_file():
            return {}
        return History(repo).durations_for(tasks)

    def _connect(self) -> sqlite3.Connection:
        # Two runs may finish at once in one repository: wait for the writer, don't fail.
        return sqlite3.connect(self.path, timeout=30)

    def record(
        self,
        run_id: str,
        results: Iterable[TaskResult],
        tasks: Mapping[str, Task],
        estimates_min: Mapping[str, float] | None = None,
    ) -> None:
        """Record the tasks of a run that actually ran (not skipped or never started)."""
        now = time.time()
        rows = []
        for r in results:
            if r.status == "skipped" or (r.status == "cancelled" and r.duration_s == 0):
                continue
            task = tasks.get(r.task)
            estimate = (estimates_min or {}).get(r.task, task.estimated_minutes if task else None)
            rows.append((run_id, r.task, task.description if task else "", estimate,
                         r.duration_s, r.status, now))
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO task_runs VALUES (?,?,?,?,?,?,?)", rows)

    def _samples(self, where: str = "", args: Sequence[object] = ()) -> list[_Sample]:
        with closing(self._connect()) as db:
            cur = db.execute(f"SELECT * FROM task_runs {where} ORDER BY finished_at, rowid", args)
            return [_Sample(*row) for row in cur.fetchall()]

    def durations_for(self, tasks: Iterable[Task]) -> dict[str, float]:
        """Measured durations in minutes (the task file's unit) for tasks seen before.

        Matching is by id first, then by description (a renamed task that does the same
        thing); only successful runs count, since a failure's duration says little.
        """
        samples = self._samples("WHERE status = 'succeeded'")
        by_id: dict[str, list[float]] = {}
        by_desc: dict[str, list[float]] = {}
        for s in samples:
            by_id.setdefault(s.task_id, []).append(s.duration_s)
            if s.description:
                by_desc.setdefault(s.description, []).append(s.duration_s)
        out: dict[str, float] = {}
        for task in tasks:
            seen = by_id.get(task.id) or (by_desc.get(task.description) if task.description else None)
            if seen:
                # Floor at a second: a zero estimate would make the planner's ratios useless.
                out[task.id] = max(statistics.median(seen[-WINDOW:]), 1.0) / 60.0
        return out

    def rows(self) -> list[HistoryRow]:
        """Per task: runs, the latest estimate and duration, the median, regressions."""
        grouped: dict[str, list[_Sample]] = {}
        for s in self._samples():
            grouped.setdefault(s.task_id, []).append(s)
        out = []
        for task_id, samples in sorted(grouped.items()):
            last = samples[-1]
            ok = [s.duration_s for s in samples if s.status == "succeeded"]
            earlier = [s.duration_s for s in samples[:-1] if s.status == "succeeded"][-WINDOW:]
            median = statistics.median(ok) if ok else last.duration_s
            regression = bool(earlier) and last.status == "succeeded" and (
                last.duration_s > REGRESSION_FACTOR * statistics.median(earlier)
                and last.duration_s - statistics.median(earlier) > REGRESSION_MIN_S
            )
            out.append(HistoryRow(
                task=task_id, description=last.description, runs=len(samples),
                estimate_s=last.estimate_min * 60.0 if last.estimate_min is not None else None,
                last_s=round(last.duration_s, 3), median_s=round(median, 3),
                last_status=last.status, regression=regression,
            ))
        return out
