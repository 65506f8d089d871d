"""``rollback_run``: put a run's target back where the run found it.

Only when nothing else has moved the target since: the ref moves by compare-and-swap from
the tip the run left (``target_sha_after`` in its result) to the tip it started from
(``target_sha_before``), under the integration lock.  Anything else (a run still going,
a target moved by someone else, nothing landed) is a refusal that changes nothing.  No
work is lost: the run's task branches stay, and the tip it left is kept reachable under
``refs/forkyard/rolled-back/<run-id>``.  A checkout of the target moves with it when it
has no local changes; with local changes the rollback is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from forkyard.journal.events import resolve_run
from forkyard.journal.models import RunResult
from forkyard.journal.state import RunManifest
from gitproc.errors import BadInputError, RefMovedError
from gitproc.git import Repo
from gitproc.lock import held_elsewhere, integration_lock
from merge.journal import sync_worktree


class RollbackRefusedError(BadInputError):
    """The rollback cannot be done safely; nothing was changed."""


class Rollback(BaseModel):
    """What a rollback did (``rollback_run``'s result)."""

    run_id: str
    target: str
    target_ref: str
    restored_sha: str
    """The target's tip now: where the run found it."""
    undone_sha: str
    """The tip the run left, kept reachable at ``kept_ref``."""
    kept_ref: str
    worktrees_synced: list[str]


def _checkouts(repo: Repo, ref: str) -> list[str]:
    return [w["worktree"] for w in repo.worktrees()
            if w.get("branch") == ref and "bare" not in w and Path(w["worktree"]).is_dir()]


def rollback_run(repo: Repo | str | os.PathLike[str], run_id: str) -> Rollback:
    """Move the run's target back from the tip the run left to the one it started from.

    Raises :class:`RollbackRefusedError` (bad input: nothing changed) when the run is
    still running, landed nothing, has no result, or the target moved since.
    """
    r = repo if isinstance(repo, Repo) else Repo(repo)
    paths = resolve_run(r, run_id)
    rid = paths.run_id
    if held_elsewhere(paths.lock):
        raise RollbackRefusedError(f"run {rid} is still running: cancel it first")
    if not paths.result.exists():
        raise RollbackRefusedError(f"run {rid} has no result (it crashed or never ended): "
                                   f"resume it or check its target by hand")
    manifest = RunManifest.load(paths)
    result = RunResult.model_validate_json(paths.result.read_text())
    ref = manifest.target_ref
    before, after = result.target_sha_before, result.target_sha_after
    if before == after:
        raise RollbackRefusedError(f"run {rid} landed nothing on {manifest.target}: "
                                   "nothing to roll back")
    kept = f"refs/forkyard/rolled-back/{rid}"
    with integration_lock(r.forkyard_dir):
        now = r.try_rev_parse(ref)
        if now != after:
            raise RollbackRefusedError(
                f"{manifest.target} has moved since run {rid} "
                f"(the run left {after[:12]}, it is now {(now or 'deleted')[:12]}): "
                "refusing to roll back over work that is not the run's")
        checkouts = _checkouts(r, ref)
        for wt in checkouts:
            if r.is_dirty(cwd=wt):
                raise RollbackRefusedError(
                    f"{wt} has {manifest.target} checked out with local changes: "
                    "commit or stash them first")
        r.update_ref(kept, after, None if r.try_rev_parse(kept) is None else r.rev_parse(kept),
                     f"forkyard: run {rid} rolled back")
        try:
            r.update_ref(ref, before, after, f"forkyard: roll back run {rid}")
        except RefMovedError as exc:
            raise RollbackRefusedError(f"{manifest.target} moved during the rollback of {rid}; "
                                       "nothing was changed") from exc
        synced = [wt for wt in checkouts if sync_worktree(r, wt, after, before)]
    return Rollback(run_id=rid, target=manifest.target, target_ref=ref, restored_sha=before,
                    undone_sha=after, kept_ref=kept, worktrees_synced=synced)
