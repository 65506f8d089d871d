"""HOW results come back: in-memory three-way merges, conflicts, semantic checks,
validation and transactional batches.

Public API::

    from merge import merge_sources, Transaction, detect_conflicts, recover
    report = merge_sources(repo, into="main", sources=["feature-a", "feature-b"])
    report.model_dump(mode="json")   # the `forkyard merge --json` shape

Requires git >= 2.38 (``merge-tree --write-tree``); :func:`gitproc.git.require_git`
fails with a clear message below that.
"""

from __future__ import annotations

from merge.journal import RecoveryAction
from merge.matrix import ConflictMatrix, PairMerge, conflict_matrix
from merge.models import (
    Conflict,
    MergeReport,
    Overlap,
    SemanticFinding,
    SourceMerge,
    Validation,
)
from merge.porcelain import detect_conflicts, merge_sources, recover
from merge.transaction import Transaction

__all__ = [
    "Conflict",
    "ConflictMatrix",
    "MergeReport",
    "Overlap",
    "PairMerge",
    "RecoveryAction",
    "SemanticFinding",
    "SourceMerge",
    "Transaction",
    "Validation",
    "conflict_matrix",
    "detect_conflicts",
    "merge_sources",
    "recover",
]
