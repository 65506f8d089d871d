"""Agent commands: templates, and presets for common agent CLIs (``sandbox/presets.py``).

A task runs either a command template (``python tools/gen.py {id}``) or a preset naming an
agent CLI (claude, codex, aider, gemini, shell).  Templates may use ``{id}``,
``{description}``, ``{worktree}``, ``{branch}``, ``{base}`` and ``{command}``; each value is
substituted shell-quoted, so a description with quotes or ``$(...)`` reaches the agent as
plain text and never runs.  The same values are in the agent's environment
(``FORKYARD_TASK_ID``, ``FORKYARD_DESCRIPTION`` ...), which is the safer way for scripts to
read them.

A preset expands to its CLI's non-interactive, externally sandboxed invocation with the
task's description as the prompt (``sandbox/presets.py`` has each one and why):
``<cli> <flags> <args> <prompt option> PROMPT``.  ``flags`` from the task file replace the
preset's default flags, ``args`` add to them, e.g. ``{preset: claude, args: [--model,
opus]}``.  A task file's ``env`` (defaults, then the task's) reaches the agent with
``${NAME}`` replaced by the caller's variable.

Each preset also declares the caller's variables its CLI needs (``Preset.pass_env``, with
its key and endpoint variables: passed by name, masked in output) and the hosts it
reaches (``Preset.domains``: the ``auto`` network policy); ``docs/security.md`` has the
policies.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from planner.tasks import Agent, Task
from sandbox import secrets
from sandbox.errors import SandboxBadInputError
from sandbox.presets import PRESETS, find_cli

FIELDS = ("id", "description", "worktree", "branch", "base", "command")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(FIELDS) + r")\}")


class AgentConfigError(SandboxBadInputError):
    """A task's agent cannot be turned into a command (e.g. ``{command}`` with no command)."""

    def __init__(self, task: str, message: str) -> None:
        super().__init__(f"task {task!r}: {message}")
        self.task = task


@dataclass(frozen=True)
class AgentContext:
    """The values a command template can use for one task."""

    id: str
    description: str
    worktree: str
    branch: str
    base: str
    command: str
    run_id: str = ""
    attempt: int = 1

    def env(self) -> dict[str, str]:
        """The same values as environment variables (``FORKYARD_TASK_ID`` ...)."""
        return {
            "FORKYARD_TASK_ID": self.id,
            "FORKYARD_DESCRIPTION": self.description,
            "FORKYARD_WORKTREE": self.worktree,
            "FORKYARD_BRANCH": self.branch,
            "FORKYARD_BASE": self.base,
            "FORKYARD_COMMAND": self.command,
            "FORKYARD_RUN_ID": self.run_id,
            "FORKYARD_ATTEMPT": str(self.attempt),   # 2 on the first retry
        }


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``{field}`` placeholders with shell-quoted values.

    Only the known fields are replaced; other braces (``${HOME}``, awk's ``{print}``) are
    left alone, which is why this is a regex and not ``str.format``.
    """
    return _PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]), template)


def prompt_for(task: Task) -> str:
    """What a preset agent is asked to do: the description, else the command, else the id."""
    return task.description or task.command or task.id


def command_for(agent: Agent, task: Task, ctx: AgentContext) -> str:
    """The shell command line that runs ``task`` with ``agent``."""
    if agent.preset is not None:
        preset = PRESETS[agent.preset]
        flags = None if agent.flags is None else tuple(agent.flags)
        if agent.preset == "shell":
            if not task.command:
                raise AgentConfigError(task.id, "the shell preset needs a `command`")
            return shlex.join(preset.argv(task.command, flags, tuple(agent.args)))
        return shlex.join(preset.argv(prompt_for(task), flags, tuple(agent.args)))
    assert agent.command is not None  # the Agent model guarantees command or preset
    if "{command}" in agent.command and not task.command:
        raise AgentConfigError(task.id, f"agent template {agent.command!r} uses {{command}} "
                                        "but the task has no command")
    rendered = render_template(agent.command, {f: getattr(ctx, f) for f in FIELDS})
    if agent.args:
        rendered += " " + shlex.join(agent.args)
    return rendered


def check_agent(agent: Agent, task: Task, installed: bool = True, network: bool = True) -> None:
    """Raise :class:`AgentConfigError` now (before anything runs) if ``task`` cannot run:
    no command, a ``${NAME}`` the caller lacks, a preset's CLI cut off from its model
    API (``network`` off: it would retry silently until its timeout), or
    (``installed``) a preset whose CLI is not where a sandbox can run it."""
    command_for(agent, task, AgentContext(task.id, task.description, "", "", "", task.command or ""))
    expand_env(task.id, task.env)
    if not network and agent.preset not in (None, "shell"):
        raise AgentConfigError(task.id, f"agent {agent.preset!r} needs the network to reach "
                                        "its model API, and limits.network is none")
    if installed and agent.preset not in (None, "shell"):
        check_installed(task.id, agent.preset)  # type: ignore[arg-type]


def check_installed(task_id: str, preset: str) -> None:
    """Bad input unless ``preset``'s CLI is on PATH outside ``/tmp``."""
    p = PRESETS[preset]
    exe, under_tmp = find_cli(preset)
    if exe is None:
        raise AgentConfigError(task_id, f"agent {preset!r} needs the `{p.exe}` CLI, which is "
                                        f"not on PATH (install {p.package}; `forkyard agents` "
                                        "lists what is installed)")
    if under_tmp:
        raise AgentConfigError(task_id, f"agent {preset!r}: `{p.exe}` is {exe}, under /tmp, "
                                        "which a sandbox replaces with its own temp dir: "
                                        "install it elsewhere")


def task_env(task_id: str, env: Mapping[str, str],
             caller: Mapping[str, str] | None = None) -> tuple[dict[str, str], tuple[str, ...]]:
    """``env`` with each ``${NAME}`` replaced by the caller's variable, and the names whose
    value came from the caller (secrets: masked, ``sandbox/secrets.py``).  A variable the
    caller lacks is bad input (an empty key would fail later, and quietly)."""
    try:
        return secrets.expand(env, caller)
    except secrets.EnvReferenceError as exc:
        raise AgentConfigError(task_id, str(exc)) from None


def expand_env(task_id: str, env: Mapping[str, str],
               caller: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` with each ``${NAME}`` replaced by the caller's variable (:func:`task_env`)."""
    return task_env(task_id, env, caller)[0]


def agent_env(task: Task, ctx: AgentContext) -> dict[str, str]:
    """The environment a task's agent is given: its task file ``env`` expanded, then
    forkyard's own ``FORKYARD_*`` values (which a task cannot override)."""
    return {**expand_env(task.id, task.env), **ctx.env()}


def expand_paths(paths: tuple[str, ...] | list[str]) -> tuple[Path, ...]:
    """Task-file paths as absolute paths (``~`` is the caller's home)."""
    return tuple(Path(os.path.abspath(os.path.expanduser(p))) for p in paths)
