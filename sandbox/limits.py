"""Which mechanism enforces a task's limits, and the rlimit fallback.

Names recorded in every result's ``enforced_by``:

- ``cgroup-v2``: a group in the unified hierarchy (memory.max, swap 0, cpu.max, pids.max).
- ``cgroup-v1``: legacy per-controller groups (memory + memsw, cfs quota, pids, freezer).
- ``cgroup-hybrid``: v1 controllers for the limits plus a unified group for ``cgroup.kill``.
- ``rlimit``: no writable cgroup (unprivileged, no delegation).  Per-process rlimits set
  by the exec shim: ``RLIMIT_AS`` = memory (virtual, so generous runtimes may fail early),
  ``RLIMIT_NPROC`` = pids (per *user*, and not enforced for root), ``RLIMIT_CPU`` =
  cpus x timeout CPU-seconds (a budget, not a quota).  Weaker, hence recorded.
- ``docker``: the docker backend (the engine's cgroups).
- ``none``: limits disabled by configuration.

Without a cgroup the process tree is found by an environment token every sandboxed
process inherits (``FORKYARD_SANDBOX_TOKEN``), so double-forked, setsid'd descendants
are still killed; bubblewrap's pid namespace is a second net (its init dies, all die).
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from planner.tasks import Limits
from sandbox.cgroups import Cgroup

TOKEN_VAR = "FORKYARD_SANDBOX_TOKEN"


@dataclass
class Enforcement:
    """How one sandbox's limits are enforced."""

    name: str                      # see the module docstring
    cgroup: Cgroup | None = None
    shim_args: tuple[str, ...] = ()  # options for the exec shim (--procs / --rlimit)


def rlimit_args(limits: Limits) -> tuple[str, ...]:
    """Exec-shim options applying ``limits`` as rlimits."""
    args: list[str] = []
    if limits.memory_mb:
        args += ["--rlimit", f"as={limits.memory_mb * 1024 * 1024}"]
    if limits.pids:
        args += ["--rlimit", f"nproc={limits.pids}"]
    if limits.cpus and limits.timeout_s:
        args += ["--rlimit", f"cpu={max(1, math.ceil(limits.cpus * limits.timeout_s))}"]
    args += ["--rlimit", "core=0"]
    return tuple(args)


def cgroup_args(group: Cgroup) -> tuple[str, ...]:
    """Exec-shim options that move the shim into every hierarchy of ``group``."""
    args: list[str] = []
    for path in group.procs_files():
        args += ["--procs", path]
    return tuple(args)


def pids_with_token(token: str) -> set[int]:
    """Processes whose environment carries ``FORKYARD_SANDBOX_TOKEN=token``."""
    return pids_with_env(f"{TOKEN_VAR}={token}")


def pids_with_env(*entries: str) -> set[int]:
    """Processes (but this one) whose environment carries every ``NAME=value`` given."""
    needles = {e.encode() for e in entries}
    found: set[int] = set()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if needles <= set(env.split(b"\0")):
            found.add(int(entry.name))
    return found


def signal_token(token: str, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to every process carrying ``token``; returns how many were signalled."""
    n = 0
    for pid in pids_with_token(token):
        try:
            os.kill(pid, sig)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
    return n
