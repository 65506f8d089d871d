"""Per-run set-up of a worktree: copy git-ignored files the agent needs (``.env``...).

Patterns come from the task file's ``setup.copy`` list and from a ``.worktreeinclude``
file in the main worktree (one glob per line, ``#`` comments; the convention other
worktree tools use).  A file is copied only when the fresh checkout does not already
have it, so tracked files are never overwritten and only untracked/ignored ones travel.
Nothing is read or globbed when no pattern is configured: creating a sandbox stays as
cheap as ``git worktree add``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

INCLUDE_FILE = ".worktreeinclude"


def include_patterns(main_worktree: Path, extra: Iterable[str] = ()) -> list[str]:
    """The copy patterns: ``extra`` plus the lines of ``.worktreeinclude`` (if any)."""
    patterns = [p for p in extra if p.strip()]
    include = main_worktree / INCLUDE_FILE
    if include.is_file():
        for line in include.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line)
    return patterns


def copy_ignored(main_worktree: Path, worktree: Path, patterns: Iterable[str]) -> list[str]:
    """Copy files matching ``patterns`` from the main worktree; returns the copied paths."""
    copied: list[str] = []
    for pattern in patterns:
        pattern = pattern.lstrip("/")
        if not pattern or ".." in Path(pattern).parts:
            continue  # never copy from outside the repository
        for src in sorted(main_worktree.glob(pattern)):
            rel = src.relative_to(main_worktree)
            if rel.parts[0] == ".git":
                continue
            files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
            for f in files:
                r = f.relative_to(main_worktree)
                dest = worktree / r
                # Neither end through a symlink (a branch can hold `config -> /etc`): never
                # read from nor write outside the repository and the sandbox.
                if not (_plain_path(main_worktree, r) and _make_dirs(worktree, r.parent)):
                    continue
                if dest.exists() or dest.is_symlink():
                    continue
                shutil.copy2(f, dest, follow_symlinks=False)
                copied.append(r.as_posix())
    return copied


def _plain_path(root: Path, rel: Path) -> bool:
    """Whether every directory of ``root/rel`` below ``root`` is a real directory (no
    symlink on the way) and ``rel`` itself a regular file or a link (copied as a link)."""
    cur = root
    for part in rel.parts[:-1]:
        cur = cur / part
        if cur.is_symlink() or not cur.is_dir():
            return False
    last = root / rel
    return last.is_symlink() or last.is_file()


def _make_dirs(root: Path, rel: Path) -> bool:
    """Make ``root/rel`` one real directory at a time; False if a part of it is a link
    or not a directory."""
    cur = root
    for part in rel.parts:
        cur = cur / part
        try:
            os.mkdir(cur)
        except FileExistsError:
            pass
        if cur.is_symlink() or not cur.is_dir():
            return False
    return True
