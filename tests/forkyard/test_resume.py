"""Crashes and interrupts: kill -9 or Ctrl-C a real ``forkyard run``, then ``--resume``.

Whatever the moment of the crash: every task's work ends up integrated exactly once (or
reported failed), and the target never holds half a batch (:func:`forkyard.journal.audit.audit_run`
checks both against the commit graph).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from forkyard.journal.audit import audit_run
from forkyard.journal.events import list_runs, read_events, runs_dir
from forkyard.views.display import PlainDisplay
from gitproc.git import Repo

ROOT = Path(__file__).parents[2]
LIMITS = {"memory_mb": 256, "cpus": 1.0, "pids": 128, "timeout_s": 60, "network": False}


def crash_tasks(path: Path, n: int = 8, sleep: float = 0.4) -> Path:
    tasks: list[dict[str, Any]] = [{"id": f"t{i}", "command": f"sleep {sleep}; echo {i} > out/t{i}.txt"}
             for i in range(n)]
    tasks.append({"id": "last", "depends_on": ["t0", "t1"], "command": "ls out > last.txt"})
    path.write_text(yaml.safe_dump({"defaults": {"limits": LIMITS}, "tasks": tasks}))
    return path


def start_run(repo: Repo, tasks: Path, *extra: str) -> subprocess.Popen[str]:
    (repo.path / "out").mkdir(exist_ok=True)
    (repo.path / "out" / ".keep").write_text("")
    repo.git("add", "out/.keep")
    repo.git("commit", "-qm", "out dir")
    return subprocess.Popen(
        [sys.executable, "-m", "forkyard.cli", "run", str(tasks), "--agents", "3", "--json",
         *extra],
        cwd=repo.path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_for(repo: Repo, predicate: str, count: int = 1, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = list_runs(repo)
        if runs:
            evs = read_events(runs_dir(repo) / runs[-1] / "events.jsonl")
            if sum(1 for e in evs if e.type == predicate) >= count:
                return runs[-1]
        time.sleep(0.02)
    raise AssertionError(f"no {predicate} event within {timeout}s")


def resume(repo: Repo, run_id: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "forkyard.cli", "run", "--resume", run_id, "--json"],
        cwd=repo.path, text=True, capture_output=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}


def check_all_landed_once(repo: Repo, run_id: str, doc: dict) -> None:
    assert doc["outcome"] == "succeeded", doc
    audit = audit_run(repo, run_id)
    assert audit.ok, audit.problems
    assert all(n == 1 for n in audit.integrations.values()), audit.integrations
    names = repo.out("ls-tree", "--name-only", "main", "out/").splitlines()
    assert sorted(names) == sorted(["out/.keep", *(f"out/t{i}.txt" for i in range(8))])
    assert not repo.is_dirty()


def test_kill_9_mid_run_then_resume(webapp: Repo, tmp_path: Path) -> None:
    proc = start_run(webapp, crash_tasks(tmp_path / "tasks.yaml"))
    run_id = wait_for(webapp, "batch_committed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    mid = audit_run(webapp, run_id)
    assert mid.ok, mid.problems  # the crash left no half batch behind
    code, doc = resume(webapp, run_id)
    assert code == 0, doc
    check_all_landed_once(webapp, run_id, doc)
    events = read_events(runs_dir(webapp) / run_id / "events.jsonl")
    types = [e.type for e in events]
    assert types.count("run_started") == 1 and types.count("run_resumed") == 1
    # The resume says what runs again and what each of those was when the run died.
    resumed = next(e for e in events if e.type == "run_resumed")
    assert set(resumed.get("was")) == set(resumed.get("rerun"))
    line = PlainDisplay.format(resumed) or ""
    assert "with the task file and options it was started with" in line


def test_kill_9_during_integration_then_resume(webapp: Repo, tmp_path: Path) -> None:
    proc = start_run(webapp, crash_tasks(tmp_path / "tasks.yaml", sleep=0.2))
    run_id = wait_for(webapp, "batch_started", count=2)
    os.kill(proc.pid, signal.SIGKILL)  # very likely inside a merge transaction
    proc.wait()
    time.sleep(2.0)  # the run lies dead a while: that time is no part of its wall time
    code, doc = resume(webapp, run_id)
    assert code == 0, doc
    check_all_landed_once(webapp, run_id, doc)
    events = read_events(runs_dir(webapp) / run_id / "events.jsonl")
    k = next(i for i, e in enumerate(events) if e.type == "run_resumed")
    dead = events[k].ts - events[k - 1].ts
    assert dead >= 2.0
    assert doc["metrics"]["wall_s"] <= events[-1].ts - events[0].ts - dead + 1e-3
    # Each batch says what it landed itself: no task lands in two batches.
    landed = [t for b in doc["batches"] for t in b["landed"]]
    assert len(landed) == len(set(landed)) == len(doc["results"])


def test_ctrl_c_stops_cleanly_with_130_then_resume(webapp: Repo, tmp_path: Path) -> None:
    proc = start_run(webapp, crash_tasks(tmp_path / "tasks.yaml", sleep=1.0))
    run_id = wait_for(webapp, "task_started", count=2)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["outcome"] == "cancelled"
    assert any(r["status"] == "cancelled" for r in doc["results"])
    assert audit_run(webapp, run_id).ok
    assert webapp.rev_parse("main") == doc["target_sha_after"]
    assert not webapp.is_dirty()
    code, doc = resume(webapp, run_id)
    assert code == 0, doc
    check_all_landed_once(webapp, run_id, doc)


@pytest.mark.parametrize("step", ["after-merge", "after-journal", "after-ref", "after-worktree"])
def test_crash_at_each_step_of_a_transaction_then_resume(webapp: Repo, tmp_path: Path,
                                                         step: str) -> None:
    # The merge engine's fault hook kills the run at `step` of its first batch: before the
    # ref moves, or after it moved but before our journal says so.  Resume must count the
    # batch's work exactly once either way.
    tasks = crash_tasks(tmp_path / "tasks.yaml", sleep=0.1)
    (webapp.path / "out").mkdir(exist_ok=True)
    (webapp.path / "out" / ".keep").write_text("")
    webapp.git("add", "out/.keep")
    webapp.git("commit", "-qm", "out dir")
    proc = subprocess.run(
        [sys.executable, "-m", "forkyard.cli", "run", str(tasks), "--agents", "3", "--json"],
        cwd=webapp.path, text=True, capture_output=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "FORKYARD_FAULT": step})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id = list_runs(webapp)[-1]
    assert audit_run(webapp, run_id).ok
    code, doc = resume(webapp, run_id)
    assert code == 0, doc
    check_all_landed_once(webapp, run_id, doc)


def test_a_cancelled_agents_partial_work_survives_resume(webapp: Repo, tmp_path: Path) -> None:
    flag = Path("/var/tmp") / f"forkyard-hold-{os.getpid()}-{time.monotonic_ns()}"
    flag.write_text("hold")
    try:
        tasks = tmp_path / "tasks.yaml"
        tasks.write_text(yaml.safe_dump({"defaults": {"limits": LIMITS}, "tasks": [
            {"id": "slow", "command": f"echo partial > out/partial.txt; "
                                      f"if [ -f {flag} ]; then sleep 60; fi; echo done > out/done.txt"}]}))
        proc = start_run(webapp, tasks)
        run_id = wait_for(webapp, "task_started")
        partial = webapp.forkyard_dir / "worktrees" / run_id / "slow" / "out" / "partial.txt"
        deadline = time.monotonic() + 30
        while not partial.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        first = json.loads(out)["results"][0]
        assert first["status"] == "cancelled" and first["commit"]  # its partial work, committed
        flag.unlink()
        code, doc = resume(webapp, run_id)
        assert code == 0, doc
        slow = doc["results"][0]
        assert slow["status"] == "succeeded" and slow["integrated"]
        cancelled = slow["attempts"][0]
        assert cancelled["status"] == "cancelled" and cancelled["commit"] == first["commit"]
        # The branch was started afresh, the cancelled attempt's commit is still reachable.
        assert webapp.rev_parse(cancelled["ref"]) == first["commit"]
        assert webapp.out("show", f"{cancelled['ref']}:out/partial.txt") == "partial"
        assert slow["attempts"][-1]["ref"] != cancelled["ref"]
    finally:
        flag.unlink(missing_ok=True)
