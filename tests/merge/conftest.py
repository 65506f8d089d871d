"""Helpers for the merge engine's tests: scenario repositories and git's own answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures import repos as fixture_repos
from gitproc.git import Repo, git


@dataclass(frozen=True)
class GitAnswer:
    """What real ``git merge`` in a worktree produced."""

    clean: bool
    tree: str | None
    conflicted: list[str]


def git_merge_answer(repo: Repo, ours: str, theirs: str, where: Path) -> GitAnswer:
    """Run ``git merge --no-ff`` of ``theirs`` into a detached worktree at ``ours``."""
    git("worktree", "add", "--quiet", "--detach", str(where), ours, cwd=repo.path)
    try:
        r = git("merge", "--no-ff", "--no-edit", "-q", theirs, cwd=where, check=False)
        if r.returncode == 0:
            return GitAnswer(True, git("rev-parse", "HEAD^{tree}", cwd=where).out.strip(), [])
        out = git("ls-files", "-u", "-z", cwd=where).out
        paths = sorted({rec.split("\t", 1)[1] for rec in out.split("\0") if rec})
        return GitAnswer(False, None, paths)
    finally:
        git("merge", "--abort", cwd=where, check=False)
        git("worktree", "remove", "--force", "--force", str(where), cwd=repo.path, check=False)


def merge_tree_answer(repo: Repo, ours: str, theirs: str) -> tuple[bool, str, list[str]]:
    """git's own ``merge-tree --write-tree --name-only`` run plainly in the checkout."""
    r = git("merge-tree", "--write-tree", "--name-only", "-z", "--no-messages", ours, theirs,
            cwd=repo.path, check=False)
    fields = r.out.split("\0")
    paths = []
    for f in fields[1:]:
        if not f:
            break
        paths.append(f)
    return r.returncode == 0, fields[0], sorted(set(paths))


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Callable[[str], Repo]]:
    """``scenario("content")`` builds ``fixtures/repos/merge_content.fi``."""

    def _build(name: str) -> Repo:
        return fixture_repos.build(f"merge_{name}", tmp_path / name)

    yield _build


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """An empty repository on ``main`` with one base commit (``base.txt``)."""
    from gitproc.git import init_repo

    r = init_repo(tmp_path / "repo")
    fixture_repos.commit_files(r, "main", {"base.txt": "base\n"}, "base")
    git("checkout", "-q", "-f", "main", cwd=r.path)
    return r
