"""The demo's repository: the ``webapp`` tree shipped with the package, made into a git
repository with one commit of a fixed identity and date (the tests build the same tree
through ``fixtures.repos``, so the demo and the tests see the same SHAs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gitproc.git import Repo, git, init_repo

WEBAPP = Path(__file__).resolve().parent / "webapp"

_FIXED = {
    "GIT_AUTHOR_NAME": "Fixture", "GIT_AUTHOR_EMAIL": "fixture@example.com",
    "GIT_COMMITTER_NAME": "Fixture", "GIT_COMMITTER_EMAIL": "fixture@example.com",
    "GIT_AUTHOR_DATE": "1767225600 +0000", "GIT_COMMITTER_DATE": "1767225600 +0000",
}


def build_webapp(dest: str | os.PathLike[str]) -> Repo:
    """The webapp fixture as a repository at ``dest`` (created), on branch ``main``."""
    repo = init_repo(dest)
    shutil.copytree(WEBAPP, repo.path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    git("add", "-A", cwd=repo.path)
    git("commit", "--quiet", "--no-verify", "-m", "webapp: initial tree", cwd=repo.path,
        env=_FIXED)
    return repo
