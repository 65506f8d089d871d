"""The one error handler of the command line: exit codes and one-line messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forkyard.cli import main
from gitproc.git import Repo


def test_a_usage_error_names_the_option_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "tasks.yaml", "--agents", "0"]) == 2
    err = capsys.readouterr().err
    assert "--agents" in err and "Traceback" not in err


def test_an_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_bad_input_is_one_line_and_json_carries_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text("tasks:\n  - {id: a, depends_on: [b]}\n  - {id: b, depends_on: [a]}\n")
    assert main(["plan", str(cycle), "--json"]) == 2
    out, err = capsys.readouterr()
    assert err.strip().count("\n") == 0 and err.startswith("forkyard: error: dependency cycle")
    assert json.loads(out)["cycles"] == [["a", "b", "a"]]


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "plan" in capsys.readouterr().out


def test_run_refuses_an_old_git_before_any_agent_starts(
    webapp: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import gitproc.git

    tasks = tmp_path / "t.yaml"
    tasks.write_text("tasks:\n  - {id: a, command: 'touch ran'}\n")
    monkeypatch.setattr(gitproc.git, "git_version", lambda: (2, 30, 1))
    repo = webapp.path  # type: ignore[attr-defined]
    assert main(["run", str(tasks), "--repo", str(repo)]) == 2
    assert "needs git >= 2.38" in capsys.readouterr().err
    assert not list((repo / ".git").glob("forkyard/worktrees/*/*"))


def test_run_id_names_a_new_run_and_is_checked(webapp: Repo, tmp_path: Path) -> None:
    tasks = tmp_path / "t.yaml"
    tasks.write_text("tasks:\n  - {id: one, command: 'echo 1 > one.txt'}\n")
    args = ["run", str(tasks), "--repo", str(webapp.path), "--json"]
    assert main([*args, "--run-id", "bad/id"]) == 2
    assert main([*args, "--run-id", "mine-1"]) == 0
    assert (webapp.forkyard_dir / "runs" / "mine-1" / "result.json").exists()
    assert main([*args, "--run-id", "mine-1"]) == 2  # taken
