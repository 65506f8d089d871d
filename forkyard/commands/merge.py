"""``forkyard merge`` and ``forkyard recover``: thin calls into ``merge``.

Human output is a table on stderr; ``--json`` prints the report on stdout.  Exit codes:
0 clean, 1 conflicts / semantic errors / failed validation, 2 bad input (raised).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from merge import MergeReport, Transaction, recover


def _print_report(report: MergeReport) -> None:
    console = Console(file=sys.stderr)
    table = Table(title=f"merge into {report.target} ({report.target_sha[:12]})")
    table.add_column("source")
    table.add_column("status")
    table.add_column("conflicts")
    table.add_column("semantic")
    for m in report.merges:
        status = m.status + (" (culprit)" if m.source in report.culprits else "")
        conflicts = "\n".join(f"{c.kind}: {c.path}" for c in m.conflicts) or "-"
        semantic = "\n".join(f"{f.severity} {f.kind}: {f.symbol} ({f.path}:{f.line})"
                             for f in m.semantic) or "-"
        table.add_row(m.source, status, conflicts, semantic)
    console.print(table)
    for o in report.overlaps:
        console.print(f"overlap: {o.path} touched by {', '.join(o.sources)}")
    if report.validation is not None:
        v = report.validation
        console.print(f"validation: {v.command!r} {'passed' if v.passed else 'FAILED'} "
                      f"(exit {v.exit_code})")
        if not v.passed and v.log_tail:
            console.print(v.log_tail, markup=False, highlight=False)
    new = f" -> {report.new_sha[:12]}" if report.new_sha else ""
    console.print(f"outcome: {report.outcome}{new}")


def _emit(report: MergeReport, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.model_dump(mode="json")))
    else:
        _print_report(report)
    return report.exit_code


def merge_command(
    repo: Path, *, into: str, sources: Sequence[str], dry_run: bool = False,
    validate: str | None = None, semantic: bool = True, squash: bool = False,
    mode: str = "conservative", as_json: bool = False,
) -> int:
    """``forkyard merge --into TARGET SOURCE...``"""
    report = Transaction(repo, into, sources, dry_run=dry_run, validate=validate,
                         semantic=semantic, squash=squash, mode=mode).run()
    return _emit(report, as_json)


def recover_command(repo: Path, *, as_json: bool = False) -> int:
    """``forkyard recover``: finish or roll back batches a crash interrupted."""
    actions = recover(repo)
    if as_json:
        print(json.dumps({"recovered": [a.model_dump(mode="json") for a in actions]}))
    else:
        console = Console(file=sys.stderr)
        if not actions:
            console.print("nothing to recover")
        for a in actions:
            console.print(f"{a.target_ref}: {a.action} (now {(a.sha or 'absent')[:12]})")
    return 0
