"""The backend contract: every sandbox backend (worktree, docker, dummy) implements it.

The run loop only speaks this interface.  A backend prepares a sandbox for one task (a
worktree on ``forkyard/<run-id>/<task-id>`` at the task's base), executes the agent's
command in it under the task's limits, commits what the agent left uncommitted, and
cleans up.  One contract test suite (``tests/sandbox/test_contract.py``) runs against
every backend.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gitproc.git import NumStat, Repo
from planner.tasks import Limits
from sandbox import secrets

Status = Literal["succeeded", "failed", "timed_out", "oom_killed", "cancelled"]
LineCallback = Callable[[str], None]
#: Called once the agent's processes are gone, before its work is committed: the agent
#: slot is free for the next task while forkyard finishes with this one.
ExitCallback = Callable[[], None]


def once(callback: ExitCallback | None) -> ExitCallback | None:
    """``callback``, called at most once however often the result is."""
    if callback is None:
        return None
    done = threading.Event()

    def call() -> None:
        if not done.is_set():
            done.set()
            callback()
    return call


#: What a command under ``env_policy="minimal"`` sees of the caller's environment.
MINIMAL_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "LANG", "LC_ALL",
               "LC_CTYPE", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
#: A task's message when its agent exited 0 having changed nothing (no silent success).
NO_CHANGES = "the agent exited 0 but changed nothing"


def branch_name(run_id: str, task_id: str) -> str:
    return f"forkyard/{run_id}/{task_id}"


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a backend needs to run one task."""

    run_id: str
    task_id: str
    base: str                       # commit sha the sandbox starts from
    command: str                    # shell command line, run with /bin/sh -c in the sandbox
    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict)   # extra environment for the agent
    pass_env: tuple[str, ...] = ()    # the caller's variables passed by name (masked)
    secret_env: tuple[str, ...] = ()  # names in ``env`` whose values are secrets (masked)
    deny_read: tuple[str, ...] = ()   # more paths the agent may not read
    description: str = ""
    confine: bool = True            # False only by explicit user opt-out
    setup_command: str | None = None
    copy_files: tuple[str, ...] = ()  # git-ignored files/globs copied from the main worktree
    port: int | None = None         # leased port: PORT / FORKYARD_PORT
    image: str | None = None        # docker backend only
    env_policy: Literal["allowlist", "minimal"] = "allowlist"
    """allowlist: the caller's basics, ``pass_env`` (the preset's key and endpoint
    variables, the task file's) and ``env`` reach the command (``sandbox/secrets.py``);
    minimal: only :data:`MINIMAL_ENV` names and ``env`` (a validation runs code nobody
    reviewed yet and needs no secrets)."""
    harvest: bool = True
    """Commit and import what the command left (an agent's work); False for a command
    whose leftovers are discarded with the sandbox (a validation)."""
    preset: str | None = None       # the agent CLI's preset: its private home's config, its stream
    extra_rw: tuple[Path, ...] = ()   # more host paths the agent may write
    extra_ro: tuple[Path, ...] = ()   # more host paths it may read where hidden (/tmp, deny)

    @property
    def branch(self) -> str:
        return branch_name(self.run_id, self.task_id)

    def masker(self, host: Mapping[str, str] | None = None) -> secrets.Masker:
        """Masks the values this task was given from the caller (``pass_env`` by name,
        ``env`` values that named a caller's variable) wherever its output is recorded."""
        values = list(secrets.passed(self.pass_env, host).values())
        values += [self.env[n] for n in self.secret_env if n in self.env]
        return secrets.Masker(values)


@dataclass
class Sandbox:
    """A prepared sandbox (handle returned by :meth:`Backend.prepare`)."""

    spec: SandboxSpec
    worktree: Path
    branch: str
    state: dict[str, object] = field(default_factory=dict)  # backend-private


@dataclass(frozen=True)
class ExecResult:
    """What one task produced."""

    status: Status
    exit_code: int | None
    duration_s: float
    log_tail: str
    commit: str | None              # tip of the sandbox branch if it moved past base, else None
    files_modified: tuple[NumStat, ...] = ()
    enforced_by: str = "none"       # cgroup-v2 | cgroup-v1 | cgroup-hybrid | rlimit | docker | none
    confinement: str = "none"       # bwrap | landlock | bwrap+landlock | docker | none
    message: str = ""               # human explanation (e.g. why it was killed)
    agent_report: Mapping[str, object] | None = None  # from the CLI's stream (sandbox/streams.py)


class Backend(ABC):
    """A place where tasks run."""

    name: str = "base"
    #: Tasks that make their own sandbox start one at a time, each until its command is
    #: launched (``forkyard.run.sandboxes``): for backends whose start is this process's
    #: own work (CPU and GIL), not an engine's that can start many at once.
    starts_take_turns: bool = False

    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    @abstractmethod
    def prepare(self, spec: SandboxSpec) -> Sandbox:
        """Create the sandbox (worktree on ``spec.branch`` at ``spec.base``, set-up done)."""

    @abstractmethod
    def execute(
        self,
        sandbox: Sandbox,
        on_line: LineCallback | None = None,
        cancel: threading.Event | None = None,
        on_exit: ExitCallback | None = None,
        on_start: ExitCallback | None = None,
    ) -> ExecResult:
        """Run the task's command; stream output lines to ``on_line``; stop when
        ``cancel`` is set (status ``cancelled``); call ``on_start`` once the command was
        started (or could not be) and ``on_exit`` when the agent is gone.  Commits
        uncommitted changes."""

    def warm(self, sandbox: Sandbox) -> None:
        """Optional: start whatever can start before the task's turn, for a sandbox
        prepared ahead of time (its base may still move; ``execute`` finishes the start).
        ``cleanup`` undoes it if the task never runs.  Must not raise."""
        return None

    def move(self, sandbox: Sandbox, base: str) -> None:
        """Optional: bring a sandbox prepared ahead of time, whose task has not started,
        to ``base`` (the target moved meanwhile); ``execute`` moves it to ``spec.base``
        in any case, so this only takes that work off the task's start."""
        return None

    def end_run(self, run_id: str) -> None:
        """Optional: the run ``run_id`` is over and every sandbox of it cleaned up; release
        what the backend kept for it elsewhere (a Ray node's base checkout).  Must not
        raise."""
        return None

    @abstractmethod
    def cleanup(self, sandbox: Sandbox, keep: bool = False) -> None:
        """Release everything the sandbox holds (processes, cgroups, containers);
        remove the worktree unless ``keep``.  The branch always stays: no work is lost."""

    def run(
        self,
        spec: SandboxSpec,
        on_line: LineCallback | None = None,
        cancel: threading.Event | None = None,
        keep: bool = False,
    ) -> ExecResult:
        """prepare + execute + cleanup."""
        sandbox = self.prepare(spec)
        try:
            return self.execute(sandbox, on_line=on_line, cancel=cancel)
        finally:
            self.cleanup(sandbox, keep=keep)
