"""Making sandboxes for the run loop, ahead of time when it pays.

Creating a sandbox is a full checkout of the repository; on a large repository or a slow
disk that costs more than dispatching the task itself.  So while every agent slot is busy,
:class:`SandboxMaker` prepares sandboxes for the tasks next in line (at most one per slot)
on a thread pool of its own, at background priority, and the backend may start the
agent's processes up to their last ``exec`` (:meth:`Backend.warm`).  When the target moves,
the waiting sandboxes follow it on the same thread (coalesced: one move per sandbox to
the newest tip, however many batches landed), and when a task starts, its sandbox is
moved to the tip of that moment, which is then usually no move at all: the task starts
"from the current tip" without paying for the move on its own start.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace

from forkyard.run.threads import background_thread, ready_pool
from gitproc.git import WORKTREE_ADMIN_LOCK, GitError, Repo
from gitproc.process import can_raise_priority
from sandbox import overlay, places
from sandbox.agents import AgentContext, agent_env, command_for
from sandbox.backends.base import Backend, Sandbox, SandboxSpec, branch_name
from sandbox.policies import sandbox_fields

# How long work made ahead waits for the starts under way (Starts.quiet).
STARTS_WAIT_S = 1.0


class Starts:
    """Commands started whose process is not yet under way (keys: whatever identifies
    one).  Work nobody waits for (making sandboxes ahead, removing finished ones) waits
    until there is none (:meth:`quiet`): on a few CPUs, and under one GIL, it would delay
    the starts.  Bounded: a start that never reports holds nothing up for long."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: set[object] = set()
        self._launched = 0

    def begin(self, key: object) -> None:
        with self._cond:
            self._pending.add(key)

    def started(self, key: object) -> None:
        """``key``'s command is under way, or will not start (idempotent)."""
        with self._cond:
            if key in self._pending:
                self._pending.discard(key)
                self._launched += 1
                self._cond.notify_all()

    @property
    def launched(self) -> int:
        """Starts so far that reported (:meth:`started`)."""
        with self._cond:
            return self._launched

    def quiet(self) -> None:
        """Wait until no start is under way, at most :data:`STARTS_WAIT_S`."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending, timeout=STARTS_WAIT_S)

    def wait_launched(self, count: int, timeout: float) -> None:
        """Wait until ``count`` starts reported, at most ``timeout`` s."""
        with self._cond:
            self._cond.wait_for(lambda: self._launched >= count, timeout=timeout)


class SandboxMaker:
    """Prepares (and pre-prepares) sandboxes for the tasks of one run."""

    def __init__(self, repo: Repo, backend: Backend, run_id: str, *, confine: bool,
                 setup_command: str | None, copy_files: tuple[str, ...], image: str | None,
                 ahead: int) -> None:
        self.repo = repo
        self.backend = backend
        self.run_id = run_id
        self.confine = confine
        self.setup_command = setup_command
        self.copy_files = copy_files
        self.image = image
        self.ahead = ahead
        self._pending: dict[str, tuple[Future[Sandbox], bool]] = {}  # task -> (made, fresh)
        #: Called with a task id before its sandbox is made: waits for the clean-up of a
        #: previous attempt's sandbox (same path), which runs in the background.
        self.settle: Callable[[str], None] = lambda task_id: None
        # Docker's and the dummy's sandboxes are cheap or not ours to move: no prefetch.
        self.enabled = backend.name == "worktree" and ahead > 0
        # One thread at background priority: agents starting and finishing come first, and
        # the sandboxes for the next tasks are made one by one while the agents run (a task
        # whose slot frees up before its sandbox was begun makes its own: see take()).
        self._pool = ready_pool(1, "prepare", background_thread)
        # Warm starts (Backend.warm) spawn the agent's processes, which must not keep the
        # background niceness: where it cannot be taken back, a thread at normal priority
        # spawns them.
        self._starter = ready_pool(1, "warm")
        self._mu = threading.Lock()  # _pending: the loop thread adds, agent threads take
        # Moving waiting sandboxes to the target's new tip (advance()): the tip to move to,
        # whether a move is queued, and the sandbox being moved (take() waits for it).
        self._tip: str | None = None
        self._move_queued = False
        self._moving: tuple[str, threading.Lock] | None = None
        # Tasks taken whose agent is not yet under way (by task id; see _ahead).
        self.starts = Starts()
        # Starts that make their own sandbox take turns (see starting()).
        self._turn = threading.Semaphore(1) if backend.starts_take_turns else None

    def spec(self, spec_t: object, base: str, worktree: str = "", attempt: int = 1) -> SandboxSpec:
        """The sandbox spec of a task (``spec_t`` is the loop's TaskSpec)."""
        task, agent, limits = spec_t.task, spec_t.agent, spec_t.limits  # type: ignore[attr-defined]
        ctx = AgentContext(task.id, task.description, worktree, branch_name(self.run_id, task.id),
                           base, task.command or "", self.run_id, attempt)
        return SandboxSpec(
            run_id=self.run_id, task_id=task.id, base=base, command=command_for(agent, task, ctx),
            description=task.description, confine=self.confine,
            setup_command=self.setup_command, copy_files=self.copy_files, image=self.image,
            **sandbox_fields(agent, task, limits, ctx))

    # -- ahead of time ---------------------------------------------------------------------

    def has(self, task: str) -> bool:
        return task in self._pending

    def room(self) -> int:
        return self.ahead - len(self._pending) if self.enabled else 0

    def prefetch(self, spec: SandboxSpec, fresh: bool) -> None:
        with self._mu:
            self._pending[spec.task_id] = (self._pool.submit(self._ahead, spec, fresh), fresh)

    def _ahead(self, spec: SandboxSpec, fresh: bool) -> Sandbox:
        self.starts.quiet()  # tasks starting come first
        sandbox = self.prepare(spec, fresh)
        if can_raise_priority():  # at background priority; taken back when the task starts
            self.backend.warm(sandbox)
        else:
            self._starter.submit(self.backend.warm, sandbox).result()
        return sandbox

    def advance(self, tip: str) -> None:
        """The target moved to ``tip``: bring the sandboxes waiting for their turn there,
        in the background, so that a task starting finds its sandbox at its base already
        (see :meth:`Backend.move`).  Moves are coalesced: however many batches land
        meanwhile, each waiting sandbox is moved once, to the newest tip."""
        if not self.enabled:
            return
        with self._mu:
            self._tip = tip
            if self._move_queued:
                return
            self._move_queued = True
        self._pool.submit(self._advance)

    def _advance(self) -> None:
        with self._mu:
            self._move_queued = False
            tip, tasks = self._tip, list(self._pending)
        for task in tasks:
            with self._mu:
                fut, _ = self._pending.get(task, (None, False))
                if fut is None or not fut.done() or fut.cancelled() or fut.exception():
                    continue
                lock = threading.Lock()
                lock.acquire()
                self._moving = (task, lock)
            try:
                self.backend.move(fut.result(), tip)  # type: ignore[arg-type]
            except Exception:  # the task's own start moves it (or fails) in due course
                pass
            finally:
                with self._mu:
                    self._moving = None
                lock.release()

    @contextlib.contextmanager
    def starting(self, task: str) -> Iterator[Callable[[], None]]:
        """Around a task's start: yields the callback that says its agent is under way
        (:meth:`Backend.execute`'s ``on_start``; :attr:`starts` hears of it).

        A task with no sandbox made ahead (the first wave, where every slot starts at once)
        makes its own and launches its agent's processes in the same breath.  Eight of those
        at once on two CPUs and one GIL share them fairly and all launch late; taking turns
        until its processes are launched (:attr:`Backend.starts_take_turns`), each agent
        starts up while the next sandbox is made, and the first agents start at once."""
        turn = self._turn if self._turn is not None and not self.has(task) else None
        if turn is not None:
            turn.acquire()
        held = [turn is not None]

        def give_back() -> None:  # once: at the launch, else when the start ends
            if held[0]:
                held[0] = False
                turn.release()  # type: ignore[union-attr]

        def started() -> None:
            give_back()
            self.starts.started(task)

        try:
            yield started
        finally:
            give_back()

    def take(self, spec: SandboxSpec, fresh: bool) -> Sandbox:
        """A sandbox for ``spec`` at ``spec.base``: the prefetched one moved there, or new.
        Its task counts as starting until ``starts.started(task id)``."""
        self.starts.begin(spec.task_id)
        with self._mu:
            fut, fresh_ahead = self._pending.pop(spec.task_id, (None, fresh))
            moving = self._moving
        if moving is not None and moving[0] == spec.task_id:
            with moving[1]:  # being moved right now: let that finish first
                pass
        if fut is not None and fut.cancel():  # not begun yet: no use waiting for it
            return self.prepare(spec, fresh_ahead)
        if fut is not None:
            try:
                sandbox = fut.result()
            except Exception:
                return self.prepare(spec, True)  # the failed attempt may have left a branch
            sandbox.spec = spec  # the backend's execute() moves it to spec.base
            return sandbox
        return self.prepare(spec, fresh)

    def prepare(self, spec: SandboxSpec, fresh: bool) -> Sandbox:
        """``backend.prepare``, retried when git's worktree bookkeeping raced with another
        process's (e.g. a scratch worktree of the merge engine's validation)."""
        self.settle(spec.task_id)
        for attempt in range(3):
            if fresh or attempt:
                discard_branch(self.repo, spec.branch)
            try:
                return self.backend.prepare(spec)
            except GitError as exc:
                if attempt == 2 or "worktrees/" not in str(exc):
                    raise
            time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def close(self, keep: bool) -> None:
        """Release sandboxes prepared for tasks that never started (the run stopped), and
        what the backend kept for the run (:meth:`Backend.end_run`)."""
        self._pool.shutdown(wait=True)
        self._starter.shutdown(wait=True)
        for fut, _ in self._pending.values():
            try:
                sandbox = fut.result()
            except Exception:
                continue
            self.backend.cleanup(sandbox, keep=keep)
            if not keep:
                self.repo.git("branch", "-D", sandbox.branch, check=False)
        self._pending.clear()
        # Called once the loop's own clean-ups are done: every sandbox of the run is gone.
        self.backend.end_run(self.run_id)


def with_worktree(spec: SandboxSpec, spec_t: object, sandbox: Sandbox, docker: bool,
                  attempt: int = 1) -> SandboxSpec:
    """``spec`` with the command re-rendered now that ``{worktree}`` is known."""
    task, agent = spec_t.task, spec_t.agent  # type: ignore[attr-defined]
    where = "/work" if docker else str(sandbox.worktree)
    ctx = AgentContext(task.id, task.description, where, spec.branch, spec.base,
                       task.command or "", spec.run_id, attempt)
    return replace(spec, command=command_for(agent, task, ctx), env=agent_env(task, ctx))


def discard_branch(repo: Repo, branch: str) -> None:
    """Remove a previous attempt's worktree and branch so the task can start afresh.

    Only for work that is known not to be integrated (a retry, or a task a crash cut off).
    """
    ref = f"refs/heads/{branch}"
    _, run_id, task_id = branch.split("/", 2)
    own = places.place(repo.forkyard_dir, run_id, task_id)
    place = own.worktree
    overlay.unmount_under(own.root)  # a killed run's overlay sandbox
    for wt in repo.worktrees():
        if wt.get("branch") == ref:
            try:
                repo.worktree_remove(wt["worktree"], force=True)
            except Exception:
                shutil.rmtree(wt["worktree"], ignore_errors=True)
    # The worktree backend's place for it (a crash can leave the directory unregistered),
    # with its home, temp, object, layer and ref dirs.
    shutil.rmtree(own.root, ignore_errors=True)
    repo.worktree_forget(place)  # a half-made one's too, which prune leaves alone
    with WORKTREE_ADMIN_LOCK:
        repo.git("worktree", "prune", check=False)
    repo.drop_ref_locks(ref)  # a crash in the middle of moving it (done in process)
    if repo.try_rev_parse(ref) is not None:
        repo.git("branch", "-D", branch, check=False)
