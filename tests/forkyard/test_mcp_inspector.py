"""``forkyard mcp`` through a second, independent MCP client: the MCP Inspector's CLI
mode (npm ``@modelcontextprotocol/inspector``, installed by ``make test`` through
scripts/mcp-inspector.sh).  Every call is a new server process, so the flow also shows a
run living on between clients: analyse, execute, poll status to the end, detect
conflicts, roll back."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures.repos import commit_files
from gitproc.git import Repo
from gitproc.process import run
from tests.conftest import require

ROOT = Path(__file__).parents[2]
INSPECTOR = Path(os.environ.get(
    "FORKYARD_MCP_INSPECTOR", ROOT / ".tools/mcp-inspector/node_modules/.bin/mcp-inspector"))


class Inspector:
    def __init__(self, repo: Repo, home: Path) -> None:
        self.repo = repo
        # The Inspector keeps a catalog under $HOME: a temp one per test.
        self.env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}

    def call(self, tool: str, **args: Any) -> tuple[bool, dict[str, Any]]:
        argv = [str(INSPECTOR), "--cli", sys.executable, "-m", "forkyard.cli", "mcp",
                "--repo", str(self.repo.path), "--method", "tools/call", "--tool-name", tool]
        if args:
            argv += ["--tool-arg", *(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                                     for k, v in args.items())]
        r = run(argv, env=self.env, timeout=120, check=False)
        # The result document first; on a tool error the CLI appends an error line and
        # exits non-zero.
        doc, _ = json.JSONDecoder().raw_decode(r.out.lstrip())
        failed = bool(doc.get("isError"))
        assert failed == (r.returncode != 0), (r.returncode, r.out, r.err)
        return failed, doc

    def ok(self, tool: str, **args: Any) -> dict[str, Any]:
        failed, doc = self.call(tool, **args)
        assert not failed, doc
        return dict(doc["structuredContent"])

    def error(self, tool: str, **args: Any) -> str:
        failed, doc = self.call(tool, **args)
        assert failed, doc
        return str(doc["content"][0]["text"])


@pytest.fixture
def inspector(webapp: Repo, tmp_path: Path) -> Inspector:
    require(INSPECTOR.exists(), f"the MCP Inspector at {INSPECTOR} (make mcp-inspector)")
    return Inspector(webapp, tmp_path / "home")


def test_flow_through_the_inspector_cli(inspector: Inspector, webapp: Repo) -> None:
    before = webapp.rev_parse("main")
    commit_files(webapp, "left", {"src/config.py": "LEFT = 1\n"}, base="main")
    commit_files(webapp, "right", {"src/config.py": "RIGHT = 2\n"}, base="main")
    tasks = [{"id": "one", "command": "echo 1 > one.txt", "files": ["one.txt"]},
             {"id": "two", "command": "echo 2 > two.txt", "dependsOn": ["one"]}]

    analysis = inspector.ok("analyze_task_parallelizability", taskDescription="two files",
                            subtasks=tasks, maxParallelAgents=2)
    assert [b["tasks"] for b in analysis["suggestedBatches"]] == [["one"], ["two"]]
    assert "subtasks is empty" in inspector.error(
        "analyze_task_parallelizability", taskDescription="x", subtasks=[])

    run_id = inspector.ok("execute_parallel_workflow", tasks=tasks, maxParallelAgents=2,
                          into="main")["runId"]
    deadline = time.monotonic() + 240
    while True:
        st = inspector.ok("get_workflow_status", runId=run_id, waitSeconds=5)
        if st["state"] != "running" or time.monotonic() > deadline:
            break
    assert st["state"] == "finished" and st["outcome"] == "succeeded", st
    assert st["result"]["run_id"] == run_id
    assert webapp.out("show", "main:two.txt") == "2"

    report = inspector.ok("detect_conflicts", branches=["left", "right"], into="main")
    assert report["ok"] is False and report["pairs"][0]["files"] == ["src/config.py"]

    rolled = inspector.ok("rollback_run", runId=run_id)
    assert rolled["restoredSha"] == before and webapp.rev_parse("main") == before
    assert "has moved since run" in inspector.error("rollback_run", runId=run_id)
