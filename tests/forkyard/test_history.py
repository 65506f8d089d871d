"""History: measured durations feed later plans; regressions are flagged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from forkyard.journal.events import RunPaths
from forkyard.journal.models import TaskResult
from forkyard.journal.state import RunManifest
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from forkyard.views.history import History
from gitproc.git import Repo
from planner import Task, TaskFile


def test_measured_durations_become_estimates(webapp: Repo) -> None:
    tf = TaskFile.model_validate({"tasks": [
        {"id": "a", "description": "write a", "command": "sleep 0.3; echo a > a.txt",
         "estimated_minutes": 45},
        {"id": "b", "description": "write b", "command": "echo b > b.txt"},
    ]})
    first = run_workflow(webapp, tf, RunOptions(agents=2))
    assert first.outcome == "succeeded"
    measured = History(webapp).durations_for(tf.tasks)
    assert set(measured) == {"a", "b"}
    assert measured["a"] == max(first.result("a").duration_s, 1.0) / 60
    # The next run plans with them: a is no longer a 45-minute task.
    renamed = TaskFile.model_validate({"tasks": [
        {"id": "a", "description": "write a", "command": "echo a2 > a.txt",
         "estimated_minutes": 45},
        {"id": "b2", "description": "write b", "command": "echo b2 > b.txt"},  # same description
    ]})
    second = run_workflow(webapp, renamed, RunOptions(agents=2))
    plan = RunManifest.load(RunPaths.of(webapp, second.run_id)).plan
    assert plan["durations"]["a"] == measured["a"]
    assert plan["durations"]["b2"] == measured["b"]


def test_history_flags_regressions(tmp_path: Path) -> None:
    h = History(tmp_path)
    task = Task(id="build", description="build it", estimated_minutes=1)
    for i, secs in enumerate([10.0, 11.0, 10.5, 40.0]):
        h.record(f"r{i}", [TaskResult(task="build", status="succeeded", duration_s=secs)],
                 {"build": task})
    row = next(r for r in h.rows() if r.task == "build")
    assert row.runs == 4 and row.last_s == 40.0 and row.regression
    assert row.estimate_s == 60.0
    h.record("r9", [TaskResult(task="build", status="succeeded", duration_s=10.0)], {"build": task})
    assert not next(r for r in h.rows() if r.task == "build").regression


def test_history_command(webapp: Repo) -> None:
    History(webapp).record("r1", [TaskResult(task="x", status="succeeded", duration_s=2.0)],
                           {"x": Task(id="x")})
    proc = subprocess.run([sys.executable, "-m", "forkyard.cli", "history", "--json"],
                          cwd=webapp.path, text=True, capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["task"] == "x"
