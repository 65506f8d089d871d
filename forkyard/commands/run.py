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

    console = Console(file=stream or sys.stderr)
    table = Table(title=f"run {result.run_id}: {result.outcome}", title_justify="left")
    for col in ("task", "status", "integrated", "time", "agent", "files"):
        table.add_column(col)
    for r in result.results:
        style = "green" if r.integrated else ("yellow" if r.status == "succeeded" else "red")
        table.add_row(r.task, r.status, "yes" if r.integrated else "no", f"{r.duration_s:.1f}s",
                      "" if r.agent is None else str(r.agent), str(len(r.files_modified)),
                      style=style)
    console.print(table)
    integrated = {r.task for r in result.results if r.integrated}
    for b in result.batches:
        landed = [t for t in b.tasks if t in integrated]
        rolled = [t for t in b.tasks if t not in integrated]
        what = ", ".join(f"{c.get('kind')} in {c.get('path')} ({c.get('task')})"
                         for c in b.conflicts)
        line = f"batch {b.index} {b.outcome}: " + (f"landed {', '.join(landed)}" if landed else "")
        if rolled:
            line += ("; " if landed else "") + f"rolled back {', '.join(rolled)}"
        # Paths and messages come from agents' work: no markup, no control characters.
        console.print(printable(line + (f" - {what}" if what else "")),
                      style="red" if rolled else "green", highlight=False, markup=False)
    m = result.metrics
    console.print(
        f"wall {m.wall_s:.1f}s, task time {m.total_task_s:.1f}s, speedup {m.actual_speedup:.2f}x "
        f"(estimated {m.estimated_speedup:.2f}x), overhead {m.overhead_s:.1f}s, "
        f"{m.agents_used} agents at {m.agent_utilisation:.0%}")
    console.print(f"{result.target}: {result.target_sha_before[:10]} -> {result.target_sha_after[:10]}"
                  f"   report: forkyard report {result.run_id}")


def _sigterm(signum: int, frame: FrameType | None) -> None:
    # A supervisor's SIGTERM gets the same clean stop as Ctrl-C.
    raise KeyboardInterrupt


def run_command(repo: Path, tasks: Path | None, options: RunOptions, *,
                resume: str | None = None, as_json: bool = False) -> int:
    """Run a task file (or resume a run); print the run JSON or a summary; exit code."""
    from forkyard.run.workflow import resume_run, run_workflow
    from gitproc.git import Repo

    if tasks is None and resume is None:
        raise SandboxBadInputError("give a task file, or --resume RUN")
    if tasks is not None and resume is not None:
        raise SandboxBadInputError("give a task file or --resume RUN, not both")
    r = Repo(repo)
    display = make_display(options.agents, repo=r)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    display.start()
    try:
        if resume is not None:
            result = resume_run(r, resume, listeners=(display,))
        else:
            assert tasks is not None
            result = run_workflow(r, tasks, options, listeners=(display,))
    finally:
        display.stop()
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), indent=1))
    else:
        print_summary(result)
    return result.exit_code()
