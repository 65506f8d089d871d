"""``forkyard run --validate``: the merged tree is tested in a sandbox, failures are
blamed on their own task, and every attempt's work stays reachable.  Real repositories,
the real worktree backend, real merges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from forkyard.journal.events import RunPaths, list_runs, read_events
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile

FAST = {"memory_mb": 256, "cpus": 1.0, "pids": 128, "timeout_s": 60, "network": False}


def taskfile(*tasks: dict[str, Any], setup: str | None = None) -> TaskFile:
    return TaskFile.model_validate({"defaults": {"limits": FAST},
                                    "setup": {"command": setup} if setup else {},
                                    "tasks": list(tasks)})


def test_validation_tests_the_merged_tree_with_the_runs_setup(webapp: Repo) -> None:
    # The set-up leaves a mark in the sandbox's own temp dir; the command checks it and the
    # task's file, which the user's checkout cannot have before the batch lands.
    tf = taskfile({"id": "feature", "command": "echo on > feature.txt"},
                  setup='echo ready > "$TMPDIR/setup-ran"')
    check = ('test -f "$TMPDIR/setup-ran" && test -f feature.txt && '
             'test "$(pwd)" != "$FORKYARD_REPO_CHECKOUT" && echo tested-the-merged-tree')
    res = run_workflow(webapp, tf, RunOptions(agents=2, use_history=False,
                                              validate_command=check.replace(
                                                  "$FORKYARD_REPO_CHECKOUT", str(webapp.path))))
    assert res.outcome == "succeeded", res.model_dump_json(indent=1)
    events = read_events(RunPaths.of(webapp, res.run_id).events)
    done = [e for e in events if e.type == "batch_committed"]
    # The passing validation's log is kept too: it shows what was tested.
    assert "tested-the-merged-tree" in done[0].get("validation", {}).get("log_tail", "")
    # Nothing of the validation sandbox stays behind.
    assert [w for w in webapp.worktrees() if "validate-" in w.get("worktree", "")] == []
    assert "validate-" not in webapp.out("for-each-ref", "refs/heads/")


def _good_and_bad() -> list[dict[str, Any]]:
    return [{"id": "good", "command": "echo fine > good.txt"},
            {"id": "bad", "command": "echo boom > BROKEN"},
            {"id": "also", "command": "echo fine > also.txt"}]


def test_conservative_validation_failure_names_its_task(webapp: Repo) -> None:
    res = run_workflow(webapp, taskfile(*_good_and_bad()), RunOptions(
        agents=3, mode="waves", strategy="conservative", use_history=False,
        validate_command="test ! -f BROKEN || { echo 'FAILED tests/test_build.py::test_x'; exit 1; }"))
    by = {r.task: r for r in res.results}
    assert by["bad"].status == "rejected"
    assert by["bad"].reason.startswith("validation failed with it")
    assert "FAILED tests/test_build.py::test_x" in by["bad"].reason
    for t in ("good", "also"):
        assert by[t].status == "rejected" and "because of bad" in by[t].reason
    (batch,) = res.batches
    assert [c["task"] for c in batch.conflicts if c["kind"] == "validation"] == ["bad"]
    assert "BROKEN" not in webapp.out("ls-tree", "--name-only", "main").split()


def test_default_strategy_lands_the_good_work_and_never_the_bad(webapp: Repo) -> None:
    res = run_workflow(webapp, taskfile(*_good_and_bad()), RunOptions(
        agents=3, mode="waves", use_history=False, validate_command="test ! -f BROKEN"))
    by = {r.task: r for r in res.results}
    assert by["good"].integrated and by["also"].integrated
    assert by["bad"].status == "rejected" and not by["bad"].integrated
    assert "validation failed with it" in by["bad"].reason
    files = webapp.out("ls-tree", "--name-only", "main").split()
    assert "good.txt" in files and "also.txt" in files and "BROKEN" not in files


def test_a_retried_attempts_commit_stays_reachable(webapp: Repo) -> None:
    cmd = 'echo "$FORKYARD_ATTEMPT" > attempt.txt; [ "$FORKYARD_ATTEMPT" = 1 ] && sleep 30; true'
    tf = TaskFile.model_validate({
        "defaults": {"limits": {**FAST, "timeout_s": 2}},
        "tasks": [{"id": "flaky", "command": cmd, "retries": 1}]})
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False, retry_backoff_s=0))
    flaky = res.result("flaky")
    assert flaky.status == "succeeded" and flaky.integrated
    first, second = flaky.attempts
    assert (first.status, second.status) == ("timed_out", "succeeded")
    assert first.ref and first.commit and first.commit != second.commit
    # The first attempt's work is still there, under its own ref, after the branch moved on.
    assert webapp.rev_parse(first.ref) == first.commit
    assert webapp.out("show", f"{first.ref}:attempt.txt") == "1"
    assert webapp.out("show", "main:attempt.txt") == "2"


def test_kill_9_during_validation_leaves_no_orphan_after_resume(webapp: Repo,
                                                                 tmp_path: Path) -> None:
    from tests.forkyard.test_resume import resume
    from tests.sandbox.conftest import processes_with_arg

    flag = Path("/var/tmp") / f"forkyard-hold-{uuid.uuid4().hex[:8]}"
    flag.write_text("hold")
    pause = f"{uuid.uuid4().int % 1000}.{uuid.uuid4().int % 997 + 1}"
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump({"defaults": {"limits": FAST}, "tasks": [
        {"id": "one", "command": "echo 1 > one.txt"}]}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "forkyard.cli", "run", str(tasks), "--json", "--validate",
         f"if [ -f {flag} ]; then sleep {pause}; fi; true"],
        cwd=webapp.path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        deadline = time.monotonic() + 60
        while not processes_with_arg(pause) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with_arg(pause), "the validation never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # The sandbox's process tree dies with the run (an unconfined host validation
        # outlived it); its worktree stays registered until someone cleans up.
        deadline = time.monotonic() + 10
        while processes_with_arg(pause) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with_arg(pause) == []
        assert any("validate-" in w.get("worktree", "") for w in webapp.worktrees())
        flag.unlink()
        run_id = list_runs(webapp)[-1]
        code, doc = resume(webapp, run_id)
        assert code == 0 and doc["outcome"] == "succeeded", doc
        assert processes_with_arg(pause) == []
        assert [w for w in webapp.worktrees() if "validate-" in w.get("worktree", "")] == []
    finally:
        flag.unlink(missing_ok=True)
        for pid in processes_with_arg(pause):
            os.kill(pid, signal.SIGKILL)


def test_a_validation_timeout_kills_its_whole_tree(webapp: Repo) -> None:
    from forkyard.run.validation import command_validator
    from tests.sandbox.conftest import processes_with_arg

    pause = f"{uuid.uuid4().int % 1000}.{uuid.uuid4().int % 991 + 1}"
    validator = command_validator(webapp, f"sleep {pause} & sleep {pause}; wait",
                                  timeout_s=1.0)
    result = validator(webapp.rev_parse("main"))
    assert not result.passed and result.exit_code is None
    assert "timeout" in result.log_tail
    assert processes_with_arg(pause) == []  # both sleeps, the background one too
