"""``forkyard status``: read from another process while the run is going, and after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from forkyard.journal.events import list_runs
from forkyard.views.status import run_status
from gitproc.git import Repo

ROOT = Path(__file__).parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
LIMITS = {"memory_mb": 256, "cpus": 1.0, "pids": 128, "timeout_s": 60, "network": False}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forkyard.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60, env=ENV)


def start(repo: Repo, tmp: Path) -> subprocess.Popen[str]:
    slow = "for i in 1 2 3 4; do echo \"step $i/4\"; sleep 0.5; done; echo s > slow.txt"
    tasks = [{"id": "quick", "command": "echo q > q.txt", "estimated_minutes": 0.05},
             {"id": "slow", "command": slow, "estimated_minutes": 0.05},
             {"id": "after", "depends_on": ["slow"], "command": "echo a > a.txt",
              "estimated_minutes": 0.05}]
    (tmp / "t.yaml").write_text(yaml.safe_dump({"defaults": {"limits": LIMITS}, "tasks": tasks}))
    return subprocess.Popen([sys.executable, "-m", "forkyard.cli", "run", str(tmp / "t.yaml"),
                             "--agents", "2"], cwd=repo.path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)


def test_status_from_another_process_while_running(webapp: Repo, tmp_path: Path) -> None:
    proc = start(webapp, tmp_path)
    seen = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if list_runs(webapp):
            st = cli("status", "--json", cwd=webapp.path)
            if st.returncode == 0:
                doc = json.loads(st.stdout)
                slow = next(t for t in doc["tasks"] if t["task"] == "slow")
                if doc["state"] == "running" and slow["status"] == "running" and slow["progress"]:
                    seen = doc
                    break
        time.sleep(0.05)
    assert seen is not None, "never saw the run going"
    assert 0 < seen["progress"]["simple"] < 1
    assert seen["bottlenecks"] and seen["bottlenecks"][0]["task"] == "slow"
    assert seen["eta_s"] > 0
    assert "step" in next(t for t in seen["tasks"] if t["task"] == "slow")["last_line"]
    human = cli("status", cwd=webapp.path)
    assert human.returncode == 0 and "slow" in human.stderr
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    done = run_status(webapp)
    assert done.state == "finished" and done.outcome == "succeeded"
    assert done.progress["simple"] == 1.0
    assert [b.outcome for b in done.batches] == ["committed"] * len(done.batches)


def test_status_of_a_crashed_run(webapp: Repo, tmp_path: Path) -> None:
    proc = start(webapp, tmp_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
            list_runs(webapp) and any(t.status == "running" for t in run_status(webapp).tasks)):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    st = run_status(webapp)
    assert st.state == "crashed"
    # Nothing is running in a dead run: its tasks cut off are "lost", their clocks stopped.
    assert "running" not in {t.status for t in st.tasks}
    assert "lost" in {t.status for t in st.tasks}
    time.sleep(0.3)
    again = run_status(webapp)
    assert [t.elapsed_s for t in again.tasks] == [t.elapsed_s for t in st.tasks]
    assert again.elapsed_s == st.elapsed_s and again.dead_for_s > st.dead_for_s
    human = cli("status", cwd=webapp.path)
    assert "process died" in human.stderr and "--resume" in human.stderr
    bad = cli("status", "no-such-run", cwd=webapp.path)
    assert bad.returncode == 2 and "no run matching" in bad.stderr
