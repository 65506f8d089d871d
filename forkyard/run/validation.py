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
whatever the command wrote are discarded afterwards (in the background: see
:class:`SandboxValidator`); a timeout kills its whole tree.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field

from forkyard.run.sandboxes import Starts
from forkyard.run.threads import background_thread, ready_pool
from gitproc.git import GitError, Repo
from gitproc.process import can_raise_priority
from merge.models import Validation
from merge.validate import DEFAULT_TIMEOUT_S, Validator, tail
from planner.tasks import Limits
from sandbox.backends.base import Backend, Sandbox, SandboxSpec

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


class SandboxValidator:
    """A :class:`merge.validate.Speculative` validator: ``setup.command`` run in a
    sandbox of each commit asked.

    The sandboxes belong to ``run_id`` (their worktrees under ``worktrees/<run-id>/``,
    their cgroups and liveness lock the run's), so ``forkyard gc`` and ``--resume`` clean
    up after a validation a crash cut off exactly as after an agent.

    Off the critical path: a validation returns once its command's processes are gone;
    removing its sandbox and throwaway branch is left to a background cleaner.  And when
    the merge engine says more validations are coming (:meth:`expect`), their sandboxes
    are made and warm-started (``Backend.warm``) on a background thread at some nearby
    commit while the current round runs; a validation takes one and moves it to its own
    commit (``Backend.move``, which writes only the files in between).  :meth:`drain`
    waits for the cleaner and removes the sandboxes made and never used: a transaction
    calls it before it returns, so nothing is left behind.
    """

    def __init__(self, repo: Repo, backend: Backend, run_id: str,
                 setup: ValidationSetup) -> None:
        self.repo = repo
        self.backend = backend
        self.run_id = run_id
        self.setup = setup
        self._limits = setup.limits.model_copy(update={"timeout_s": setup.timeout_s})
        # Only the worktree backend can move a sandbox made ahead to another commit.
        self.ahead_enabled = backend.name == "worktree"
        self._mu = threading.Lock()
        # Validations whose command is not under way yet: sandboxes are made ahead only
        # when there is none (a round's own start comes first on a few CPUs).
        self._starts = Starts()
        self._spares: list[Future[Sandbox]] = []  # made ahead (or being made), not taken
        self._cleaning: list[Future[None]] = []
        # Background priority where it can be taken back (the warm chain is re-niced
        # when its validation starts); else normal priority, never lowered for good.
        init = background_thread if can_raise_priority() else None
        self._maker = ready_pool(1, "validate-ahead", init)
        self._cleaner = ready_pool(1, "validate-clean", init)
        self.used_ahead = 0
        """Validations that ran in a sandbox made ahead (for tests and figures)."""

    def _spec(self, task_id: str, commit: str) -> SandboxSpec:
        return SandboxSpec(
            run_id=self.run_id, task_id=task_id, base=commit, command=self.setup.command,
            limits=self._limits, env={"FORKYARD_VALIDATE_COMMIT": commit},
            description=f"validate {commit[:12]}", confine=self.setup.confine,
            setup_command=self.setup.setup_command, copy_files=self.setup.copy_files,
            image=self.setup.image, env_policy="minimal", harvest=False)

    # -- ahead ------------------------------------------------------------------------

    def expect(self, count: int, near: str) -> None:
        """Have ``count`` sandboxes made or being made (at ``near``) for what is coming."""
        if not self.ahead_enabled:
            return
        with self._mu:
            self._spares = [f for f in self._spares if _usable(f)]
            for _ in range(count - len(self._spares)):
                self._spares.append(self._maker.submit(self._make_ahead, near))

    @property
    def ready(self) -> int:
        """Sandboxes made ahead, ready and not taken yet."""
        with self._mu:
            return sum(1 for f in self._spares if f.done() and _usable(f))

    def _make_ahead(self, near: str) -> Sandbox:
        self._starts.quiet()
        sandbox = self.backend.prepare(self._spec(f"{TASK_PREFIX}{uuid.uuid4().hex[:12]}", near))
        self.backend.warm(sandbox)  # never raises: a failed warm start is a cold one later
        return sandbox

    def _take(self, commit: str) -> Sandbox | None:
        """A sandbox made ahead and ready, moved to ``commit``'s spec; None: make one
        now (a spare not begun yet is then dropped, one being made is left for later)."""
        with self._mu:
            self._spares = [f for f in self._spares if _usable(f)]
            ready = next((f for f in self._spares if f.done()), None)
            if ready is None:
                idle = next((f for f in self._spares if f.cancel()), None)
                if idle is not None:
                    self._spares.remove(idle)
                return None
            self._spares.remove(ready)
            self.used_ahead += 1
        sandbox = ready.result()
        # Same task id (its place, branch, cgroup and warm chain), this commit and its
        # variables: execute moves the files and the branch there (Backend.move's
        # read-tree, only the files in between), then gives the warm chain its command.
        sandbox.spec = self._spec(sandbox.spec.task_id, commit)
        return sandbox

    # -- one validation ---------------------------------------------------------------

    def __call__(self, commit: str) -> Validation:
        key = object()  # this validation, while it starts
        self._starts.begin(key)
        sandbox = None
        try:
            sandbox = self._take(commit)
            if sandbox is None:
                sandbox = self.backend.prepare(
                    self._spec(f"{TASK_PREFIX}{commit[:10]}-{uuid.uuid4().hex[:6]}", commit))
            result = self.backend.execute(sandbox, on_start=lambda: self._starts.started(key))
        finally:
            self._starts.started(key)  # (no-op when execute said so already)
            if sandbox is not None:
                # The command's processes are gone (execute kills its whole tree): the
                # rest of the clean-up need not hold the caller up.
                self._dispose_later(sandbox)
        log = tail(result.log_tail)
        if result.message and result.status != "succeeded":
            log += f"\n[forkyard] {result.message}"
        return Validation(command=self.setup.command, passed=result.status == "succeeded",
                          exit_code=result.exit_code if result.status != "timed_out" else None,
                          log_tail=log)

    @property
    def launched(self) -> int:
        """Validations whose command started (or that ended before it could)."""
        return self._starts.launched

    def wait_launched(self, count: int, timeout: float) -> None:
        """Wait until ``count`` validations were launched, at most ``timeout`` s."""
        self._starts.wait_launched(count, timeout)

    def _dispose_later(self, sandbox: Sandbox) -> None:
        with self._mu:
            self._cleaning.append(self._cleaner.submit(self._dispose, sandbox))

    def _dispose(self, sandbox: Sandbox) -> None:
        """Remove the sandbox and its throwaway branch (nothing is committed to it:
        ``harvest=False``).  A failure leaves leftovers of this run id to ``forkyard gc``:
        the validation's result stands."""
        try:
            self.backend.cleanup(sandbox, keep=False)
        except Exception:
            pass
        finally:
            # Never through the branch: a command under Landlock alone can make it a
            # symbolic ref.
            with contextlib.suppress(GitError):  # gone already
                self.repo.delete_ref(f"refs/heads/{sandbox.branch}")

    def drain(self) -> None:
        """Drop the sandboxes made ahead and not used and wait for every clean-up."""
        with self._mu:
            spares, self._spares = self._spares, []
        for fut in spares:
            if fut.cancel():
                continue
            try:
                sandbox = fut.result()
            except Exception:  # its prepare failed and undid itself
                continue
            self._dispose_later(sandbox)
        while True:
            with self._mu:
                pending, self._cleaning = self._cleaning, []
            if not pending:
                return
            for done in pending:
                done.result()


def _usable(fut: Future[Sandbox]) -> bool:
    """Made (or being made) and not failed or cancelled."""
    return not fut.done() or (not fut.cancelled() and fut.exception() is None)


def sandbox_validator(repo: Repo, backend: Backend, run_id: str,
                      setup: ValidationSetup) -> SandboxValidator:
    """The validator running ``setup.command`` in a sandbox of each commit asked (see
    :class:`SandboxValidator`)."""
    return SandboxValidator(repo, backend, run_id, setup)


def command_validator(repo: Repo, command: str, *, setup_command: str | None = None,
                      confine: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S
                      ) -> SandboxValidator:
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
