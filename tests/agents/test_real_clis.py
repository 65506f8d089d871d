"""Each preset's real CLI in a real sandbox (worktree backend: bubblewrap + Landlock +
cgroups), against the fake model server on 127.0.0.1: the file the model asks for lands
on the target branch, through ``run_workflow`` as a user's ``forkyard run`` would."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

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
    # The CLI kept its state in its private home: none of it is in the user's real home.
    home = Path(os.environ["HOME"])
    assert not [n for n in STATE if (home / n).exists()]
