"""``forkyard check``: do these branches integrate?  For CI jobs that validate merges.

Three steps, none of which moves a ref: the pairwise matrix (every pair of branches
merged with each other, in memory: which pairs conflict textually or semantically), the
integration (every branch merged onto the target in a stable order, a dry-run
transaction), and the validation command on the integrated tree.

Branches are names, globs over local and remote-tracking branches (``'feature/*'``,
``'origin/forkyard/*'``, expanded in name order),
or, when none are given, every ``forkyard/`` branch the target does not contain yet (the
branches of open runs).  Output: a table on stderr, ``--json`` (the
:class:`~forkyard.views.check_report.CheckReport`), ``--junit FILE``, and a Markdown
summary appended to ``$GITHUB_STEP_SUMMARY`` when it is set.  Exit 0 when everything
integrates, 1 on a conflict or a failed validation, 2 on bad input (nothing written).
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from forkyard.views.check_report import CheckReport, pair_files
from forkyard.views.junit import check_junit, write_junit
from forkyard.views.summary import append_step_summary, render_summary
from gitproc.errors import BadInputError
from gitproc.git import Repo
from merge import Transaction
from merge.matrix import conflict_matrix

_GLOB = set("*?[")


def open_branches(repo: Repo, into: str) -> list[str]:
    """``refs/heads/forkyard/**`` branches that ``into`` does not contain yet."""
    target = repo.rev_parse(into)
    out = repo.out("for-each-ref", "--format=%(refname:short)", "--no-merged", target,
                   "refs/heads/forkyard/")
    return [line for line in out.splitlines() if line]


def select_branches(repo: Repo, into: str, patterns: Sequence[str]) -> list[str]:
    """The branches to check, in a stable order: names as given, each glob's matches in
    name order (local branches, then remote-tracking ones such as ``origin/x``),
    duplicates dropped; none given: :func:`open_branches`.  A glob matching nothing is bad
    input (a typo in a CI job must not pass as "nothing to check")."""
    if not patterns:
        return open_branches(repo, into)
    local: list[str] | None = None
    names: list[str] = []
    for pattern in patterns:
        if not _GLOB & set(pattern):
            names.append(pattern)
            continue
        if local is None:
            # Local branches, and remote-tracking ones as "origin/x": a CI checkout has
            # the other branches only as the latter.
            local = sorted(repo.out("for-each-ref", "--format=%(refname:lstrip=2)",
                                    "refs/heads/").splitlines())
            local += sorted(line for line in repo.out(
                "for-each-ref", "--format=%(refname:lstrip=2)", "refs/remotes/").splitlines()
                if not line.endswith("/HEAD"))
        hits = [b for b in local if fnmatch.fnmatchcase(b, pattern)]
        if not hits:
            raise BadInputError(f"no local branch matches {pattern!r}")
        names += hits
    return list(dict.fromkeys(names))


def run_check(repo: Repo | str | Path, *, into: str = "HEAD", branches: Sequence[str] = (),
              validate: str | None = None, semantic: bool = True,
              setup: str | None = None) -> CheckReport:
    """The whole check as a report (the Python API behind ``forkyard check``).  The
    validation runs in a sandbox of the integrated commit, after ``setup``."""
    from forkyard.run.validation import VALIDATE_SLOTS, validator_for

    r = repo if isinstance(repo, Repo) else Repo(repo)
    target_sha = r.rev_parse(into)
    names = select_branches(r, into, branches)
    matrix = conflict_matrix(r, names, semantic=semantic)
    integration = (Transaction(r, into, names, dry_run=True, validate=validate,
                               semantic=semantic, validator=validator_for(r, validate, setup),
                               validate_slots=VALIDATE_SLOTS).run() if names else None)
    return CheckReport.build(into, target_sha, matrix, integration, validate)


def print_check(report: CheckReport, stream: object = None) -> None:
    """The human view: branches, conflicting pairs, validation, verdict (stderr)."""
    console = Console(file=stream or sys.stderr)  # type: ignore[arg-type]
    if not report.branches:
        console.print(f"nothing to check: no branches for {report.target}")
        return
    from forkyard.commands.merge import common_dir

    # forkyard's branches share a long "forkyard/<run>/" prefix: say it once, so a narrow
    # terminal shows what tells them apart (the task), not the prefix.
    prefix = common_dir([b.name for b in report.branches])
    if prefix:
        console.print(f"branches under {prefix}", highlight=False, soft_wrap=True)
    table = Table(title=f"check into {report.target} ({report.target_sha[:12]})",
                  title_justify="left")
    table.add_column("branch", no_wrap=True)
    for col in ("integrates", "conflicts with", "details"):
        table.add_column(col)
    for b in report.branches:
        partners = [(p.b if p.a == b.name else p.a).removeprefix(prefix)
                    for p in report.matrix.conflicting if b.name in (p.a, p.b)]
        table.add_row(b.name.removeprefix(prefix), "yes" if b.status == "clean" else "NO",
                      ", ".join(partners) or "-", "\n".join(b.details) or "-",
                      style="green" if b.status == "clean" and not partners else "red")
    console.print(table)
    for p in report.matrix.conflicting:
        console.print(f"pair {p.a} x {p.b}: {', '.join(pair_files(p)) or 'no common history'}",
                      highlight=False)
    v = report.validation
    if v is not None:
        console.print(f"validation: {v.command!r} {'passed' if v.passed else 'FAILED'} "
                      f"(exit {v.exit_code})", highlight=False)
        if not v.passed and v.log_tail:
            console.print(v.log_tail, markup=False, highlight=False)
    elif report.validate_command is not None:
        console.print(f"validation: {report.validate_command!r} not run: the branches do "
                      "not integrate", highlight=False)
    console.print("all integrate" if report.ok else "does NOT integrate",
                  style="green" if report.ok else "red")


def check_command(
    repo: Path, *, into: str = "HEAD", sources: Sequence[str] = (),
    validate: str | None = None, semantic: bool = True, as_json: bool = False,
    junit: Path | None = None, setup: str | None = None,
) -> int:
    """``forkyard check``: exit 0 all integrate, 1 conflicts or failed validation."""
    report = run_check(repo, into=into, branches=sources, validate=validate, semantic=semantic,
                       setup=setup)
    if junit is not None:
        write_junit(junit, check_junit(report))
    append_step_summary(render_summary(report))
    if as_json:
        print(json.dumps(report.model_dump(mode="json")))
    else:
        print_check(report)
    return report.exit_code
