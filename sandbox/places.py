"""Where a repository's sandboxes live on disk: the one place that builds those paths.

Sandboxes (the agents' worktrees) live **outside** the repository's git directory:
agent CLIs treat every path under ``.git/`` as sensitive (Claude Code refuses to edit
there, and exits 0 having changed nothing), and a worktree inside the user's checkout
would show up in ``git status`` there.  The default root is per repository under the
user's cache directory::

    ${XDG_CACHE_HOME:-~/.cache}/forkyard/sandboxes/<repo-name>-<hash>/<run-id>/<task-id>
    <sandbox dir>/<repo-name>-<hash>/<run-id>/<task-id>        (with --sandbox-dir)

``<hash>`` is taken from the git directory's real path, so two repositories with the
same name never share a root.  A user may choose another root (``--sandbox-dir``, the
worktree backend's ``sandbox_dir`` option); it is recorded in ``.git/forkyard/sandbox-root``
so that everything else which must find the sandboxes (``forkyard gc``, the clean-up of a
retried task, overlay mounts of a dead run) finds them without being told again.
Everything forkyard keeps about a sandbox besides its files (temp dir, private object
directory, overlay layer, private home, the disk-limited file system of ``limits.disk_mb``
and its image) stays under ``.git/forkyard/tmp/<run-id>/``.  Inside a confined sandbox
``.git/forkyard`` and the other sandboxes are hidden; the sandbox's own paths there are
mounted back (``sandbox/secrets.py``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_RECORD = "sandbox-root"


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


def worktree_path(forkyard_dir: Path, run_id: str, task_id: str) -> Path:
    """Where task ``task_id`` of run ``run_id`` has its sandbox (its worktree)."""
    return run_dir(forkyard_dir, run_id) / task_id


def mount_roots(forkyard_dir: Path) -> tuple[Path, Path, Path]:
    """Where a run's mounts go: the sandbox root (overlays), the base checkouts, and the
    per-sandbox dirs (the loop-mounted file systems of ``limits.disk_mb``, ``disk.py``)."""
    return sandbox_root(forkyard_dir), forkyard_dir / "bases", forkyard_dir / "tmp"
