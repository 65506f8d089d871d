"""Crash test: kill -9 ``forkyard run`` at random points of a 20-task run, then ``--resume``.

Every trial checks, against the commit graph (:func:`forkyard.journal.audit.audit_run`), that every
task's work ends up integrated exactly once (or is reported failed) and that the target
never holds half a batch -- right after the kill and after the resume.

    .venv/bin/python -m bench.run_crash [trials]
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from fixtures.repos import build
from forkyard.journal.audit import audit_run
from forkyard.journal.events import list_runs, read_events, runs_dir
from gitproc.git import Repo

ROOT = Path(__file__).resolve().parent.parent
N_TASKS = 20
LIMITS = {"memory_mb": 256, "cpus": 1.0, "pids": 128, "timeout_s": 60, "network": False}


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for k, v in (("GIT_AUTHOR_NAME", "bench"), ("GIT_AUTHOR_EMAIL", "bench@localhost"),
                 ("GIT_COMMITTER_NAME", "bench"), ("GIT_COMMITTER_EMAIL", "bench@localhost")):
        env.setdefault(k, v)
        os.environ.setdefault(k, v)
    return env


def _tasks(path: Path, rng: random.Random) -> Path:
    tasks: list[dict[str, Any]] = []
    for i in range(N_TASKS):
        task: dict[str, Any] = {"id": f"t{i:02d}",
                                "command": f"sleep {rng.uniform(0.1, 0.8):.2f}; "
                                           f"echo {i} > work/t{i:02d}.txt"}
        if i >= 4 and rng.random() < 0.3:  # some dependencies, so order matters too
            task["depends_on"] = [f"t{rng.randrange(i):02d}"]
        tasks.append(task)
    path.write_text(yaml.safe_dump({"defaults": {"limits": LIMITS}, "tasks": tasks}))
    return path


def trial(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    env = _env()
    with tempfile.TemporaryDirectory(prefix="forkyard-crash-") as tmp:
        repo: Repo = build("webapp", Path(tmp) / "repo")
        (repo.path / "work").mkdir()
        (repo.path / "work" / ".keep").write_text("")
        repo.git("add", "work/.keep")
        repo.git("commit", "-qm", "work dir", env={"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x",
                                                  "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"})
        tasks = _tasks(Path(tmp) / "tasks.yaml", rng)
        cmd = [sys.executable, "-m", "forkyard.cli", "run", str(tasks), "--agents", "4", "--json"]
        proc = subprocess.Popen(cmd, cwd=repo.path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        kill_at = rng.uniform(0.5, 4.0)
        time.sleep(kill_at)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        runs = list_runs(repo)
        if not runs:
            return {"seed": seed, "kill_at_s": round(kill_at, 2), "ok": False, "note": "no run yet"}
        run_id = runs[-1]
        events = read_events(runs_dir(repo) / run_id / "events.jsonl")
        committed = sum(1 for e in events if e.type == "batch_committed")
        in_batch = (sum(1 for e in events if e.type == "batch_started")
                    > sum(1 for e in events if e.type in ("batch_committed", "batch_rolled_back")))
        after_kill = audit_run(repo, run_id)
        res = subprocess.run([sys.executable, "-m", "forkyard.cli", "run", "--resume", run_id,
                              "--json"], cwd=repo.path, env=env, text=True, capture_output=True,
                             timeout=300)
        doc = json.loads(res.stdout) if res.stdout.strip() else {}
        final = audit_run(repo, run_id)
        results = doc.get("results", [])
        landed = sum(1 for r in results if r["integrated"])
        failed = sum(1 for r in results if r["status"] != "succeeded")
        accounted = all(final.integrations.get(r["task"], 0) == 1 or r["status"] != "succeeded"
                        for r in results) and len(results) == N_TASKS
        ok = after_kill.ok and final.ok and accounted and res.returncode in (0, 1)
        note = ""
        if not ok:
            evs = read_events(runs_dir(repo) / run_id / "events.jsonl")
            why = [f"batch {e.get('index')}: {e.get('error') or e.get('conflicts')}" for e in evs
                   if e.type == "batch_rolled_back"]
            why += [f"{e.task}: {e.get('status')} {e.get('message') or e.get('log_tail')}"
                    for e in evs if e.type == "task_finished" and e.get("status") != "succeeded"]
            note = ("; ".join(why) or "; ".join(final.problems))[:400]
        return {
            "seed": seed, "kill_at_s": round(kill_at, 2), "batches_before_kill": committed,
            "killed_mid_batch": in_batch, "resume_outcome": doc.get("outcome"),
            "landed": f"{landed}/{N_TASKS}", "failed": failed,
            "max_integrations": max(final.integrations.values(), default=0),
            "problems": len(after_kill.problems) + len(final.problems), "ok": ok,
            "note": note,
        }


def main(trials: int = 10) -> list[dict[str, Any]]:
    rows = [trial(seed) for seed in range(trials)]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    good = sum(1 for r in rows if r["ok"])
    print(f"\n{good}/{len(rows)} trials: every task integrated exactly once or reported failed, "
          "never half a batch")
    return rows


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
