"""The task file schema (pydantic, at the boundary): tasks, agents, limits, defaults.

Loaders that read YAML, JSON and spec-kit markdown into these models live in
``planner/loaders.py``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PRESETS = ("claude", "codex", "aider", "gemini", "shell")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NetworkAllow(BaseModel):
    """``network: {allow: [domains]}``: only these hosts, through the run's proxy (the
    agent preset's own API hosts are added to them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: tuple[str, ...] = Field(default=(), description="Host names (``*.example.com``, ``host:port``).")


#: ``auto``: a preset's API hosts through the proxy, nothing for a plain command;
#: ``none``: no network at all; ``full``: the host's network; ``{allow: [...]}``.
Network = Literal["auto", "none", "full"] | NetworkAllow


def network_value(value: Any) -> Any:
    """A `network` value as written (also the old true/false) in its canonical form."""
    # Old task files said `network: true/false`.
    if isinstance(value, bool):
        return "full" if value else "none"
    if value == "allow":
        return {"allow": []}
    if isinstance(value, list):
        return {"allow": value}
    return value


class Limits(BaseModel):
    """Resource limits for one task's sandbox.  None means "no limit" for that resource."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: int | None = Field(2048, ge=4, description="Memory limit in MiB (swap is off).")
    cpus: float | None = Field(1.0, gt=0, description="CPU quota in cores (1.5 = one and a half).")
    pids: int | None = Field(512, ge=1, description="Maximum number of processes/threads.")
    timeout_s: float | None = Field(1800, gt=0, description="Wall-clock limit; the tree is killed.")
    network: Network = Field("auto", description="auto, none, full or {allow: [hosts]}.")
    disk_mb: int | None = Field(None, ge=16, description="What the sandbox may write "
                                "(its changes, temp dir, objects), in MiB.")

    _net = field_validator("network", mode="before")(classmethod(lambda cls, v: network_value(v)))

    def merged(self, override: Limits | dict[str, Any] | None) -> Limits:
        """These limits with the fields ``override`` sets explicitly replaced."""
        if override is None:
            return self
        data = override if isinstance(override, dict) else override.model_dump(exclude_unset=True)
        return Limits.model_validate({**self.model_dump(), **data})


class Agent(BaseModel):
    """What runs a task: a command template, or a preset for a known agent CLI."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str | None = Field(None, description="Command template: {id} {description} {worktree} {branch} {base} {command}.")
    preset: Literal["claude", "codex", "aider", "gemini", "shell"] | None = None
    args: list[str] = Field(default_factory=list, description="Extra arguments for a preset.")
    flags: list[str] | None = Field(None, description="A preset's default flags replaced "
                                    "whole (``forkyard agents --flags`` shows them).")

    @model_validator(mode="after")
    def _one_of(self) -> Agent:
        if self.command is None and self.preset is None:
            raise ValueError("agent needs a command or a preset")
        return self


def _coerce_agent(value: Any) -> Any:
    # `agent: claude` (a preset name) or `agent: "python run.py {id}"` (a command).
    if isinstance(value, str):
        return {"preset": value} if value in PRESETS else {"command": value}
    return value


class AgentSurroundings(BaseModel):
    """What a task's agent gets besides its command, in the defaults and per task.

    Its environment is an allowlist (``sandbox/secrets.py``): ``env`` values (``${NAME}``
    in a value is the caller's variable: a missing one is bad input; the run's manifest
    keeps the reference, never the value) and ``pass_env``, the caller's variables passed
    as they are.  Paths: ``deny_read`` hides more of the host, ``extra_rw``/``extra_ro``
    show more of it (``~`` is the caller's home)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: dict[str, str] = Field(default_factory=dict, description="Environment for the agent; "
                                "a value may name the caller's variables as ${NAME}.")
    pass_env: list[str] = Field(default_factory=list, description="The caller's variables passed as they are.")
    deny_read: list[str] = Field(default_factory=list, description="More paths the agent may not read.")
    extra_rw: list[str] = Field(default_factory=list, description="More paths the agent may write.")
    extra_ro: list[str] = Field(default_factory=list, description="More paths the agent may "
                                "read where the sandbox would hide them (under /tmp).")

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(f"bad environment variable name {name!r}")
        return v

    @field_validator("pass_env", "deny_read", "extra_rw", "extra_ro", mode="before")
    @classmethod
    def _as_lists(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("pass_env")
    @classmethod
    def _pass_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(f"bad environment variable name {name!r}")
        return v


class Setup(BaseModel):
    """Per-run set-up of every sandbox."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    copy_files: list[str] = Field(
        default_factory=list, alias="copy",
        description="Git-ignored files/globs copied into each worktree (e.g. .env).",
    )
    command: str | None = Field(None, description="Run in each worktree before the agent.")


class Task(AgentSurroundings):
    """One unit of agent work."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    depends_on: list[str] = Field(default_factory=list)
    estimated_minutes: float = Field(30.0, gt=0)
    files: list[str] = Field(default_factory=list, description="Globs the task expects to touch.")
    agent: Agent | None = None
    command: str | None = Field(None, description="The task's own command; {command} in templates.")
    limits: Limits | None = None
    retries: int = Field(0, ge=0, description="Retries (with backoff) after timeout or OOM.")
    allow_deletes: bool = Field(False, description="May delete more than the run's share "
                                "of the files (max_delete_share) without being held back.")
    parallel: bool = Field(True, description="spec-kit [P] marker; informational.")

    _coerce = field_validator("agent", mode="before")(classmethod(lambda cls, v: _coerce_agent(v)))

    @field_validator("depends_on", "files", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class Defaults(AgentSurroundings):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: Agent = Field(default_factory=lambda: Agent(command="bash -c {command}"))
    limits: Limits = Field(default_factory=Limits)

    _coerce = field_validator("agent", mode="before")(classmethod(lambda cls, v: _coerce_agent(v)))


class TaskFile(BaseModel):
    """A whole task file: defaults, per-run set-up, and the tasks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: Defaults = Field(default_factory=Defaults)
    setup: Setup = Field(default_factory=Setup)
    tasks: list[Task]

    def agent_for(self, task: Task) -> Agent:
        return task.agent or self.defaults.agent

    def limits_for(self, task: Task) -> Limits:
        return self.defaults.limits.merged(task.limits)

    def with_defaults(self, task: Task) -> Task:
        """``task`` with the defaults' surroundings folded in: ``env`` (the task's names
        win, values unexpanded), ``pass_env``, ``deny_read``, ``extra_rw`` and
        ``extra_ro`` (the defaults' first, each once)."""
        d = self.defaults

        def both(field: str) -> list[str]:
            return list(dict.fromkeys([*getattr(d, field), *getattr(task, field)]))

        return task.model_copy(update={
            "env": {**d.env, **task.env},
            **{f: both(f) for f in ("pass_env", "deny_read", "extra_rw", "extra_ro")},
        })
