"""What ``forkyard check`` found: the document behind its table, JSON, JUnit and summary.

``forkyard check`` merges every pair of branches with each other (the pairwise matrix),
then all of them onto the target in a stable order (integration, a dry run), then runs the
validation command on the result.  :class:`CheckReport` holds the three steps as the
merge engine reported them, plus each branch's verdict; the renderers
(:mod:`forkyard.views.junit`, :mod:`forkyard.views.summary`) need nothing else.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from gitproc.hostile import printable
from merge import MergeReport, SourceMerge, Validation
from merge.matrix import ConflictMatrix, PairMerge

BranchStatus = Literal["clean", "conflict"]

def plain(text: str) -> str:
    """``text`` without terminal escape codes or control characters (tabs, newlines stay):
    CI logs are full of colour codes, and neither a JUnit file nor a Markdown page can
    show them."""
    return printable(text, keep_lines=True)


class BranchVerdict(BaseModel):
    """One branch merged onto the integration result."""

    model_config = ConfigDict(frozen=True)

    name: str
    sha: str
    status: BranchStatus
    """``conflict``: a textual conflict or a semantic error when integrated."""
    files: list[str]
    """The conflicting paths (or, for semantic errors, the files they are in)."""
    details: list[str]
    """One line per conflict or semantic finding."""


def _verdict(m: SourceMerge) -> BranchVerdict:
    errors = [f for f in m.semantic if f.severity == "error"]
    files = list(dict.fromkeys([c.path for c in m.conflicts] + [f.path for f in errors]))
    details = [f"{c.kind}: {c.path}" for c in m.conflicts]
    details += [f"{f.kind}: {f.symbol} ({f.path}:{f.line})" for f in errors]
    bad = m.status == "conflict" or bool(errors)
    return BranchVerdict(name=m.source, sha=m.source_sha, status="conflict" if bad else "clean",
                         files=files, details=details)


def pair_files(p: PairMerge) -> list[str]:
    """Where a pair conflicts: conflicting paths, then files with semantic errors."""
    return list(dict.fromkeys([c.path for c in p.conflicts]
                              + [f.path for f in p.semantic_errors]))


def pair_details(p: PairMerge) -> list[str]:
    """One line per conflict or semantic error of a pair."""
    if p.status == "unrelated":
        return [f"{p.a} and {p.b} share no history"]
    return ([f"{c.kind}: {c.path}" for c in p.conflicts]
            + [f"{f.kind}: {f.symbol} ({f.path}:{f.line})" for f in p.semantic_errors])


class CheckReport(BaseModel):
    """``forkyard check --json``: the matrix, the integration, the validation, the verdict."""

    model_config = ConfigDict(frozen=True)

    target: str
    target_sha: str
    ok: bool
    """Every pair merges, every branch integrates, validation passed (or was not asked)."""
    branches: list[BranchVerdict]
    matrix: ConflictMatrix
    integration: MergeReport | None
    """The dry-run merge of every branch onto the target (None: no branch to check)."""
    validation: Validation | None
    validate_command: str | None = None
    """The validation command asked for (it does not run when the branches conflict)."""

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @classmethod
    def build(cls, target: str, target_sha: str, matrix: ConflictMatrix,
              integration: MergeReport | None, validate: str | None = None) -> CheckReport:
        """The report of a check from its matrix and its integration."""
        branches = [_verdict(m) for m in integration.merges] if integration else []
        validation = integration.validation if integration else None
        ok = (not matrix.conflicting and all(b.status == "clean" for b in branches)
              and (validation is None or validation.passed))
        return cls(target=target, target_sha=target_sha, ok=ok, branches=branches,
                   matrix=matrix, integration=integration, validation=validation,
                   validate_command=validate)
