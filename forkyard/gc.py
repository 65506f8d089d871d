"""Garbage collection: remove what crashed runs left behind.

Liveness: a backend holds a shared ``flock`` on ``.git/forkyard/locks/<run-id>.lock`` for
as long as any sandbox of that run is prepared (:class:`sandbox.liveness.RunLock`).  The kernel drops
the lock when the holder dies, so "the lock can be taken exclusively" means "no live
process owns this run" -- no pid files, no clocks, no guessing.  gc takes that
exclusive lock while it cleans a run, so a sandbox of the run cannot appear meanwhile.

For every run that is not live, gc removes:

- its worktrees (``git worktree remove --force``, then ``git worktree prune`` for ones
  whose directory is already gone): the sandboxes on its branches wherever they are,
  and whatever is left under ``<sandbox root>/<run-id>/`` (``sandbox/places.py``: each
  sandbox's worktree, private home, temp, object, layer and ref dirs);
- its overlay mounts (sandboxes and base checkouts, ``sandbox/overlay.py``), first;
- its base checkouts under ``.git/forkyard/bases/<run-id>/`` (and
  ``.git/forkyard/tmp/<run-id>/``, where earlier versions kept sandboxes' temp dirs);
- its cgroups (members killed first: they are orphans of a crashed run);
- its branches ``forkyard/<run-id>/*`` **that are merged**: the tip is reachable from a
  branch outside ``forkyard/`` (integrated, or the agent never committed: reported as
  "no work"), so deleting loses nothing.

Attempt refs (``refs/forkyard/attempts/<run-id>/<task>/<n>``, every attempt's commit)
stay unless ``prune_unmerged`` is asked for.

A branch holding unmerged work is kept and listed with its sha, whether its run
finished (a failed or conflicting task) or was abandoned.  Only ``prune_unmerged=True``
deletes those too, and the report names each deleted branch with its sha so
``git branch <name> <sha>`` brings it back (until git's own gc prunes the commits).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from gitproc.git import GitError, Repo
from sandbox import overlay, places
from sandbox.liveness import RunLock
from sandbox.network.proxy import remove_stale_dirs


@dataclass
class GcReport:
    """What gc did (and what it deliberately left)."""

    live_runs: list[str] = field(default_factory=list)
    worktrees_removed: list[str] = field(default_factory=list)
    tmp_removed: list[str] = field(default_factory=list)
    cgroups_removed: list[str] = field(default_factory=list)
    containers_removed: list[str] = field(default_factory=list)
    branches_deleted: list[dict[str, str]] = field(default_factory=list)
    branches_kept: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _run_ids(repo: Repo, branches: dict[str, str]) -> set[str]:
    ids: set[str] = set()
    for d in (places.sandbox_root(repo.forkyard_dir),
              *(repo.forkyard_dir / sub for sub in ("tmp", "locks", "bases"))):
        if d.is_dir():
            ids |= {p.name.removesuffix(".lock") for p in d.iterdir()}
    for ref in branches:
        parts = ref.split("/")
        if len(parts) >= 5:  # refs/heads/forkyard/<run>/<task>
            ids.add(parts[3])
    return ids


def _merged(repo: Repo) -> set[str]:
    """forkyard branches whose tip is reachable from some branch outside ``forkyard/``."""
    merged: set[str] = set()
    others = [r for r in repo.branches("*") if not r.startswith("refs/heads/forkyard/")]
    for other in others:
        out = repo.out("for-each-ref", "--format=%(refname)", f"--merged={other}",
                       "refs/heads/forkyard/")
        merged |= set(out.splitlines())
    return merged


def _bases(repo: Repo, run_id: str) -> set[str]:
    """Every base a task of ``run_id`` started from (its journal's ``task_started``)."""
    import json

    events = repo.forkyard_dir / "runs" / run_id / "events.jsonl"
    out: set[str] = set()
    try:
        for line in events.read_text().splitlines():
            if '"task_started"' in line:
                try:
                    base = json.loads(line).get("base")
                except ValueError:
                    continue  # a torn last line
                if isinstance(base, str):
                    out.add(base)
    except OSError:
        pass
    return out


def _finished(repo: Repo, run_id: str) -> bool:
    events = repo.forkyard_dir / "runs" / run_id / "events.jsonl"
    try:
        return '"run_finished"' in events.read_text()[-4096:]
    except OSError:
        return False


def gc(repo: Repo, prune_unmerged: bool = False, *, only: str | None = None,
       branches: bool = True) -> GcReport:
    """Remove stale worktrees, temp dirs, cgroups and merged branches of runs not live.

    ``only``: just that run (``--resume`` clears what its dead process left -- agents'
    and validations' processes, cgroups, sandboxes -- before going on); ``branches``
    False leaves every branch alone."""
    from sandbox import cgroups

    report = GcReport()
    all_branches = repo.branches("forkyard/")
    # Only this repository's groups: cgroups are host-wide (see cgroups.repo_scope).
    prefix = cgroups.repo_scope(repo.common_dir) + "."
    groups = [(name.removeprefix(prefix), task, dirs)
              for name, task, dirs in cgroups.walk_groups(cgroups.detect())
              if name.startswith(prefix)]
    held: list[RunLock] = []
    stale: set[str] = set()
    try:
        attempts = {line.split("/")[3] for line in repo.out(
            "for-each-ref", "--format=%(refname)", "refs/forkyard/attempts/").splitlines()
            if line.count("/") >= 5}
        for run_id in sorted(_run_ids(repo, all_branches) | {g[0] for g in groups} | attempts):
            if only is not None and run_id != only:
                continue
            lock = RunLock(repo.forkyard_dir, run_id)
            if lock.try_exclusive():
                held.append(lock)
                stale.add(run_id)
            else:
                report.live_runs.append(run_id)
        for run_id in sorted(stale):
            overlay.unmount_run(repo.forkyard_dir, run_id)
        _gc_worktrees(repo, stale, report)
        for run_id in sorted(stale):
            for sub in ("tmp", "bases"):
                tmp = repo.forkyard_dir / sub / run_id
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
                    report.tmp_removed.append(str(tmp))
        if only is None:  # host-wide: the network proxies of killed runs, any repository
            report.tmp_removed += remove_stale_dirs()
        for run_id, task_id, dirs in groups:
            if run_id in stale:
                if cgroups.remove_dirs(dirs):
                    report.cgroups_removed.append(f"{run_id}/{task_id}")
                else:
                    report.errors.append(f"cgroup {run_id}/{task_id} could not be removed")
        _gc_containers(repo, stale, report)
        for run_id in stale:  # a run killed in the middle of moving one of its branches
            repo.drop_ref_locks(f"refs/heads/forkyard/{run_id}/")
        if branches:
            _gc_branches(repo, all_branches, stale, prune_unmerged, report)
        if branches and prune_unmerged:
            _gc_attempts(repo, stale, report)
    finally:
        for lock in held:
            lock.release()
            if lock.path.exists() and lock.path.stem in stale:
                lock.path.unlink(missing_ok=True)
    return report


def _gc_containers(repo: Repo, stale: set[str], report: GcReport) -> None:
    """Containers a crashed docker-backend run left (only when an engine answers)."""
    if not stale:
        return
    try:
        from sandbox.backends.docker import remove_containers
    except ImportError:  # docker-py missing: no container can have been made by us
        return
    for run_id in sorted(stale):
        try:
            report.containers_removed += remove_containers(repo, run_id)
        except Exception as exc:  # an engine error must not stop the rest of gc
            report.errors.append(f"containers of run {run_id}: {exc}")


def _gc_worktrees(repo: Repo, stale: set[str], report: GcReport) -> None:
    root = places.sandbox_root(repo.forkyard_dir)
    for entry in repo.worktrees():
        path = Path(entry.get("worktree", ""))
        # A sandbox: on the branch of a stale run's task, at a path ending
        # <run>/<task>/worktree (wherever the root was then; a worktree of the user's own
        # on such a branch is left alone), or in the place of one under the current root.
        parts = entry.get("branch", "").split("/", 4)
        if len(parts) == 5 and parts[:3] == ["refs", "heads", "forkyard"]:
            if parts[3] not in stale or places.task_of(path.parent.parent.parent, path) != (
                    parts[3], parts[4]):
                continue
        elif (places.task_of(root, path) or ("",))[0] not in stale:
            continue
        overlay.unmount_under(path)
        try:
            if (path / ".git").exists():
                repo.worktree_remove(path)
            else:  # an unmounted overlay sandbox: its .git went with the upper layer
                shutil.rmtree(path, ignore_errors=True)
                repo.worktree_forget(path)  # locked, if the crash came while it was made
            report.worktrees_removed.append(str(path))
        except GitError as exc:
            report.errors.append(f"worktree {path}: {exc}")
    repo.git("worktree", "prune")
    for run_id in stale:
        run_dir = root / run_id
        if run_dir.is_dir():
            # Directories git no longer knows (a crash between mkdir and worktree add);
            # the rest of a sandbox whose worktree went above (home, temp, objects ...)
            # goes with it, not reported twice.
            for leftover in run_dir.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
                if str(leftover / places.WORKTREE) not in report.worktrees_removed:
                    report.worktrees_removed.append(str(leftover))
            shutil.rmtree(run_dir, ignore_errors=True)


def _gc_branches(repo: Repo, branches: dict[str, str], stale: set[str], prune_unmerged: bool,
                 report: GcReport) -> None:
    merged = _merged(repo) if branches else set()
    for ref, sha in sorted(branches.items()):
        parts = ref.split("/")
        if len(parts) < 5 or parts[3] not in stale:
            continue
        name = ref.removeprefix("refs/heads/")
        run_state = "finished" if _finished(repo, parts[3]) else "abandoned"
        if ref in merged or prune_unmerged:
            if ref in merged:
                # A branch whose tip is still its task's base holds no work at all: say
                # so, rather than call it merged.
                why = ("no work: never committed to" if sha in _bases(repo, parts[3])
                       else "merged")
            else:
                why = f"unmerged, run {run_state}, pruned on request"
            try:
                repo.delete_ref(ref, sha)
                report.branches_deleted.append({"branch": name, "sha": sha, "reason": why})
            except GitError as exc:
                report.errors.append(f"branch {name}: {exc}")
        else:
            report.branches_kept.append({
                "branch": name, "sha": sha,
                "reason": f"unmerged work (run {run_state}); merge it or delete it yourself",
            })


def _gc_attempts(repo: Repo, stale: set[str], report: GcReport) -> None:
    """Attempt refs (``refs/forkyard/attempts/<run>/...``) of stale runs, on request only:
    they are what keeps a retried or cancelled attempt's work reachable."""
    out = repo.out("for-each-ref", "--format=%(refname) %(objectname)",
                   "refs/forkyard/attempts/")
    for line in out.splitlines():
        ref, _, sha = line.partition(" ")
        parts = ref.split("/")
        if len(parts) >= 6 and parts[3] in stale:
            try:
                repo.delete_ref(ref, sha)
                report.branches_deleted.append({"branch": ref, "sha": sha,
                                                "reason": "attempt ref, pruned on request"})
            except GitError as exc:
                report.errors.append(f"{ref}: {exc}")
