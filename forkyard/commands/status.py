"""``forkyard status [RUN]``: a run's progress, also while it is going."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from forkyard.views.status import RunStatus
from gitproc.hostile import printable


def print_status(st: RunStatus) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=sys.stderr)  # human output on stderr, as every command
    console.print(f"[bold]run {st.run_id}[/bold] into {st.target}: {st.state}"
                  + (f" ({st.outcome})" if st.outcome else "") + f", {st.elapsed_s:.1f}s"
                  + (f"; its process died {st.dead_for_s:.0f}s ago (`forkyard run --resume "
                     f"{st.run_id}` continues it)" if st.state == "crashed" else ""))
    p = st.progress
    console.print(f"progress: {p['simple']:.0%} of tasks, {p['weighted']:.0%} of work, "
                  f"{p['critical_path']:.0%} of the critical path"
                  + (f"; ETA {st.eta_s:.0f}s" if st.state == "running" else ""))
    console.print("  ".join(f"{k}: {v}" for k, v in sorted(st.counts.items())))
    for neck in st.bottlenecks:
        console.print(f"[yellow]bottleneck[/yellow] {neck['task']}: {neck['reason']}")
    table = Table()
    for col in ("task", "status", "agent", "elapsed", "progress", "integrated", "tokens",
                "last output"):
        # One line a task: a narrow terminal cuts the last output, never wraps it.
        table.add_column(col, overflow="ellipsis", no_wrap=True,
                         ratio=1 if col == "last output" else None)
    for t in st.tasks:
        tokens = "" if t.tokens is None else f"{t.tokens['input']}/{t.tokens['output']}"
        table.add_row(t.task, t.status + (" (no changes)" if t.no_changes else ""),
                      "" if t.agent is None else str(t.agent),
                      f"{t.elapsed_s:.1f}s", "" if t.progress is None else f"{t.progress:.0%}",
                      "yes" if t.integrated else "", tokens,
                      Text(printable(t.reason or t.last_line)[:200]),
                      style="yellow" if t.no_changes else None)
    console.print(table)
    for b in st.batches:
        detail = "; ".join(f"{c.get('task') or 'batch'}: {c.get('kind')}"
                           + (f" in {c.get('path')}" if c.get("path") else "")
                           for c in b.conflicts)
        console.print(printable(f"batch {b.index} {b.outcome}: {', '.join(b.tasks)}"
                                + (f" - {detail}" if detail else "")), markup=False)


def status_command(repo: Path, run_id: str | None, *, as_json: bool = False) -> int:
    from forkyard.views.status import run_status
    from gitproc.git import Repo

    st = run_status(Repo(repo), run_id)
    if as_json:
        print(json.dumps(st.model_dump(mode="json"), indent=1))
    else:
        print_status(st)
    return 0
