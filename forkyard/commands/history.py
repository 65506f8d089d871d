"""``forkyard history``: estimate versus actual per task, regressions flagged."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def history_command(repo: Path, *, as_json: bool = False) -> int:
    from rich.console import Console
    from rich.table import Table

    from forkyard.views.history import History
    from gitproc.git import Repo

    rows = History(Repo(repo)).rows()
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=1))
        return 0
    table = Table(title="task history")
    for col in ("task", "runs", "estimate", "last", "median", "status", ""):
        table.add_column(col)
    for r in rows:
        est = "" if r.estimate_s is None else f"{r.estimate_s:.0f}s"
        table.add_row(r.task, str(r.runs), est, f"{r.last_s:.1f}s", f"{r.median_s:.1f}s",
                      r.last_status, "[red]regression[/red]" if r.regression else "")
    Console(file=sys.stderr).print(table)  # human output on stderr, as every command
    return 0
