"""Each preset's real CLI in a real sandbox (worktree backend: bubblewrap + Landlock +
cgroups), against the fake model server on 127.0.0.1: the file the model asks for lands
on the target branch, through ``run_workflow`` as a user's ``forkyard run`` would."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from forkyard.journal.events import RunPaths, read_events
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile
from tests.agents.conftest import CLIS, agent_setup, require_cli
from tests.agents.fake_model import FakeModel
from tests.sandbox.conftest import require_confinement

# Network `full` for now: the fake server is on the host's loopback.
# Where the CLIs keep state, locks and history in a home.
STATE = (".claude", ".claude.json", ".codex", ".gemini", ".aider", ".aider.chat.history.md",
         ".aider.input.history", ".gitconfig")
# The activity each CLI's edit shows as (its tool's name).
ACTIVITY = {"claude": ("Write",), "codex": ("patch",), "gemini": ("write_file",),
            "aider": ("edit",)}
LIMITS = {"memory_mb": 2048, "cpus": 1.0, "pids": 512, "timeout_s": 240, "network": True}


def task(preset: str, fm: FakeModel, mp: pytest.MonkeyPatch, tid: str, path: str,
         content: str) -> dict[str, Any]:
    setup = agent_setup(preset, fm, mp)
    return {"id": tid, "description": f"Create the file below.\nWRITE {path}: {content}",
            **setup, "files": [path]}


@pytest.mark.parametrize("preset", CLIS)
def test_each_cli_lands_its_file_from_its_sandbox(
        preset: str, webapp: Repo, fake_model: FakeModel, agents_path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    require_cli(preset)
    require_confinement("bwrap+landlock")
    tf = TaskFile.model_validate({"defaults": {"limits": LIMITS}, "tasks": [
        task(preset, fake_model, monkeypatch, "t", f"out/{preset}.txt", f"hello from {preset}")]})
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False))
    r = res.result("t")
    assert res.outcome == "succeeded" and r.integrated, res.model_dump_json(indent=1)
    assert webapp.out("show", f"main:out/{preset}.txt") == f"hello from {preset}"
    # The CLI itself made the request (the model asked for exactly this file) ...
    assert any(f.endswith(f"out/{preset}.txt") for f in fake_model.written())
    # ... and only the agent's work landed: no CLI state or cache in the commit.
    assert [f.path for f in r.files_modified] == [f"out/{preset}.txt"]
    # What the CLI said, read from its stream: its final message and its token usage.
    assert r.final_message and "out/" in r.final_message, r.model_dump_json(indent=1)
    assert r.tokens is not None and r.tokens.input > 0 and r.tokens.output > 0
    assert res.tokens is not None and res.tokens.input == r.tokens.input
    assert not r.no_changes
    # What the live display and `status` show: the agent's tool and file, never raw JSON.
    shown = [e.get("line") for e in read_events(RunPaths.of(webapp, res.run_id).events)
             if e.type == "task_output"]
    assert any(f"out/{preset}.txt" in line and line.split()[0] in ACTIVITY[preset]
               for line in shown), shown
    assert not any(line.startswith("{") for line in shown)
    # The CLI kept its state in its private home: none of it is in the user's real home.
    home = Path(os.environ["HOME"])
    assert not [n for n in STATE if (home / n).exists()]


@pytest.mark.parametrize("preset", CLIS)
def test_a_cli_that_exits_0_having_changed_nothing_is_reported_so(
        preset: str, webapp: Repo, fake_model: FakeModel, agents_path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    require_cli(preset)
    require_confinement("bwrap+landlock")
    setup = agent_setup(preset, fake_model, monkeypatch)
    tf = TaskFile.model_validate({"defaults": {"limits": LIMITS}, "tasks": [
        {"id": "idle", "description": "NOOP: there is nothing to do.", **setup}]})
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False))
    r = res.result("idle")
    # The CLI did run and answer (a model call), exited 0, and wrote nothing.
    assert fake_model.model_calls() and not fake_model.written()
    assert r.status == "succeeded" and r.exit_code == 0
    assert r.no_changes and "changed nothing" in r.message, r.model_dump_json(indent=1)
    assert r.final_message and "Nothing to do" in r.final_message


def test_eight_real_agents_two_of_each_cli_on_four_slots_all_land(
        webapp: Repo, fake_model: FakeModel, agents_path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for preset in CLIS:
        require_cli(preset)
    require_confinement("bwrap+landlock")
    tasks = [task(preset, fake_model, monkeypatch, f"{preset}-{n}", f"out/{preset}-{n}.txt",
                  f"{preset} number {n}") for preset in CLIS for n in (1, 2)]
    tf = TaskFile.model_validate({"defaults": {"limits": LIMITS}, "tasks": tasks})
    res = run_workflow(webapp, tf, RunOptions(agents=4, use_history=False))
    assert res.outcome == "succeeded", res.model_dump_json(indent=1)
    assert res.metrics.agents_used == 4
    for preset in CLIS:
        for n in (1, 2):
            assert webapp.out("show", f"main:out/{preset}-{n}.txt") == f"{preset} number {n}"
    assert len(fake_model.written()) == 8
    assert res.tokens is not None and res.tokens.input >= sum(
        (r.tokens.input if r.tokens else 0) for r in res.results) > 0
