"""``forkyard gc``: what a crashed run left is removed; live runs and unmerged work are not."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from fixtures import repos
from forkyard.commands.gc import gc_command
from forkyard.gc import gc
from gitproc.git import Repo
from gitproc.process import spawn
from planner.tasks import Limits
from sandbox import cgroups, limits, places
from sandbox.backends.worktree import WorktreeBackend, WorktreeConfig
from tests.conftest import require
from tests.sandbox.conftest import has_cgroups, make_spec


def crash(backend: WorktreeBackend, run_id: str) -> None:
    """What a crash does to the run's liveness lock: the kernel drops it."""
    lock, _ = backend._locks.pop(run_id)
    lock.release()


@pytest.fixture
def backend(pylib: Repo) -> WorktreeBackend:
    return WorktreeBackend(pylib, WorktreeConfig(confinement="none", limits="none"))


def test_crashed_run_is_collected_unmerged_work_kept(backend: WorktreeBackend) -> None:
    repo = backend.repo
    merged = backend.prepare(make_spec(repo, "true", run_id="crashed", task_id="merged"))
    work = backend.prepare(make_spec(repo, "true", run_id="crashed", task_id="work"))
    repos.write_files(work.worktree, {"w.txt": "work\n"})
    sha = repo.commit_all(work.worktree, "unmerged work")
    crash(backend, "crashed")
    report = gc(repo)
    assert not merged.worktree.exists() and not work.worktree.exists()
    assert repo.try_rev_parse("forkyard/crashed/merged") is None  # at base: nothing lost
    assert repo.rev_parse("forkyard/crashed/work") == sha
    assert report.branches_kept == [{"branch": "forkyard/crashed/work", "sha": sha,
                                     "reason": "unmerged work (run abandoned); merge it or "
                                               "delete it yourself"}]
    assert [w["worktree"] for w in repo.worktrees()] == [str(repo.path)]
    pruned = gc(repo, prune_unmerged=True)
    assert pruned.branches_deleted[0]["sha"] == sha
    assert repo.try_rev_parse("forkyard/crashed/work") is None


def test_a_sandbox_half_made_by_a_crashed_run_is_collected(pylib: Repo, tmp_path: Path) -> None:
    # A crash between registering an overlay sandbox and mounting it: the admin dir is
    # locked ("initializing") and its .git never appeared; gc must still clear it, or the
    # branch stays checked out there and cannot be deleted.
    spec = make_spec(pylib, "true", run_id="halfmade", task_id="t")
    place = places.worktree_path(pylib.forkyard_dir, "halfmade", "t")
    place.mkdir(parents=True)
    (tmp_path / "upper").mkdir()
    admin = pylib.worktree_register(place, spec.branch, spec.base, tmp_path / "upper" / ".git")
    gc(pylib)
    assert not admin.exists() and not place.exists()
    assert [w["worktree"] for w in pylib.worktrees()] == [str(pylib.path)]
    assert pylib.try_rev_parse(f"refs/heads/{spec.branch}") is None  # at base: removed


def test_branch_locks_of_a_crashed_run_are_broken(backend: WorktreeBackend) -> None:
    repo = backend.repo
    sb = backend.prepare(make_spec(repo, "true", run_id="locked", task_id="t"))
    lock = repo.common_dir / "refs" / "heads" / "forkyard" / "locked" / "t.lock"
    lock.write_text(sb.spec.base + "\n")  # killed in the middle of moving the branch
    crash(backend, "locked")
    report = gc(repo)
    assert not lock.exists() and not report.errors
    assert repo.try_rev_parse("forkyard/locked/t") is None  # at base: removed


def test_live_run_is_left_alone(backend: WorktreeBackend) -> None:
    repo = backend.repo
    sb = backend.prepare(make_spec(repo, "true", run_id="alive", task_id="t"))
    try:
        report = gc(repo)
        assert report.live_runs == ["alive"] and sb.worktree.is_dir()
        assert repo.try_rev_parse("forkyard/alive/t") is not None
    finally:
        backend.cleanup(sb)


def test_leftover_cgroup_and_its_processes_are_removed(pylib: Repo) -> None:
    require(has_cgroups(), "writable cgroups")
    hier = cgroups.detect()
    scope = cgroups.repo_scope(pylib.common_dir)
    group = cgroups.Cgroup.create(hier, "ghost", "t", Limits(memory_mb=64, pids=16), scope=scope)
    other = cgroups.Cgroup.create(hier, "ghost", "t", Limits(), scope="another-repo")
    shim = [sys.executable, "-I", "-S", str(limits.__file__).replace("limits.py", "shim.py"),
            *limits.cgroup_args(group), "--", "sleep", "300"]
    orphan = spawn(shim)
    for _ in range(100):
        if group.pids():
            break
        time.sleep(0.02)
    assert group.pids()
    try:
        report = gc(pylib)
        assert report.cgroups_removed == ["ghost/t"]
        assert orphan.wait(timeout=10) != 0
        assert not any(d.exists() for d in group.dirs.values())
        assert all(d.exists() for d in other.dirs.values()), "another repository's group"
    finally:
        other.remove()


def test_gc_command_json(backend: WorktreeBackend, capsys: pytest.CaptureFixture[str]) -> None:
    backend.prepare(make_spec(backend.repo, "true", run_id="old", task_id="t"))
    crash(backend, "old")
    assert gc_command(backend.repo.path, as_json=True) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["branches_deleted"][0]["branch"] == "forkyard/old/t"
    assert len(doc["worktrees_removed"]) == 1
    assert gc_command(backend.repo.path) == 0
    assert "nothing to collect" in capsys.readouterr().err


def test_gc_tells_merged_work_from_branches_never_committed_to(webapp: Repo) -> None:
    from forkyard.run.options import RunOptions
    from forkyard.run.workflow import run_workflow
    from planner import TaskFile

    tf = TaskFile.model_validate({"tasks": [
        {"id": "work", "command": "echo w > w.txt"}, {"id": "idle", "command": "true"}]})
    res = run_workflow(webapp, tf, RunOptions(agents=2, use_history=False))
    assert res.outcome == "succeeded"
    deleted = {d["branch"].rsplit("/", 1)[1]: d["reason"] for d in gc(webapp).branches_deleted}
    assert deleted == {"work": "merged", "idle": "no work: never committed to"}
    # Attempt refs stay, unless unmerged work is pruned on request.
    ref = res.result("work").attempts[0].ref
    assert ref and webapp.try_rev_parse(ref) == res.result("work").commit
    pruned = gc(webapp, prune_unmerged=True).branches_deleted
    assert ref in {d["branch"] for d in pruned} and webapp.try_rev_parse(ref) is None


def test_gc_removes_the_proxy_sockets_of_a_killed_run_and_keeps_live_ones(pylib: Repo) -> None:
    import signal

    from sandbox.network.proxy import NetworkProxy

    code = ("import sys, time\nfrom sandbox.network.proxy import NetworkProxy\n"
            "p = NetworkProxy(); p.open('t', ['example.com'])\n"
            "print(p._root, flush=True); time.sleep(60)\n")
    proc = spawn([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    assert proc.stdout is not None
    dead = Path(proc.stdout.readline().decode().strip())
    assert (dead / "s0").is_dir()  # the killed run's listener directory
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    live = NetworkProxy()
    try:
        report = gc(pylib)
        assert str(dead) in report.tmp_removed and not dead.exists()
        assert live._root.is_dir()  # this process's own proxy is left alone
    finally:
        live.stop()
