"""The run loop end to end: real repositories, the real worktree backend, real merges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from forkyard.journal.audit import audit_run
from forkyard.journal.events import RunPaths, list_runs, read_events
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile
from sandbox import places

FAST = {"memory_mb": 256, "cpus": 1.0, "pids": 128, "timeout_s": 60, "network": False}


def taskfile(*tasks: dict[str, Any]) -> TaskFile:
    return TaskFile.model_validate({"defaults": {"limits": FAST}, "tasks": list(tasks)})


def write_tasks(path: Path, *tasks: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"defaults": {"limits": FAST}, "tasks": list(tasks)}))
    return path


def forkyard(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forkyard.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})


def test_dependent_task_starts_from_the_integrated_tip(webapp: Repo) -> None:
    tf = taskfile(
        {"id": "model", "command": "sleep 0.3; echo 'ROLE = \"admin\"' > src/models/role.py"},
        {"id": "ui", "command": "echo '/* dark */' >> src/ui/styles.css"},
        {"id": "api", "depends_on": ["model"],
         "command": "grep -q admin src/models/role.py && echo 'from src.models.role import ROLE'"
                    " > src/api/roles.py"},
    )
    before = webapp.rev_parse("main")
    res = run_workflow(webapp, tf, RunOptions(agents=2, use_history=False))
    assert res.outcome == "succeeded", res.model_dump_json(indent=1)
    assert all(r.integrated for r in res.results)
    assert res.target_sha_before == before and res.target_sha_after == webapp.rev_parse("main")
    # The dependent saw its dependency's file: it grepped it in its own sandbox.
    assert webapp.out("show", "main:src/api/roles.py") == "from src.models.role import ROLE"
    assert (webapp.path / "src/api/roles.py").exists()  # the checkout moved along
    assert not webapp.is_dirty()
    api = res.result("api")
    assert api.files_modified[0].path == "src/api/roles.py" and api.files_modified[0].added == 1
    assert api.limits.memory_mb == 256 and api.limits.enforced_by != "none"
    assert webapp.merge_base(res.result("model").commit or "", "main") == res.result("model").commit
    assert audit_run(webapp, res.run_id).ok


def test_planted_conflict_is_rolled_back_and_the_rest_lands(webapp: Repo) -> None:
    edit = "sed -i 's/^VERSION = .*/VERSION = \"{v}\"/' src/config.py"
    tf = taskfile(
        {"id": "bump", "command": edit.format(v="0.2.0")},
        {"id": "dev", "command": "sleep 0.6; " + edit.format(v="0.1.0-dev")},
        {"id": "docs", "command": "sleep 0.6; echo more >> README.md"},
        {"id": "after-dev", "depends_on": ["dev"], "command": "echo x > x.txt"},
    )
    res = run_workflow(webapp, tf, RunOptions(agents=3, strategy="aggressive", use_history=False))
    by = {r.task: r for r in res.results}
    assert by["bump"].integrated and by["docs"].integrated
    assert by["dev"].status == "rejected" and not by["dev"].integrated
    assert by["dev"].reason.startswith("conflict (content) in src/config.py with ")
    assert by["after-dev"].status == "skipped"
    # The attempt's commit is kept under a ref of its own, named in the run JSON.
    (attempt,) = by["dev"].attempts
    assert attempt.ref and webapp.rev_parse(attempt.ref) == by["dev"].commit
    assert 'VERSION = "0.2.0"' in webapp.out("show", "main:src/config.py")
    conflicts = [c for b in res.batches for c in b.conflicts]
    assert {"task": "dev", "path": "src/config.py", "kind": "content"}.items() <= conflicts[0].items()
    assert res.outcome == "partial" and res.exit_code() == 1
    # No agent's work is lost: the rolled-back task keeps its branch.
    assert webapp.rev_parse(by["dev"].branch or "") == by["dev"].commit
    assert audit_run(webapp, res.run_id).ok


def test_conservative_conflict_stops_the_run_with_nothing_half_merged(webapp: Repo) -> None:
    edit = "sed -i 's/^DEBUG = .*/DEBUG = {v}/' src/config.py"
    tf = taskfile(
        {"id": "on", "command": edit.format(v="True")},
        {"id": "off", "command": "sleep 0.5; " + edit.format(v="None")},
        {"id": "next", "depends_on": ["off"], "command": "echo n > n.txt"},
    )
    res = run_workflow(webapp, tf, RunOptions(agents=2, strategy="conservative",
                                              use_history=False))
    by = {r.task: r for r in res.results}
    assert by["on"].integrated and not by["off"].integrated
    assert by["next"].status == "cancelled"
    assert [b.outcome for b in res.batches] == ["committed", "rolled_back"]
    assert webapp.rev_parse("main") == res.target_sha_after
    assert audit_run(webapp, res.run_id).ok


def test_waves_mode_integrates_each_wave_as_one_transaction(webapp: Repo) -> None:
    tf = taskfile(
        {"id": "a", "command": "echo a > a.txt"},
        {"id": "b", "command": "sleep 0.3; echo b > b.txt"},
        {"id": "c", "depends_on": ["a"], "command": "cat a.txt b.txt > c.txt"},
    )
    res = run_workflow(webapp, tf, RunOptions(agents=2, mode="waves", use_history=False))
    assert res.outcome == "succeeded", res.model_dump_json(indent=1)
    assert [sorted(b.tasks) for b in res.batches] == [["a", "b"], ["c"]]
    assert webapp.out("show", "main:c.txt") == "a\nb"  # c started after the whole wave


def test_run_json_is_exactly_the_documented_shape(webapp: Repo, tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "tasks.yaml", {"id": "one", "command": "echo 1 > one.txt"},
                        {"id": "two", "command": "echo 2 > two.txt"})
    proc = forkyard("run", str(tasks), "--json", "--agents", "2", cwd=webapp.path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"run_id", "outcome", "target", "target_sha_before", "target_sha_after",
                        "results", "batches", "metrics", "tokens"}
    assert doc["outcome"] == "succeeded" and doc["target"] == "main"
    assert set(doc["results"][0]) == {"task", "status", "exit_code", "duration_s", "agent",
                                      "branch", "commit", "integrated", "files_modified",
                                      "limits", "log_tail", "reason", "attempts", "message",
                                      "no_changes", "final_message", "tokens"}
    assert set(doc["results"][0]["attempts"][0]) == {"n", "status", "agent", "duration_s",
                                                     "commit", "ref"}
    assert set(doc["results"][0]["limits"]) == {"memory_mb", "cpus", "pids", "network",
                                                "enforced_by"}
    assert doc["results"][0]["limits"]["network"] == "none"  # auto, for a plain command
    assert set(doc["results"][0]["files_modified"][0]) == {"path", "added", "removed"}
    assert set(doc["batches"][0]) == {"index", "tasks", "outcome", "conflicts", "validation",
                                      "landed", "rejected"}
    assert set(doc["metrics"]) == {"wall_s", "total_task_s", "actual_speedup",
                                   "estimated_speedup", "overhead_s", "agents_used",
                                   "agent_utilisation"}
    assert doc["results"][0]["branch"].startswith(f"forkyard/{doc['run_id']}/")
    assert "forkyard: run" in proc.stderr  # human output on stderr (plain: not a terminal)


def test_templates_and_environment_reach_the_agent(webapp: Repo) -> None:
    tf = TaskFile.model_validate({
        "defaults": {"limits": FAST,
                     "agent": {"command": "sh -c {command} && echo {description} > desc.txt"}},
        "tasks": [{"id": "t1", "description": "it's $(not run) \"quoted\"",
                   "command": 'printf "%s|%s|%s" "$FORKYARD_TASK_ID" "$FORKYARD_BRANCH" '
                              '"$FORKYARD_WORKTREE" > env.txt'}],
    })
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False))
    assert res.outcome == "succeeded", res.results[0].log_tail
    task_id, branch, worktree = webapp.out("show", "main:env.txt").split("|")
    assert task_id == "t1" and branch == f"forkyard/{res.run_id}/t1"
    assert worktree == str(places.worktree_path(webapp.forkyard_dir, res.run_id, "t1"))
    assert ".git" not in Path(worktree).parts  # agent CLIs refuse to edit under .git
    assert webapp.out("show", "main:desc.txt") == "it's $(not run) \"quoted\""


@pytest.mark.parametrize("case", ["dirty", "unknown-dep", "cycle", "no-target", "malformed",
                                  "no-repo", "no-command"])
def test_bad_input_exits_2_and_changes_nothing(webapp: Repo, tmp_path: Path, case: str) -> None:
    ok = {"id": "a", "command": "echo a > a.txt"}
    tasks = write_tasks(tmp_path / "t.yaml", ok)
    args = ["run", str(tasks)]
    cwd = webapp.path
    if case == "dirty":
        (webapp.path / "README.md").write_text("local edit\n")
    elif case == "unknown-dep":
        write_tasks(tasks, {**ok, "depends_on": ["ghost"]})
    elif case == "cycle":
        write_tasks(tasks, {"id": "a", "depends_on": ["b"], "command": "true"},
                    {"id": "b", "depends_on": ["a"], "command": "true"})
    elif case == "no-target":
        args += ["--into", "no-such-branch"]
    elif case == "malformed":
        tasks.write_text("tasks: [ {id: a, command: x\n")
    elif case == "no-repo":
        args += ["--repo", str(tmp_path / "missing")]
    elif case == "no-command":
        write_tasks(tasks, {"id": "a"})
    before = webapp.rev_parse("main")
    proc = forkyard(*args, cwd=cwd)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert webapp.rev_parse("main") == before
    assert list_runs(webapp) == []
    assert not webapp.branches("forkyard/*")


def test_events_journal_every_state_change(webapp: Repo) -> None:
    tf = taskfile({"id": "a", "command": "echo 'step 1/2'; echo a > a.txt; echo 'step 2/2'"})
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False))
    types = [e.type for e in read_events(RunPaths.of(webapp, res.run_id).events)]
    for expected in ("run_started", "task_queued", "task_started", "task_output",
                     "task_finished", "batch_started", "batch_committed", "run_finished"):
        assert expected in types
    outputs = [e for e in read_events(RunPaths.of(webapp, res.run_id).events)
               if e.type == "task_output"]
    assert [e.get("progress") for e in outputs] == [0.5, 1.0]
    assert (RunPaths.of(webapp, res.run_id).result).exists()


def test_agent_option_gives_spec_kit_tasks_an_agent(webapp: Repo, tmp_path: Path) -> None:
    (tmp_path / "tasks.md").write_text(
        "## Phase 1\n- [ ] T001 [P] Write the notes file `NOTES.md`\n"
        "- [ ] T002 Extend the notes (depends on T001)\n")
    template = "echo {id}: {description} >> NOTES.md"
    res = run_workflow(webapp, tmp_path / "tasks.md", RunOptions(agent=template, agents=2, use_history=False))
    assert res.outcome == "succeeded", res.model_dump_json(indent=1)
    notes = webapp.out("show", "main:NOTES.md").splitlines()
    assert notes[0].startswith("T001: Write the notes file") and notes[1].startswith("T002")
    proc = forkyard("run", str(tmp_path / "tasks.md"), cwd=webapp.path)
    assert proc.returncode == 2 and "no command" in proc.stderr  # no agent, no command


def test_timed_out_task_is_retried_on_a_fresh_branch(webapp: Repo) -> None:
    tf = TaskFile.model_validate({"defaults": {"limits": {**FAST, "timeout_s": 1}}, "tasks": [
        {"id": "flaky", "retries": 1,
         "command": 'echo "attempt $FORKYARD_ATTEMPT" > attempt.txt; '
                    'if [ "$FORKYARD_ATTEMPT" = 1 ]; then sleep 30; fi'},
    ]})
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False, retry_backoff_s=0.1, backend_options={"grace_s": 0.2}))
    assert res.outcome == "succeeded", res.model_dump_json(indent=1)
    assert webapp.out("show", "main:attempt.txt") == "attempt 2"
    evs = read_events(RunPaths.of(webapp, res.run_id).events)
    assert [e.get("status") for e in evs if e.type == "task_finished"] == ["timed_out", "succeeded"]
    assert [e.get("after") for e in evs if e.type == "task_retry"] == ["timed_out"]
