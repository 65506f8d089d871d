"""A task's security policies as a sandbox spec carries them: its environment (the task
file's ``env`` with the caller's ``${NAME}`` expanded, the caller's variables passed by
name, which values are secrets), the paths it may not read, and its network policy
resolved for its agent's preset.  The mechanisms are in ``secrets.py``, ``network/`` and
``disk.py``; ``docs/security.md`` describes them."""

from __future__ import annotations

from typing import Any

from planner.tasks import Agent, Limits, Task
from sandbox.agents import AgentConfigError, AgentContext, expand_paths, task_env
from sandbox.network import NetworkPolicy, policy_for, resolved_limits
from sandbox.presets import PRESETS


def preset_vars(preset: str | None) -> tuple[str, ...]:
    """The caller's variables ``preset``'s CLI is given by name (``Preset.caller_vars``)."""
    p = PRESETS.get(preset or "")
    return () if p is None else p.caller_vars


def sandbox_fields(agent: Agent, task: Task, limits: Limits, ctx: AgentContext) -> dict[str, Any]:
    """The :class:`~sandbox.backends.base.SandboxSpec` fields a task's agent and policies
    give (``task`` with its task file's defaults folded in: ``TaskFile.with_defaults``):
    the environment (the task's ``env`` with the caller's ``${NAME}`` expanded, then
    forkyard's own ``FORKYARD_*``), the caller's variables passed by name (the preset's
    and ``pass_env``), which values are secrets, the paths denied and added, the preset,
    and the limits with the network policy resolved for the preset.  A ``${NAME}`` the
    caller lacks is bad input."""
    values, secret = task_env(task.id, task.env)
    return {
        "env": {**values, **ctx.env()},
        "pass_env": tuple(dict.fromkeys([*preset_vars(agent.preset), *task.pass_env])),
        "secret_env": secret,
        "deny_read": tuple(task.deny_read),
        "extra_rw": expand_paths(task.extra_rw),
        "extra_ro": expand_paths(task.extra_ro),
        "preset": agent.preset,
        "limits": resolved_limits(limits, agent.preset),
    }


def check_policies(agent: Agent, task: Task, limits: Limits) -> NetworkPolicy:
    """Raise bad input now (before anything runs) for a ``${NAME}`` the caller lacks or a
    network allowlist entry that is not a host; the task's network policy otherwise."""
    try:
        policy = policy_for(limits.network, agent.preset)
    except ValueError as exc:
        raise AgentConfigError(task.id, f"limits.network: {exc}") from None
    sandbox_fields(agent, task, limits, AgentContext(task.id, task.description, "", "", "", ""))
    return policy


def network_mode_for_docker(task_id: str, agent: Agent, limits: Limits) -> None:
    """Raise bad input if the docker backend cannot enforce the task's network policy
    (``allow``: see ``sandbox/backends/docker_spec.py``)."""
    policy = policy_for(limits.network, agent.preset)
    if policy.kind == "allow":
        raise AgentConfigError(task_id, f"the docker backend cannot enforce network {policy}; "
                                        "set limits.network to none or full, or use the worktree backend")
