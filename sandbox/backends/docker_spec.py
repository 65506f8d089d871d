"""What a docker sandbox's container is made of: its name, the agent's environment and
command line, and the ``containers.create`` options with the task's limits (the docker
backend, ``sandbox/backends/docker.py``, has the whole story).

docker-py is imported only inside :func:`run_options`, as in the backend.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gitproc.git import Repo
from sandbox import places, secrets
from sandbox.backends.base import Sandbox, SandboxSpec
from sandbox.errors import SandboxBadInputError
from sandbox.network import policy_for
from sandbox.ports import PortLease

WORKDIR = "/work"
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]")


def container_name(spec: SandboxSpec) -> str:
    """``forkyard-<run-id>-<task-id>``, with anything Docker refuses in a name replaced."""
    return _NAME_BAD.sub("_", f"forkyard-{spec.run_id}-{spec.task_id}")


def worktree_path(repo: Repo, spec: SandboxSpec) -> Path:
    """Where the sandbox's worktree lives (:func:`sandbox.places.worktree_path`)."""
    return places.worktree_path(repo.forkyard_dir, spec.run_id, spec.task_id)


def agent_env(spec: SandboxSpec, port: int | None = None) -> dict[str, str]:
    """The environment the agent sees inside the container (``spec.env`` wins).

    ``port`` is the sandbox's leased port when the spec names none.
    """
    env = {
        "FORKYARD_RUN_ID": spec.run_id,
        "FORKYARD_TASK_ID": spec.task_id,
        "FORKYARD_DESCRIPTION": spec.description,
        "FORKYARD_BRANCH": spec.branch,
        "FORKYARD_BASE": spec.base,
        "FORKYARD_WORKTREE": WORKDIR,
        "FORKYARD_COMMAND": spec.command,
        "FORKYARD_SANDBOX": "docker",
        # The root filesystem is read-only; tools that write to $HOME need somewhere.
        "HOME": "/tmp",
    }
    port = spec.port if spec.port is not None else port
    if port is not None:
        env["PORT"] = env["FORKYARD_PORT"] = str(port)
    # Nothing else of forkyard's environment: the caller's variables by name only
    # (the preset's, ``pass_env``; see sandbox/secrets.py).
    env.update(secrets.passed(spec.pass_env))
    env.update(spec.env)
    return env


def network_mode(spec: SandboxSpec) -> str | None:
    """``none`` -> no network; ``full`` -> the engine's default bridge.  ``allow`` needs
    forkyard's proxy inside the container, which this backend does not do yet: refused."""
    policy = policy_for(spec.limits.network)
    if policy.kind == "allow":
        raise SandboxBadInputError(
            f"task {spec.task_id!r}: the docker backend cannot enforce the network allowlist "
            f"({policy}); use limits.network none or full, or the worktree backend")
    return None if policy.kind == "full" else "none"


def _command(spec: SandboxSpec) -> list[str]:
    if spec.setup_command is None:
        return ["/bin/sh", "-c", spec.command]
    # Both command lines travel in the environment, so neither needs quoting into the
    # other; the set-up's failure fails the task without running the agent.
    return ["/bin/sh", "-c",
            '/bin/sh -c "$FORKYARD_SETUP_COMMAND" && exec /bin/sh -c "$FORKYARD_COMMAND"']


def run_options(sandbox: Sandbox, repo_path: Path, user: str) -> dict[str, Any]:
    """docker-py ``containers.create`` keyword arguments for the task's sandbox (of the
    repository at ``repo_path``), run as ``user`` (``uid:gid``)."""
    from docker.types import Mount

    spec = sandbox.spec
    limits = spec.limits
    lease = sandbox.state.get("lease")
    env = agent_env(spec, lease.port if isinstance(lease, PortLease) else None)
    if spec.setup_command is not None:
        env["FORKYARD_SETUP_COMMAND"] = spec.setup_command
    tmpfs = "rw,nosuid,nodev,mode=1777"
    options: dict[str, Any] = {
        "command": _command(spec),
        "name": container_name(spec),
        "labels": {"forkyard.run": spec.run_id, "forkyard.task": spec.task_id,
                   "forkyard.repo": str(repo_path)},
        "environment": env,
        "working_dir": WORKDIR,
        "user": user,
        "mounts": [Mount(target=WORKDIR, source=str(sandbox.worktree), type="bind",
                         read_only=False)],
        "init": True,
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "network_mode": network_mode(spec),
        "detach": True,
    }
    if limits.memory_mb is not None:
        memory = limits.memory_mb * 1024 * 1024
        # memswap equal to memory: no swap, so a hog meets the OOM killer instead
        # of thrashing; /tmp is tmpfs and counts against the same limit.
        options["mem_limit"] = memory
        options["memswap_limit"] = memory
        tmpfs += f",size={memory}"
    if limits.cpus is not None:
        options["nano_cpus"] = int(limits.cpus * 1e9)
    if limits.pids is not None:
        options["pids_limit"] = limits.pids
    options["tmpfs"] = {"/tmp": tmpfs}
    return options
