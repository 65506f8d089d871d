"""The MCP server: tools callable in-process and over stdio (``forkyard mcp``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import yaml
from mcp import Client, StdioServerParameters

from forkyard.mcp.server import create_server
from gitproc.git import Repo

ROOT = Path(__file__).parents[2]


def payload(result: Any) -> dict[str, Any]:
    if getattr(result, "structured_content", None):
        return dict(result.structured_content)
    return json.loads(result.content[0].text)


def test_tools_in_process(webapp: Repo, tmp_path: Path) -> None:
    tasks = tmp_path / "t.yaml"
    tasks.write_text(yaml.safe_dump({"tasks": [
        {"id": "one", "command": "echo 1 > one.txt", "estimated_minutes": 2},
        {"id": "two", "command": "echo 2 > two.txt", "depends_on": ["one"]},
    ]}))

    async def go() -> None:
        async with Client(create_server(webapp.path)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"plan", "status", "merge", "check"} <= names
            plan = payload(await client.call_tool("plan", {"tasks": str(tasks), "agents": 2}))
            assert plan["critical_path"] == ["one", "two"] and plan["agents"] == 2
            started = payload(await client.call_tool("execute_parallel_workflow", {
                "tasks": yaml.safe_load(tasks.read_text())["tasks"], "maxParallelAgents": 2}))
            st = payload(await client.call_tool("get_workflow_status", {
                "runId": started["runId"], "waitSeconds": 120}))
            run = st["result"]
            assert run["outcome"] == "succeeded"
            status = payload(await client.call_tool("status", {}))
            assert status["run_id"] == run["run_id"] and status["state"] == "finished"
            branch = run["results"][0]["branch"]
            check = payload(await client.call_tool("check", {"sources": [branch], "into": "main"}))
            assert check["ok"] and check["integration"]["outcome"] == "dry_run"

    anyio.run(go)
    assert webapp.out("show", "main:two.txt") == "2"


def test_stdio_server(webapp: Repo) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "forkyard.cli", "mcp", "--repo", str(webapp.path)],
        env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
    )

    async def go() -> None:
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "execute_parallel_workflow" in names and "status" in names

    anyio.run(go)
