"""``forkyard mcp`` end to end, through the SDK's own client over stdio against a real
server process: analyse, execute on a fixture repository, follow the run to its end,
detect conflicts, roll back; runs that outlive their client; cancellation; errors."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from fixtures.repos import commit_files
from gitproc.git import Repo

ROOT = Path(__file__).parents[2]

TASKS: list[dict[str, Any]] = [  # one <- two, three beside them
    {"id": "one", "description": "write one", "command": "echo 1 > one.txt",
     "estimatedMinutes": 2, "files": ["one.txt"]},
    {"id": "two", "description": "write two", "command": "echo 2 > two.txt",
     "dependsOn": ["one"], "files": ["two.txt"]},
    {"id": "three", "description": "write three", "command": "echo 3 > three.txt",
     "files": ["three.txt"]},
]


def server(repo: Repo) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "forkyard.cli", "mcp", "--repo", str(repo.path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def session(repo: Repo, body: Callable[[Client], Awaitable[None]]) -> None:
    async def go() -> None:
        async with Client(server(repo)) as client:
            await body(client)

    anyio.run(go)


def ok(result: CallToolResult) -> dict[str, Any]:
    """A successful call's structured content (its text block says the same)."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    return dict(result.structured_content)


def error(result: CallToolResult) -> str:
    """A failed call's one-line reason."""
    assert result.is_error, result.structured_content
    text = str(result.content[0].text)  # type: ignore[union-attr]
    assert "\n" not in text
    return text


async def finished(client: Client, run_id: str, seen: list[Any] | None = None) -> dict[str, Any]:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        assert seen is not None
        seen.append((progress, total, message))

    for _ in range(60):
        st = ok(await client.call_tool("get_workflow_status", {"runId": run_id, "waitSeconds": 30},
                                       progress_callback=on_progress if seen is not None else None))
        if st["state"] != "running":
            return st
    raise AssertionError(f"run {run_id} did not finish")


def test_analyse_execute_follow_detect_roll_back(webapp: Repo) -> None:
    before = webapp.rev_parse("main")
    commit_files(webapp, "left", {"src/config.py": "LEFT = 1\n"}, base="main")
    commit_files(webapp, "right", {"src/config.py": "RIGHT = 2\n"}, base="main")
    commit_files(webapp, "aside", {"notes.txt": "aside\n"}, base="main")

    async def body(client: Client) -> None:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"analyze_task_parallelizability", "create_dependency_graph",
                "optimize_batch_distribution", "aggregate_progress", "execute_parallel_workflow",
                "get_workflow_status", "cancel_workflow", "detect_conflicts",
                "rollback_run"} <= set(tools)
        assert all(t.output_schema is not None for t in tools.values())

        analysis = ok(await client.call_tool("analyze_task_parallelizability", {
            "taskDescription": "three files", "subtasks": TASKS, "maxParallelAgents": 2}))
        assert [b["tasks"] for b in analysis["suggestedBatches"]] == [["one", "three"], ["two"]]

        started = ok(await client.call_tool("execute_parallel_workflow", {
            "analysisResult": analysis, "maxParallelAgents": 2, "into": "main",
            "constraints": {"timeoutMinutes": 5, "network": {"allow": ["api.example.com"]},
                            "resourceLimits": {"memoryMb": 512}}}))
        run_id = started["runId"]
        seen: list[Any] = []
        st = await finished(client, run_id, seen)
        assert st["state"] == "finished" and st["outcome"] == "succeeded", st
        assert st["percentComplete"] == 100.0
        assert {t["taskId"]: t["integrated"] for t in st["tasks"]} == {
            "one": True, "two": True, "three": True}
        assert {a["agentId"] for a in st["agents"]} <= {"agent-1", "agent-2"}
        assert st["result"]["run_id"] == run_id and st["result"]["outcome"] == "succeeded"
        assert seen and seen[-1][0] == seen[-1][1] == 3  # progress notifications, to the end
        assert "3/3 tasks done" in str(seen[-1][2])
        # The limits asked for are the ones the sandbox had.
        assert {r["limits"]["memory_mb"] for r in st["result"]["results"]} == {512}
        assert [r["limits"]["network"] for r in st["result"]["results"]] == [
            "allow: api.example.com"] * 3

        report = ok(await client.call_tool("detect_conflicts", {
            "branches": ["left", "right", "aside"], "into": "main"}))
        assert report["ok"] is False
        pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
        assert pairs[("left", "right")]["status"] == "conflict"
        assert pairs[("left", "right")]["files"] == ["src/config.py"]
        assert pairs[("left", "aside")]["status"] == "clean"
        branches = {b["branch"]: b for b in report["branches"]}
        assert branches["aside"]["integrates"] and branches["aside"]["conflictsWith"] == []
        assert branches["right"]["conflictsWith"] == ["left"]
        assert report["report"]["outcome"] == "dry_run"
        assert [o["path"] for o in report["report"]["overlaps"]] == ["src/config.py"]
        results = ok(await client.call_tool("detect_conflicts", {
            "agentResults": st["result"]["results"], "into": "main"}))
        assert results["ok"] is True and len(results["pairs"]) == 3

        assert webapp.out("show", "main:two.txt") == "2"
        rolled = ok(await client.call_tool("rollback_run", {"runId": run_id}))
        assert rolled["restoredSha"] == before
        assert webapp.rev_parse("main") == before
        # The checkout of main moved with it: no file of the run left, nothing dirty.
        assert rolled["worktreesSynced"] == [str(webapp.path)]
        assert not (webapp.path / "two.txt").exists() and not webapp.is_dirty()
        # No work is lost: the undone tip stays reachable.
        assert webapp.rev_parse(rolled["keptRef"]) == rolled["undoneSha"]
        assert "has moved since run" in error(
            await client.call_tool("rollback_run", {"runId": run_id}))

    session(webapp, body)


def test_rollback_refuses_when_the_target_moved(webapp: Repo) -> None:
    async def body(client: Client) -> None:
        run_id = ok(await client.call_tool("execute_parallel_workflow", {
            "tasks": TASKS[:1], "maxParallelAgents": 1, "into": "main"}))["runId"]
        assert (await finished(client, run_id))["outcome"] == "succeeded"
        moved = commit_files(webapp, "main", {"later.txt": "someone else\n"})
        text = error(await client.call_tool("rollback_run", {"runId": run_id}))
        assert "main has moved since run" in text and "refusing" in text
        assert webapp.rev_parse("main") == moved  # nothing changed

    session(webapp, body)


def test_a_run_outlives_its_client_and_can_be_cancelled(webapp: Repo) -> None:
    slow = [{"id": "slow", "command": "sleep 1; echo slow > slow.txt"},
            {"id": "sleepy", "command": "sleep 120"}]
    ids: list[str] = []

    async def start(client: Client) -> None:
        ids.append(ok(await client.call_tool("execute_parallel_workflow", {
            "tasks": slow, "maxParallelAgents": 2, "into": "main"}))["runId"])

    session(webapp, start)  # the client exits: its server's process group is killed
    time.sleep(3)
    run_id = ids[0]

    async def watch(client: Client) -> None:
        st = ok(await client.call_tool("get_workflow_status", {"runId": run_id}))
        assert st["state"] == "running", st  # still alive without the client that started it
        for _ in range(100):
            st = ok(await client.call_tool("get_workflow_status", {"runId": run_id}))
            if {t["taskId"]: t["status"] for t in st["tasks"]}.get("slow") == "succeeded":
                break
            await anyio.sleep(0.2)
        assert {t["taskId"]: t["status"] for t in st["tasks"]}["slow"] == "succeeded"
        stopped = ok(await client.call_tool("cancel_workflow", {"runId": run_id}))
        assert stopped["stopped"] and stopped["outcome"] == "cancelled", stopped
        st = ok(await client.call_tool("get_workflow_status", {"runId": run_id}))
        assert st["state"] == "finished" and st["result"]["outcome"] == "cancelled"
        assert "is not running" in error(await client.call_tool("cancel_workflow",
                                                                {"runId": run_id}))

    session(webapp, watch)
    # The work the first agent finished before the cancel stays on its branch.
    assert webapp.out("show", f"forkyard/{run_id}/slow:slow.txt") == "slow"


def test_errors_carry_their_reason(webapp: Repo) -> None:
    async def body(client: Client) -> None:
        assert "subtasks is empty" in error(await client.call_tool(
            "analyze_task_parallelizability", {"taskDescription": "x", "subtasks": []}))
        assert "subtasks: Field required" in error(await client.call_tool(
            "analyze_task_parallelizability", {"taskDescription": "x"}))
        assert "no forkyard runs in" in error(await client.call_tool(
            "get_workflow_status", {"runId": "nope"}))
        assert "target branch 'no-such-branch' does not exist" in error(
            await client.call_tool("execute_parallel_workflow", {
                "tasks": TASKS, "into": "no-such-branch"}))
        # Bad input changes nothing: no run, no leftovers of the background start.
        assert not (webapp.forkyard_dir / "runs").exists() or not any(
            (webapp.forkyard_dir / "runs").iterdir())
        assert not any((webapp.forkyard_dir / "detached").iterdir())
        assert "neither command nor agent" in error(await client.call_tool(
            "execute_parallel_workflow", {"tasks": [{"id": "a"}]}))
        assert "dependency cycle" in error(await client.call_tool("execute_parallel_workflow", {
            "tasks": [{"id": "a", "command": "true", "dependsOn": ["b"]},
                      {"id": "b", "command": "true", "dependsOn": ["a"]}]}))
        assert "no-such" in error(await client.call_tool(
            "detect_conflicts", {"branches": ["main", "no-such"]}))

    session(webapp, body)


def test_the_network_constraint_takes_the_task_file_values() -> None:
    import pytest

    from forkyard.mcp.runs import Constraints, task_file_from

    tasks = [{"id": "a", "command": "true"}]
    for given, limit in ((False, "none"), (True, "full"), ("auto", "auto"),
                         ({"allow": ["pypi.org"]}, {"allow": ("pypi.org",)})):
        tf = task_file_from(tasks, None, Constraints.model_validate({"network": given}), None)
        got = tf.defaults.limits.network
        assert (got if isinstance(got, str) else got.model_dump()) == limit
    with pytest.raises(ValueError):
        Constraints.model_validate({"network": "sometimes"})
