"""Parity: our in-memory merge against git merge in a worktree, for every conflict kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.repos import commit_files
from gitproc.git import Repo
from merge.transaction import Transaction
from merge.tree_merge import merge_commits, parse_output
from tests.merge.conftest import git_merge_answer, merge_tree_answer

# scenario -> expected conflict kinds (empty: clean)
EXPECTED: dict[str, set[str]] = {
    "clean": set(),
    "rename_clean": set(),
    "union": set(),
    "content": {"content"},
    "add_add": {"add/add"},
    "modify_delete": {"modify/delete"},
    "rename_rename": {"rename/rename"},
    "rename_delete": {"rename/delete"},
    "directory_rename": {"directory_rename"},
    "file_directory": {"file/directory"},
    "binary": {"binary"},
    "mode": {"mode"},
    "distinct_types": {"mode"},
    "submodule": {"submodule"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parity_with_git_merge(
    name: str, scenario: Callable[[str], Repo], tmp_path: Path
) -> None:
    repo = scenario(name)
    ours, theirs = repo.rev_parse("ours"), repo.rev_parse("theirs")
    ours_tree = repo.out("rev-parse", "ours^{tree}")
    result = merge_commits(repo, ours, theirs)
    answer = git_merge_answer(repo, ours, theirs, tmp_path / "wt")
    mt_clean, mt_tree, mt_paths = merge_tree_answer(repo, ours, theirs)

    assert result.clean == answer.clean == mt_clean
    assert {c.kind for c in result.conflicts} == EXPECTED[name]
    if result.clean:
        assert result.tree == answer.tree == mt_tree
        assert result.tree != ours_tree or name == "union"
    else:
        assert result.conflicted_paths == mt_paths
        # git merge names a side "HEAD" where merge-tree uses the commit it was given
        # (file/directory moves the file to "x~<label>").
        assert [p.replace(ours, "HEAD") for p in result.conflicted_paths] == answer.conflicted
        assert result.tree == mt_tree
        covered = {p for c in result.conflicts for p in c.paths}
        assert set(result.conflicted_paths) <= covered
        for c in result.conflicts:
            assert c.message


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_batch_of_one_matches(name: str, scenario: Callable[[str], Repo]) -> None:
    """Through a transaction (which may take the in-process fast path): same answers."""
    repo = scenario(name)
    report = Transaction(repo, "ours", ["theirs"], dry_run=True, semantic=False).run()
    direct = merge_commits(repo, repo.rev_parse("ours"), repo.rev_parse("theirs"))
    (m,) = report.merges
    assert (m.status == "clean") == direct.clean
    assert m.tree == (direct.tree if direct.clean else None)
    assert {c.kind for c in m.conflicts} == EXPECTED[name]


def test_fast_path_nested_directories(repo: Repo) -> None:
    commit_files(repo, "x", {"deep/a/b/c.txt": "c\n", "top.txt": "t\n"}, base="main")
    commit_files(repo, "y", {"deep/a/z.txt": "z\n", "deep/q/r.txt": "r\n", "base.txt": "y\n"},
                 base="main")
    report = Transaction(repo, "x", ["y"], dry_run=True, semantic=False).run()
    mt_clean, mt_tree, _ = merge_tree_answer(repo, repo.rev_parse("x"), repo.rev_parse("y"))
    assert mt_clean and report.merges[0].tree == mt_tree


def test_union_driver_keeps_both_sides(scenario: Callable[[str], Repo]) -> None:
    repo = scenario("union")
    result = merge_commits(repo, repo.rev_parse("ours"), repo.rev_parse("theirs"))
    assert result.clean
    blob = repo.odb[repo.odb[result.tree]["changes.log"].id].data  # type: ignore[index]
    assert blob == b"base\nours\ntheirs\n"


def test_messages_name_the_sides(scenario: Callable[[str], Repo]) -> None:
    repo = scenario("modify_delete")
    result = merge_commits(repo, repo.rev_parse("ours"), repo.rev_parse("theirs"),
                           labels=("main", "feature"))
    (conflict,) = result.conflicts
    assert conflict.path == "a.txt"
    assert "deleted in main and modified in feature" in conflict.message


def test_parse_output_sections() -> None:
    out = (b"t" * 40 + b"\x00100644 " + b"a" * 40 + b" 2\tf\x00100644 " + b"b" * 40
           + b" 3\tf\0\0" + b"1\0f\0Auto-merging\0Auto-merging f\n\0"
           + b"1\0f\0CONFLICT (contents)\0CONFLICT (content): Merge conflict in f\n\0")
    tree, stages, messages = parse_output(out)
    assert tree == "t" * 40
    assert [(s.stage, s.path) for s in stages] == [(2, "f"), (3, "f")]
    assert [m.type for m in messages] == ["Auto-merging", "CONFLICT (contents)"]
    assert messages[1].text == "CONFLICT (content): Merge conflict in f"
