"""A task's security policies as a sandbox spec carries them: its environment (the task
file's ``env`` with the caller's ``${NAME}`` expanded, the caller's variables passed by
name, which values are secrets), the paths it may not read, and its network policy
resolved for its agent's preset.  The mechanisms are in ``secrets.py``, ``network/`` and
``disk.py``; ``docs/security.md`` describes them."""

from __future__ import annotations

from typing import Any

from planner.tasks import Agent, Limits, Task
from sandbox import secrets
from sandbox.agents import PRESET_ENV, AgentConfigError, AgentContext
from sandbox.network import policy_for, resolved_limits


def sandbox_fields(agent: Agent, task: Task, limits: Limits, ctx: AgentContext) -> dict[str, Any]:
    """The :class:`~sandbox.backends.base.SandboxSpec` fields a task's agent and policies
    give (``task`` with its task file's defaults folded in: ``TaskFile.with_defaults``):
    the environment (the task's ``env`` with the caller's ``${NAME}`` expanded, then
    forkyard's own ``FORKYARD_*``), the caller's variables passed by name (the preset's
    and ``pass_env``), which values are secrets, the paths denied, and the limits with
    the network policy resolved for the preset.  A ``${NAME}`` the caller lacks is bad input."""
    values, secret = secrets.expand(task.env)
    return {
        "env": {**values, **ctx.env()},
        "pass_env": tuple(dict.fromkeys([*PRESET_ENV.get(agent.preset or "", ()), *task.pass_env])),
        "secret_env": secret,
        "deny_read": tuple(task.deny_read),
        "limits": resolved_limits(limits, agent.preset),
    }


def check_policies(agent: Agent, task: Task, limits: Limits) -> None:
    """Raise bad input now (before anything runs) for a ``${NAME}`` the caller lacks or a
    network allowlist entry that is not a host."""
    try:
        policy_for(limits.network, agent.preset)
    except ValueError as exc:
        raise AgentConfigError(task.id, f"limits.network: {exc}") from None
    sandbox_fields(agent, task, limits, AgentContext(task.id, task.description, "", "", "", ""))


def network_mode_for_docker(task_id: str, agent: Agent, limits: Limits) -> None:
    """Raise bad input if the docker backend cannot enforce the task's network policy
    (``allow``: see ``sandbox/backends/docker_spec.py``)."""
    policy = policy_for(limits.network, agent.preset)
    if policy.kind == "allow":
        raise AgentConfigError(task_id, f"the docker backend cannot enforce network {policy}; "
                                        "set limits.network to none or full, or use the worktree backend")
