"""``detect_conflicts``: would these branches merge?  ``forkyard check`` as a tool.

The pairwise matrix (which branches conflict with which, textually or semantically),
then the dry-run merge of all of them onto the target in order: the merge report with
textual conflicts, file overlaps and semantic findings per branch.  Nothing moves.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from forkyard.commands.check import run_check
from forkyard.mcp.errors import ToolInputError
from forkyard.mcp.models import Camel
from forkyard.views.check_report import pair_details, pair_files
from gitproc.git import Repo


class AgentResult(Camel):
    """One agent's result: at least its branch (the run JSON's ``results`` entries fit)."""

    model_config = ConfigDict(extra="ignore")
    branch: str | None = None
    task: str | None = None
    commit: str | None = None


class PairOut(Camel):
    a: str
    b: str
    status: Literal["clean", "conflict", "semantic_conflict", "unrelated"]
    files: list[str]
    details: list[str]


class BranchOut(Camel):
    branch: str
    integrates: bool
    conflicts_with: list[str]
    files: list[str]
    details: list[str]


class ConflictReport(Camel):
    ok: bool = Field(description="Every pair merges and every branch integrates.")
    target: str
    target_sha: str
    branches: list[BranchOut]
    pairs: list[PairOut] = Field(description="Every pair of branches, in matrix order.")
    report: dict[str, Any] | None = Field(
        description="The dry-run merge onto the target: the `forkyard merge --json` document "
                    "(conflicts, overlaps, semantic findings per branch).")


def branches_from(branches: list[str] | None, results: list[AgentResult] | None) -> list[str]:
    """Branch names from ``branches`` or from agents' results (their branch, else commit)."""
    if (branches is None) == (results is None):
        raise ToolInputError("give either branches or agentResults")
    if branches is not None:
        names = branches
    else:
        assert results is not None
        names = []
        for k, r in enumerate(results):
            name = r.branch or r.commit
            if not name:
                raise ToolInputError(f"agentResults[{k}] has neither branch nor commit")
            names.append(name)
    if not names:
        raise ToolInputError("no branches to check")
    return names


def detect(repo: Repo, names: list[str], into: str, semantic: bool,
           validate: str | None) -> ConflictReport:
    check = run_check(repo, into=into, branches=names, validate=validate, semantic=semantic)
    pairs = []
    for p in check.matrix.pairs:
        status = ("semantic_conflict" if p.status == "clean" and not p.ok else p.status)
        pairs.append(PairOut(a=p.a, b=p.b, status=status, files=pair_files(p),
                             details=pair_details(p)))
    out = []
    for b in check.branches:
        partners = [p.b if p.a == b.name else p.a for p in check.matrix.conflicting
                    if b.name in (p.a, p.b)]
        out.append(BranchOut(branch=b.name, integrates=b.status == "clean",
                             conflicts_with=partners, files=b.files, details=b.details))
    report = check.integration.model_dump(mode="json") if check.integration else None
    return ConflictReport(ok=check.ok, target=into, target_sha=check.target_sha, branches=out,
                          pairs=pairs, report=report)
