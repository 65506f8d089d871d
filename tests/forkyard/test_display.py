"""The live view shows failures, a batch while it integrates and validates, each rolled
back task with its own reason, and an ETA that follows the pace the run measures."""

from __future__ import annotations

import time

from rich.console import Console

from forkyard.journal.events import Event
from forkyard.views.display import LiveDisplay, PlainDisplay
from planner import TaskFile, plan


def _screen(display: LiveDisplay) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(display)
    return console.export_text()


def test_live_view_shows_failures_and_integration() -> None:
    now = time.time()
    d = LiveDisplay(2)
    for ev in [
        Event(now, "run_started", {"run_id": "r1", "tasks": ["a", "b", "c"], "agents": 2}),
        Event(now, "task_started", {"task": "a", "agent": 0, "attempt": 1}),
        Event(now, "task_started", {"task": "b", "agent": 1, "attempt": 1}),
        Event(now + 1, "task_finished", {"task": "b", "agent": 1, "status": "failed",
                                         "duration_s": 1.0, "message": "exit 3: boom"}),
        Event(now + 2, "task_finished", {"task": "a", "agent": 0, "status": "succeeded",
                                         "duration_s": 2.0, "commit": "c0ffee"}),
        Event(now + 2, "batch_started", {"index": 0, "tasks": ["a"]}),
    ]:
        d(ev)
    screen = _screen(d)
    assert "1 failed" in screen
    assert "b failed in 1.0s (0 files): exit 3: boom" in screen
    assert "batch 0 integrating and validating" in screen
    d(Event(now + 3, "batch_rolled_back", {
        "index": 0, "tasks": ["a", "c"], "conflicts": [],
        "reasons": {"a": "validation failed with it: FAILED t.py::test_a",
                    "c": "held back: its batch was rolled back because of a"}}))
    screen = _screen(d)
    assert "a: validation failed with it: FAILED t.py::test_a" in screen
    assert "c: held back" in screen and "integrating and validating" not in screen


def test_eta_follows_the_measured_pace() -> None:
    tf = TaskFile.model_validate({"tasks": [
        {"id": t, "command": "true", "estimated_minutes": 1} for t in ("a", "b", "c", "d")]})
    p = plan(tf, agents=1)
    now = time.time()

    def eta_after(took: float) -> float:
        d = LiveDisplay(1, plan=p)
        d(Event(now - 600, "run_started", {"run_id": "r", "tasks": ["a", "b", "c", "d"],
                                           "agents": 1}))
        d(Event(now - 600, "task_started", {"task": "a", "agent": 0}))
        d(Event(now - 600 + took, "task_finished", {"task": "a", "agent": 0,
                                                    "status": "succeeded", "duration_s": took}))
        text = d._eta(now - 600 + took)
        return float(text.split()[0].rstrip("s")) * (60 if "min" in text else 1)

    assert eta_after(120.0) > 1.5 * eta_after(60.0)  # twice as slow as planned: later


def test_plain_lines_say_why() -> None:
    line = PlainDisplay.format(Event(0, "task_finished", {
        "task": "x", "agent": 0, "status": "failed", "duration_s": 0.5,
        "message": "/tmp/s.py exists on this host but not in the sandbox"}))
    assert line is not None and "not in the sandbox" in line
