"""``forkyard run``: argument handling and output around :func:`sandbox.run_workflow`."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from forkyard.journal.models import RunResult
from forkyard.run.options import RunOptions
from gitproc.hostile import printable
from sandbox.errors import SandboxBadInputError


def make_display(agents: int, repo: Any = None) -> Any:
    """A live view on a terminal, plain lines otherwise (both on stderr)."""
    from forkyard.views.display import LiveDisplay, PlainDisplay

    if sys.stderr.isatty():
        return LiveDisplay(agents, repo=repo)
    return PlainDisplay()


def print_summary(result: RunResult, stream: Any = None) -> None:
    """The human summary of a finished run (stderr)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=stream or sys.stderr)
    table = Table(title=f"run {result.run_id}: {result.outcome}", title_justify="left")
    for col in ("task", "status", "integrated", "time", "agent", "files", "tokens in/out",
                "why"):
        table.add_column(col, overflow="fold" if col == "why" else "ellipsis")
    for r in result.results:
        style = ("yellow" if r.no_changes or (r.status == "succeeded" and not r.integrated)
                 else "green" if r.integrated else "red")
        table.add_row(r.task, r.status + (", changed nothing" if r.no_changes else ""),
                      "yes" if r.integrated else "no", f"{r.duration_s:.1f}s",
                      "" if r.agent is None else str(r.agent), str(len(r.files_modified)),
                      "" if r.tokens is None else f"{r.tokens.input}/{r.tokens.output}",
                      Text(printable(r.reason.splitlines()[0]) if r.reason else ""),
                      style=style)
    console.print(table)
    for b in result.batches:
        # The batch's own account: a task rolled back here may have landed later.
        landed = list(b.landed)
        rolled = [t for t in b.tasks if t not in landed]
        what = "; ".join(_conflict_text(c) for c in b.conflicts)
        line = f"batch {b.index} {b.outcome}: " + (f"landed {', '.join(landed)}" if landed else "")
        if rolled:
            line += ("; " if landed else "") + f"rolled back {', '.join(rolled)}"
        # Paths and messages come from agents' work: no markup, no control characters.
        console.print(printable(line + (f" - {what}" if what else "")),
                      style="red" if rolled else "green", highlight=False, markup=False)
        v = b.validation
        if v and v.get("passed"):  # what the passing validation said: what was tested
            last = (str(v.get("log_tail") or "").strip().splitlines() or [""])[-1]
            console.print(printable(f"  validation passed: {v.get('command')}: {last}"),
                          highlight=False, markup=False)
    m = result.metrics
    console.print(
        f"wall {m.wall_s:.1f}s, task time {m.total_task_s:.1f}s, speedup {m.actual_speedup:.2f}x "
        f"(estimated {m.estimated_speedup:.2f}x), overhead {m.overhead_s:.1f}s, "
        f"{m.agents_used} agents at {m.agent_utilisation:.0%}"
        + ("" if result.tokens is None else
           f", {result.tokens.input} tokens in, {result.tokens.output} out"))
    console.print(f"{result.target}: {result.target_sha_before[:10]} -> {result.target_sha_after[:10]}"
                  f"   report: forkyard report {result.run_id}")


def _conflict_text(c: dict[str, Any]) -> str:
    """One conflict as a person reads it: whose, what, where, with whom."""
    who = c.get("task") or "the batch"
    if c.get("kind") == "validation":
        return f"{who}: validation failed: {str(c.get('message', '')).splitlines()[0]}"
    text = f"{who}: {c.get('kind')} in {c.get('path')}"
    if c.get("with") is not None:
        text += f" with {', '.join(c['with'])}" if c["with"] else " with the target"
    return text


def _sigterm(signum: int, frame: FrameType | None) -> None:
    # A supervisor's SIGTERM gets the same clean stop as Ctrl-C.
    raise KeyboardInterrupt


def run_command(repo: Path, tasks: Path | None, options: RunOptions, *,
                resume: str | None = None, as_json: bool = False,
                run_id: str | None = None) -> int:
    """Run a task file (or resume a run); print the run JSON or a summary; exit code."""
    from forkyard.run.workflow import resume_run, run_workflow
    from gitproc.git import Repo

    if tasks is None and resume is None:
        raise SandboxBadInputError("give a task file, or --resume RUN")
    if tasks is not None and resume is not None:
        raise SandboxBadInputError("give a task file or --resume RUN, not both")
    if run_id is not None and resume is not None:
        raise SandboxBadInputError("--run-id names a new run; --resume continues one")
    r = Repo(repo)
    display = make_display(options.agents, repo=r)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    display.start()
    try:
        if resume is not None:
            result = resume_run(r, resume, listeners=(display,))
        else:
            assert tasks is not None
            result = run_workflow(r, tasks, options, listeners=(display,), run_id=run_id)
    finally:
        display.stop()
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), indent=1))
    else:
        print_summary(result)
    return result.exit_code()
