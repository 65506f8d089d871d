"""``forkyard report RUN``: write the run's self-contained HTML report."""

from __future__ import annotations

import json
from pathlib import Path


def report_command(repo: Path, run_id: str, *, output: Path | None = None,
                   as_json: bool = False) -> int:
    import sys

    from forkyard.views.report import write_report
    from gitproc.git import Repo

    path = write_report(Repo(repo), run_id, output)
    if as_json:
        print(json.dumps({"run_id": run_id, "report": str(path)}))
    else:
        print(f"report written to {path}", file=sys.stderr)
        print(path)
    return 0
