"""The batch journal and crash recovery.

A transaction writes (and fsyncs) a journal entry naming the target ref, the tip it
started from and the batch's full result *before* it moves the ref; the ref moves by a
single compare-and-swap, so after a crash at any point the ref is at the old tip or the
full result, never in between.  :func:`recover` then finishes what the crash left:
it brings checked-out worktrees of the target in line with the ref and clears the entry.

Fault injection: ``FORKYARD_FAULT=<step>`` makes the process SIGKILL itself when it
reaches ``<step>`` (see :data:`FAULT_STEPS`); the tests kill a batch at every step.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Literal

import pygit2
from pydantic import BaseModel, ConfigDict

from gitproc.git import GitError, Repo

FAULT_STEPS = (
    "after-merge",      # merge commits written, nothing journaled
    "before-journal",
    "after-journal",    # journal durable, ref not moved
    "after-ref",        # ref moved, worktree not synced, journal still there
    "after-worktree",   # worktree synced, journal still there
    "after-cleanup",    # journal removed
)


def fault(step: str) -> None:
    """Die by SIGKILL here when ``FORKYARD_FAULT`` names ``step`` (tests only)."""
    if os.environ.get("FORKYARD_FAULT") == step:
        os.kill(os.getpid(), signal.SIGKILL)


class JournalEntry(BaseModel):
    """One batch in flight: enough to finish or undo it after a crash."""

    model_config = ConfigDict(extra="forbid")

    id: str
    target_ref: str
    old: str
    new: str
    sources: list[str]
    worktrees: list[str]
    """Worktrees with the target checked out, to update after the ref moves."""
    started: float


class RecoveryAction(BaseModel):
    """What :func:`recover` did with one journal entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    target_ref: str
    action: Literal["completed", "rolled_back", "left_alone"]
    sha: str | None
    """Where the target ref is now."""


def journal_dir(repo: Repo) -> Path:
    return repo.forkyard_dir / "journal"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(repo: Repo, target_ref: str, old: str, new: str, sources: list[str],
          worktrees: list[str]) -> JournalEntry:
    """Durably record a batch about to move ``target_ref`` from ``old`` to ``new``."""
    entry = JournalEntry(id=uuid.uuid4().hex[:16], target_ref=target_ref, old=old, new=new,
                         sources=sources, worktrees=worktrees, started=time.time())
    d = journal_dir(repo)
    d.mkdir(parents=True, exist_ok=True)
    # Keep the result reachable while the entry exists, so a gc cannot prune it.
    repo.odb.references.create(f"refs/forkyard/journal/{entry.id}", pygit2.Oid(hex=new),
                               force=True)
    tmp = d / f".{entry.id}.tmp"
    with open(tmp, "w") as fh:
        fh.write(entry.model_dump_json())
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(d / f"{entry.id}.json")
    _fsync_dir(d)
    return entry


def clear(repo: Repo, entry: JournalEntry) -> None:
    (journal_dir(repo) / f"{entry.id}.json").unlink(missing_ok=True)
    try:
        repo.odb.references.delete(f"refs/forkyard/journal/{entry.id}")
    except (KeyError, pygit2.GitError):
        pass


def pending(repo: Repo) -> list[JournalEntry]:
    d = journal_dir(repo)
    if not d.is_dir():
        return []
    entries = []
    for path in sorted(d.glob("*.json")):
        try:
            entries.append(JournalEntry.model_validate_json(path.read_text()))
        except ValueError:
            path.unlink()  # a torn write never reached the rename: nothing was moved
    for tmp in d.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    return entries


def sync_worktree(repo: Repo, worktree: str, old: str, new: str, refreshed: bool = False) -> bool:
    """Move a worktree's index and files from ``old`` to ``new`` if they are still at
    ``old`` (so the checkout does not look dirty after its branch moved). True if done.
    ``refreshed``: a ``git status`` just refreshed the index (no second scan of every file)."""
    path = Path(worktree)
    if not path.is_dir():
        return False
    if not refreshed:
        repo.git("update-index", "-q", "--refresh", cwd=path, check=False)
    staged = repo.git("diff-index", "--cached", "--quiet", old, "--", cwd=path, check=False)
    if staged.returncode != 0:
        return False  # the index is not at the old tip (already synced, or user work)
    try:
        repo.git("read-tree", "-m", "-u", old, new, cwd=path)
    except GitError:
        return False
    return True


def recover(repo: Repo | str | os.PathLike[str]) -> list[RecoveryAction]:
    """Finish or roll back every batch a crash interrupted.

    Callers must hold the integration lock (:func:`gitproc.lock.integration_lock`); the
    public :func:`merge.recover` takes it.
    """
    r = repo if isinstance(repo, Repo) else Repo(repo)
    actions: list[RecoveryAction] = []
    for entry in pending(r):
        now = r.try_rev_parse(entry.target_ref)
        if now == entry.new:
            for wt in entry.worktrees:
                sync_worktree(r, wt, entry.old, entry.new)
            action: Literal["completed", "rolled_back", "left_alone"] = "completed"
        elif now == entry.old:
            action = "rolled_back"  # the ref never moved: the batch did not happen
        else:
            action = "left_alone"  # someone else moved it since; not ours to touch
        clear(r, entry)
        actions.append(RecoveryAction(id=entry.id, target_ref=entry.target_ref, action=action,
                                      sha=now))
    return actions
