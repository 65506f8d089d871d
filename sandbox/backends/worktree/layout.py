"""A worktree sandbox's files on disk: made as an overlay on the run's base checkout
(``sandbox/overlay.py``), kept as plain files, or removed; and the dangling branches a
dead forkyard leaves."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from pathlib import Path

from gitproc.git import WORKTREE_ADMIN_LOCK, GitError, Repo
from gitproc.hostile import read_regular
from sandbox import overlay, places
from sandbox.backends.base import Sandbox, SandboxSpec
from sandbox.backends.worktree.harvest import _stat_key
from sandbox.errors import SandboxError

_REMOVING = threading.Lock()  # worktree trees are deleted one at a time (filesystem-bound)


def prepare_overlay(repo: Repo, bases: overlay.Bases, spec: SandboxSpec, path: Path,
                    state: dict[str, object], required: bool = False) -> None:
    """The worktree as an overlay on the run's base checkout (``sandbox/overlay.py``);
    ``bases``: the run's base checkouts; ``required``: fail rather than fall back
    (``layers='overlay'``).  The upper layer goes in the sandbox's place.

    The branch, the admin dir and the ``.git`` file (in the upper layer) are written
    directly (:meth:`Repo.worktree_register`), the overlay is mounted and the base's
    index copied in; :meth:`WorktreeBackend.to_base` resets to ``spec.base`` when the
    agent starts.  Mounting failing (no overlay after all): a full checkout, as without
    overlays.
    """
    base = bases.get(spec.base)
    # In the sandbox's place (on its disk-limited file system with ``limits.disk_mb``:
    # then ``layer`` is a mount point, emptied here, not removed).
    layer = own_place(repo, spec).layer
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


def own_place(repo: Repo, spec: SandboxSpec) -> places.Place:
    """The sandbox's own directory (worktree, home, temp dir, object dir, overlay layer,
    private refs): ``<sandbox root>/<run>/<task>/``, fixed names inside, so that no two
    task ids (``a`` and ``a.layer``) can share a path (``sandbox/places.py``)."""
    return places.place(repo.forkyard_dir, spec.run_id, spec.task_id)


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
        with contextlib.suppress(GitError):  # moved or gone meanwhile: not ours to drop
            repo.delete_ref(ref, raw)


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
              and (read_regular(gitdir / "gitdir") or b"").decode().strip()
              == str(worktree / ".git"))
    except (OSError, UnicodeDecodeError):
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
    try:
        # Links stay links; a FIFO, socket or device the agent left is never opened
        # (copying a FIFO's "content" blocks forever): a FIFO is made again, the rest
        # is left out.
        shutil.copytree(worktree, copy, symlinks=True, copy_function=_copy_plain)
    finally:
        overlay.unmount(worktree)  # whatever happened: --keep never leaves a mount
    worktree.rmdir()
    copy.rename(worktree)


def _copy_plain(src: str, dst: str) -> None:
    st = os.lstat(src)
    if stat.S_ISREG(st.st_mode):
        shutil.copy2(src, dst, follow_symlinks=False)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst, stat.S_IMODE(st.st_mode))


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
