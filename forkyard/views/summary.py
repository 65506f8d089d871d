"""A Markdown summary of ``forkyard check`` for a CI job's summary page.

GitHub Actions shows whatever a step appends to the file ``$GITHUB_STEP_SUMMARY`` names,
as Markdown on the run's page.  :func:`render_summary` writes the verdict, the branches
(a table), the pairwise matrix (✓ merges cleanly, ✗ conflicts, the files listed under
it) and the validation.  :func:`append_step_summary` appends it when the variable is set
and does nothing otherwise, so ``forkyard check`` calls it unconditionally.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from forkyard.views.check_report import CheckReport, pair_files, plain

OK, BAD = "✓", "✗"
#: Files listed per branch or pair before "and N more": a table cell is not a log.
MAX_FILES = 5


def _cell(text: str) -> str:
    """Text safe in a table cell: a pipe would end the cell, a newline the row."""
    return " ".join(plain(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    """Inline code that survives backticks inside ``text`` (a longer fence around it)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _files(paths: list[str]) -> str:
    shown = ", ".join(_code(p) for p in paths[:MAX_FILES])
    return shown + (f" and {len(paths) - MAX_FILES} more" if len(paths) > MAX_FILES else "")


def _fenced(text: str) -> str:
    # A fence longer than any backtick run inside, so a log cannot close it early.
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def branches_table(report: CheckReport) -> str:
    """The branches and how each integrates into the target."""
    rows = ["| Branch | Integrates | Details |", "| --- | --- | --- |"]
    for b in report.branches:
        status = f"{OK} yes" if b.status == "clean" else f"{BAD} conflict"
        rows.append(f"| {_cell(_code(b.name))} | {status} | {_cell(_files(b.files))} |")
    return "\n".join(rows)


def matrix_table(report: CheckReport) -> str:
    """Every branch against every other: ✓ clean, ✗ conflict, — itself."""
    names = report.matrix.branches
    if len(names) < 2:
        return "_Fewer than two branches: no pairs to check._"
    rows = ["| | " + " | ".join(_cell(_code(n)) for n in names) + " |",
            "| --- |" + " :-: |" * len(names)]
    for a in names:
        cells = []
        for b in names:
            p = report.matrix.pair(a, b)
            cells.append("—" if a == b else "?" if p is None else OK if p.ok else BAD)
        rows.append(f"| {_cell(_code(a))} | " + " | ".join(cells) + " |")
    bad = report.matrix.conflicting
    if bad:
        rows.append("")
        rows += [f"- {_code(p.a)} {BAD} {_code(p.b)}: "
                 f"{_files(pair_files(p)) or 'no common history'}" for p in bad]
    return "\n".join(rows)


def validation_section(report: CheckReport) -> str:
    """The validation verdict, its log tail folded away when it failed."""
    v = report.validation
    if v is None:
        if report.validate_command is not None and report.branches:
            return f"_{_code(report.validate_command)} not run: the branches do not integrate._"
        return "_Not run (no validation command)._"
    if v.passed:
        return f"{OK} {_code(v.command)} passed."
    why = f"exited {v.exit_code}" if v.exit_code is not None else "did not finish"
    out = f"{BAD} {_code(v.command)} {why}."
    log = plain(v.log_tail)
    if log.strip():
        out += f"\n\n<details><summary>Log tail</summary>\n\n{_fenced(log)}\n\n</details>"
    return out


def render_summary(report: CheckReport) -> str:
    """The whole summary as Markdown (ending in a newline)."""
    verdict = f"{OK} all integrate" if report.ok else f"{BAD} does not integrate"
    parts = [f"## forkyard check into {_code(report.target)}: {verdict}",
             "### Branches", branches_table(report),
             "### Pairwise matrix", matrix_table(report),
             "### Validation", validation_section(report)]
    return "\n\n".join(parts) + "\n"


def append_step_summary(markdown: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Append ``markdown`` to ``$GITHUB_STEP_SUMMARY``; the file, or None when unset.

    Appends: earlier steps of the job may have written their own sections.
    """
    env = os.environ if environ is None else environ
    target = env.get("GITHUB_STEP_SUMMARY", "").strip()
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as fh:
        if fh.tell():
            fh.write("\n")  # a blank line between our block and what came before
        fh.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return path
