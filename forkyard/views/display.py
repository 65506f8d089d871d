"""What a person watching ``forkyard run`` sees.

:class:`LiveDisplay` (a terminal): one row per agent with its task, elapsed time and last
output line, an overall bar with ETA, and batch outcomes as they land (rich).
:class:`PlainDisplay` (not a terminal, CI logs): one line per state change.  Both are
event listeners; neither may slow the run down, so the live one only folds events into a
view and rich repaints it from its own thread a few times a second.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

from forkyard.journal.events import Event
from forkyard.journal.state import RunView, apply_event
from gitproc.hostile import printable


def _short(text: str, width: int) -> str:
    text = printable(text).strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt_batch(ev: Event) -> str:
    reasons = ev.get("reasons") or {}
    # Each rolled-back task with its own reason, never every conflict for every task.
    why = "; ".join(f"{t}: {_short(r.splitlines()[0], 120)}" for t, r in
                    list(reasons.items())[:4]) or ev.get("error") or "rejected"
    if ev.type == "batch_committed":
        rejected = ev.get("rejected") or []
        extra = f"; rolled back ({', '.join(rejected)}): {why}" if rejected else ""
        return (f"batch {ev.get('index')} committed: {', '.join(ev.get('landed', []))}"
                f" -> {str(ev.get('new_tip'))[:10]}{extra}")
    return f"batch {ev.get('index')} rolled back ({', '.join(ev.get('tasks', []))}): {why}"


def _no_changes(ev: Event) -> bool:
    return (ev.get("status") == "succeeded" and not ev.get("commit")
            and not ev.get("files_modified"))


def _tokens(ev: Event) -> str:
    r = ev.get("agent_report")
    if not isinstance(r, dict):
        return ""
    return f", {r.get('input_tokens', 0)} tokens in, {r.get('output_tokens', 0)} out"


class PlainDisplay:
    """One line per state change on ``stream`` (stderr by default)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def __call__(self, ev: Event) -> None:
        line = self.format(ev)
        if line:
            with self._lock:
                print(f"forkyard: {printable(line)}", file=self.stream, flush=True)

    @staticmethod
    def format(ev: Event) -> str | None:
        t = ev.task
        if ev.type == "run_started":
            return (f"run {ev.get('run_id')}: {len(ev.get('tasks', []))} tasks, "
                    f"{ev.get('agents')} agents, {ev.get('mode')}/{ev.get('strategy')} "
                    f"into {ev.get('target')}")
        if ev.type == "run_resumed":
            # Say what --resume does, which a person may not expect: the task file and
            # options recorded when the run started (not the file on disk now), and
            # every task that did not succeed runs again, failed ones included.
            was = ev.get("was") or {}
            again = ", ".join(f"{t} ({was.get(t, 'not run')})" for t in ev.get("rerun", []))
            return (f"resuming run {ev.get('run_id')} with the task file and options it was "
                    f"started with; running again: {again or 'nothing'}")
        if ev.type == "task_started":
            attempt = f" (attempt {ev.get('attempt')})" if ev.get("attempt", 1) > 1 else ""
            return f"[agent {ev.get('agent')}] {t} started{attempt}"
        if ev.type == "task_finished":
            files = len(ev.get("files_modified") or [])
            why = f": {_short(str(ev.get('message')), 160)}" if (
                ev.get("status") != "succeeded" and ev.get("message")) else ""
            return (f"[agent {ev.get('agent')}] {t} {ev.get('status')} in "
                    f"{ev.get('duration_s', 0):.1f}s ({files} files{_tokens(ev)}){why}"
                    + (": exited 0 but changed nothing" if _no_changes(ev) else ""))
        if ev.type == "batch_started":
            return f"batch {ev.get('index')} integrating: {', '.join(ev.get('tasks', []))}"
        if ev.type == "task_retry":
            return f"{t} {ev.get('after')}: retry {ev.get('attempt')} in {ev.get('delay_s'):g}s"
        if ev.type == "task_skipped":
            return f"{t} {ev.get('status', 'skipped')}: {ev.get('reason')}"
        if ev.type in ("batch_committed", "batch_rolled_back"):
            return _fmt_batch(ev)
        if ev.type == "run_interrupted":
            return "interrupted: stopping agents, leaving the target consistent"
        if ev.type == "run_finished":
            return f"run finished: {ev.get('outcome')}"
        return None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class LiveDisplay:
    """A rich live view of the run (see the module docstring)."""

    def __init__(self, agents: int, console: Any | None = None, plan: Any | None = None,
                 repo: Any | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.agents = agents
        self.plan = plan
        self.repo = repo
        self.view = RunView("")
        self.batch_lines: list[str] = []
        self._lock = threading.Lock()
        self._live: Any = None

    def __call__(self, ev: Event) -> None:
        with self._lock:
            if ev.type in ("run_started", "run_resumed"):
                self.view.run_id = str(ev.get("run_id"))
                self.agents = int(ev.get("agents") or self.agents)
                if self.plan is None and self.repo is not None:
                    self.plan = _load_plan(self.repo, self.view.run_id)
            apply_event(self.view, ev)
            if ev.type in ("batch_committed", "batch_rolled_back"):
                self.batch_lines.append(_fmt_batch(ev))
            elif ev.type == "run_resumed" or ev.type == "task_retry" or (
                    ev.type == "task_finished" and ev.get("status") != "succeeded"):
                # Failures are news, not just a count.
                self.batch_lines.append(PlainDisplay.format(ev) or "")
            elif ev.type == "task_finished" and _no_changes(ev):
                self.batch_lines.append(f"{ev.task} exited 0 but changed nothing")

    def start(self) -> None:
        from rich.live import Live

        self._live = Live(self, console=self.console, refresh_per_second=8, transient=False)
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            now = time.time()
            view = self.view
            by_agent = {t.agent: t for t in view.tasks.values() if t.status == "running"}
            table = Table(box=None, pad_edge=False, expand=True, show_edge=False)
            table.add_column("agent", width=5, no_wrap=True)
            table.add_column("task", width=18, no_wrap=True)
            table.add_column("elapsed", width=8, justify="right", no_wrap=True)
            table.add_column("last output", ratio=1, no_wrap=True, overflow="ellipsis")
            for slot in range(self.agents):
                t = by_agent.get(slot)
                if t is None:
                    table.add_row(str(slot), Text("idle", style="dim"), "", "")
                else:
                    el = now - (t.started or now)
                    # Text, not a string: what an agent printed is never rich markup.
                    table.add_row(str(slot), Text(_short(t.id, 18)), f"{el:5.1f}s",
                                  Text(_short(t.last_line, 200)))
            total = len(view.tasks) or 1
            done = sum(1 for t in view.tasks.values() if t.done)
            landed = sum(1 for t in view.tasks.values() if t.integrated)
            bad: dict[str, int] = {}
            for t in view.tasks.values():
                st = "rejected" if t.rejected and not t.integrated else t.status
                if st in ("failed", "timed_out", "oom_killed", "rejected", "skipped",
                          "cancelled"):
                    bad[st] = bad.get(st, 0) + 1
            elapsed = sum(end - start for start, end in view.segments[:-1]) + (
                now - view.segments[-1][0] if view.segments else 0.0)
            eta = self._eta(now)
            head = Text.assemble(
                (f"run {view.run_id}  ", "bold"),
                f"{done}/{total} done, {landed} integrated",
                (", " + ", ".join(f"{n} {k}" for k, n in sorted(bad.items())), "red")
                if bad else "",
                f", {elapsed:.1f}s elapsed",
                (f", ETA {eta}" if eta else ""),
            )
            parts: list[Any] = [head, ProgressBar(total=total, completed=done), table]
            for b in view.batches:
                if b.outcome == "integrating":  # merging and validating: say so
                    parts.append(Text(f"batch {b.index} integrating and validating "
                                      f"({now - b.started:.0f}s): {', '.join(b.tasks)}",
                                      style="yellow"))
            for line in self.batch_lines[-6:]:
                style = ("red" if "rolled back" in line or " failed" in line
                         or "timed_out" in line else
                         "yellow" if "changed nothing" in line else "green")
                parts.append(Text(printable(line), style=style))
            return Group(*parts)

    def _eta(self, now: float) -> str:
        if self.plan is None:
            return ""
        try:
            from forkyard.views.status import progress_summary

            summary = progress_summary(self.plan, self.view, now)
        except Exception:
            return ""
        # Adapt to what this run measures: the tasks done so far took `pace` times
        # their estimates, and so, likely, will the rest.
        spent = est = 0.0
        for t in self.view.tasks.values():
            if t.status == "succeeded" and t.id in self.plan.durations:
                spent += t.duration_s
                est += self.plan.durations[t.id] * 60.0
        pace = min(10.0, max(0.1, spent / est)) if est > 0 and spent > 0 else 1.0
        minutes = summary.eta * pace
        return f"{minutes * 60:.0f}s" if minutes < 1 else f"{minutes:.1f} min"


def _load_plan(repo: Any, run_id: str) -> Any:
    """The run's plan from its manifest (for the ETA); None if unreadable."""
    try:
        from forkyard.journal.events import RunPaths
        from forkyard.journal.state import RunManifest
        from planner import Plan

        return Plan.model_validate(RunManifest.load(RunPaths.of(repo, run_id)).plan)
    except Exception:
        return None
