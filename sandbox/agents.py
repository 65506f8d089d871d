"""Agent commands: templates and presets for common agent CLIs.

A task runs either a command template (``python tools/gen.py {id}``) or a preset naming an
agent CLI (claude, codex, aider, gemini, shell).  Templates may use ``{id}``,
``{description}``, ``{worktree}``, ``{branch}``, ``{base}`` and ``{command}``; each value is
substituted shell-quoted, so a description with quotes or ``$(...)`` reaches the agent as
plain text and never runs.  The same values are in the agent's environment
(``FORKYARD_TASK_ID``, ``FORKYARD_DESCRIPTION`` ...), which is the safer way for scripts to
read them.

Presets expand to each CLI's documented non-interactive invocation, with the task's
description as the prompt:

- claude: ``claude -p PROMPT --permission-mode acceptEdits`` (print mode; file edits are
  accepted without a prompt, other tools still need an allow-list in the user's settings)
- codex: ``codex exec --full-auto PROMPT`` (``exec`` is codex's non-interactive mode;
  ``--full-auto`` = workspace-write sandbox, no approval prompts)
- aider: ``aider --yes --message PROMPT`` (one instruction, apply edits, exit)
- gemini: ``gemini --approval-mode auto_edit -p PROMPT`` (headless mode, edits auto-approved)
- shell: ``bash -c COMMAND`` (the task's own ``command``)

A preset's ``args`` go before the prompt, e.g. ``{preset: claude, args: [--model, opus]}``.

Each preset also declares the caller's variables its CLI needs (:data:`PRESET_ENV`: passed
by name, masked in output) and the hosts it reaches (:data:`PRESET_HOSTS`: the ``auto``
network policy); ``docs/security.md`` has the policies.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from planner.tasks import Agent, Task
from sandbox.errors import SandboxBadInputError

#: argv prefix of each preset; the prompt (or, for ``shell``, the command) goes last.
PRESETS: dict[str, tuple[str, ...]] = {
    "claude": ("claude", "-p"),
    "codex": ("codex", "exec", "--full-auto"),
    "aider": ("aider", "--yes", "--message"),
    "gemini": ("gemini", "--approval-mode", "auto_edit", "-p"),
    "shell": ("bash", "-c"),
}
#: The caller's variables each preset's CLI needs (its API key and endpoint), passed to
#: its agents by name -- the rest of the environment is not (``sandbox/secrets.py``);
#: their values are masked in what forkyard records.
PRESET_ENV: dict[str, tuple[str, ...]] = {
    "claude": ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL",
               "ANTHROPIC_MODEL", "CLAUDE_CODE_OAUTH_TOKEN"),
    "codex": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME"),
    "aider": ("OPENAI_API_KEY", "OPENAI_API_BASE", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
              "OPENROUTER_API_KEY", "DEEPSEEK_API_KEY", "AIDER_MODEL"),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_CLOUD_PROJECT",
               "GOOGLE_GENAI_USE_VERTEXAI"),
    "shell": (),
}
#: The hosts each preset's CLI reaches (its model API; a starting point: check the CLI's
#: documentation): the ``auto`` network policy's allowlist (``sandbox/network/policy.py``).
PRESET_HOSTS: dict[str, tuple[str, ...]] = {
    "claude": ("api.anthropic.com",),
    "codex": ("api.openai.com", "chatgpt.com", "auth.openai.com"),
    "gemini": ("generativelanguage.googleapis.com", "cloudcode-pa.googleapis.com",
               "oauth2.googleapis.com"),
    "aider": ("api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com",
              "openrouter.ai", "api.deepseek.com"),
    "shell": (),
}
#: arguments that must follow the prompt (claude's options may come after ``-p PROMPT``).
_PRESET_SUFFIX: dict[str, tuple[str, ...]] = {
    "claude": ("--permission-mode", "acceptEdits"),
}

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
        if agent.preset == "shell":
            if not task.command:
                raise AgentConfigError(task.id, "the shell preset needs a `command`")
            return shlex.join([*PRESETS["shell"], task.command])
        argv = [*PRESETS[agent.preset][:-1], *agent.args, PRESETS[agent.preset][-1],
                prompt_for(task), *_PRESET_SUFFIX.get(agent.preset, ())]
        return shlex.join(argv)
    assert agent.command is not None  # the Agent model guarantees command or preset
    if "{command}" in agent.command and not task.command:
        raise AgentConfigError(task.id, f"agent template {agent.command!r} uses {{command}} "
                                        "but the task has no command")
    rendered = render_template(agent.command, {f: getattr(ctx, f) for f in FIELDS})
    if agent.args:
        rendered += " " + shlex.join(agent.args)
    return rendered


def check_agent(agent: Agent, task: Task) -> None:
    """Raise :class:`AgentConfigError` now (before anything runs) if ``task`` cannot run."""
    command_for(agent, task, AgentContext(task.id, task.description, "", "", "", task.command or ""))

