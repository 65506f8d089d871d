"""Bad input through every door (CLI, MCP): one line, exit 2, nothing created; and the
planner's view of a repository's history and of limits that cannot fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import yaml
from mcp import Client

from forkyard.mcp.server import create_server
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile
from planner import plan as make_plan

ROOT = Path(__file__).parents[2]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forkyard.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _state(repo: Repo) -> tuple[list[str], str]:
    fy = repo.forkyard_dir
    files = sorted(str(p.relative_to(fy)) for p in fy.rglob("*")) if fy.exists() else []
    return files, repo.out("for-each-ref")


def test_empty_task_file_is_bad_input_on_the_cli(webapp: Repo, tmp_path: Path) -> None:
    tasks = tmp_path / "empty.yaml"
    tasks.write_text("tasks: []\n")
    before = _state(webapp)
    r = cli("run", str(tasks), cwd=webapp.path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "no tasks" in r.stderr
    assert _state(webapp) == before


def test_no_tasks_are_refused_by_the_mcp_execute_tool(webapp: Repo) -> None:
    before = _state(webapp)

    async def go() -> None:
        async with Client(create_server(webapp.path)) as client:
            result = await client.call_tool("execute_parallel_workflow", {"tasks": []})
            assert result.is_error
            assert "tasks is empty" in result.content[0].text

    anyio.run(go)
    assert _state(webapp) == before


def test_unknown_dependency_changes_nothing(webapp: Repo, tmp_path: Path) -> None:
    tasks = tmp_path / "t.yaml"
    tasks.write_text(yaml.safe_dump({"tasks": [{"id": "a", "command": "true", "depends_on": ["ghost"]}]}))
    before = _state(webapp)
    r = cli("run", str(tasks), cwd=webapp.path)
    assert r.returncode == 2 and "ghost" in r.stderr
    assert _state(webapp) == before
    assert not (webapp.forkyard_dir / "history.db").exists()


def test_plan_uses_the_repositorys_history_like_run(webapp: Repo, tmp_path: Path) -> None:
    tasks = tmp_path / "t.yaml"
    tasks.write_text(yaml.safe_dump({"defaults": {"limits": {"timeout_s": 60}}, "tasks": [
        {"id": "quick", "command": "true", "estimated_minutes": 30}]}))
    res = run_workflow(webapp, tasks, RunOptions(agents=1))
    assert res.outcome == "succeeded"
    r = cli("plan", str(tasks), "--json", "--repo", str(webapp.path), cwd=tmp_path)
    import json

    measured = json.loads(r.stdout)
    assert measured["durations"]["quick"] < 30  # the measured second, not the estimate
    r = cli("plan", str(tasks), "--json", "--no-history", "--repo", str(webapp.path),
            cwd=tmp_path)
    assert json.loads(r.stdout)["durations"]["quick"] == 30


def test_risks_name_a_timeout_below_the_estimate() -> None:
    tf = TaskFile.model_validate({"tasks": [
        {"id": "long", "estimated_minutes": 20, "limits": {"timeout_s": 600}},
        {"id": "fits", "estimated_minutes": 5}]})
    risks = make_plan(tf, agents=2).risks
    assert any("'long' has timeout_s 600" in r for r in risks)
    assert not any("'fits'" in r for r in risks)
