"""Agent command templates and presets."""

from __future__ import annotations

import shlex

import pytest

from planner.tasks import Agent, Task
from sandbox.agents import AgentConfigError, AgentContext, check_agent, command_for, render_template

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
    ("claude", ["claude", "-p", "Fix it", "--permission-mode", "acceptEdits"]),
    ("codex", ["codex", "exec", "--full-auto", "Fix it"]),
    ("aider", ["aider", "--yes", "--message", "Fix it"]),
    ("gemini", ["gemini", "--approval-mode", "auto_edit", "-p", "Fix it"]),
])
def test_presets_expand_to_non_interactive_invocations(preset: str, argv: list[str]) -> None:
    task = Task(id="t", description="Fix it")
    assert shlex.split(command_for(Agent(preset=preset), task, CTX)) == argv  # type: ignore[arg-type]


def test_preset_args_go_before_the_prompt() -> None:
    task = Task(id="t", description="Fix it")
    cmd = command_for(Agent(preset="claude", args=["--model", "opus"]), task, CTX)
    assert shlex.split(cmd) == ["claude", "--model", "opus", "-p", "Fix it",
                                "--permission-mode", "acceptEdits"]


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
