"""Overlay sandboxes: a copy-on-write mount over one base checkout per run."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from fixtures import repos
from gitproc.git import Repo
from sandbox import overlay, places
from sandbox.backends.worktree import WorktreeBackend, WorktreeConfig
from sandbox.backends.worktree.harvest import _index_ours, _untouched
from tests.conftest import require
from tests.sandbox.conftest import has_bwrap, make_spec, prepared


@pytest.fixture
def backend(pylib: Repo) -> WorktreeBackend:
    require(overlay.usable(), "overlay mounts (root and overlayfs)")
    return WorktreeBackend(pylib, WorktreeConfig(confinement="none", limits="none"))


def mounted(path: Path) -> bool:
    return path in overlay.mounts_under(path)


def test_sandbox_is_an_overlay_with_a_clean_checkout(backend: WorktreeBackend) -> None:
    repo = backend.repo
    with prepared(backend) as sb:
        assert mounted(sb.worktree)
        assert repo.out("status", "--porcelain", "--untracked-files=all", cwd=sb.worktree) == ""
        assert repo.out("ls-files", cwd=sb.worktree) == repo.out("ls-files")
        for name in repo.out("ls-files").splitlines():
            assert (sb.worktree / name).read_bytes() == (repo.path / name).read_bytes()
        assert repo.out("rev-parse", "HEAD", cwd=sb.worktree) == repo.rev_parse("HEAD")


def test_same_size_edit_in_place_is_committed(backend: WorktreeBackend) -> None:
    # The base's index is copied into every sandbox: an edit that keeps a file's size
    # (and lands in the same second) must still be seen as a change.
    repo = backend.repo
    name = repo.out("ls-files").splitlines()[0]
    old = (repo.path / name).read_bytes()
    new = old.swapcase()
    assert len(new) == len(old) and new != old
    cmd = ("python3 -c \"import sys; p = sys.argv[1]; d = open(p, 'rb').read(); "
           f"open(p, 'r+b').write(d.swapcase())\" {name}")
    r = backend.run(make_spec(repo, cmd))
    assert r.status == "succeeded", r.log_tail
    assert r.commit is not None
    assert repo.git("show", f"{r.commit}:{name}").stdout == new
    assert [f.path for f in r.files_modified] == [name]


def test_changes_stay_in_their_own_sandbox(backend: WorktreeBackend) -> None:
    repo = backend.repo
    run = f"t{uuid.uuid4().hex[:8]}"
    a = backend.prepare(make_spec(repo, "true", run_id=run, task_id="a"))
    b = backend.prepare(make_spec(repo, "true", run_id=run, task_id="b"))
    try:
        name = repo.out("ls-files").splitlines()[0]
        (a.worktree / name).write_text("changed by a\n")
        (a.worktree / "new-in-a.txt").write_text("a\n")
        (a.worktree / repo.out("ls-files").splitlines()[1]).unlink()
        assert (b.worktree / name).read_bytes() == (repo.path / name).read_bytes()
        assert not (b.worktree / "new-in-a.txt").exists()
        base = backend._bases[run].get(repo.rev_parse("HEAD"))
        assert (base.tree / name).read_bytes() == (repo.path / name).read_bytes()
        assert repo.out("status", "--porcelain", cwd=b.worktree) == ""
        assert len(repo.out("status", "--porcelain", cwd=a.worktree).splitlines()) == 3
    finally:
        backend.cleanup(a)
        backend.cleanup(b)


def test_sandbox_at_a_later_tip_starts_there(backend: WorktreeBackend) -> None:
    repo = backend.repo
    run = f"t{uuid.uuid4().hex[:8]}"
    first = backend.prepare(make_spec(repo, "true", run_id=run, task_id="first"))
    try:
        repos.write_files(repo.path, {"later.txt": "on the new tip\n", "README.md": "moved\n"})
        tip = repo.commit_all(repo.path, "a later tip")
        assert tip is not None
        # Same run: the base checkout stays at the first tip; this one is reset onto it.
        r = backend.run(make_spec(repo, "cat later.txt README.md > seen.txt", run_id=run,
                                  task_id="later"))
        assert r.status == "succeeded", r.log_tail
        assert repo.git("show", f"{r.commit}:seen.txt").out == "on the new tip\nmoved\n"
        assert repo.out("rev-parse", f"{r.commit}^") == tip
        assert [f.path for f in r.files_modified] == ["seen.txt"]
    finally:
        backend.cleanup(first)


def test_clean_up_unmounts_and_the_runs_last_sandbox_drops_the_base(
        backend: WorktreeBackend) -> None:
    repo = backend.repo
    run = f"t{uuid.uuid4().hex[:8]}"
    sbs = [backend.prepare(make_spec(repo, "true", run_id=run, task_id=f"s{i}")) for i in range(3)]
    assert (repo.forkyard_dir / "bases" / run).is_dir()
    for sb in sbs:
        backend.cleanup(sb)
        assert not overlay.mounts_under(sb.worktree)  # its empty mount point may stay
    # The last one gone: the base, every mount point and the private mounts too.
    assert overlay.mounts_under(repo.forkyard_dir) == []
    assert not (repo.forkyard_dir / "bases" / run).exists()
    assert not places.run_dir(repo.forkyard_dir, run).exists()
    assert [w["worktree"] for w in repo.worktrees()] == [str(repo.path)]


def test_kept_sandbox_is_turned_into_plain_files(backend: WorktreeBackend) -> None:
    repo = backend.repo
    sb = backend.prepare(make_spec(repo, "true"))
    backend.execute(sb)
    (sb.worktree / "scratch.txt").write_text("left for inspection\n")
    backend.cleanup(sb, keep=True)
    assert not mounted(sb.worktree)
    assert (sb.worktree / "scratch.txt").read_text() == "left for inspection\n"
    assert repo.out("status", "--porcelain", cwd=sb.worktree) == "?? scratch.txt"
    assert overlay.mounts_under(repo.forkyard_dir) == []


def test_checkout_layers_make_a_plain_worktree(pylib: Repo) -> None:
    backend = WorktreeBackend(pylib, WorktreeConfig(confinement="none", limits="none",
                                                    layers="checkout"))
    sb = backend.prepare(make_spec(pylib, "true"))
    try:
        assert not mounted(sb.worktree)
        assert pylib.out("status", "--porcelain", cwd=sb.worktree) == ""
    finally:
        backend.cleanup(sb)


def test_confined_sandboxes_start_while_others_come_and_go(pylib: Repo) -> None:
    # bubblewrap copies the mount table and remounts each copy; sibling overlays being
    # unmounted meanwhile must not make a sandbox fail to start.
    require(overlay.usable(), "overlay mounts (root and overlayfs)")
    require(has_bwrap(), "bubblewrap")
    backend = WorktreeBackend(pylib, WorktreeConfig(confinement="bwrap", limits="none"))
    run = f"t{uuid.uuid4().hex[:8]}"
    hold = backend.prepare(make_spec(pylib, "true", run_id=run, task_id="hold"))
    failures: list[str] = []

    def agent(i: int) -> None:
        for round_ in range(10):
            r = backend.run(make_spec(pylib, "echo ok > out.txt", run_id=run,
                                      task_id=f"a{i}-{round_}"))
            if r.status != "succeeded":
                failures.append(r.log_tail)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    backend.cleanup(hold)
    assert failures == []


def test_add_skips_only_what_the_agent_left_alone(backend: WorktreeBackend) -> None:
    # `git add -A` is told to skip top-level entries with nothing in the upper layer; an
    # edit deep inside one of them must still be seen, and the skipped ones stay as they are.
    repo = backend.repo
    with prepared(backend) as sb:
        assert _untouched(sb) == ["README.md", "mathlib", "tests"]
        (sb.worktree / "mathlib" / "util.py").write_text("changed\n")
        (sb.worktree / "NEW.txt").write_text("new\n")
        assert _untouched(sb) == ["README.md", "tests"]
        r = backend.execute(sb)
        assert r.status == "succeeded", r.log_tail
        assert sorted(f.path for f in r.files_modified) == ["NEW.txt", "mathlib/util.py"]
        names = set(repo.out("ls-tree", "-r", "--name-only", r.commit or "").splitlines())
        assert names == set(repo.out("ls-tree", "-r", "--name-only", "HEAD").splitlines()) | {
            "NEW.txt"}


def test_add_looks_everywhere_once_the_agent_used_the_index(backend: WorktreeBackend) -> None:
    # `git rm --cached` leaves no trace in the upper layer, only in the index: with the
    # index changed nothing is skipped, and the result is what a full `git add -A` gives
    # (the file, still in the worktree, is committed again).
    with prepared(backend, "git rm -q --cached tests/test_core.py") as sb:
        r = backend.execute(sb)
        assert r.status == "succeeded", r.log_tail
        assert _untouched(sb) == []
        assert r.commit is None  # nothing changed, as with a full `git add -A`


def test_an_index_rewritten_in_place_with_its_date_put_back_is_not_ours(
        backend: WorktreeBackend) -> None:
    # Same inode, same size, mtime set back: only the ctime (which no one can set back)
    # tells, and with the index not ours, add looks everywhere and the commit is checked.
    with prepared(backend) as sb:
        assert _index_ours(sb) and _untouched(sb)
        index = sb.state["gitdir"] / "index"  # type: ignore[operator]
        st, data = index.stat(), index.read_bytes()
        time.sleep(0.05)
        with open(index, "r+b") as f:
            f.write(data)
        os.utime(index, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert (index.stat().st_ino, index.stat().st_size, index.stat().st_mtime_ns) == (
            st.st_ino, st.st_size, st.st_mtime_ns)
        assert not _index_ours(sb) and _untouched(sb) == []


def test_no_index_entry_of_a_sandbox_is_racily_clean(backend: WorktreeBackend) -> None:
    # An entry whose file is not older than the index (at git's coarsest, whole seconds)
    # or whose size was smudged to 0 is re-hashed by every `git status` in every sandbox.
    repo = backend.repo
    with prepared(backend) as sb:
        gitdir = sb.state["gitdir"]
        index_mtime = int((gitdir / "index").stat().st_mtime)  # type: ignore[operator]
        entries = repo.out("ls-files", "--debug", cwd=sb.worktree).split("\n  ctime: ")[1:]
        assert len(entries) == len(repo.out("ls-files").splitlines())
        for entry in entries:
            fields = entry.split()
            mtime = int(fields[fields.index("mtime:") + 1].split(":")[0])
            size = int(fields[fields.index("size:") + 1])
            assert mtime < index_mtime and size > 0, entry
        assert repo.out("status", "--porcelain", cwd=sb.worktree) == ""
