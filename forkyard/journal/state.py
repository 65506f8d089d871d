"""A run's state, rebuilt from its events: what ``status``, ``report`` and ``--resume`` read.

Replaying the journal is the single source of truth for a run's results, for a run that
finished, one that is still going (read from another process), and one a crash cut off.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from forkyard.journal.events import Event, RunPaths, read_events
from forkyard.run.options import RunOptions

TERMINAL = frozenset({"succeeded", "failed", "timed_out", "oom_killed", "cancelled", "skipped"})


class RunManifest(BaseModel):
    """What was asked, written before anything runs (``run.json``)."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    created: float
    repo: str
    target: str                 # short name, as the run JSON shows it
    target_ref: str             # refs/heads/...
    target_sha_before: str
    options: RunOptions
    taskfile: dict[str, Any]
    plan: dict[str, Any]

    @classmethod
    def load(cls, paths: RunPaths) -> RunManifest:
        return cls.model_validate_json(paths.manifest.read_text())

    def save(self, paths: RunPaths) -> None:
        tmp = paths.manifest.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(paths.manifest)


@dataclass
class TaskView:
    """One task as the events tell it."""

    id: str
    status: str = "queued"      # queued | running | retry_wait | a TERMINAL status
    attempts: int = 0
    agent: int | None = None
    base: str | None = None
    branch: str | None = None
    started: float | None = None
    first_started: float | None = None
    finished: float | None = None
    duration_s: float = 0.0
    busy_s: float = 0.0         # all attempts
    exit_code: int | None = None
    commit: str | None = None
    integrated: bool = False
    rejected: bool = False
    files_modified: list[list[Any]] = field(default_factory=list)
    enforced_by: str = "none"
    confinement: str = "none"
    log_tail: str = ""
    message: str = ""
    agent_report: dict[str, Any] | None = None   # from the agent CLI's stream
    last_line: str = ""
    progress: float | None = None
    skip_reason: str = ""
    reason: str = ""            # why its work did not land (its batch said so)
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every attempt: n, agent, start, end, status, commit, ref (the Gantt, the run JSON)."""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def no_changes(self) -> bool:
        """Succeeded (exit 0) having changed nothing: never shown as a plain success."""
        return self.status == "succeeded" and not self.commit and not self.files_modified

    @property
    def tokens(self) -> tuple[int, int] | None:
        """(input, output) tokens the agent CLI reported, if it did."""
        r = self.agent_report
        if not isinstance(r, dict):
            return None
        return int(r.get("input_tokens") or 0), int(r.get("output_tokens") or 0)


@dataclass
class BatchView:
    index: int
    tasks: list[str]
    outcome: str = "integrating"   # integrating | committed | rolled_back
    landed: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0
    finished: float | None = None
    old_tip: str | None = None
    new_tip: str | None = None
    error: str | None = None
    validation: dict[str, Any] | None = None


@dataclass
class RunView:
    run_id: str
    tasks: dict[str, TaskView] = field(default_factory=dict)
    batches: list[BatchView] = field(default_factory=list)
    segments: list[list[float]] = field(default_factory=list)  # [start, last event] per session
    finished: bool = False
    interrupted: bool = False
    outcome: str | None = None
    tip_after: str | None = None  # the target's tip when the run ended (run_finished)
    last_ts: float = 0.0

    @property
    def started(self) -> float:
        return self.segments[0][0] if self.segments else 0.0

    @property
    def wall_s(self) -> float:
        return sum(end - start for start, end in self.segments)

    @property
    def running(self) -> list[TaskView]:
        return [t for t in self.tasks.values() if t.status == "running"]

    def batch(self, index: int) -> BatchView | None:
        for b in self.batches:
            if b.index == index:
                return b
        return None


def replay(run_id: str, events: Iterable[Event]) -> RunView:
    """Fold events into a :class:`RunView`."""
    view = RunView(run_id)
    for ev in events:
        apply_event(view, ev)
    return view


def apply_event(view: RunView, ev: Event) -> None:
    """Fold one event into ``view`` (the live display does this as events happen)."""
    view.last_ts = ev.ts
    kind = ev.type
    if view.segments and kind != "run_resumed":
        # (a resume opens a new segment: the time the run lay dead counts in neither)
        view.segments[-1][1] = ev.ts
    if kind in ("run_started", "run_resumed"):
        view.segments.append([ev.ts, ev.ts])
        view.finished = False
        view.interrupted = False
        for tid in ev.get("tasks", []):
            view.tasks.setdefault(tid, TaskView(tid))
        return
    if kind == "run_finished":
        view.finished = True
        view.outcome = ev.get("outcome")
        view.tip_after = ev.get("tip")
        return
    if kind == "run_interrupted":
        view.interrupted = True
        return
    if kind.startswith("batch_"):
        _batch_event(view, ev)
        return
    tid = ev.task
    if tid is None:
        return
    _task_event(view.tasks.setdefault(tid, TaskView(tid)), ev)


def _task_event(t: TaskView, ev: Event) -> None:
    kind = ev.type
    if kind == "task_started":
        t.status, t.attempts = "running", int(ev.get("attempt", t.attempts + 1))
        t.agent, t.base, t.branch = ev.get("agent"), ev.get("base"), ev.get("branch")
        t.started = ev.ts
        t.first_started = t.first_started or ev.ts
        t.progress, t.last_line = None, ""
        t.commit, t.integrated, t.rejected, t.reason = None, False, False, ""
        t.history.append({"n": len(t.history) + 1, "agent": t.agent, "start": ev.ts,
                          "end": None, "status": "running", "commit": None, "ref": None})
    elif kind == "task_output":
        t.last_line = ev.get("line", "")
        if ev.get("progress") is not None:
            t.progress = float(ev.get("progress"))
    elif kind == "task_finished":
        t.status = ev.get("status", "failed")
        t.finished = ev.ts
        t.duration_s = float(ev.get("duration_s", 0.0))
        t.busy_s += t.duration_s
        for key in ("exit_code", "commit", "agent", "branch", "base", "files_modified",
                    "enforced_by", "confinement", "log_tail", "message", "agent_report"):
            if key in ev.data:
                setattr(t, key, ev.data[key])
        if t.status == "succeeded" and not t.commit:
            t.integrated = True  # nothing to integrate
        if t.history and t.history[-1]["end"] is None:
            t.history[-1].update(end=ev.ts, status=t.status, commit=ev.get("commit"),
                                 ref=ev.get("attempt_ref"))
    elif kind == "task_retry":
        t.status = "retry_wait"
    elif kind == "task_skipped":
        t.status = ev.get("status", "skipped")
        t.skip_reason = ev.get("reason", "")


def _batch_event(view: RunView, ev: Event) -> None:
    index = int(ev.get("index", 0))
    b = view.batch(index)
    if b is None:
        b = BatchView(index, list(ev.get("tasks", [])), started=ev.ts)
        view.batches.append(b)
    if ev.type == "batch_committed":
        b.outcome, b.finished = "committed", ev.ts
        b.landed, b.rejected = list(ev.get("landed", [])), list(ev.get("rejected", []))
        b.conflicts = list(ev.get("conflicts", []))
        b.old_tip, b.new_tip = ev.get("old_tip"), ev.get("new_tip")
    elif ev.type == "batch_rolled_back":
        b.outcome, b.finished = "rolled_back", ev.ts
        b.rejected = list(b.tasks)
        b.conflicts = list(ev.get("conflicts", []))
        b.old_tip = b.new_tip = ev.get("tip")
        b.error = ev.get("error")
    else:
        b.old_tip = ev.get("tip")
    for tid in b.landed:
        if tid in view.tasks:
            view.tasks[tid].integrated = True
    for tid in b.rejected:
        if tid in view.tasks:
            view.tasks[tid].rejected = True
    if ev.get("validation") is not None:
        b.validation = ev.get("validation")
    for tid, why in (ev.get("reasons") or {}).items():
        if tid in view.tasks:
            view.tasks[tid].reason = why


def load_view(paths: RunPaths) -> RunView:
    return replay(paths.run_id, read_events(paths.events))
