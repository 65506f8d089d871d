"""The events journal: append, read back (torn lines too), progress parsing, replay."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from forkyard.journal import events as events_module
from forkyard.journal.events import Event, EventLog, new_run_id, parse_progress, read_events
from forkyard.journal.state import replay


def test_events_round_trip_and_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    seen: list[Event] = []
    log.subscribe(seen.append)
    log.emit("run_started", run_id="r", tasks=["a"])
    log.emit("task_started", task="a", attempt=1, agent=0)
    log.output("a", "step 2/4 building")
    log.close()
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"ts": 1, "type": "task_fini')  # a crash mid-write
    events = read_events(tmp_path / "events.jsonl")
    assert [e.type for e in events] == ["run_started", "task_started", "task_output"]
    assert events[2].get("progress") == 0.5
    assert [e.type for e in seen] == [e.type for e in events]


def test_progress_is_read_from_common_line_shapes() -> None:
    assert parse_progress("building 40%") == 0.4
    assert parse_progress("Step 3/4: tests") == 0.75
    assert parse_progress("progress: 1/8") == 0.125
    assert parse_progress("version 1.2.3") is None
    assert parse_progress("no numbers here") is None


def test_output_flood_is_throttled(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.jsonl")
    for i in range(5000):
        log.output("a", f"line {i}")
    log.close()
    n = len(read_events(tmp_path / "e.jsonl"))
    assert 2000 < n < 2100


def test_replay_builds_the_run_view(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.emit("run_started", run_id="r", tasks=["a", "b"])
    log.emit("task_started", task="a", attempt=1, agent=0, base="s0", branch="forkyard/r/a")
    log.emit("task_finished", task="a", status="succeeded", duration_s=1.5, commit="c1",
             exit_code=0)
    log.emit("batch_started", index=0, tasks=["a"], tip="s0")
    log.emit("batch_committed", index=0, tasks=["a"], landed=["a"], rejected=[],
             old_tip="s0", new_tip="s1")
    log.emit("task_skipped", task="b", status="skipped", reason="x")
    log.close()
    view = replay("r", read_events(tmp_path / "events.jsonl"))
    assert view.tasks["a"].integrated and view.tasks["a"].duration_s == 1.5
    assert view.tasks["b"].status == "skipped"
    assert view.batches[0].outcome == "committed" and view.batches[0].new_tip == "s1"
    assert not view.finished


def test_run_ids_look_like_the_documented_ones() -> None:
    import re

    assert re.fullmatch(r"\d{8}-\d{4}-[0-9a-f]{4}", new_run_id())


def test_lines_are_appended_while_a_durable_event_is_being_flushed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A durable event's fsync does not hold the journal: an agent's output line (and the
    loop's events) go in meanwhile; the durable emit returns once its flush is done."""
    flushing, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        flushing.set()
        assert release.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(events_module.os, "fsync", slow_fsync)
    log = EventLog(tmp_path / "events.jsonl")
    durable = threading.Thread(target=log.emit, args=("batch_started",), kwargs={"index": 0})
    durable.start()
    assert flushing.wait(30)
    line = threading.Thread(target=log.output, args=("t1", "still here"))
    line.start()
    line.join(30)
    appended = not line.is_alive()
    returned_early = not durable.is_alive()
    release.set()
    durable.join(30)
    log.close()
    assert appended and not returned_early
    assert [e.type for e in read_events(tmp_path / "events.jsonl")] == ["batch_started", "task_output"]
