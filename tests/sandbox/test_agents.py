"""Agent command templates and presets."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from planner.tasks import Agent, Task
from sandbox.agents import (
    AgentConfigError,
    AgentContext,
    check_agent,
    command_for,
    expand_env,
    render_template,
)

CTX = AgentContext("t1", "Fix the 'login' bug; $(rm -rf /)", "/w/t1", "forkyard/r/t1", "abc123",
                   "make test", "r")


def test_template_values_are_shell_quoted() -> None:
    cmd = render_template("echo {id} {description} {worktree} {branch} {base} {command}",
                          CTX.__dict__)
    assert shlex.split(cmd) == ["echo", "t1", "Fix the 'login' bug; $(rm -rf /)", "/w/t1",
                                "forkyard/r/t1", "abc123", "make test"]


def test_other_braces_are_left_alone() -> None:
    assert render_template("awk '{print $1}' ${HOME} {id}", CTX.__dict__) == \
        "awk '{print $1}' ${HOME} t1"


def test_environment_carries_the_same_values() -> None:
    env = CTX.env()
    assert env["FORKYARD_TASK_ID"] == "t1" and env["FORKYARD_DESCRIPTION"] == CTX.description
    assert env["FORKYARD_WORKTREE"] == "/w/t1" and env["FORKYARD_COMMAND"] == "make test"


@pytest.mark.parametrize(("preset", "argv"), [
    ("claude", ["claude", "--output-format", "stream-json", "--verbose",
                "--dangerously-skip-permissions", "-p", "Fix it"]),
    ("codex", ["codex", "exec", "--json", "--dangerously-bypass-approvals-and-sandbox",
               "--skip-git-repo-check", "-c", "analytics.enabled=false",
               "-c", "features.plugins=false", "-c", "features.remote_plugin=false", "Fix it"]),
    ("aider", ["aider", "--yes-always", "--no-auto-commits", "--no-check-update",
               "--no-show-release-notes", "--analytics-disable", "--no-gitignore",
               "--no-pretty", "--no-fancy-input", "--no-show-model-warnings",
               "--message", "Fix it"]),
    ("gemini", ["gemini", "-o", "stream-json", "--approval-mode", "yolo", "--skip-trust",
                "-p", "Fix it"]),
])
def test_presets_expand_to_unattended_externally_sandboxed_invocations(
        preset: str, argv: list[str]) -> None:
    task = Task(id="t", description="Fix it")
    assert shlex.split(command_for(Agent(preset=preset), task, CTX)) == argv  # type: ignore[arg-type]


def test_preset_args_follow_the_default_flags_and_flags_replace_them() -> None:
    task = Task(id="t", description="Fix it")
    cmd = command_for(Agent(preset="codex", args=["-m", "o3"]), task, CTX)
    assert shlex.split(cmd)[-3:] == ["-m", "o3", "Fix it"]
    cmd = command_for(Agent(preset="codex", flags=["--json", "-s", "workspace-write"],
                            args=["-m", "o3"]), task, CTX)
    assert shlex.split(cmd) == ["codex", "exec", "--json", "-s", "workspace-write",
                                "-m", "o3", "Fix it"]


def test_env_names_the_callers_variables_and_a_missing_one_is_bad_input() -> None:
    assert expand_env("t", {"KEY": "${A}-${B}", "X": "plain"}, {"A": "1", "B": "2"}) == \
        {"KEY": "1-2", "X": "plain"}
    with pytest.raises(AgentConfigError) as info:
        expand_env("t", {"KEY": "${NOPE}"}, {})
    assert info.value.exit_code == 2 and "NOPE" in str(info.value)


def test_a_preset_whose_cli_is_missing_or_under_tmp_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(AgentConfigError, match="not on PATH"):
        check_agent(Agent(preset="gemini"), Task(id="t", description="x"))
    tool = tmp_path / "gemini"  # pytest's tmp_path is under /tmp
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AgentConfigError, match="under /tmp") as info:
        check_agent(Agent(preset="gemini"), Task(id="t", description="x"))
    assert info.value.exit_code == 2


def test_shell_preset_runs_the_task_command() -> None:
    task = Task(id="t", command="pytest -q && echo ok")
    assert shlex.split(command_for(Agent(preset="shell"), task, CTX)) == \
        ["bash", "-c", "pytest -q && echo ok"]


def test_missing_command_is_bad_input() -> None:
    with pytest.raises(AgentConfigError) as info:
        check_agent(Agent(command="bash -c {command}"), Task(id="lonely"))
    assert info.value.exit_code == 2 and info.value.task == "lonely"
    with pytest.raises(AgentConfigError):
        check_agent(Agent(preset="shell"), Task(id="lonely"))


def test_a_preset_with_the_network_off_is_refused() -> None:
    # Its CLI would retry its model API silently until the timeout.
    with pytest.raises(AgentConfigError, match="network") as info:
        check_agent(Agent(preset="claude"), Task(id="t", description="x"), installed=False,
                    network=False)
    assert info.value.exit_code == 2
    check_agent(Agent(preset="shell"), Task(id="t", command="true"), network=False)
