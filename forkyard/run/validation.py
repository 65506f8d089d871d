"""``--validate``: the command run in a sandbox of the merged commit.

The merge engine asks a :data:`merge.validate.Validator` (commit sha -> ``Validation``)
and never knows where it runs; this module builds the one forkyard uses everywhere
(``forkyard run``, ``forkyard merge``, ``forkyard check``, the MCP server): a sandbox
of the run's backend at the merged commit, with the task file's set-up command run
first and the run's limits, confinement and network policy, so the command tests
*that tree* (not the user's checkout) and whatever the merged code does -- its tests,
``conftest.py``, Makefile -- is as confined as an agent.  Unlike an agent, a validation
gets no secrets: only a minimal environment (``env_policy="minimal"``), since it runs
code no person has reviewed yet and needs no API keys.  The sandbox, its branch and
whatever the command wrote are discarded afterwards; a timeout kills its whole tree.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field

from gitproc.git import GitError, Repo
from merge.models import Validation
from merge.validate import DEFAULT_TIMEOUT_S, Validator, tail
from planner.tasks import Limits
from sandbox.backends.base import Backend, SandboxSpec, branch_name

TASK_PREFIX = "validate-"


@dataclass(frozen=True)
class ValidationSetup:
    """Where and how validations run: what a run's task file and options say."""

    command: str
    limits: Limits = field(default_factory=Limits)
    setup_command: str | None = None
    copy_files: tuple[str, ...] = ()
    confine: bool = True
    timeout_s: float = DEFAULT_TIMEOUT_S
    image: str | None = None


def sandbox_validator(repo: Repo, backend: Backend, run_id: str,
                      setup: ValidationSetup) -> Validator:
    """A validator running ``setup.command`` in a fresh sandbox of each commit asked.

    The sandbox belongs to ``run_id`` (its worktree under ``worktrees/<run-id>/``, its
    cgroup and liveness lock the run's), so ``forkyard gc`` and ``--resume`` clean up
    after a validation a crash cut off exactly as after an agent.
    """
    limits = setup.limits.model_copy(update={"timeout_s": setup.timeout_s})

    def validate(commit: str) -> Validation:
        task_id = f"{TASK_PREFIX}{commit[:10]}-{uuid.uuid4().hex[:6]}"
        spec = SandboxSpec(
            run_id=run_id, task_id=task_id, base=commit, command=setup.command,
            limits=limits, env={"FORKYARD_VALIDATE_COMMIT": commit},
            description=f"validate {commit[:12]}", confine=setup.confine,
            setup_command=setup.setup_command, copy_files=setup.copy_files,
            image=setup.image, env_policy="minimal", harvest=False)
        sandbox = backend.prepare(spec)
        try:
            result = backend.execute(sandbox)
        finally:
            try:
                backend.cleanup(sandbox, keep=False)
            finally:
                # The throwaway branch (nothing is committed to it: harvest=False).  Never
                # through it: a command under Landlock alone can make it a symbolic ref.
                ref = f"refs/heads/{branch_name(run_id, task_id)}"
                with contextlib.suppress(GitError):  # gone already
                    repo.delete_ref(ref)
        log = tail(result.log_tail)
        if result.message and result.status != "succeeded":
            log += f"\n[forkyard] {result.message}"
        return Validation(command=setup.command, passed=result.status == "succeeded",
                          exit_code=result.exit_code if result.status != "timed_out" else None,
                          log_tail=log)

    return validate


def command_validator(repo: Repo, command: str, *, setup_command: str | None = None,
                      confine: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S) -> Validator:
    """The validator of ``forkyard merge --validate`` and ``forkyard check --validate``:
    the worktree backend's sandbox, default limits, owned by a run id of its own
    (``merge-<stamp>``) so that ``forkyard gc`` cleans up after a crash."""
    from forkyard.journal.events import new_run_id
    from sandbox.backends import get_backend

    backend = get_backend("worktree", repo)
    return sandbox_validator(repo, backend, f"merge-{new_run_id()}", ValidationSetup(
        command=command, setup_command=setup_command, confine=confine, timeout_s=timeout_s))


#: Validations of one ``merge``/``check`` at once (candidate prefixes of a bisect).
VALIDATE_SLOTS = 4


def validator_for(repo: Repo, command: str | None, setup: str | None = None
                  ) -> Validator | None:
    """The sandboxed validator of ``--validate`` (after ``--setup``) for ``merge``,
    ``check`` and the MCP tools; None without a command."""
    return None if command is None else command_validator(repo, command, setup_command=setup)
