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

from forkyard.run.validation import VALIDATE_SLOTS, validator_for
from gitproc.git import Repo
from merge import MergeReport, Transaction, recover
from merge.validate import failure_summary


def _print_report(report: MergeReport) -> None:
    console = Console(file=sys.stderr)
    # forkyard's branches share a long "forkyard/<run>/" prefix: name it once, so a
    # narrow terminal shows what tells the sources apart (the task) instead of it.
    names = [m.source for m in report.merges]
    prefix = common_dir(names)
    title = f"merge into {report.target} ({report.target_sha[:12]})"
    if prefix:
        console.print(f"sources under {prefix}", highlight=False, soft_wrap=True)
    table = Table(title=title)
    table.add_column("source", no_wrap=True,
                     min_width=min(40, max((len(n) - len(prefix) for n in names), default=6)))
    table.add_column("status")
    table.add_column("conflicts")
    table.add_column("semantic")
    for m in report.merges:
        status = m.status + (" (culprit)" if m.source in report.culprits else "")
        if m.source in report.blame:
            status += "\nvalidation: " + failure_summary(report.blame[m.source].log_tail, 2)
        conflicts = "\n".join(f"{c.kind}: {c.path}" for c in m.conflicts) or "-"
        semantic = "\n".join(f"{f.severity} {f.kind}: {f.symbol} ({f.path}:{f.line})"
                             for f in m.semantic) or "-"
        table.add_row(m.source[len(prefix):], status, conflicts, semantic)
    console.print(table)
    for o in report.overlaps:
        console.print(f"overlap: {o.path} touched by {', '.join(o.sources)}")
    if report.validation is not None:
        v = report.validation
        console.print(f"validation: {v.command!r} {'passed' if v.passed else 'FAILED'} "
                      f"(exit {v.exit_code})")
        if v.log_tail:  # a passing log too: it shows what was tested
            console.print(v.log_tail, markup=False, highlight=False)
    new = f" -> {report.new_sha[:12]}" if report.new_sha else ""
    console.print(f"outcome: {report.outcome}{new}")


def common_dir(names: Sequence[str]) -> str:
    """The longest ``dir/`` prefix all ``names`` share when there are several ("" if none)."""
    if len(names) < 2:
        return ""
    import os

    common = os.path.commonprefix(list(names))
    return common[: common.rfind("/") + 1]


def _emit(report: MergeReport, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.model_dump(mode="json")))
    else:
        _print_report(report)
    return report.exit_code


def merge_command(
    repo: Path, *, into: str, sources: Sequence[str], dry_run: bool = False,
    validate: str | None = None, semantic: bool = True, squash: bool = False,
    mode: str = "conservative", as_json: bool = False, setup: str | None = None,
) -> int:
    """``forkyard merge --into TARGET SOURCE...``; ``--validate`` runs in a sandbox of
    the merged commit (after ``--setup``), never on this host unconfined."""
    r = Repo(repo)
    report = Transaction(r, into, sources, dry_run=dry_run, validate=validate,
                         semantic=semantic, squash=squash, mode=mode,
                         validator=validator_for(r, validate, setup),
                         validate_slots=VALIDATE_SLOTS).run()
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
