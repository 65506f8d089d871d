"""The fixture builder makes real, reproducible repositories from text."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures import repos as fixture_repos
from gitproc.git import Repo


def test_tree_fixture_builds_identically_twice(tmp_path: Path) -> None:
    a = fixture_repos.build("pylib", tmp_path / "a")
    b = fixture_repos.build("pylib", tmp_path / "b")
    assert a.rev_parse("main") == b.rev_parse("main")
    assert (a.path / "mathlib" / "core.py").is_file()
    assert not a.is_dirty()


def test_commit_files_builds_branches_without_checkout(webapp: Repo) -> None:
    before = webapp.rev_parse("HEAD")
    sha = fixture_repos.commit_files(webapp, "feature", {"src/new.py": "x = 1\n"}, base="main")
    assert webapp.rev_parse("feature") == sha
    assert webapp.rev_parse("HEAD") == before
    assert webapp.out("show", "feature:src/new.py") == "x = 1"


def test_commit_graph_builds_merges(tmp_path: Path) -> None:
    repo = fixture_repos.init_repo(tmp_path / "g")
    shas = fixture_repos.commit_graph(repo, [[1], [2, 1], [3, 1, 2]])
    parents = repo.out("rev-list", "--parents", "-n1", shas[3]).split()[1:]
    assert parents == [shas[1], shas[2]]


def test_synthetic_repo_has_requested_files(tmp_path: Path) -> None:
    repo = fixture_repos.build_synthetic(tmp_path / "s", 300)
    assert len(repo.out("ls-files").splitlines()) == 300


def test_a_relative_destination_is_relative_to_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    repo = fixture_repos.build("pylib", "rel")
    assert repo.path == tmp_path / "rel"
    assert not (tmp_path / "rel" / "rel").exists()
