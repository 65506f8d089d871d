"""Scheduling logic of the run loop, on the dummy backend with a fake integrator.

Only *when* things happen is under test here (stream vs waves, strategies, retries,
mutual exclusion of conflicting tasks); real git, sandboxes and merges are in test_run.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from forkyard.journal.events import Event, RunPaths, read_events
from forkyard.run.integrate import FakeIntegrator
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile
from sandbox.backends.base import ExecResult, Sandbox
from sandbox.backends.dummy import DummyBackend, DummyConfig


def taskfile(*tasks: dict[str, Any]) -> TaskFile:
    full = [{"command": "true", **t} for t in tasks]
    return TaskFile.model_validate({"tasks": full})


def dummy(default: dict[str, Any] | None = None, **outcomes: dict[str, Any]) -> DummyBackend:
    return DummyBackend(None, DummyConfig.model_validate({
        "default": {"duration_s": 0.05, "commit": "c0ffee", **(default or {})},
        "outcomes": {k: {"commit": "c0ffee", **v} for k, v in outcomes.items()},
    }))


def events(repo: Repo, run_id: str) -> list[Event]:
    return read_events(RunPaths.of(repo, run_id).events)


def at(evs: list[Event], type: str, task: str) -> float:
    return next(e.ts for e in evs if e.type == type and e.task == task)


def test_stream_starts_dependent_once_dependency_is_integrated(webapp: Repo) -> None:
    tf = taskfile({"id": "a"}, {"id": "b"}, {"id": "c", "depends_on": ["a"]})
    res = run_workflow(webapp, tf, RunOptions(agents=2, use_history=False), backend=dummy(b={"duration_s": 0.6}), integrator=FakeIntegrator())
    assert res.outcome == "succeeded"
    evs = events(webapp, res.run_id)
    # c waited for a's batch, not for b (still running): that is stream mode.
    a_landed = next(e.ts for e in evs if e.type == "batch_committed" and "a" in e.get("landed"))
    assert at(evs, "task_started", "c") >= a_landed
    assert at(evs, "task_started", "c") < at(evs, "task_finished", "b")
    assert all(r.integrated for r in res.results)


def test_waves_run_one_after_another_each_one_transaction(webapp: Repo) -> None:
    tf = taskfile({"id": "a"}, {"id": "b"}, {"id": "c", "depends_on": ["a"]})
    fake = FakeIntegrator()
    res = run_workflow(webapp, tf, RunOptions(agents=2, mode="waves", use_history=False), backend=dummy(b={"duration_s": 0.4}), integrator=fake)
    assert res.outcome == "succeeded"
    evs = events(webapp, res.run_id)
    assert at(evs, "task_started", "c") > at(evs, "task_finished", "b")
    assert fake.calls == [("a", "b"), ("c",)]
    assert [b.tasks for b in res.batches] == [["a", "b"], ["c"]]


def test_conservative_stops_at_first_failure(webapp: Repo) -> None:
    tf = taskfile({"id": "bad"}, {"id": "slow"}, {"id": "after", "depends_on": ["bad"]})
    backend = dummy(bad={"status": "failed"}, slow={"duration_s": 5.0})
    res = run_workflow(webapp, tf, RunOptions(agents=2, strategy="conservative", use_history=False), backend=backend, integrator=FakeIntegrator())
    by = {r.task: r for r in res.results}
    assert by["bad"].status == "failed"
    assert by["slow"].status == "cancelled"  # running agent stopped, not waited for
    assert by["after"].status == "cancelled"
    assert res.metrics.wall_s < 3
    assert res.outcome == "failed" and res.exit_code() == 1


def test_aggressive_skips_dependents_of_failures(webapp: Repo) -> None:
    tf = taskfile({"id": "bad"}, {"id": "good"}, {"id": "child", "depends_on": ["bad"]},
                  {"id": "grandchild", "depends_on": ["child"]})
    res = run_workflow(webapp, tf, RunOptions(agents=2, strategy="aggressive", use_history=False), backend=dummy(bad={"status": "failed"}), integrator=FakeIntegrator())
    by = {r.task: r for r in res.results}
    assert by["bad"].status == "failed"
    assert by["good"].status == "succeeded" and by["good"].integrated
    assert by["child"].status == "skipped" and by["grandchild"].status == "skipped"
    assert res.outcome == "partial"


def test_aggressive_skips_dependents_of_rejected_work(webapp: Repo) -> None:
    tf = taskfile({"id": "x"}, {"id": "y", "depends_on": ["x"]}, {"id": "z"})
    res = run_workflow(webapp, tf, RunOptions(agents=2, strategy="aggressive", use_history=False), backend=dummy(), integrator=FakeIntegrator(reject={"x"}))
    by = {r.task: r for r in res.results}
    assert by["x"].status == "rejected" and not by["x"].integrated
    assert by["x"].reason == "conflict (planted)"
    assert by["y"].status == "skipped"
    assert by["z"].integrated


def test_conservative_stops_when_a_batch_is_rejected(webapp: Repo) -> None:
    tf = taskfile({"id": "x"}, {"id": "later", "depends_on": ["x"]})
    res = run_workflow(webapp, tf, RunOptions(agents=2, strategy="conservative", use_history=False), backend=dummy(), integrator=FakeIntegrator(reject={"x"}))
    by = {r.task: r for r in res.results}
    assert not by["x"].integrated and by["later"].status == "cancelled"
    assert res.batches[0].outcome == "rolled_back" and res.batches[0].conflicts


class Flaky(DummyBackend):
    """Times out (or OOMs) the first ``fail`` attempts of each task, then succeeds."""

    def __init__(self, fail: int, status: str = "timed_out") -> None:
        super().__init__(None, DummyConfig.model_validate(
            {"default": {"duration_s": 0.02, "commit": "c0ffee"}}))
        self.fail, self.status = fail, status
        self.attempts: dict[str, int] = {}
        self._alock = threading.Lock()

    def execute(self, sandbox: Sandbox, on_line: Any = None, cancel: Any = None,
                on_exit: Any = None, on_start: Any = None) -> ExecResult:
        with self._alock:
            n = self.attempts[sandbox.spec.task_id] = self.attempts.get(sandbox.spec.task_id, 0) + 1
        if n <= self.fail:
            return ExecResult(self.status, 137, 0.01, "", None)  # type: ignore[arg-type]
        return super().execute(sandbox, on_line, cancel, on_exit, on_start)


def test_retries_with_backoff_after_timeout_and_oom(webapp: Repo) -> None:
    tf = taskfile({"id": "t", "retries": 2}, {"id": "o", "retries": 2})
    backend = Flaky(fail=2)
    res = run_workflow(webapp, tf, RunOptions(agents=2, use_history=False, retry_backoff_s=0.05), backend=backend, integrator=FakeIntegrator())
    assert res.outcome == "succeeded"
    assert backend.attempts == {"t": 3, "o": 3}
    evs = events(webapp, res.run_id)
    retries = [e for e in evs if e.type == "task_retry" and e.task == "t"]
    assert [e.get("delay_s") for e in retries] == [0.05, 0.1]  # doubling backoff

    oom = Flaky(fail=1, status="oom_killed")
    res = run_workflow(webapp, taskfile({"id": "m", "retries": 1}), RunOptions(agents=1, use_history=False, retry_backoff_s=0.01), backend=oom, integrator=FakeIntegrator())
    assert res.outcome == "succeeded" and oom.attempts == {"m": 2}


def test_no_retry_without_retries_or_for_plain_failures(webapp: Repo) -> None:
    backend = Flaky(fail=1)
    res = run_workflow(webapp, taskfile({"id": "t"}), RunOptions(agents=1, use_history=False, retry_backoff_s=0.01), backend=backend, integrator=FakeIntegrator())
    assert res.results[0].status == "timed_out" and backend.attempts == {"t": 1}
    failing = Flaky(fail=1, status="failed")
    res = run_workflow(webapp, taskfile({"id": "f", "retries": 3}), RunOptions(agents=1, use_history=False, retry_backoff_s=0.01), backend=failing, integrator=FakeIntegrator())
    assert res.results[0].status == "failed" and failing.attempts == {"f": 1}


def test_tasks_touching_the_same_files_never_overlap(webapp: Repo) -> None:
    tf = taskfile({"id": "p", "files": ["src/config.py"]}, {"id": "q", "files": ["src/config.py"]},
                  {"id": "r", "files": ["src/ui/**"]})
    res = run_workflow(webapp, tf, RunOptions(agents=3, use_history=False), backend=dummy(default={"duration_s": 0.2}), integrator=FakeIntegrator())
    evs = events(webapp, res.run_id)
    first, second = sorted(["p", "q"], key=lambda t: at(evs, "task_started", t))
    landed = next(e.ts for e in evs if e.type == "batch_committed" and first in e.get("landed"))
    assert at(evs, "task_started", second) >= landed
    assert res.outcome == "succeeded"


def test_agent_slots_are_bounded(webapp: Repo) -> None:
    tf = taskfile(*({"id": f"t{i}"} for i in range(10)))
    backend = dummy(default={"duration_s": 0.05})
    res = run_workflow(webapp, tf, RunOptions(agents=3, use_history=False), backend=backend, integrator=FakeIntegrator())
    assert backend.max_running <= 3
    assert {r.agent for r in res.results} <= {0, 1, 2}
    assert res.outcome == "succeeded"


def test_the_manifest_keeps_the_options_whole_and_resume_builds_the_backend_from_them(
        webapp: Repo) -> None:
    from forkyard.journal.state import RunManifest
    from forkyard.run.workflow import make_backend

    opts = RunOptions(agents=1, backend="dummy", use_history=False, backend_options={
        "default": {"duration_s": 0.07, "commit": "c0ffee"}})
    res = run_workflow(webapp, taskfile({"id": "a"}), opts, integrator=FakeIntegrator())
    manifest = RunManifest.load(RunPaths.of(webapp, res.run_id))
    assert manifest.options == opts
    backend = make_backend(webapp, manifest.options)
    assert isinstance(backend, DummyBackend)
    assert backend.config.default.duration_s == 0.07


class SlowHarvest(DummyBackend):
    """Gives the slot back (on_exit) well before the result is known, as a real backend
    does while it commits the agent's work."""

    def execute(self, sandbox: Sandbox, on_line: Any = None, cancel: Any = None,
                on_exit: Any = None, on_start: Any = None) -> ExecResult:
        def exited() -> None:
            if on_exit is not None:
                on_exit()
            time.sleep(0.3)

        return super().execute(sandbox, on_line, cancel, exited, on_start)


def test_conservative_starts_nothing_while_a_result_is_unknown(webapp: Repo) -> None:
    tf = taskfile({"id": "bad"}, {"id": "next"})
    backend = SlowHarvest(None, DummyConfig.model_validate({
        "default": {"duration_s": 0.05, "commit": "c0ffee"},
        "outcomes": {"bad": {"status": "failed"}}}))
    res = run_workflow(webapp, tf, RunOptions(agents=1, strategy="conservative",
                                              use_history=False),
                       backend=backend, integrator=FakeIntegrator())
    started = [e.task for e in events(webapp, res.run_id) if e.type == "task_started"]
    assert started == ["bad"]  # "next" was never started only to be cancelled
    assert res.result("next").status == "cancelled"
    # The default (aggressive) keeps the freed slot busy: independent work goes on.
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False),
                       backend=backend, integrator=FakeIntegrator())
    assert res.result("next").status == "succeeded"


class Marks(DummyBackend):
    """Notes when each agent starts and when the work its agent left begins to be
    brought home (right after ``on_exit`` returns, as a real backend does)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.marks: list[tuple[str, str]] = []

    def execute(self, sandbox: Sandbox, on_line: Any = None, cancel: Any = None,
                on_exit: Any = None, on_start: Any = None) -> ExecResult:
        task = sandbox.spec.task_id

        def started() -> None:
            time.sleep(0.05)  # an agent's start takes a moment
            self.marks.append(("started", task))
            if on_start is not None:
                on_start()

        def exited() -> None:
            if on_exit is not None:
                on_exit()
            self.marks.append(("harvest", task))

        return super().execute(sandbox, on_line, cancel, exited, started)


def test_a_finished_agents_work_is_brought_home_once_its_slot_is_refilled(webapp: Repo) -> None:
    # One slot: "first" exits, "second" takes the slot; committing what "first" left
    # (work nobody waits for) must not compete with second's start.
    backend = Marks(None, DummyConfig.model_validate({
        "default": {"duration_s": 0.05, "commit": "c0ffee"}}))
    res = run_workflow(webapp, taskfile({"id": "first"}, {"id": "second"}),
                       RunOptions(agents=1, use_history=False),
                       backend=backend, integrator=FakeIntegrator())
    assert res.outcome == "succeeded"
    order = backend.marks
    assert order.index(("started", "second")) < order.index(("harvest", "first")), order
    # With nothing left to start, the last agent's work is brought home at once.
    assert order[-1] == ("harvest", "second")


class Turns(DummyBackend):
    """Notes, per task, when its sandbox began to be made and when its command was
    launched; making one takes a moment, as a real sandbox's does."""

    def __init__(self, *args: Any, turns: bool, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.starts_take_turns = turns
        self.spans: dict[str, list[float]] = {}  # task -> [made from, launched at]
        self.ended: list[float] = []

    def prepare(self, spec: Any) -> Sandbox:
        self.spans[spec.task_id] = [time.monotonic()]
        time.sleep(0.05)
        return super().prepare(spec)

    def execute(self, sandbox: Sandbox, on_line: Any = None, cancel: Any = None,
                on_exit: Any = None, on_start: Any = None) -> ExecResult:
        def launched() -> None:
            time.sleep(0.02)
            self.spans[sandbox.spec.task_id].append(time.monotonic())
            if on_start is not None:
                on_start()

        result = super().execute(sandbox, on_line, cancel, on_exit, launched)
        self.ended.append(time.monotonic())
        return result


def _overlapping(spans: dict[str, list[float]]) -> int:
    ordered = sorted(spans.values())
    return sum(1 for a, b in itertools.pairwise(ordered) if b[0] < a[1])


def test_the_first_waves_starts_take_turns_until_each_command_is_launched(webapp: Repo) -> None:
    # Four slots, four tasks, no sandbox made ahead: each makes its own in turn, and the
    # next begins once the previous one's command is launched; the agents still run
    # side by side.  Without turns (the backend does not ask for them) they all overlap.
    tasks = [{"id": f"t{i}"} for i in range(4)]
    for turns in (True, False):
        backend = Turns(None, DummyConfig.model_validate({"default": {"duration_s": 1.0}}),
                        turns=turns)
        res = run_workflow(webapp, taskfile(*tasks), RunOptions(agents=4, use_history=False),
                           backend=backend, integrator=FakeIntegrator())
        assert res.outcome == "succeeded" and len(backend.spans) == 4
        assert _overlapping(backend.spans) == (0 if turns else 3), backend.spans
        # Every agent was launched before the first one ended: they ran side by side.
        assert max(span[1] for span in backend.spans.values()) < min(backend.ended)
