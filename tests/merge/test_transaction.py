"""Transactions: land whole or not at all, CAS and retry, worktree sync, bisect, validation."""

from __future__ import annotations

import pytest

from fixtures.repos import commit_files
from gitproc.git import RefMovedError, Repo, UnknownRefError
from merge import merge_sources
from merge.fastpath import merge_bases
from merge.journal import pending
from merge.transaction import DirtyWorktreeError, TargetNotBranchError, Transaction


def branches(repo: Repo) -> dict[str, str]:
    return {
        "a": commit_files(repo, "a", {"a.txt": "a\n"}, "a", base="main"),
        "b": commit_files(repo, "b", {"b.txt": "b\n"}, "b", base="main"),
        "c": commit_files(repo, "c", {"base.txt": "c changed\n"}, "c", base="main"),
        "d": commit_files(repo, "d", {"base.txt": "d changed\n"}, "d", base="main"),
    }


def state(repo: Repo) -> tuple[str, str, str]:
    """Everything a rollback must leave exactly as it was."""
    return (repo.out("for-each-ref"), repo.out("status", "--porcelain"),
            repo.out("rev-parse", "HEAD"))


def test_clean_batch_lands_as_merge_commits(repo: Repo) -> None:
    shas = branches(repo)
    old = repo.rev_parse("main")
    report = merge_sources(repo, "main", ["a", "b"])
    assert report.outcome == "committed" and report.landed == ["a", "b"]
    new = repo.rev_parse("main")
    assert report.new_sha == new and report.target_sha == old
    assert repo.out("rev-list", "--parents", "-n1", new).split()[1:] == [
        repo.rev_parse("main~1"), shas["b"]]
    assert repo.out("rev-parse", "main~1^2") == shas["a"]
    assert repo.out("log", "-1", "--format=%an <%ae>", new) == "forkyard <forkyard@localhost>"
    # The checked-out main follows the ref and does not look dirty; sources stay.
    assert repo.out("status", "--porcelain") == ""
    assert (repo.path / "a.txt").read_text() == "a\n"
    assert repo.rev_parse("a") == shas["a"]
    assert pending(repo) == [] and repo.out("for-each-ref", "refs/forkyard") == ""


def test_squash_makes_single_parent_commits(repo: Repo) -> None:
    branches(repo)
    merge_sources(repo, "main", ["a", "b"], squash=True)
    assert len(repo.out("rev-list", "--parents", "-n1", "main").split()) == 2
    assert repo.out("rev-list", "--count", "main") == "3"
    assert sorted(repo.out("ls-tree", "--name-only", "main").split()) == [
        "a.txt", "b.txt", "base.txt"]


def test_conflict_rolls_back_exactly(repo: Repo) -> None:
    branches(repo)
    before = state(repo)
    report = merge_sources(repo, "main", ["a", "c", "d"])
    assert report.outcome == "rolled_back" and report.new_sha is None
    assert report.culprits == ["d"] and report.landed == []
    assert [m.status for m in report.merges] == ["clean", "clean", "conflict"]
    assert report.merges[2].conflicts[0].kind == "content"
    assert report.overlaps[0].path == "base.txt"
    assert report.overlaps[0].sources == ["c", "d"]
    assert state(repo) == before
    assert report.exit_code == 1


def test_validation_failure_rolls_back_and_is_attributed(repo: Repo) -> None:
    branches(repo)
    before = state(repo)
    # Fails only when both a.txt and b.txt are present: the merge broke it.
    cmd = "test ! -f a.txt || test ! -f b.txt || { echo both present; exit 3; }"
    report = merge_sources(repo, "main", ["a", "b"], validate=cmd)
    assert report.outcome == "rolled_back"
    assert report.validation is not None
    assert (report.validation.passed, report.validation.exit_code) == (False, 3)
    assert "both present" in report.validation.log_tail
    assert report.validation.attributed_to == []
    assert state(repo) == before
    assert not list((repo.forkyard_dir / "scratch").iterdir())
    ok = merge_sources(repo, "main", ["a", "b"], validate="test -f a.txt && test -f b.txt")
    assert ok.outcome == "committed" and ok.validation is not None and ok.validation.passed


def test_bisect_lands_the_largest_good_group(repo: Repo) -> None:
    branches(repo)
    commit_files(repo, "bad", {"BROKEN": "x\n"}, "breaks the build", base="main")
    report = merge_sources(repo, "main", ["a", "c", "bad", "d", "b"], mode="bisect",
                           validate="test ! -f BROKEN")
    assert report.outcome == "committed"
    assert report.landed == ["a", "c", "b"]
    assert sorted(report.culprits) == ["bad", "d"]
    assert [m.source for m in report.merges] == ["a", "c", "bad", "d", "b"]
    assert report.exit_code == 1
    files = repo.out("ls-tree", "--name-only", "main").split()
    assert "BROKEN" not in files and "a.txt" in files and "b.txt" in files
    assert repo.out("show", "main:base.txt") == "c changed"


def test_each_merge_commit_message_names_only_its_own_source(repo: Repo) -> None:
    branches(repo)
    commit_files(repo, "bad", {"BROKEN": "x\n"}, "breaks the build", base="main")
    report = merge_sources(repo, "main", ["a", "bad", "b"], mode="bisect",
                           validate="test ! -f BROKEN", message="batch 7: merge {source}")
    assert report.landed == ["a", "b"]
    subjects = repo.out("log", "--first-parent", "--format=%s", "-2", "main").splitlines()
    assert subjects == ["batch 7: merge b", "batch 7: merge a"]


def test_ref_moved_meanwhile_is_retried_on_new_tip(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    branches(repo)
    real = Repo.update_ref
    calls = []

    def racing(self: Repo, ref: str, new: str, old: str | None, message: str) -> None:
        if not calls:
            commit_files(self, "main", {"other.txt": "someone else\n"}, "racer")
        calls.append(old)
        real(self, ref, new, old, message)

    monkeypatch.setattr(Repo, "update_ref", racing)
    report = merge_sources(repo, "main", ["a"])
    assert len(calls) == 2 and calls[0] != calls[1]
    assert report.outcome == "committed" and report.target_sha == calls[1]
    assert repo.out("show", "main:other.txt") == "someone else"
    assert repo.out("show", "main:a.txt") == "a"


def test_ref_that_keeps_moving_fails_cleanly(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    branches(repo)
    real = Repo.update_ref
    n = iter(range(100))

    def racing(self: Repo, ref: str, new: str, old: str | None, message: str) -> None:
        commit_files(self, "main", {f"r{next(n)}.txt": "x\n"}, "racer")
        real(self, ref, new, old, message)

    monkeypatch.setattr(Repo, "update_ref", racing)
    with pytest.raises(RefMovedError):
        Transaction(repo, "main", ["a"], max_retries=2).run()
    assert "a.txt" not in repo.out("ls-tree", "--name-only", "main").split()
    assert pending(repo) == []


def test_dirty_checkout_of_target_is_refused(repo: Repo) -> None:
    branches(repo)
    (repo.path / "base.txt").write_text("local edit\n")
    before = state(repo)
    with pytest.raises(DirtyWorktreeError) as exc:
        merge_sources(repo, "main", ["c"])
    assert exc.value.exit_code == 2 and exc.value.paths == ["base.txt"]
    assert state(repo) == before


def test_untracked_file_where_the_batch_adds_one_is_refused(repo: Repo) -> None:
    # status looks only at what the batch changes: an untracked file there is seen.
    branches(repo)
    (repo.path / "a.txt").write_text("mine, not yet added\n")
    (repo.path / "elsewhere.txt").write_text("unrelated\n")
    before = state(repo)
    with pytest.raises(DirtyWorktreeError) as exc:
        merge_sources(repo, "main", ["a"])
    assert exc.value.paths == ["a.txt"]
    assert state(repo) == before
    assert (repo.path / "a.txt").read_text() == "mine, not yet added\n"


def test_local_changes_elsewhere_survive(repo: Repo) -> None:
    branches(repo)
    (repo.path / "base.txt").write_text("local edit\n")
    report = merge_sources(repo, "main", ["a"])
    assert report.outcome == "committed"
    assert (repo.path / "base.txt").read_text() == "local edit\n"
    assert (repo.path / "a.txt").read_text() == "a\n"
    assert repo.out("status", "--porcelain") == " M base.txt"


def test_unknown_refs_change_nothing(repo: Repo) -> None:
    branches(repo)
    before = state(repo)
    with pytest.raises(UnknownRefError) as exc:
        merge_sources(repo, "main", ["a", "nope"])
    assert exc.value.exit_code == 2
    with pytest.raises(UnknownRefError):
        merge_sources(repo, "nope", ["a"])
    assert state(repo) == before


def test_dry_run_into_any_commitish(repo: Repo) -> None:
    shas = branches(repo)
    repo.git("tag", "v1", "main")
    before = state(repo)
    for into in ("v1", repo.rev_parse("main"), "main~0", "a"):
        report = merge_sources(repo, into, ["b"], dry_run=True)
        assert report.outcome == "dry_run" and report.merges[0].status == "clean"
        assert report.new_sha is not None
    assert merge_sources(repo, shas["c"], ["d"], dry_run=True).merges[0].status == "conflict"
    assert state(repo) == before
    with pytest.raises(TargetNotBranchError):
        merge_sources(repo, "v1", ["b"])


def test_already_merged_source_is_a_no_op(repo: Repo) -> None:
    branches(repo)
    merge_sources(repo, "main", ["a"])
    tip = repo.rev_parse("main")
    report = merge_sources(repo, "main", ["a"])
    assert report.merges[0].status == "clean"
    assert repo.rev_parse("main") == tip


def test_linked_worktree_of_target_is_synced(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> None:
    branches(repo)
    wt = tmp_path_factory.mktemp("linked") / "wt"
    repo.git("worktree", "add", "--quiet", "-b", "integration", str(wt), "main")
    report = merge_sources(repo, "integration", ["a", "c"])
    assert report.outcome == "committed"
    assert repo.out("status", "--porcelain", cwd=wt) == ""
    assert (wt / "a.txt").read_text() == "a\n" and (wt / "base.txt").read_text() == "c changed\n"
    # The main checkout (on main) is untouched.
    assert not (repo.path / "a.txt").exists()


def test_unrelated_history_is_bad_input(repo: Repo) -> None:
    from merge.transaction import UnrelatedHistoriesError

    tree = repo.out("rev-parse", "main^{tree}")
    orphan = repo.out("commit-tree", tree, "-m", "orphan")
    repo.git("branch", "orphan", orphan)
    with pytest.raises(UnrelatedHistoriesError) as exc:
        merge_sources(repo, "main", ["orphan"], dry_run=True)
    assert exc.value.exit_code == 2


def test_criss_cross_goes_through_git(repo: Repo) -> None:
    """Two merge bases: merge-ort's virtual base decides, as in git merge."""
    from tests.merge.conftest import merge_tree_answer

    x = commit_files(repo, "x", {"x.txt": "x\n"}, base="main")
    y = commit_files(repo, "y", {"y.txt": "y\n"}, base="main")
    repo.git("branch", "x2", repo.out("commit-tree", f"{x}^{{tree}}", "-p", x, "-p", y, "-m", "x2"))
    xt = repo.out("merge-tree", "--write-tree", x, y).split()[0]
    repo.git("branch", "y2", repo.out("commit-tree", xt, "-p", y, "-p", x, "-m", "y2"))
    commit_files(repo, "x2", {"x.txt": "x2\n"})
    commit_files(repo, "y2", {"y.txt": "y2\n"})
    expected = sorted(repo.out("merge-base", "--all", "x2", "y2").split())
    assert len(expected) == 2
    assert merge_bases(repo.odb, repo.rev_parse("x2"), repo.rev_parse("y2")) == expected
    report = merge_sources(repo, "x2", ["y2"], dry_run=True, semantic=False)
    clean, tree, _ = merge_tree_answer(repo, repo.rev_parse("x2"), repo.rev_parse("y2"))
    assert report.merges[0].status == ("clean" if clean else "conflict")
    assert report.merges[0].tree == (tree if clean else None)


def test_validation_timeout_fails_the_batch(repo: Repo) -> None:
    branches(repo)
    report = Transaction(repo, "main", ["a"], validate="echo started; sleep 30",
                         validate_timeout=0.5).run()
    assert report.outcome == "rolled_back"
    assert report.validation is not None and report.validation.exit_code is None
    assert "timed out" in report.validation.log_tail and "started" in report.validation.log_tail


def test_bisect_drops_semantic_errors(repo: Repo) -> None:
    commit_files(repo, "main", {"m.py": "def f():\n    return 1\n"})
    repo.git("reset", "-q", "--hard", "main")
    commit_files(repo, "rm", {"m.py": "def g():\n    return 1\n"}, base="main")
    commit_files(repo, "use", {"u.py": "from m import f\n"}, base="main")
    commit_files(repo, "ok", {"ok.txt": "ok\n"}, base="main")
    report = merge_sources(repo, "main", ["rm", "use", "ok"], mode="bisect")
    assert report.landed == ["rm", "ok"] and report.culprits == ["use"]
    assert report.outcome == "committed"


def test_detect_conflicts_api(repo: Repo) -> None:
    from merge import detect_conflicts

    branches(repo)
    before = state(repo)
    report = detect_conflicts(repo.path, "main", ["c", "d"])
    assert report.outcome == "dry_run"
    assert [m.status for m in report.merges] == ["clean", "conflict"]
    assert report.overlaps[0].sources == ["c", "d"]
    assert state(repo) == before
