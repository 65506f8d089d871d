"""The git wrapper's in-process paths against git's own answers: committing what is
staged, line counts of a diff, commit message clean-up."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gitproc.git import IDENTITY, Repo, clean_message, init_repo

MESSAGES = [
    "forkyard: t1\n\nChanges left by the agent.",
    "  leading space kept  \n\n\n\nbody   \n\n",
    "\n\n a\tb \t\n\n\n\nc\r\n# not a comment\n",
    "form\x0cfeed\x0b and nbsp\u00a0 \n",
]


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = init_repo(tmp_path / "repo")
    (r.path / "a.txt").write_text("1\n2\n3\n")
    (r.path / "b.bin").write_bytes(b"\0\1\2")
    (r.path / "gone.txt").write_text("x\ny\n")
    (r.path / "run.sh").write_text("echo\n")
    (r.path / "d").mkdir()
    (r.path / "d" / "e.txt").write_text("e\n")
    r.commit_all(r.path, "base")
    return r


def _change(r: Repo) -> None:
    p = r.path
    (p / "a.txt").write_text("1\nTWO\n3\n4\n")
    (p / "b.bin").write_bytes(b"\0\1\3\4")
    (p / "gone.txt").unlink()
    os.chmod(p / "run.sh", 0o755)
    (p / "d" / "e.txt").unlink()
    (p / "d").rmdir()
    (p / "d").write_text("a file now\n")
    (p / "new.txt").write_text("n\n" * 5)


def _commit_fields(r: Repo, sha: str) -> tuple[str, str, str, str]:
    return (r.out("rev-parse", f"{sha}^{{tree}}"), r.out("rev-parse", f"{sha}^"),
            r.out("log", "-1", "--format=%an <%ae>|%cn <%ce>", sha),
            r.git("cat-file", "commit", sha).out.split("\n\n", 1)[1])


@pytest.mark.parametrize("message", MESSAGES)
def test_commit_staged_in_process_makes_the_commit_git_commit_makes(
        repo: Repo, message: str) -> None:
    _change(repo)
    repo.stage_all(repo.path)
    base = repo.rev_parse("HEAD")
    index = repo.git_dir / "index"
    before = (index.read_bytes(), index.stat().st_mtime_ns)

    ours = repo.commit_staged(repo.path, message, gitdir=repo.git_dir, ref="refs/heads/main")

    assert ours is not None and repo.rev_parse("main") == ours
    # In process: the index is neither re-read against the worktree nor rewritten.
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before
    logged = repo.out("reflog", "-1", "--format=%gs", "main")
    # git's own commit of the same index, on the same parent.
    repo.git("reset", "--soft", base)
    theirs = repo.commit_staged(repo.path, message)
    assert theirs is not None
    assert logged == repo.out("reflog", "-1", "--format=%gs", "main")
    assert _commit_fields(repo, ours) == _commit_fields(repo, theirs)
    assert _commit_fields(repo, ours)[2] == (
        f"{IDENTITY['GIT_AUTHOR_NAME']} <{IDENTITY['GIT_AUTHOR_EMAIL']}>|"
        f"{IDENTITY['GIT_COMMITTER_NAME']} <{IDENTITY['GIT_COMMITTER_EMAIL']}>")
    repo.git("fsck", "--full", "--no-dangling")


@pytest.mark.parametrize("in_process", [True, False])
def test_commit_staged_with_nothing_staged_makes_no_commit(repo: Repo, in_process: bool) -> None:
    tip = repo.rev_parse("HEAD")
    (repo.path / "untracked.txt").write_text("not staged\n")
    where = {"gitdir": repo.git_dir, "ref": "refs/heads/main"} if in_process else {}
    assert repo.commit_staged(repo.path, "nothing", **where) is None  # type: ignore[arg-type]
    assert repo.rev_parse("HEAD") == tip


def test_commit_staged_falls_back_to_git_for_an_index_libgit2_cannot_read(
        repo: Repo, capfd: pytest.CaptureFixture[str]) -> None:
    repo.git("update-index", "--split-index")  # a "link" extension: libgit2 refuses it
    (repo.path / "new.txt").write_text("new\n")
    repo.stage_all(repo.path)
    sha = repo.commit_staged(repo.path, "split", gitdir=repo.git_dir, ref="refs/heads/main")
    assert sha is not None and repo.rev_parse("main") == sha
    assert "new.txt" in repo.out("ls-tree", "--name-only", sha).splitlines()
    assert capfd.readouterr().err == ""  # no noise from the failed in-process attempt


def test_numstat_matches_git_diff_numstat(repo: Repo) -> None:
    base = repo.rev_parse("HEAD")
    _change(repo)
    tip = repo.commit_all(repo.path, "changes")
    assert tip is not None
    want = []
    for line in repo.out("diff", "--numstat", "--no-renames", base, tip).splitlines():
        added, removed, path = line.split("\t")
        want.append((path, 0 if added == "-" else int(added), 0 if removed == "-" else int(removed)))
    assert [(s.path, s.added, s.removed) for s in repo.numstat(base, tip)] == want
    assert {"b.bin", "run.sh", "gone.txt", "d", "d/e.txt"} <= {p for p, _, _ in want}


@pytest.mark.parametrize("message", MESSAGES)
def test_clean_message_is_what_git_commit_stores(repo: Repo, message: str) -> None:
    (repo.path / "f.txt").write_text(message)
    sha = repo.commit_all(repo.path, message)
    assert sha is not None
    assert repo.git("cat-file", "commit", sha).out.split("\n\n", 1)[1] == clean_message(message)


def test_each_thread_has_its_own_pygit2_repository(repo: Repo) -> None:
    seen: list[object] = []
    t = threading.Thread(target=lambda: seen.append(repo.odb))
    t.start()
    t.join()
    assert repo.odb is repo.odb
    assert seen[0] is not repo.odb


@pytest.mark.parametrize("durable", [True, False])
def test_update_ref_is_a_compare_and_swap_either_way(repo: Repo, durable: bool) -> None:
    from gitproc.git import RefMovedError

    one = repo.rev_parse("HEAD")
    (repo.path / "two.txt").write_text("2\n")
    two = repo.commit_all(repo.path, "two")
    assert two is not None
    ref = "refs/heads/forkyard/x"
    repo.update_ref(ref, one, None, "made", durable=durable)
    assert repo.rev_parse(ref) == one
    with pytest.raises(RefMovedError) as made:  # must not exist yet
        repo.update_ref(ref, two, None, "again", durable=durable)
    assert made.value.actual == one and repo.rev_parse(ref) == one
    with pytest.raises(RefMovedError) as moved:  # not at the expected old value
        repo.update_ref(ref, one, two, "stale", durable=durable)
    assert moved.value.actual == one and repo.rev_parse(ref) == one
    repo.update_ref(ref, two, one, "moved on", durable=durable)
    assert repo.rev_parse(ref) == two
    assert repo.out("reflog", "--format=%gs", ref).splitlines() == ["moved on", "made"]
    # A symbolic ref is never followed: it is replaced itself, the ref it named stays.
    repo.git("symbolic-ref", "refs/heads/alias", ref)
    repo.update_ref("refs/heads/alias", one, two, "over the alias", durable=durable)
    assert repo.rev_parse(ref) == two and repo.rev_parse("refs/heads/alias") == one
    assert repo.git("symbolic-ref", "-q", "refs/heads/alias", check=False).returncode != 0
    # ... and deleted itself.
    repo.git("symbolic-ref", "refs/heads/alias2", ref)
    repo.delete_ref("refs/heads/alias2", two)
    assert repo.rev_parse(ref) == two and repo.try_rev_parse("refs/heads/alias2") is None
