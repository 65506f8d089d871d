"""Where a repository's sandboxes live on disk: the one place that builds those paths.

Sandboxes (the agents' worktrees) live **outside** the repository's git directory:
agent CLIs treat every path under ``.git/`` as sensitive (Claude Code refuses to edit
there, and exits 0 having changed nothing), and a worktree inside the user's checkout
would show up in ``git status`` there.  The default root is per repository under the
user's cache directory::

    ${XDG_CACHE_HOME:-~/.cache}/forkyard/sandboxes/<repo-name>-<hash>/<run-id>/<task-id>/
    <sandbox dir>/<repo-name>-<hash>/<run-id>/<task-id>/        (with --sandbox-dir)

``<hash>`` is taken from the git directory's real path, so two repositories with the
same name never share a root.  A user may choose another root (``--sandbox-dir``, the
worktree backend's ``sandbox_dir`` option); it is recorded in ``.git/forkyard/sandbox-root``
so that everything else which must find the sandboxes (``forkyard gc``, the clean-up of a
retried task, overlay mounts of a dead run) finds them without being told again.

Each sandbox has one directory of its own, ``<run-id>/<task-id>/``, and everything
forkyard keeps for it sits there under a fixed name (:class:`Place`): the worktree, the
agent's private home, its temp dir, its private object directory, the overlay's layer,
the private ref and reflog dirs, and with ``limits.disk_mb`` the size-limited file system
and its image (``sandbox/disk.py``).  Fixed names inside one directory per task mean no
two task ids (``a`` and ``a.layer``) can ever share a path.  Inside a confined sandbox
``.git/forkyard`` and the sandbox root (the other sandboxes) are hidden; the sandbox's
own paths there are mounted back (``sandbox/confine.py``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

_RECORD = "sandbox-root"
#: The name of a sandbox's worktree inside its task directory.
WORKTREE = "worktree"


@dataclass(frozen=True)
class Place:
    """Everything on disk that belongs to one sandbox, under its task directory."""

    root: Path
    """``<sandbox root>/<run-id>/<task-id>``: the sandbox's own directory."""

    @property
    def worktree(self) -> Path:
        """The agent's checkout (its working directory)."""
        return self.root / WORKTREE

    @property
    def home(self) -> Path:
        """The agent's private ``$HOME`` (``sandbox/backends/worktree/home.py``)."""
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        """The agent's ``$TMPDIR`` (its ``/tmp`` under bubblewrap)."""
        return self.root / "tmp"

    @property
    def objects(self) -> Path:
        """The private object directory the agent's git writes new objects to."""
        return self.root / "objects"

    @property
    def layer(self) -> Path:
        """An overlay sandbox's upper and work dirs."""
        return self.root / "layer"

    @property
    def refs(self) -> Path:
        """Under bubblewrap: the agent's own directory holding its branch's ref."""
        return self.root / "refs"

    @property
    def logs(self) -> Path:
        """Under bubblewrap: the agent's own directory holding its branch's reflog."""
        return self.root / "logs"


def _repo_key(forkyard_dir: Path) -> str:
    common = Path(os.path.realpath(forkyard_dir)).parent
    name = common.parent.name if common.name == ".git" else common.name.removesuffix(".git")
    return f"{name or 'repo'}-{hashlib.sha256(str(common).encode()).hexdigest()[:10]}"


def default_root(forkyard_dir: Path) -> Path:
    """The default sandbox root of the repository whose ``.git/forkyard`` is ``forkyard_dir``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "forkyard" / "sandboxes" / _repo_key(forkyard_dir)


def sandbox_root(forkyard_dir: Path) -> Path:
    """The repository's sandbox root: the recorded choice, else :func:`default_root`."""
    try:
        recorded = (forkyard_dir / _RECORD).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        recorded = ""
    return Path(recorded) if recorded.startswith("/") else default_root(forkyard_dir)


def set_sandbox_root(forkyard_dir: Path, root: Path | None) -> Path:
    """Record ``root`` (None: the default) as where the repository's sandboxes go; the
    sandbox root, which is ``<root>/<repo-name>-<hash>`` (a directory the user names may
    hold other things, which forkyard and its gc must never take for sandboxes).

    The root must not be inside a ``.git`` directory (see the module doc); a relative
    path is taken from the current directory.
    """
    from sandbox.errors import SandboxBadInputError

    record = forkyard_dir / _RECORD
    if root is None:
        record.unlink(missing_ok=True)
        return default_root(forkyard_dir)
    real = Path(os.path.realpath(root)) / _repo_key(forkyard_dir)
    if ".git" in real.parts:
        raise SandboxBadInputError(f"sandbox dir {root} is inside a .git directory; agent "
                                   "CLIs refuse to edit files there")
    forkyard_dir.mkdir(parents=True, exist_ok=True)
    if sandbox_root(forkyard_dir) != real:
        tmp = record.with_name(_RECORD + ".tmp")
        tmp.write_text(f"{real}\n", encoding="utf-8")
        os.replace(tmp, record)
    return real


def run_dir(forkyard_dir: Path, run_id: str) -> Path:
    """The directory holding one run's sandboxes."""
    return sandbox_root(forkyard_dir) / run_id


def place(forkyard_dir: Path, run_id: str, task_id: str) -> Place:
    """The directory of task ``task_id`` of run ``run_id``'s sandbox, and what is in it."""
    return Place(run_dir(forkyard_dir, run_id) / task_id)


def worktree_path(forkyard_dir: Path, run_id: str, task_id: str) -> Path:
    """Where task ``task_id`` of run ``run_id`` has its sandbox's worktree."""
    return place(forkyard_dir, run_id, task_id).worktree


def task_of(root: Path, worktree: Path) -> tuple[str, str] | None:
    """(run id, task id) of a worktree at a sandbox's place under ``root`` (a sandbox
    root, this one or an earlier one), else None."""
    if worktree.name != WORKTREE or not worktree.is_relative_to(root):
        return None
    parts = worktree.relative_to(root).parts
    return (parts[0], parts[1]) if len(parts) == 3 else None


def mount_roots(forkyard_dir: Path) -> tuple[Path, Path]:
    """Where a run's mounts go: the sandbox root (overlays; the disk-limited file systems
    of ``limits.disk_mb`` and their bind mounts, in each sandbox's place) and the base
    checkouts."""
    return sandbox_root(forkyard_dir), forkyard_dir / "bases"
