"""Run events: every state change of a run, appended to ``events.jsonl``.

The file is the run's journal and its progress feed at once: ``forkyard status`` tails it
from another terminal, ``--resume`` replays it, the report draws its Gantt chart from it.
One JSON object per line: ``{"ts": <unix time>, "type": "<type>", ...fields}``.

Types: ``run_started``, ``run_resumed``, ``task_queued``, ``task_started``, ``task_output``
(a line from the agent, with ``progress`` when the line says how far along it is),
``task_finished``, ``task_retry``, ``task_skipped``, ``batch_started``, ``batch_committed``,
``batch_rolled_back``, ``run_interrupted``, ``run_finished``.

Durability: each event is one ``write`` of a whole line (so a reader never sees half an
event, and a crash of forkyard loses at most the line being written).  Events that
protect state -- a batch starting, committed or rolled back, the run starting and ending
-- are also fsync'd, which flushes every line before them too.  Task events are not
fsync'd one by one (they come in bursts, on the dispatch loop's critical path): a machine
crash can lose the last few, and ``--resume`` then runs those tasks again from a fresh
branch, which it does for every task not known to be integrated anyway.  A task in a
batch is always on disk before its batch is.  Output lines are many and never fsync'd.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitproc.git import Repo

_DURABLE = frozenset({
    "run_started", "run_resumed", "batch_started", "batch_committed", "batch_rolled_back",
    "run_interrupted", "run_finished",
})
# An agent that prints a flood of lines must not turn the journal into its log file: after
# this many output events per task attempt only every ``_OUTPUT_EVERY``-th line is kept.
_OUTPUT_CAP = 2000
_OUTPUT_EVERY = 50
_PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s?%")
_FRACTION = re.compile(r"\b(?:progress|step)\b\D{0,3}(\d+)\s*/\s*(\d+)", re.IGNORECASE)

Listener = Callable[["Event"], None]


@dataclass(frozen=True)
class Event:
    """One line of ``events.jsonl``."""

    ts: float
    type: str
    data: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def task(self) -> str | None:
        return self.data.get("task")

    def to_json(self) -> str:
        return json.dumps({"ts": round(self.ts, 4), "type": self.type, **self.data},
                          separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, line: str) -> Event:
        doc = json.loads(line)
        return cls(float(doc.pop("ts")), str(doc.pop("type")), doc)


def parse_progress(line: str) -> float | None:
    """A fraction in [0, 1] when an output line reports progress (``40%``, ``step 2/5``)."""
    m = _FRACTION.search(line)
    if m and int(m[2]) > 0:
        return min(1.0, int(m[1]) / int(m[2]))
    m = _PERCENT.search(line)
    if m:
        value = float(m[1])
        if value <= 100:
            return value / 100.0
    return None


# -- where a run's state lives ------------------------------------------------------------


def runs_dir(repo: Repo) -> Path:
    return repo.forkyard_dir / "runs"


def new_run_id(now: float | None = None) -> str:
    """``20261122-0412-ab12``: sortable by start time, unique by the random suffix."""
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime(now))
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunPaths:
    """The files of one run under ``.git/forkyard/runs/<run-id>/``."""

    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def manifest(self) -> Path:
        """What was asked: options, the task file, the plan (written before anything runs)."""
        return self.root / "run.json"

    @property
    def result(self) -> Path:
        """The final (or last partial) :class:`~forkyard.journal.models.RunResult`."""
        return self.root / "result.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @classmethod
    def of(cls, repo: Repo, run_id: str) -> RunPaths:
        return cls(runs_dir(repo) / run_id)


def list_runs(repo: Repo) -> list[str]:
    """Run ids in this repository, oldest first."""
    root = runs_dir(repo)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "events.jsonl").exists())


def resolve_run(repo: Repo, run_id: str | None) -> RunPaths:
    """The run named ``run_id`` (a unique prefix is enough), or the latest run."""
    from sandbox.errors import SandboxBadInputError

    runs = list_runs(repo)
    if not runs:
        raise SandboxBadInputError(f"no forkyard runs in {repo.path}")
    if run_id is None:
        return RunPaths.of(repo, runs[-1])
    matches = [r for r in runs if r == run_id] or [r for r in runs if r.startswith(run_id)]
    if len(matches) != 1:
        what = "no run" if not matches else "several runs"
        raise SandboxBadInputError(f"{what} matching {run_id!r} (have: {', '.join(runs[-5:])})")
    return RunPaths.of(repo, matches[0])


# -- writing and reading --------------------------------------------------------------------


class EventLog:
    """Appends events to ``events.jsonl`` and tells listeners (the live display) about them.

    Thread-safe: agent threads report output lines while the loop records state changes.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()       # appends (and the descriptor)
        self._sync_lock = threading.Lock()  # fsyncs, outside the append lock
        self._listeners: list[Listener] = []
        self._output_counts: dict[str, int] = {}

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, type: str, **data: Any) -> Event:
        event = Event(time.time(), type, data)
        line = (event.to_json() + "\n").encode()
        with self._lock:
            if self._fd < 0:
                return event
            os.write(self._fd, line)
        if type in _DURABLE:
            # Not under the append lock: a flush to disk takes milliseconds to tens of
            # them, and output lines and the loop's events would queue behind it (and
            # with them the agent slots freed meanwhile).  This emit still returns only
            # once its line -- and every line before it -- is on disk.
            with self._sync_lock:
                if self._fd >= 0:
                    os.fsync(self._fd)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a display bug must never stop a run
                pass
        return event

    def output(self, task: str, line: str, attempt: int = 1) -> None:
        """An agent's output line (throttled after :data:`_OUTPUT_CAP` lines)."""
        key = f"{task}#{attempt}"
        n = self._output_counts.get(key, 0) + 1
        self._output_counts[key] = n
        if n > _OUTPUT_CAP and n % _OUTPUT_EVERY:
            return
        data: dict[str, Any] = {"task": task, "line": line[-500:]}
        progress = parse_progress(line)
        if progress is not None:
            data["progress"] = progress
        self.emit("task_output", **data)

    def close(self) -> None:
        with self._sync_lock, self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_events(path: Path) -> list[Event]:
    """Every complete event in ``path`` (a torn last line from a crash is ignored)."""
    return list(iter_events(path))


def iter_events(path: Path) -> Iterator[Event]:
    try:
        data = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            yield Event.from_json(line)
        except (ValueError, KeyError):
            continue  # the torn last line of a crashed writer
