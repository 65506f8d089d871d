"""The merge engine's front: the functions the CLI, the MCP server and the run loop call.

``merge_sources`` lands (or dry-runs) sources as one :class:`~merge.transaction.Transaction`;
``detect_conflicts`` is its dry run; ``recover`` finishes or rolls back a batch a crash
interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from gitproc.git import Repo
from gitproc.lock import integration_lock
from merge import journal
from merge.models import MergeReport
from merge.transaction import Transaction
from merge.validate import Validator


def merge_sources(
    repo: Repo | str | os.PathLike[str],
    into: str,
    sources: Sequence[str],
    *,
    dry_run: bool = False,
    validate: str | None = None,
    semantic: bool = True,
    squash: bool = False,
    mode: str = "conservative",
    message: str | None = None,
    validator: Validator | None = None,
    validate_slots: int = 1,
    shas: Sequence[str] | None = None,
) -> MergeReport:
    """Merge ``sources`` (in order) into branch ``into`` as one transaction.

    With ``dry_run`` nothing moves and ``into`` may be any commit-ish.  Returns the
    report whatever the outcome; raises :class:`merge.errors.BadInputError` subclasses
    (exit code 2, nothing changed) for unknown refs, a non-branch target or a dirty
    checkout of the target.  ``message`` replaces the commit message of every commit
    made; ``{source}`` in it names that commit's own source.  ``validator`` decides
    where ``validate`` runs (default: a scratch checkout on this host, unconfined);
    ``validate_slots`` how many validations may run at once.  ``shas``: the exact
    commit each source stands for (merged whatever its name points at meanwhile).
    """
    return Transaction(repo, into, sources, dry_run=dry_run, validate=validate,
                       semantic=semantic, squash=squash, mode=mode, message=message,
                       validator=validator, validate_slots=validate_slots,
                       shas=shas).run()


def detect_conflicts(
    repo: Repo | str | os.PathLike[str],
    into: str,
    sources: Sequence[str],
    *,
    semantic: bool = True,
    validate: str | None = None,
) -> MergeReport:
    """Dry run: what would merging ``sources`` (in order) into ``into`` produce?

    ``into`` may be any commit-ish; nothing is written but unreferenced objects.
    The report lists textual conflicts, semantic findings and file-level overlaps.
    """
    return merge_sources(repo, into, sources, dry_run=True, semantic=semantic,
                         validate=validate)


def recover(repo: Repo | str | os.PathLike[str]) -> list[journal.RecoveryAction]:
    """Finish or roll back any batch a crash interrupted (takes the integration lock)."""
    r = repo if isinstance(repo, Repo) else Repo(repo)
    with integration_lock(r.forkyard_dir):
        return journal.recover(r)
