"""``forkyard plan``: JSON and human output, and bad input as exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forkyard.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
FORKYARD = Path(sys.executable).parent / "forkyard"


def test_plan_json_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLES / "tasks.yaml"), "--agents", "3", "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert doc["agents"] == 3 and doc["goal"] == "minimize-time"
    assert doc["makespan"] >= doc["lower_bound"]
    assert {a["task"] for a in doc["assignments"]} == {
        "model", "validation", "api", "ui", "docs", "ci", "tests"}
    assert doc["implicit_dependencies"] == [
        {"from": "model", "to": "validation", "reason": "both touch src/models/user.py"}]


def test_plan_human_output_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLES / "tasks.yaml"), "--agents", "3"]) == 0
    cap = capsys.readouterr()
    assert cap.out == ""
    assert "Plan: 7 tasks on 3 agents" in cap.err
    assert "█" in cap.err  # the Gantt chart
    assert "recommendation:" in cap.err


def test_plan_markdown_with_goal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLES / "tasks.md"), "--goal", "minimize-conflicts", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["goal"] == "minimize-conflicts"
    assert len(doc["assignments"]) == 13


def test_cycle_is_exit_2_with_the_cycle_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "cycle.yaml"
    f.write_text("tasks:\n- {id: a, depends_on: [b]}\n- {id: b, depends_on: [a]}\n- {id: c}\n")
    assert main(["plan", str(f), "--json"]) == 2
    cap = capsys.readouterr()
    assert json.loads(cap.out) == {"error": "dependency cycle: a -> b -> a", "cycles": [["a", "b", "a"]]}
    assert cap.err.strip() == "forkyard: error: dependency cycle: a -> b -> a"


def test_unknown_dependency_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "t.json"
    f.write_text('{"tasks": [{"id": "a", "depends_on": ["ghost"]}]}')
    assert main(["plan", str(f)]) == 2
    assert "depends on unknown task 'ghost'" in capsys.readouterr().err


def test_malformed_file_is_exit_2_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("tasks:\n- id: a\n  estimated_minutes: soon\n")
    assert main(["plan", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tasks[0].estimated_minutes (task 'a')" in err


def test_console_script_end_to_end(tmp_path: Path) -> None:
    ok = subprocess.run([str(FORKYARD), "plan", str(EXAMPLES / "tasks.md"), "-n", "2", "--json"],
                        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["agents"] == 2
    f = tmp_path / "cycle.yaml"
    f.write_text("- {id: a, depends_on: [a]}\n")
    bad = subprocess.run([str(FORKYARD), "plan", str(f)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert bad.returncode == 2
    assert "a -> a" in bad.stderr and "Traceback" not in bad.stderr
