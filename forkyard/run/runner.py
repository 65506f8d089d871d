"""The dispatch loop: which task starts when, on which agent slot, from which base, and
when finished work is integrated.

One thread (the caller's) owns all scheduling state and sleeps on a queue; agents run on a
thread pool (one thread per slot), integration on one more thread so agents keep working
while a batch lands.  Workers only ever post messages to the queue, so nothing here needs
a lock and there is no polling: the loop wakes exactly when something happened.

Modes: *stream* starts a task as soon as its dependencies are integrated and a slot is
free, from the target's current tip, and integrates whatever finished while the previous
batch was integrating; *waves* runs the plan's waves one after another, each wave one
transaction.  Strategies: *conservative* stops the run at the first failed task or
rejected batch (running agents are cancelled; nothing further is integrated; a slot is
only given back once its result is known, so no agent starts just to be cancelled);
*aggressive* (the run's default) keeps going and skips the dependents of whatever failed.
Every attempt that left a commit is kept under an attempt ref (``forkyard.run.attempts``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from forkyard.journal.events import EventLog
from forkyard.run.attempts import keep_attempt
from forkyard.run.hints import private_tmp_hint
from forkyard.run.integrate import BatchItem, BatchOutcome, Integrator
from forkyard.run.records import RunnerConfig, TaskRecord, TaskSpec
from forkyard.run.sandboxes import SandboxMaker, with_worktree
from forkyard.run.threads import background_thread, ready_pool
from gitproc.git import Repo
from gitproc.process import responsive_threads
from sandbox.backends.base import Backend, ExecResult, branch_name

RETRYABLE = frozenset({"timed_out", "oom_killed"})


class Runner:
    """Runs a set of tasks to completion (or until stopped)."""

    def __init__(
        self,
        repo: Repo,
        specs: Mapping[str, TaskSpec],
        order: Sequence[str],
        waves: Sequence[Sequence[str]],
        config: RunnerConfig,
        backend: Backend,
        integrator: Integrator,
        log: EventLog,
        tip: str,
        records: Mapping[str, TaskRecord] | None = None,
        first_batch: int = 0,
        conflicts: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.repo = repo
        self.specs = dict(specs)
        self.order = list(order)
        self.waves = [list(w) for w in waves]
        self.config = config
        self.backend = backend
        self.integrator = integrator
        self.log = log
        self.tip = tip
        self.records = dict(records or {t: TaskRecord(t) for t in self.order})
        for t in self.order:
            self.records.setdefault(t, TaskRecord(t))
        self.dependents: dict[str, list[str]] = {t: [] for t in self.order}
        for t, spec in self.specs.items():
            for d in spec.deps:
                self.dependents.setdefault(d, []).append(t)
        # Tasks the planner found touching the same files never run at the same time, and
        # the later one starts only once the earlier one's work is integrated (from a base
        # that has it), so that the planner's caution is not undone by the dispatcher.
        self.conflicts: dict[str, set[str]] = {}
        for a, b in conflicts:
            self.conflicts.setdefault(a, set()).add(b)
            self.conflicts.setdefault(b, set()).add(a)
        self.batches: list[BatchOutcome] = []
        self.batch_index = first_batch
        self.pending: list[str] = []            # finished with a commit, not yet integrated
        self.free_slots = list(range(config.agents))
        self.integrating = False
        self.stopping = False
        self.interrupted = False
        self.stop_reason: str | None = None
        self.wave = 0
        self._timers: dict[str, threading.Timer] = {}
        self._q: queue.Queue[tuple[str, Any]] = queue.Queue()
        # Twice the slots: a finished agent's clean-up overlaps with the next one's start.
        self._pool = ready_pool(2 * config.agents, "agent")
        self.maker = SandboxMaker(repo, backend, config.run_id, confine=config.confine,
                                  setup_command=config.setup_command,
                                  copy_files=config.copy_files, image=config.image,
                                  ahead=config.agents if config.prefetch else 0)
        self._merger = ready_pool(1, "integrate", background_thread)
        # Removing finished sandboxes is background work (see threads.background_thread).
        self._cleaner = ready_pool(config.agents, "cleanup", background_thread)
        self._cleanups: dict[str, Future[None]] = {}
        self.maker.settle = self._settle

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Run until every task is done, or the run stopped; Ctrl-C cancels cleanly."""
        with responsive_threads():  # agents start while others' work is brought home
            self._run()
        self._finalise_leftovers()

    def _run(self) -> None:
        try:
            self._prime()
            self._step()
            while not self._quiescent():
                kind, payload = self._q.get()
                self._handle(kind, payload)
                self._step()
        except KeyboardInterrupt:
            self.interrupted = True
            self._stop("interrupted")
            self.log.emit("run_interrupted", reason="interrupt")
            self._drain()
        finally:
            for timer in self._timers.values():
                timer.cancel()
            self._pool.shutdown(wait=True)
            self._cleaner.shutdown(wait=True)
            self._merger.shutdown(wait=True)
            self.maker.close(keep=self.config.keep)

    def _prime(self) -> None:
        # Tasks a resumed run already finished: succeeded-but-not-integrated work goes
        # straight to integration; dependents of known failures are skipped.
        for t in self.order:
            rec = self.records[t]
            if rec.state == "done" and rec.status == "succeeded" and not rec.integrated:
                self.pending.append(t)
        if self.config.strategy == "aggressive":
            for t in self.order:
                rec = self.records[t]
                if rec.state == "done" and (rec.status != "succeeded"):
                    self._skip_dependents(t)

    def _drain(self) -> None:
        """After a stop: wait for running agents and the in-flight batch to report."""
        while any(r.state == "running" for r in self.records.values()) or self.integrating:
            kind, payload = self._q.get()
            self._handle(kind, payload)

    def _quiescent(self) -> bool:
        if any(r.state in ("running", "retry_wait") for r in self.records.values()):
            return False
        if self.integrating:
            return False
        if self.stopping:
            return True
        if self.pending:
            return False
        return not any(self._eligible(t) for t in self.order)

    def _step(self) -> None:
        self._maybe_integrate()
        self._dispatch()

    # -- dispatch --------------------------------------------------------------------------

    def _deps_integrated(self, t: str) -> bool:
        return all(self.records[d].integrated for d in self.specs[t].deps if d in self.records)

    def _in_flight(self, t: str) -> bool:
        """Running, or finished with work that is not integrated (nor rejected) yet."""
        rec = self.records[t]
        if rec.state in ("running", "retry_wait"):
            return True
        return (rec.state == "done" and rec.status == "succeeded" and not rec.integrated
                and not rec.rejected)

    def _eligible(self, t: str) -> bool:
        rec = self.records[t]
        if rec.state != "pending" or not self._deps_integrated(t):
            return False
        if any(self._in_flight(c) for c in self.conflicts.get(t, ()) if c in self.records):
            return False
        if self.config.mode == "waves":
            return self.wave < len(self.waves) and t in self.waves[self.wave]
        return True

    def _dispatch(self) -> None:
        if self.stopping:
            return
        for t in self.order:
            if not self.free_slots:
                break
            if self._eligible(t):
                self._start(t)
        self._prefetch()

    def _start(self, t: str) -> None:
        rec = self.records[t]
        rec.state = "running"
        rec.attempts += 1
        rec.agent = self.free_slots.pop(0)
        rec.slot_free = False
        rec.base = self.tip
        rec.started = time.time()
        rec.cancel = threading.Event()
        self.log.emit("task_started", task=t, attempt=rec.attempts, agent=rec.agent,
                      base=rec.base, branch=branch_name(self.config.run_id, t))
        fresh = rec.needs_fresh_branch and not self.maker.has(t)
        rec.needs_fresh_branch = True  # any later attempt must clear this one's branch
        self.maker.starts.begin(t)  # under way until its agent is (see _exited)
        self._pool.submit(self._execute, t, rec.attempts, rec.base, rec.cancel, fresh)

    def _execute(self, t: str, attempt: int, base: str, cancel: threading.Event,
                 fresh: bool) -> None:
        """Agent thread: prepare, run, clean up one sandbox; post the result.  The clean-up
        runs on a background thread, overlapping with the next task instead of delaying it."""
        start = time.monotonic()
        sandbox = None
        try:
            with self.maker.starting(t) as started:  # (a first wave's starts take turns)
                if cancel.is_set():
                    result = ExecResult("cancelled", None, 0.0, "", None,
                                        message="cancelled before start")
                else:
                    spec = self.maker.spec(self.specs[t], base, attempt=attempt)
                    sandbox = self.maker.take(spec, fresh)
                    # {worktree} is only known once the backend made it (/work in docker).
                    sandbox.spec = with_worktree(spec, self.specs[t], sandbox,
                                                 docker=self.backend.name == "docker",
                                                 attempt=attempt)
                    result = self.backend.execute(
                        sandbox, on_line=lambda line: self.log.output(t, line, attempt),
                        cancel=cancel, on_exit=lambda: self._exited(t, attempt),
                        on_start=started)
        except Exception as exc:  # a backend failure is this task's failure, not the run's
            result = ExecResult("failed", None, time.monotonic() - start, "", None,
                                message=f"{type(exc).__name__}: {exc}")
        self.maker.starts.started(t)  # (if the backend did not say so)
        self._q.put(("finished", (t, attempt, result)))
        if sandbox is not None:
            self._cleanups[t] = self._cleaner.submit(self._cleanup, sandbox)

    def _exited(self, t: str, attempt: int) -> None:
        """Agent thread, the moment ``t``'s agent is gone: its slot goes to the next task,
        and what the agent left is brought home once that task's agent is under way.
        Starting and bringing home share two CPUs and one GIL, and a wave's agents end
        together: the work nobody waits for (the commit step, the import) waits for the
        starts, as sandboxes made ahead and removed do (:meth:`Starts.quiet`)."""
        self.maker.starts.begin((t, attempt))  # the refill the loop makes (see _handle)
        self._q.put(("exited", (t, attempt)))
        self.maker.starts.quiet()

    def _settle(self, t: str) -> None:
        """Before a sandbox for ``t`` is made: the previous attempt's is gone (same path)."""
        fut = self._cleanups.pop(t, None)
        if fut is not None:
            fut.result()

    def _cleanup(self, sandbox: Any) -> None:
        try:
            self.backend.cleanup(sandbox, keep=self.config.keep)
        except Exception:  # leftovers are `forkyard gc`'s job; the work is committed
            pass

    def _prefetch(self) -> None:
        """Prepare sandboxes for the next eligible tasks while every slot is busy.  One
        at a time while events wait: an agent that finished meanwhile gets its slot
        refilled first (the next step goes on with the rest)."""
        if self.stopping or self.maker.room() <= 0:
            return
        for t in self.order:
            if self.maker.room() <= 0 or not self._q.empty():
                return
            if not self.maker.has(t) and self._eligible(t):
                rec = self.records[t]
                fresh, rec.needs_fresh_branch = rec.needs_fresh_branch, True
                self.maker.prefetch(self.maker.spec(self.specs[t], self.tip), fresh)

    # -- results ---------------------------------------------------------------------------

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "finished":
            self._on_finished(*payload)
        elif kind == "exited":
            task, attempt = payload
            self._free_slot(task, attempt, kind_exit=True)
            self._dispatch()  # the slot is refilled before anything else is done
            self.maker.starts.started(payload)
        elif kind == "integrated":
            self._on_integrated(payload)
        elif kind == "retry":
            rec = self.records[payload]
            self._timers.pop(payload, None)
            if rec.state == "retry_wait":
                rec.state = "pending"

    def _free_slot(self, t: str, attempt: int, kind_exit: bool = False) -> None:
        """The agent of ``t`` is gone: its slot takes the next task, while this one's
        work is still being committed (once per attempt: exit, then finish)."""
        rec = self.records[t]
        if kind_exit and self.config.strategy == "conservative":
            return  # the result may be a failure that stops the run: start nothing meanwhile
        if rec.agent is not None and rec.attempts == attempt and not rec.slot_free:
            rec.slot_free = True
            self.free_slots.append(rec.agent)
            self.free_slots.sort()

    def _on_finished(self, t: str, attempt: int, result: ExecResult) -> None:
        rec = self.records[t]
        rec.finished = time.time()
        rec.result = result
        self._free_slot(t, attempt)
        status = result.status
        if self.stopping and status != "succeeded":
            status = "cancelled"  # killed by our stop, whatever the backend saw
        ref = keep_attempt(self.repo, self.config.run_id, t, rec.attempt_offset + attempt,
                           result.commit)
        message = result.message
        if status == "failed" and self.backend.name != "dummy":
            hint = private_tmp_hint(self.maker.spec(self.specs[t], rec.base or self.tip).command)
            message = "; ".join(m for m in (message, hint) if m)
        self.log.emit(
            "task_finished", task=t, attempt=attempt, status=status, exit_code=result.exit_code,
            duration_s=round(result.duration_s, 4), agent=rec.agent, base=rec.base,
            branch=branch_name(self.config.run_id, t), commit=result.commit,
            files_modified=[[f.path, f.added, f.removed] for f in result.files_modified],
            enforced_by=result.enforced_by, confinement=result.confinement,
            log_tail=result.log_tail[-2000:], message=message, attempt_ref=ref,
            **({"agent_report": dict(result.agent_report)} if result.agent_report else {}),
        )
        spec = self.specs[t]
        if (status in RETRYABLE and attempt <= spec.task.retries and not self.stopping):
            delay = self.config.retry_backoff_s * (2 ** (attempt - 1))
            rec.state = "retry_wait"
            self.log.emit("task_retry", task=t, attempt=attempt + 1, delay_s=delay, after=status)
            timer = threading.Timer(delay, self._q.put, args=(("retry", t),))
            timer.daemon = True
            self._timers[t] = timer
            timer.start()
            return
        rec.state = "done"
        rec.status = status
        if status == "succeeded":
            if result.commit:
                if not self.stopping:
                    self.pending.append(t)
            else:
                rec.integrated = True  # nothing to integrate: dependents may start
            return
        if self.stopping:
            return
        if self.config.strategy == "conservative":
            self._stop(f"task {t} {status}")
        else:
            self._skip_dependents(t)

    def _skip_dependents(self, t: str) -> None:
        stack = list(self.dependents.get(t, ()))
        while stack:
            d = stack.pop()
            rec = self.records.get(d)
            if rec is None or rec.state != "pending":
                continue
            rec.state, rec.status = "done", "skipped"
            self.log.emit("task_skipped", task=d, reason=f"depends on {t}")
            stack.extend(self.dependents.get(d, ()))

    def _stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        self.pending.clear()
        for rec in self.records.values():
            if rec.state == "running":
                rec.cancel.set()
            elif rec.state == "retry_wait":
                timer = self._timers.pop(rec.id, None)
                if timer:
                    timer.cancel()
                rec.state, rec.status = "done", "cancelled"

    # -- integration -----------------------------------------------------------------------

    def _maybe_integrate(self) -> None:
        if self.integrating or self.stopping:
            return
        if self.config.mode == "waves":
            # A wave is integrated once every task in it is done; a wave with nothing to
            # integrate (all failed, skipped, or without changes) just opens the next one.
            # (Conservative: a failure in the wave already stopped the run.)
            while self.wave < len(self.waves):
                wave = [t for t in self.waves[self.wave] if t in self.records]
                if any(self.records[t].state != "done" for t in wave):
                    return
                if self.pending:
                    break
                self.wave += 1
            else:
                return
        if not self.pending:
            return
        batch = [t for t in self.order if t in self.pending]
        self.pending.clear()
        # What lands: the commit each task finished with (recorded then, its attempt ref's).
        items = [BatchItem(t, branch_name(self.config.run_id, t), r.commit or "",
                           tuple(f.path for f in r.files_modified), self.specs[t].task.allow_deletes)
                 for t in batch if (r := self.records[t].result) is not None]
        index = self.batch_index
        self.batch_index += 1
        self.integrating = True
        self._merger.submit(self._integrate, index, items, self.tip)

    def _integrate(self, index: int, items: list[BatchItem], tip: str) -> None:
        """Integration thread: one transaction, journaled before and after."""
        tasks = [i.task for i in items]
        self.log.emit("batch_started", index=index, tasks=tasks, tip=tip,
                      commits={i.task: i.commit for i in items})
        try:
            outcome = self.integrator(index, items, tip)
        except Exception as exc:
            outcome = BatchOutcome(index, tuple(tasks), (), tuple(tasks), tip, tip, (),
                                   f"{type(exc).__name__}: {exc}")
        if outcome.committed:
            self.log.emit("batch_committed", index=index, tasks=tasks, landed=list(outcome.landed),
                          rejected=list(outcome.rejected), old_tip=outcome.old_tip,
                          new_tip=outcome.new_tip, conflicts=list(outcome.conflicts),
                          reasons=dict(outcome.reasons), validation=outcome.validation)
        else:
            self.log.emit("batch_rolled_back", index=index, tasks=tasks, tip=outcome.old_tip,
                          conflicts=list(outcome.conflicts), error=outcome.error,
                          reasons=dict(outcome.reasons), validation=outcome.validation)
        self._q.put(("integrated", outcome))

    def _on_integrated(self, outcome: BatchOutcome) -> None:
        self.integrating = False
        self.batches.append(outcome)
        if outcome.committed:
            self.tip = outcome.new_tip
            if not self.stopping:
                self.maker.advance(self.tip)
        for t in outcome.landed:
            self.records[t].integrated = True
        for t in outcome.rejected:
            self.records[t].rejected = True
        if self.config.mode == "waves":
            self.wave += 1
        if not outcome.rejected:
            return
        if self.config.strategy == "conservative":
            self._stop(f"batch {outcome.index} rejected {', '.join(outcome.rejected)}")
        else:
            for t in outcome.rejected:
                self._skip_dependents(t)

    # -- the end ---------------------------------------------------------------------------

    def _finalise_leftovers(self) -> None:
        """Tasks that never ran: cancelled when the run stopped, else skipped."""
        for t in self.order:
            rec = self.records[t]
            if rec.state in ("pending", "retry_wait"):
                rec.state = "done"
                rec.status = "cancelled" if self.stopping else "skipped"
                self.log.emit("task_skipped", task=t, status=rec.status,
                              reason=self.stop_reason or "dependencies not integrated")
