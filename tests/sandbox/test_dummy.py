"""The dummy backend's share of the contract (scripted outcomes for run-loop tests)."""

from __future__ import annotations

import threading

from planner.tasks import Limits
from sandbox.backends import DummyBackend, DummyConfig, DummyOutcome
from sandbox.backends.base import SandboxSpec


def spec(task: str, timeout_s: float | None = 10) -> SandboxSpec:
    return SandboxSpec(run_id="r", task_id=task, base="0" * 40, command="x",
                       limits=Limits(timeout_s=timeout_s))


def test_scripted_outcomes_and_calls() -> None:
    b = DummyBackend(config=DummyConfig(outcomes={
        "ok": DummyOutcome(lines=["a", "b"], commit="c" * 40, files={"x.py": (3, 1)}),
        "bad": DummyOutcome(status="failed", exit_code=7),
        "oom": DummyOutcome(status="oom_killed"),
    }))
    seen: list[str] = []
    ok = b.run(spec("ok"), on_line=seen.append)
    assert (ok.status, ok.exit_code, ok.commit, seen) == ("succeeded", 0, "c" * 40, ["a", "b"])
    assert ok.files_modified[0].path == "x.py" and ok.files_modified[0].added == 3
    assert ok.log_tail == "a\nb"
    bad = b.run(spec("bad"))
    assert (bad.status, bad.exit_code, bad.commit) == ("failed", 7, None)
    assert b.run(spec("oom")).status == "oom_killed"
    assert b.calls[:3] == [("prepare", "ok"), ("execute", "ok"), ("cleanup", "ok")]


def test_timeout_and_cancel() -> None:
    b = DummyBackend(config=DummyConfig(default=DummyOutcome(duration_s=5)))
    assert b.run(spec("slow", timeout_s=0.05)).status == "timed_out"
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    assert b.run(spec("slow"), cancel=cancel).status == "cancelled"


def test_concurrency_is_observable() -> None:
    b = DummyBackend(default=DummyOutcome(duration_s=0.2))  # type: ignore[arg-type]
    threads = [threading.Thread(target=b.run, args=(spec(f"t{i}"),)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.max_running == 3 and b.running == 0
