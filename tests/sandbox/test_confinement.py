"""Attacks from inside a worktree sandbox that must fail, under each confinement.

Each test runs a small shell script as the agent; the script reports what it managed to
do, and the test checks the host afterwards (the script's own word is not trusted).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitproc.git import Repo
from gitproc.process import spawn
from planner.tasks import Limits
from sandbox import places
from sandbox.backends.base import ExecResult
from sandbox.backends.worktree import WorktreeBackend, WorktreeConfig
from sandbox.errors import ConfinementError
from tests.sandbox.conftest import FAST, make_spec, require_confinement

MODES = os.environ.get("FORKYARD_TEST_CONFINEMENT", "bwrap,landlock,bwrap+landlock").split(",")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    require_confinement(request.param)
    return str(request.param)


def run_in(repo: Repo, mode: str, command: str, limits: Limits = FAST) -> ExecResult:
    backend = WorktreeBackend(repo, WorktreeConfig(confinement=mode, grace_s=0.3))  # type: ignore[arg-type]
    result = backend.run(make_spec(repo, command, limits=limits))
    assert result.confinement == mode
    return result


def test_writes_outside_the_worktree_fail(pylib: Repo, mode: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("original\n")
    main_file = pylib.path / "README.md"
    before = main_file.read_text()
    script = f"""
        echo pwned > {outside}/abs.txt
        echo pwned > ../../../../../README.md
        echo pwned > {pylib.path}/README.md
        ln -s {victim} link && echo pwned > link
        ln {victim} hard && echo pwned >> hard
        echo moved > mine.txt && mv mine.txt {outside}/moved.txt
        mv {victim} ./stolen.txt
        cp /bin/true /usr/local/bin/planted
        exit 0
    """
    r = run_in(pylib, mode, script)
    assert r.status == "succeeded"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert victim.read_text() == "original\n"
    assert main_file.read_text() == before
    assert not Path("/usr/local/bin/planted").exists()


def test_git_control_files_are_read_only(pylib: Repo, mode: str) -> None:
    hooks = pylib.common_dir / "hooks"
    config = (pylib.common_dir / "config").read_text()
    script = """
        common=$(git rev-parse --git-common-dir)
        gitdir=$(git rev-parse --git-dir)
        printf '#!/bin/sh\\ntouch /tmp/hooked\\n' > "$common/hooks/post-commit"
        git config core.hooksPath /tmp
        git config --worktree core.bare true
        echo 'gitdir: /elsewhere' > .git
        echo 'ref: refs/heads/main' > "$gitdir/HEAD"
        echo /tmp > "$gitdir/commondir"
        echo '* filter=evil' > "$common/info/attributes"
        echo change > change.txt
        exit 0
    """
    r = run_in(pylib, mode, script)
    assert not (hooks / "post-commit").exists()
    assert (pylib.common_dir / "config").read_text() == config
    assert not (pylib.common_dir / "info" / "attributes").exists()
    # Our commit of the leftovers still lands on the sandbox branch, not on main.
    assert r.commit is not None and pylib.rev_parse("main") != r.commit
    assert [f.path for f in r.files_modified] == ["change.txt"]


def test_a_commit_from_inside_works(pylib: Repo, mode: str) -> None:
    script = """
        echo one > one.txt && git add one.txt &&
        GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=a@x GIT_COMMITTER_NAME=agent \\
        GIT_COMMITTER_EMAIL=a@x git commit -qm 'agent commit' && echo two > two.txt
    """
    r = run_in(pylib, mode, script)
    assert r.status == "succeeded", r.log_tail
    log = pylib.out("log", "--format=%an %s", f"{r.commit}")
    assert log.splitlines()[:2] == ["forkyard forkyard: task", "agent agent commit"]
    assert {f.path for f in r.files_modified} == {"one.txt", "two.txt"}


def test_mount_mknod_unshare_fail(pylib: Repo, mode: str) -> None:
    script = """
        mount -t tmpfs none mathlib 2>/dev/null && echo MOUNTED
        mount -o remount,rw / 2>/dev/null && echo REMOUNTED
        mknod dev c 1 3 2>/dev/null && echo MKNOD
        unshare -m true 2>/dev/null && echo UNSHARED
        grep -q '^CapEff:.0000000000000000' /proc/self/status || echo HAS_CAPS
        exit 0
    """
    r = run_in(pylib, mode, script)
    for word in ("MOUNTED", "REMOUNTED", "MKNOD", "UNSHARED", "HAS_CAPS"):
        assert word not in r.log_tail
    if "bwrap" in mode:  # nested user namespaces are disabled too
        r2 = run_in(pylib, mode, "unshare -U true 2>/dev/null && echo USERNS; exit 0")
        assert "USERNS" not in r2.log_tail


def test_host_processes_cannot_be_signalled(pylib: Repo, mode: str, unique_marker: str) -> None:
    victim = spawn(["sleep", unique_marker])
    try:
        r = run_in(pylib, mode, f"kill -9 {victim.pid} 2>/dev/null && echo KILLED; "
                                f"pkill -9 -f 'sleep {unique_marker}'; exit 0")
        assert "KILLED" not in r.log_tail
        assert victim.poll() is None, "the host process was killed from inside the sandbox"
    finally:
        victim.kill()
        victim.wait()


@pytest.fixture
def listener() -> Iterator[tuple[int, threading.Event]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    hit = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            hit.set()
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield server.getsockname()[1], hit
    stop.set()
    t.join()
    server.close()


PROBE = ("python3 -c \"import socket,sys; socket.create_connection(('127.0.0.1', {port}), "
         "timeout=2); print('CONNECTED')\" 2>/dev/null; exit 0")


def test_network_is_off_when_disallowed(pylib: Repo, mode: str, listener: tuple[int, threading.Event]) -> None:
    port, hit = listener
    r = run_in(pylib, mode, PROBE.format(port=port))
    assert "CONNECTED" not in r.log_tail and not hit.is_set()
    allowed = run_in(pylib, mode, PROBE.format(port=port), FAST.model_copy(update={"network": True}))
    assert "CONNECTED" in allowed.log_tail and hit.is_set()


def test_unconfined_only_by_explicit_opt_out(pylib: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox import confine

    monkeypatch.setattr(confine, "bwrap_flags", lambda: None)
    monkeypatch.setattr(confine, "landlock_abi", lambda: 0)
    backend = WorktreeBackend(pylib, WorktreeConfig(grace_s=0.3))
    with pytest.raises(ConfinementError):
        backend.run(make_spec(pylib, "true"))
    r = backend.run(make_spec(pylib, "true", confine=False))
    assert r.status == "succeeded" and r.confinement == "none"


@pytest.mark.parametrize("bwrap_mode", ["bwrap", "bwrap+landlock"])
def test_docker_socket_is_hidden(pylib: Repo, bwrap_mode: str) -> None:
    # Only bubblewrap can hide /run; Landlock alone cannot (documented in docs/sandbox.md).
    require_confinement(bwrap_mode)
    mode = bwrap_mode
    sock = next((p for p in ("/run/docker.sock", "/var/run/docker.sock") if os.path.exists(p)), None)
    r = run_in(pylib, mode, "ls /run /var/run 2>/dev/null | grep -c docker.sock; exit 0")
    assert r.log_tail.strip().splitlines()[-1] == "0", (sock, r.log_tail)



def test_an_interpreter_under_tmp_stays_visible_behind_the_new_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clone with its .venv under /tmp (CI does this) must not vanish when bubblewrap
    # mounts the sandbox's temp dir over /tmp: the exec shim runs from that venv.
    import sys

    from sandbox.confine import GitPaths, bwrap_argv

    venv = tmp_path / "clone" / ".venv"
    venv.mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(venv))
    git = GitPaths(common_dir=tmp_path / ".git", gitdir=tmp_path / ".git", rw=(), ro=())
    argv = bwrap_argv(worktree=tmp_path / "wt", tmpdir=tmp_path / "t", git=git, network=False)
    tmp_mount = argv.index("/tmp")
    binds = [i for i, a in enumerate(argv) if a == str(venv.resolve())]
    assert binds and argv[binds[0] - 1] == "--ro-bind" and binds[0] > tmp_mount


def test_the_shared_object_store_cannot_be_destroyed(pylib: Repo, mode: str) -> None:
    # The object store holds the whole repository's history: an agent that could delete
    # or overwrite it would take every branch down with it, not just its own.
    history = pylib.out("log", "--format=%H", "main")
    script = """
        objects="$(git rev-parse --path-format=absolute --git-common-dir)/objects"
        victim=$(find "$objects" -type f -path '*/[0-9a-f][0-9a-f]/*' | head -n 1)
        [ -n "$victim" ] || victim=$(find "$objects/pack" -type f -name '*.pack' | head -n 1)
        chmod u+w "$victim" 2>/dev/null; echo garbage > "$victim" 2>/dev/null
        find "$objects" -type f -exec chmod u+w {} + 2>/dev/null
        find "$objects" -type f -exec rm -f {} + 2>/dev/null
        rm -rf "$objects"/* "$objects"/pack/* 2>/dev/null
        exit 0
    """
    run_in(pylib, mode, script)
    pylib.git("fsck", "--full", "--no-dangling")
    assert pylib.out("log", "--format=%H", "main") == history
    pylib.git("rev-list", "--objects", "--all")


def test_an_agent_commits_logs_and_diffs_itself(pylib: Repo, mode: str) -> None:
    script = """
        set -e
        export GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=a@x GIT_COMMITTER_NAME=agent GIT_COMMITTER_EMAIL=a@x
        echo one > one.txt && git add one.txt && git commit -qm first
        echo two > two.txt && git add two.txt && git commit -qm second
        echo more >> one.txt && git commit -qam third
        git log --format=%s -n 3 | tr '\\n' ' '; echo
        git diff --stat HEAD~3 | tail -n 1
        git show HEAD~3:README.md > /dev/null && echo BASE_READABLE
    """
    r = run_in(pylib, mode, script)
    assert r.status == "succeeded", r.log_tail
    assert "third second first" in r.log_tail and "BASE_READABLE" in r.log_tail
    assert "2 files changed" in r.log_tail
    assert r.commit is not None
    assert pylib.out("log", "--format=%s", "-n", "3", r.commit).splitlines() == [
        "third", "second", "first"]
    assert {f.path for f in r.files_modified} == {"one.txt", "two.txt"}
    pylib.git("fsck", "--full", "--no-dangling")
    # Nothing of the sandbox's is left behind once it is cleaned up.
    assert not list(places.sandbox_root(pylib.forkyard_dir).glob("*/*/objects"))
    assert not list((pylib.forkyard_dir / "tmp").glob("*/*"))


@pytest.mark.parametrize("ends", ["exits", "times_out"])
def test_a_cli_scratch_is_removed_by_the_confined_commit_step(pylib: Repo, mode: str,
                                                              ends: str) -> None:
    # aider's repo-map cache: what its CLI leaves in the worktree is not the agent's work.
    # Timed out, the commit step runs as a phase of its own and removes it all the same.
    script = ("mkdir -p .aider.tags.cache.v4 && echo db > .aider.tags.cache.v4/cache.db && "
              "echo w > work.txt" + ("; sleep 60" if ends == "times_out" else ""))
    limits = FAST.model_copy(update={"timeout_s": 2 if ends == "times_out" else 30})
    backend = WorktreeBackend(pylib, WorktreeConfig(confinement=mode, grace_s=0.3))  # type: ignore[arg-type]
    r = backend.run(make_spec(pylib, script, limits=limits, preset="aider"))
    assert r.status == ("succeeded" if ends == "exits" else "timed_out"), r.message
    assert [f.path for f in r.files_modified] == ["work.txt"]
    assert pylib.out("ls-tree", "-r", "--name-only", str(r.commit)).count(".aider") == 0
    # Without the preset the same files are all the agent's: committed (the test is real).
    other = run_in(pylib, mode, script, limits)
    assert {f.path for f in other.files_modified} == {"work.txt", ".aider.tags.cache.v4/cache.db"}


@pytest.mark.parametrize("damage", ["delete", "forge"])
def test_a_branch_with_missing_or_forged_objects_fails(pylib: Repo, mode: str, damage: str) -> None:
    # The agent commits, then deletes (or replaces with other content) one of its own new
    # objects: the branch must not land pointing at objects the repository lacks.
    base = pylib.rev_parse("HEAD")
    script = f"""
        set -e
        export GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=a@x GIT_COMMITTER_NAME=agent GIT_COMMITTER_EMAIL=a@x
        echo secret-{damage} > new.txt && git add new.txt && git commit -qm mine
        blob=$(git rev-parse HEAD:new.txt)
        git rm -q new.txt && git commit -qm gone  # nothing left for our `git add` to re-hash
        file="$GIT_OBJECT_DIRECTORY/$(echo $blob | cut -c1-2)/$(echo $blob | cut -c3-)"
        if [ {damage} = forge ]; then
            other=$(echo forged | git hash-object -w --stdin)
            cp -f "$GIT_OBJECT_DIRECTORY/$(echo $other | cut -c1-2)/$(echo $other | cut -c3-)" "$file"
        else
            rm -f "$file"
        fi
    """
    r = run_in(pylib, mode, script)
    assert r.status == "failed" and r.commit is None, (r.status, r.log_tail)
    assert "missing objects or has corrupt ones" in r.message
    assert pylib.rev_parse("HEAD") == base
    branches = pylib.branches("forkyard/**")
    assert set(branches.values()) == {base}, branches
    # The branch's reflog may still name the agent's broken commits (the agent can write
    # its reflog anyway); everything else is whole.
    pylib.git("fsck", "--full", "--no-dangling", "--no-reflogs")


def test_git_paths_never_include_the_shared_object_store(pylib: Repo, tmp_path: Path) -> None:
    from sandbox.confine import GitPaths

    shared = pylib.common_dir / "objects"
    paths = GitPaths.of(pylib.common_dir, pylib.path, "main", tmp_path / "objects")
    assert shared not in paths.rw and tmp_path / "objects" in paths.rw
    assert shared not in GitPaths.of(pylib.common_dir, pylib.path, "main").rw
    with pytest.raises(ValueError):
        GitPaths.of(pylib.common_dir, pylib.path, "main", shared / "pack")


def test_a_dangling_branch_left_by_a_crash_is_replaced(pylib: Repo) -> None:
    # forkyard dying while an agent runs can leave the branch on a commit that only the
    # (never imported) private object directory had: a new sandbox replaces it.
    spec = make_spec(pylib, "echo fresh > fresh.txt")
    ref = pylib.common_dir / "refs" / "heads" / spec.branch
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text("1234567890" * 4 + "\n")
    r = WorktreeBackend(pylib, WorktreeConfig(confinement="none", grace_s=0.3)).run(
        make_spec(pylib, "echo fresh > fresh.txt", run_id=spec.run_id, confine=False))
    assert r.status == "succeeded" and r.commit is not None, r.message
    assert pylib.rev_parse(f"refs/heads/{spec.branch}") == r.commit
    pylib.git("fsck", "--full", "--no-dangling")


def test_a_sandbox_a_crash_left_half_made_is_discarded_for_a_fresh_start(
        pylib: Repo, tmp_path: Path) -> None:
    # Killed between registering an overlay sandbox's worktree and mounting it: the admin
    # dir stays locked ("initializing"), its `.git` file is only in the never-mounted
    # upper layer, so `git worktree remove` refuses, `git worktree prune` leaves it alone
    # and `git branch -D` refuses a branch checked out there.  A fresh start of the task
    # must clear all of it.
    from forkyard.run.sandboxes import discard_branch

    spec = make_spec(pylib, "echo fresh > fresh.txt")
    place = places.worktree_path(pylib.forkyard_dir, spec.run_id, spec.task_id)
    place.mkdir(parents=True)
    (tmp_path / "upper").mkdir()
    admin = pylib.worktree_register(place, spec.branch, spec.base, tmp_path / "upper" / ".git")
    assert (admin / "locked").exists()
    assert pylib.git("worktree", "remove", "--force", "--force", str(place),
                     check=False).returncode != 0
    assert pylib.git("branch", "-D", spec.branch, check=False).returncode != 0
    discard_branch(pylib, spec.branch)
    assert not admin.exists()
    assert pylib.try_rev_parse(f"refs/heads/{spec.branch}") is None
    r = WorktreeBackend(pylib, WorktreeConfig(confinement="none")).run(
        make_spec(pylib, "echo fresh > fresh.txt", run_id=spec.run_id, confine=False))
    assert r.status == "succeeded" and r.commit is not None, r.message


def test_a_branch_lock_a_crash_left_does_not_block_a_fresh_start(pylib: Repo) -> None:
    # Sandbox branches move in process: forkyard killed in the middle of a move leaves
    # the branch's lock file, which would make every later update of it fail.
    from forkyard.run.sandboxes import discard_branch

    spec = make_spec(pylib, "echo fresh > fresh.txt")
    pylib.update_ref(f"refs/heads/{spec.branch}", spec.base, None, "made", durable=False)
    lock = pylib.common_dir / "refs" / "heads" / f"{spec.branch}.lock"
    lock.write_text(spec.base + "\n")
    assert pylib.git("branch", "-D", spec.branch, check=False).returncode != 0
    discard_branch(pylib, spec.branch)
    assert not lock.exists() and pylib.try_rev_parse(f"refs/heads/{spec.branch}") is None
    r = WorktreeBackend(pylib, WorktreeConfig(confinement="none")).run(
        make_spec(pylib, "echo fresh > fresh.txt", run_id=spec.run_id, confine=False))
    assert r.status == "succeeded" and r.commit is not None, r.message


def test_the_commit_step_runs_without_network_and_under_bwrap_without_landlock() -> None:
    from sandbox import confine
    from sandbox.backends.worktree.supervise import _Prepared, for_commit
    from sandbox.network import NetworkPolicy

    def prep(conf: confine.Confinement) -> _Prepared:
        return _Prepared(conf, Path("/t"), Path("/o"), None, {}, None, 3, "tok",  # type: ignore[arg-type]
                         NetworkPolicy("allow", ("api.example.com",)), Path("/p"))

    both = for_commit(prep(confine.Confinement("bwrap+landlock", bwrap=True, landlock=True)))
    assert (both.conf.bwrap, both.conf.landlock) == (True, False)
    assert both.network.kind == "none" and both.proxy_dir is None and both.cpu_fd is None
    alone = for_commit(prep(confine.Confinement("landlock", landlock=True)))
    assert (alone.conf.bwrap, alone.conf.landlock) == (False, True)  # Landlock is all it has
