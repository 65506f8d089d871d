"""Progress aggregation: three aggregates, ETA and bottlenecks."""

from __future__ import annotations

import pytest

from planner import Task, TaskProgress, aggregate_progress, plan


@pytest.fixture
def p():  # type: ignore[no-untyped-def]
    # a(10) -> b(30) -> d(20) is the critical path (60); c(40) runs beside it.
    tasks = [Task(id="a", estimated_minutes=10), Task(id="b", estimated_minutes=30, depends_on=["a"]),
             Task(id="c", estimated_minutes=40), Task(id="d", estimated_minutes=20, depends_on=["b"])]
    return plan(tasks, agents=2)


def test_nothing_started(p) -> None:  # type: ignore[no-untyped-def]
    s = aggregate_progress(p, {})
    assert (s.simple, s.weighted, s.critical_path) == (0, 0, 0)
    assert s.remaining_work == 100
    assert s.eta == 60  # the critical path a-b-d, longer than 100/2
    assert s.counts == {"pending": 4}


def test_three_aggregates_differ(p) -> None:  # type: ignore[no-untyped-def]
    s = aggregate_progress(p, {"a": 1.0, "c": TaskProgress(state="running", fraction=0.5)},
                           elapsed=20)
    assert s.simple == pytest.approx((1 + 0.5) / 4)
    assert s.weighted == pytest.approx((10 + 20) / 100)
    # Remaining critical path b-d = 50 of the original 60.
    assert s.remaining_critical_path == 50
    assert s.critical_path == pytest.approx(1 - 50 / 60, abs=1e-6)
    assert s.eta == 50
    assert s.projected_total == 70


def test_bottleneck_is_the_ready_task_on_the_remaining_critical_path(p) -> None:  # type: ignore[no-untyped-def]
    s = aggregate_progress(p, {"a": {"state": "done"}, "c": {"state": "running", "fraction": 0.9}})
    assert s.bottlenecks[0].task == "b"
    assert "critical path" in s.bottlenecks[0].reason
    assert "1 task(s) wait on it" in s.bottlenecks[0].reason


def test_running_past_the_estimate_is_a_bottleneck(p) -> None:  # type: ignore[no-untyped-def]
    s = aggregate_progress(p, {"a": 1.0, "c": TaskProgress(state="running", elapsed=60)})
    over = [b for b in s.bottlenecks if b.task == "c"]
    assert over and "150% of its estimate" in over[0].reason


def test_finished_plan(p) -> None:  # type: ignore[no-untyped-def]
    s = aggregate_progress(p, {t: {"state": "done"} for t in "abcd"}, elapsed=61)
    assert (s.simple, s.weighted, s.critical_path, s.eta) == (1, 1, 1, 0)
    assert s.bottlenecks == []
    assert s.projected_total == 61


def test_failed_tasks_count_as_resolved(p) -> None:  # type: ignore[no-untyped-def]
    s = aggregate_progress(p, {"a": {"state": "failed"}})
    assert s.remaining["a"] == 0
    assert s.counts["failed"] == 1


def test_unknown_task_is_rejected(p) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyError, match="zz"):
        aggregate_progress(p, {"zz": 0.5})
