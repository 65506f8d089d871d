"""Per-run set-up of a worktree: copy git-ignored files the agent needs (``.env``...).

Patterns come from the task file's ``setup.copy`` list and from a ``.worktreeinclude``
file in the main worktree (one glob per line, ``#`` comments; the convention other
worktree tools use).  A file is copied only when the fresh checkout does not already
have it, so tracked files are never overwritten and only untracked/ignored ones travel.
Nothing is read or globbed when no pattern is configured: creating a sandbox stays as
cheap as ``git worktree add``.
"""

from __future__ import annotations

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
                if dest.exists() or dest.is_symlink():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest, follow_symlinks=False)
                copied.append(r.as_posix())
    return copied
