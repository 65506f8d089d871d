"""Git's bookkeeping of linked worktrees (``.git/worktrees/<name>/``), where forkyard has
to tidy what a killed process left."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path


def drop_half_made(admin_root: Path, older_than_s: float = 10.0) -> None:
    """Remove admin dirs a killed process left half written (no ``commondir`` or
    ``gitdir``): every later ``git worktree add`` dies reading them.  Only ones older than
    ``older_than_s``: one being written right now is left alone."""
    now = time.time()
    for admin in admin_root.glob("*"):
        with contextlib.suppress(OSError):
            whole = (admin / "commondir").is_file() and (admin / "gitdir").is_file()
            if not whole and not admin.is_symlink() and now - admin.stat().st_mtime > older_than_s:
                shutil.rmtree(admin)
