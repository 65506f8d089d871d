"""A run's base checkout shared by several processes (the worker processes of a Ray node).

:class:`overlay.Bases` belongs to one process: it makes the run's base checkout when the
first sandbox needs it and removes it when that process's last sandbox of the run is
gone.  A Ray node runs a run's tasks in several worker processes, each task in whichever
is free, over one node cache; each making and removing its own checkout at the same path
would pull the tree from under the others' sandboxes, and a checkout per task is what
overlays are there to avoid.  :class:`SharedBases` is the same checkout, made once per
(node cache, run) and shared:

- it is made under the run's *guard* lock (``bases/<run>.lock``) by the first process
  that needs it and marked ready inside itself; later processes find it ready;
- a process holds a shared ``flock`` on ``bases/<run>.hold`` while it has sandboxes of
  the run (from its first ``get`` to its ``close``), so "the exclusive lock can be taken"
  means "no live process uses it": a killed worker never keeps a checkout alive;
- it is removed once the run is over on this node (:func:`finish_run`, which the run's
  driver calls at its end) and nobody holds it -- by :func:`finish_run` itself, or by the
  last holder's ``close``.  Between two tasks of the run it stays, even while no process
  holds it: the next task must not pay for a new checkout.

:func:`collect` removes what dead runs left (a driver that never called
:func:`finish_run`): checkouts nobody holds whose run is over or idle for long.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from gitproc.git import Repo
from gitproc.lock import FileLock
from sandbox import overlay

#: The marker inside a finished checkout (gone with it, tmpfs or not).
READY = "ready"
#: A run's checkout nobody has held for this long is a dead driver's (see collect()).
IDLE_S = 6 * 3600.0


def _dir(repo: Repo) -> Path:
    """The runs' lock, hold and end markers.  Not in ``bases/`` beside the checkouts: that
    is a mount root (``overlay.private_root``), which cannot be released while a file in
    it is open."""
    return repo.forkyard_dir / "shared-bases"


class SharedBases(overlay.Bases):
    """:class:`overlay.Bases` shared by the processes that use one repository (see the
    module docstring); a drop-in for the worktree backend's per-run bases."""

    def __init__(self, repo: Repo, run_id: str) -> None:
        super().__init__(repo, run_id)
        self._guard = FileLock(_dir(repo) / f"{run_id}.lock")
        self._hold = _hold_lock(repo, run_id)  # shared while this process uses the checkout

    def get(self, commit: str) -> overlay.Base:
        with self._lock:
            if self._base is None:
                with self._guard:
                    # In use again (a resumed run): its end is to come.
                    (_dir(self.repo) / f"{self.root.name}.done").unlink(missing_ok=True)
                    base = self._ready()
                    if base is None:
                        base = self._make(commit)
                        (self.root / READY).write_text(base.commit)
                    # (blocks only on a remover, which runs under the guard we hold)
                    self._hold.acquire(shared=True)
                    os.utime(self._hold.path)  # last use: collect() leaves it alone
                self._base = base
            return self._base

    def _ready(self) -> overlay.Base | None:
        """The checkout another process made (None: none, or half made by a dead one)."""
        try:
            commit = (self.root / READY).read_text().strip()
        except OSError:
            return None
        base = overlay.Base(commit, self.root / "tree", self.root / "index")
        return base if base.tree.is_dir() and base.index.is_file() else None

    def close(self) -> None:
        """This process's last sandbox of the run is gone: drop its hold, and remove the
        checkout if the run is over here and nobody else holds it."""
        with self._lock:
            self._base = None
            if not self._hold.held:
                return
            with self._guard:
                self._hold.release()
                if _finished(self.repo, self.root.name):
                    _remove_unheld(self.repo, self.root.name)


def _hold_lock(repo: Repo, run_id: str) -> FileLock:
    """``shared-bases/<run>.hold``: held shared by each process using the run's checkout;
    whoever can take it exclusively knows nobody does."""
    return FileLock(_dir(repo) / f"{run_id}.hold")


def _finished(repo: Repo, run_id: str) -> bool:
    return (_dir(repo) / f"{run_id}.done").exists()


def _remove_unheld(repo: Repo, run_id: str) -> bool:
    """Remove the run's checkout if nobody holds it (the guard is held); True if done."""
    hold = _hold_lock(repo, run_id)
    if not hold.acquire(wait=0):
        return False
    try:
        overlay.Bases(repo, run_id).close()  # unmount, delete, spare mount points
        for suffix in (".hold", ".done"):
            (_dir(repo) / f"{run_id}{suffix}").unlink(missing_ok=True)
    finally:
        hold.release()
    return True


def finish_run(repo: Repo, run_id: str) -> bool:
    """The run is over on this node: its checkout goes now if nobody holds it, else when
    its last holder closes.  True if it is gone now."""
    with FileLock(_dir(repo) / f"{run_id}.lock"):
        if not (repo.forkyard_dir / "bases" / run_id).exists() \
                and not (_dir(repo) / f"{run_id}.hold").exists():
            return True  # no checkout was made here
        (_dir(repo) / f"{run_id}.done").touch()
        return _remove_unheld(repo, run_id)


def collect(repo: Repo, idle_s: float = IDLE_S) -> list[str]:
    """Remove the checkouts of runs that are over (or whose driver died: nobody has held
    them for ``idle_s``) and that nobody holds, with their sandboxes' spare mount
    points; the runs whose checkouts went."""
    gone: list[str] = []
    root, checkouts = _dir(repo), repo.forkyard_dir / "bases"
    now = time.time()
    runs = {p.name.removesuffix(p.suffix) for p in _listing(root)} | {
        p.name for p in _listing(checkouts)}
    for run_id in sorted(runs):
        hold = root / f"{run_id}.hold"
        try:
            idle = now - hold.stat().st_mtime
        except OSError:
            idle = now - _mtime(checkouts / run_id, now)
        if not _finished(repo, run_id) and idle < idle_s:
            continue
        guard = FileLock(root / f"{run_id}.lock")
        if not guard.acquire(wait=0):
            continue  # being made or removed right now
        try:
            if _remove_unheld(repo, run_id):
                gone.append(run_id)
        finally:
            guard.release()
    return gone


def _listing(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except OSError:
        return []


def _mtime(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default
