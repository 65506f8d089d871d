"""The merge, check and recover commands: exit codes and the exact JSON shape."""

from __future__ import annotations

import json

import pytest

from fixtures.repos import commit_files
from forkyard.cli import main
from gitproc.git import Repo

TOP = {"target", "target_sha", "outcome", "new_sha", "merges", "overlaps", "validation",
       "landed", "culprits"}
MERGE = {"source", "source_sha", "base_sha", "status", "tree", "conflicts", "semantic"}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_merge_json_shape(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    commit_files(repo, "a", {"a.txt": "a\n", "base.txt": "a\n"}, base="main")
    commit_files(repo, "b", {"base.txt": "b\n"}, base="main")
    code, out, _ = cli(capsys, "merge", "--into", "main", "a", "b", "--dry-run", "--json",
                       "--repo", str(repo.path))
    assert code == 1
    doc = json.loads(out)
    assert set(doc) == TOP
    assert doc["outcome"] == "dry_run" and doc["validation"] is None
    assert all(set(m) == MERGE for m in doc["merges"])
    conflict = doc["merges"][1]["conflicts"][0]
    assert set(conflict) == {"path", "kind", "paths", "message"}
    assert conflict["kind"] == "content" and doc["merges"][1]["tree"] is None
    assert doc["overlaps"] == [{"path": "base.txt", "sources": ["a", "b"]}]


def test_merge_commits_and_human_table(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    commit_files(repo, "a", {"a.txt": "a\n"}, base="main")
    code, out, err = cli(capsys, "merge", "--into", "main", "a", "--validate", "true",
                         "--repo", str(repo.path))
    assert code == 0 and out == ""
    assert "a" in err and "clean" in err and "committed" in err
    commit_files(repo, "b", {"b.txt": "b\n"}, base="main")
    code, out, _ = cli(capsys, "merge", "--into", "main", "b", "--validate", "echo hi",
                       "--json", "--repo", str(repo.path))
    doc = json.loads(out)
    assert code == 0 and doc["validation"] == {
        "command": "echo hi", "passed": True, "exit_code": 0, "log_tail": "hi"}
    assert repo.out("show", "main:a.txt") == "a"


def test_semantic_error_exits_1(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    commit_files(repo, "main", {"m.py": "def f():\n    return 1\n"})
    repo.git("reset", "-q", "--hard", "main")  # commit_files moved main under the checkout
    commit_files(repo, "rm", {"m.py": "def g():\n    return 1\n"}, base="main")
    commit_files(repo, "use", {"u.py": "from m import f\n"}, base="main")
    code, out, _ = cli(capsys, "merge", "--into", "main", "rm", "use", "--json",
                       "--repo", str(repo.path))
    doc = json.loads(out)
    assert code == 1 and doc["outcome"] == "rolled_back"
    assert doc["merges"][1]["semantic"][0]["kind"] == "dangling_reference"
    assert set(doc["merges"][1]["semantic"][0]) == {
        "kind", "symbol", "path", "line", "severity", "message"}
    code, out, _ = cli(capsys, "merge", "--into", "main", "rm", "use", "--no-semantic",
                       "--json", "--repo", str(repo.path))
    assert code == 0 and json.loads(out)["outcome"] == "committed"


def test_bad_input_exits_2(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "merge", "--into", "main", "nope", "--repo", str(repo.path))
    assert code == 2 and "nope" in err
    code, _, _ = cli(capsys, "merge", "--into", "main", "main", "--mode", "odd",
                     "--repo", str(repo.path))
    assert code == 2


def test_check_defaults_to_open_forkyard_branches(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    commit_files(repo, "forkyard/run1/x", {"x.txt": "x\n"}, base="main")
    commit_files(repo, "forkyard/run1/y", {"base.txt": "y\n"}, base="main")
    commit_files(repo, "forkyard/run1/z", {"base.txt": "z\n"}, base="main")
    commit_files(repo, "other", {"base.txt": "o\n"}, base="main")
    code, out, _ = cli(capsys, "check", "--json", "--repo", str(repo.path))
    doc = json.loads(out)
    assert code == 1
    assert [m["source"] for m in doc["integration"]["merges"]] == [
        "forkyard/run1/x", "forkyard/run1/y", "forkyard/run1/z"]
    assert [b["name"] for b in doc["branches"]] == doc["matrix"]["branches"]
    code, out, _ = cli(capsys, "check", "forkyard/run1/x", "--json", "--repo", str(repo.path))
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["integration"]["outcome"] == "dry_run"


def test_recover_command(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "recover", "--json", "--repo", str(repo.path))
    assert code == 0 and json.loads(out) == {"recovered": []}
