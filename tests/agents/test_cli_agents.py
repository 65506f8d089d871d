"""``forkyard agents``, ``run`` refusing a missing CLI, and where sandboxes go, through the
command line as a user types it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from gitproc.git import Repo
from sandbox import places
from tests.agents.conftest import CLIS, require_cli
from tests.forkyard.test_run import forkyard


def test_agents_says_which_clis_are_installed_their_versions_and_keys(
        tmp_path: Path, agents_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for preset in CLIS:
        require_cli(preset)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9")
    for var in ("OPENAI_API_KEY", "CODEX_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    r = forkyard("agents", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    by = {a["preset"]: a for a in json.loads(r.stdout)}
    assert {"claude": "2.1.197", "codex": "0.171.0", "gemini": "0.61.0", "aider": "0.86.2"} \
        == {p: by[p]["version"] for p in CLIS}
    assert all(by[p]["installed"] for p in CLIS)
    assert by["claude"]["key"] == "ANTHROPIC_API_KEY" and by["codex"]["key"] is None
    assert by["gemini"]["endpoint"] == "http://127.0.0.1:9"
    assert "api.anthropic.com" in by["claude"]["domains"]


def _tasks(path: Path, agent: str) -> Path:
    path.write_text(yaml.safe_dump({"tasks": [{"id": "t", "description": "x", "agent": agent}]}))
    return path


def test_run_refuses_a_task_whose_cli_is_missing_in_one_line(
        webapp: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    before = webapp.rev_parse("main")
    r = forkyard("run", str(_tasks(tmp_path / "t.yaml", "codex")), cwd=webapp.path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "`codex`" in lines[0] and "not on PATH" in lines[0]
    assert webapp.rev_parse("main") == before
    assert not (webapp.forkyard_dir / "runs").exists()


def test_run_says_when_the_cli_lives_under_tmp(
        webapp: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "bin"  # under /tmp, like a CLI installed into a scratch prefix
    tools.mkdir()
    (tools / "gemini").write_text("#!/bin/sh\necho 0.61.0\n")
    (tools / "gemini").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    r = forkyard("run", str(_tasks(tmp_path / "t.yaml", "gemini")), cwd=webapp.path)
    assert r.returncode == 2 and "under /tmp" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_sandbox_dir_chooses_where_sandboxes_go_and_gc_still_finds_them(
        webapp: Repo, tmp_path: Path) -> None:
    where = tmp_path / "sandboxes"
    tasks = tmp_path / "t.yaml"
    tasks.write_text(yaml.safe_dump({"defaults": {"limits": {"network": False}}, "tasks": [
        {"id": "t", "command": "pwd > where.txt"}]}))
    r = forkyard("run", str(tasks), "--sandbox-dir", str(where), "--keep", "--json",
                 cwd=webapp.path)
    assert r.returncode == 0, r.stderr
    ran_in = webapp.out("show", "main:where.txt").strip()
    root = places.sandbox_root(webapp.forkyard_dir)
    # <root>/<run>/<task>/worktree: one directory per sandbox (places.Place)
    assert root.parent == where and Path(ran_in).parents[2] == root
    assert Path(ran_in).name == places.WORKTREE and Path(ran_in).parent.name == "t"
    assert ".git" not in Path(ran_in).parts
    assert Path(ran_in).is_dir()  # kept
    gc = forkyard("gc", "--json", cwd=webapp.path)
    assert gc.returncode == 0, gc.stderr
    assert not Path(ran_in).exists() and not Path(ran_in).parent.exists()
    assert ran_in in json.loads(gc.stdout)["worktrees_removed"]


def test_a_sandbox_dir_inside_git_is_bad_input(webapp: Repo, tmp_path: Path) -> None:
    tasks = tmp_path / "t.yaml"
    tasks.write_text(yaml.safe_dump({"tasks": [{"id": "t", "command": "true"}]}))
    r = forkyard("run", str(tasks), "--sandbox-dir", str(webapp.common_dir / "x"),
                 cwd=webapp.path)
    assert r.returncode == 2 and ".git" in r.stderr
