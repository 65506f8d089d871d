"""A worktree sandbox's files on disk: made as an overlay on the run's base checkout
(``sandbox/overlay.py``), kept as plain files, or removed; and the dangling branches a
dead forkyard leaves."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

from gitproc.git import WORKTREE_ADMIN_LOCK, GitError, Repo
from sandbox import overlay
from sandbox.backends.base import Sandbox, SandboxSpec
from sandbox.backends.worktree.harvest import _stat_key
from sandbox.errors import SandboxError

_REMOVING = threading.Lock()  # worktree trees are deleted one at a time (filesystem-bound)


def prepare_overlay(repo: Repo, bases: overlay.Bases, spec: SandboxSpec, path: Path,
                    state: dict[str, object], required: bool = False,
                    layer: Path | None = None) -> None:
    """The worktree as an overlay on the run's base checkout (``sandbox/overlay.py``);
    ``bases``: the run's base checkouts; ``required``: fail rather than fall back
    (``layers='overlay'``); ``layer``: where the upper layer goes (a disk-limited
    sandbox's file system, ``sandbox/disk.py``).

    The branch, the admin dir and the ``.git`` file (in the upper layer) are written
    directly (:meth:`Repo.worktree_register`), the overlay is mounted and the base's
    index copied in; :meth:`WorktreeBackend.to_base` resets to ``spec.base`` when the
    agent starts.  Mounting failing (no overlay after all): a full checkout, as without
    overlays.
    """
    base = bases.get(spec.base)
    layer = layer or repo.forkyard_dir / "tmp" / spec.run_id / f"{spec.task_id}.layer"
    shutil.rmtree(layer, ignore_errors=True)  # a killed run's
    layers = overlay.Layers(base.tree, layer / "upper", layer / "work", path)
    layers.upper.mkdir(parents=True)
    path.mkdir(exist_ok=True)  # an earlier attempt's mount point may be left
    admin = repo.worktree_register(path, spec.branch, spec.base, layers.upper / ".git")
    try:
        try:
            layers.mount()
        except overlay.OverlayUnavailable:
            if required:
                raise SandboxError("layers='overlay' but mounting one failed") from None
            os.rename(layers.upper / ".git", path / ".git")
            shutil.rmtree(layer, ignore_errors=True)
            repo.git("reset", "--quiet", "--hard", cwd=path)  # a full checkout
            state["at"] = spec.base
        else:
            state["layers"] = layers
            shutil.copy2(base.index, admin / "index")  # with its mtime: see overlay.py
            state["at"] = base.commit
            state["index"] = _stat_key(admin / "index")
        state["gitdir"] = admin
    except BaseException:
        layers.unmount()
        shutil.rmtree(admin, ignore_errors=True)
        with contextlib.suppress(GitError):
            repo.delete_ref(f"refs/heads/{spec.branch}", spec.base)
        raise
    finally:
        repo.worktree_unlock(admin)


def drop_dangling(repo: Repo, branch: str) -> None:
    """Delete ``branch`` if it names a commit the shared store lacks.

    Only forkyard itself dying while an agent runs leaves one: the agent's commits
    were in its private object directory, not yet imported.  Such a ref cannot be
    read, merged or built on (and breaks ``git fsck``); what held it was cut off
    mid-run and runs again afresh.  A readable branch is left alone (``worktree add``
    then refuses, as always).  One ``stat`` when there is no such loose ref.
    """
    if not (repo.common_dir / "refs" / "heads" / branch).is_file():
        return
    ref = f"refs/heads/{branch}"
    raw = repo.ref_target(ref)
    if raw is not None and repo.try_rev_parse(ref) is None:
        repo.git("update-ref", "-d", ref, raw, check=False)


def remove_worktree(repo: Repo, sandbox: Sandbox, keep_dir: bool = False) -> None:
    """What ``git worktree remove --force --force`` does, with the slow part unlocked.

    Deleting thousands of files takes a while; git holds nothing meanwhile, but our
    worktree bookkeeping lock would be held for all of it (and block the next
    sandbox's ``git worktree add``).  So the tree goes first, unlocked, then its
    administrative dir (``.git/worktrees/<name>``, known from before the agent ran)
    under the lock.  Anything unexpected: ``git worktree remove`` as before.
    """
    worktree = sandbox.worktree
    gitdir = sandbox.state.get("gitdir")
    admin = repo.common_dir / "worktrees"
    try:
        ok = (isinstance(gitdir, Path) and gitdir.parent == admin and not gitdir.is_symlink()
              and (gitdir / "gitdir").read_text().strip() == str(worktree / ".git"))
    except OSError:
        ok = False
    if ok and not keep_dir:
        try:
            with _REMOVING:  # one at a time, as under git's lock before
                shutil.rmtree(worktree)
        except OSError:
            ok = False
    if not ok:
        repo.worktree_remove(worktree)
        return
    with WORKTREE_ADMIN_LOCK:
        shutil.rmtree(gitdir, ignore_errors=True)  # type: ignore[arg-type]


def _materialize(worktree: Path) -> None:
    """Turn an overlay sandbox that is kept into plain files (a mount would not outlive
    this process's clean-up of the base, nor a reboot)."""
    copy = worktree.with_name(worktree.name + ".kept")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(worktree, copy, symlinks=True)
    overlay.unmount(worktree)
    worktree.rmdir()
    copy.rename(worktree)


def _spare_mount_point(path: Path) -> bool:
    """An empty directory nothing is mounted on: what an overlay sandbox leaves."""
    try:
        return path.is_dir() and not any(path.iterdir()) and not overlay.has_mounts(path)
    except OSError:
        return False


def _rmdir_quiet(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass
