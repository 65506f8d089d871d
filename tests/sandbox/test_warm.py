"""Warm starts: an agent's process chain started ahead of its turn, waiting at a gate;
and sandboxes waiting for their turn following the target as it moves."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from forkyard.run.sandboxes import SandboxMaker
from gitproc.git import Repo
from gitproc.process import background_priority, can_raise_priority, pid_alive
from planner.tasks import Limits
from sandbox import shim
from sandbox.backends.base import Sandbox
from sandbox.backends.worktree import WorktreeBackend, WorktreeConfig
from tests.conftest import require
from tests.sandbox.conftest import (
    FAST,
    has_cgroups,
    make_spec,
    prepared,
    require_confinement,
)

SHIM = [sys.executable, "-I", "-S", shim.__file__]


def _gated(extra: list[str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    r, w = os.pipe()
    proc = subprocess.Popen([*SHIM, *(extra or []), "--gate", str(r), "--"], pass_fds=(r,),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(r)
    return proc, w


def test_shim_gate_runs_the_command_and_environment_it_is_given() -> None:
    proc, w = _gated()
    time.sleep(0.2)  # the shim is up and waiting: nothing has run yet
    assert proc.poll() is None
    os.write(w, shim.gate_payload(["/bin/sh", "-c", 'echo "$GREETING $0"', "world"],
                                  {"GREETING": "hello", "PATH": "/usr/bin:/bin"}))
    os.close(w)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out.decode().strip() == "hello world"


def test_shim_gate_closed_without_a_command_runs_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc, w = _gated()
    os.close(w)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == shim.EXIT_SHIM_FAILED
    assert out == b""


def test_shim_gate_payload_keeps_odd_bytes() -> None:
    argv = ["/bin/printf", "%s|%s", "a=b c", "tab\there"]
    proc, w = _gated()
    os.write(w, shim.gate_payload(argv, {"X": "1=2"}))
    os.close(w)
    out, _ = proc.communicate(timeout=10)
    assert out == b"a=b c|tab\there"


# -- the worktree backend ----------------------------------------------------------------


@pytest.fixture
def confined(pylib: Repo) -> WorktreeBackend:
    """The defaults: bwrap + Landlock, cgroup limits."""
    require_confinement("bwrap+landlock")
    require(has_cgroups(), "a writable cgroup hierarchy")
    return WorktreeBackend(pylib, WorktreeConfig(grace_s=0.3))


def _new_tip(repo: Repo, name: str = "landed.txt", text: str = "landed meanwhile\n") -> str:
    """A commit on top of HEAD, as a batch landing while a sandbox waits would make."""
    blob = repo.git("hash-object", "-w", "--stdin", input=text.encode()).out.strip()
    tree = repo.git("mktree", input=f"100644 blob {blob}\t{name}\n".encode()).out.strip()
    merged = repo.out("rev-parse", "HEAD^{tree}")
    # HEAD's tree plus the file: read-tree into a scratch index, add, write.
    env = {"GIT_INDEX_FILE": str(repo.common_dir / f"scratch-{name}.index")}
    repo.git("read-tree", merged, env=env)
    repo.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", env=env)
    tree = repo.out("write-tree", env=env)
    os.unlink(env["GIT_INDEX_FILE"])
    return repo.out("commit-tree", tree, "-p", "HEAD", "-m", "landed", env={
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x"})


def _members(sandbox: Sandbox) -> set[int]:
    group = sandbox.state["warm"].prep.enf.cgroup  # type: ignore[attr-defined]
    return group.pids()


def _at_gate(sandbox: Sandbox, timeout: float = 10.0) -> set[int]:
    """Wait until the warm chain's shim blocks reading its gate; the chain's pids."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = _members(sandbox)
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    gated = b"--gate" in f.read().split(b"\0")
                with open(f"/proc/{pid}/wchan") as f:
                    if gated and "pipe" in f.read():
                        return pids
            except OSError:
                continue
        time.sleep(0.01)
    raise AssertionError("the warm chain never reached its gate")


def test_warm_start_runs_the_agent_at_its_new_base_confined(confined: WorktreeBackend) -> None:
    repo = confined.repo
    with prepared(confined) as sb:
        confined.warm(sb)
        warm = sb.state["warm"]
        assert len(_at_gate(sb)) >= 2  # the chain is up, in the task's cgroup, waiting
        assert warm.agent.proc.poll() is None  # type: ignore[attr-defined]
        tip = _new_tip(repo)
        sb.spec = replace(sb.spec, base=tip, command=(
            'echo "base=$FORKYARD_BASE"; cat landed.txt; '
            "(echo x > /etc/forkyard-escape) 2>/dev/null || echo denied; echo hi > out.txt"))
        lines: list[str] = []
        r = confined.execute(sb, on_line=lines.append)
        assert r.status == "succeeded", r.log_tail
        assert r.confinement == "bwrap+landlock" and r.enforced_by.startswith("cgroup")
        assert lines == [f"base={tip}", "landed meanwhile", "denied"]
        assert not os.path.exists("/etc/forkyard-escape")
        assert r.commit is not None
        assert repo.out("rev-parse", f"{r.commit}^") == tip
        assert [f.path for f in r.files_modified] == ["out.txt"]


def test_warm_start_keeps_the_cpu_limit_for_the_agent(confined: WorktreeBackend) -> None:
    # The quota is written by the shim at the gate, after the chain's own start-up.
    limits = Limits(memory_mb=256, cpus=0.25, pids=64, timeout_s=30, network=False)
    with prepared(confined, limits=limits) as sb:
        confined.warm(sb)
        group = sb.state["warm"].prep.enf.cgroup  # type: ignore[attr-defined]
        path, value = group.cpu_quota
        sb.spec = replace(sb.spec, command=f"cat {path}")
        r = confined.execute(sb)
        assert r.status == "succeeded", r.log_tail
        assert r.log_tail.split()[0] == value.split()[0]


def test_warm_chain_started_at_background_priority_runs_the_agent_at_ours(
        confined: WorktreeBackend) -> None:
    require(can_raise_priority(), "root (taking niceness back)")
    with prepared(confined) as sb:
        def warm_in_background() -> None:
            with background_priority():
                confined.warm(sb)

        t = threading.Thread(target=warm_in_background)
        t.start()
        t.join()
        assert all(os.getpriority(os.PRIO_PROCESS, p) > 0 for p in _at_gate(sb))
        ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        sb.spec = replace(sb.spec, command="cut -d' ' -f19 /proc/self/stat")
        r = confined.execute(sb)
        assert r.status == "succeeded", r.log_tail
        assert int(r.log_tail.strip()) == ours


def _weight_file(group: object) -> Path:
    dirs = group.dirs  # type: ignore[attr-defined]
    if group.hier.layout == "v2":  # type: ignore[attr-defined]
        return dirs["unified"] / "cpu.weight"
    return dirs["cpu"] / "cpu.shares"


def test_warm_chain_waits_with_a_background_cpu_weight_and_runs_with_an_ordinary_one(
        confined: WorktreeBackend) -> None:
    """The kernel weighs a cgroup as one entity whatever its processes' niceness: a
    chain waiting for its turn weighs as one background process; the agent, once its
    turn came, as an ordinary one; its commit step as a background one again."""
    require(has_cgroups(), "writable cgroups")
    with prepared(confined) as sb:
        confined.warm(sb)
        group = sb.state["warm"].prep.enf.cgroup  # type: ignore[attr-defined]
        weight = _weight_file(group)
        ordinary = 100 if weight.name == "cpu.weight" else 1024
        assert int(weight.read_text()) < ordinary // 4
        sb.spec = replace(sb.spec, command=f"cat {weight}")
        r = confined.execute(sb)
        assert r.status == "succeeded", r.log_tail
        assert int(r.log_tail.split()[0]) == ordinary  # read by the agent itself
        assert int(weight.read_text()) < ordinary // 4  # after: the commit step's


def test_cleanup_stops_a_warm_chain_whose_task_never_ran(confined: WorktreeBackend) -> None:
    repo = confined.repo
    sb = confined.prepare(make_spec(repo, "true"))
    confined.warm(sb)
    pids = _at_gate(sb)
    confined.cleanup(sb)
    assert "warm" not in sb.state
    assert not any(pid_alive(p) for p in pids)
    assert repo.try_rev_parse(f"refs/heads/{sb.branch}") is not None  # branches stay


def test_a_warm_chain_that_died_falls_back_to_a_cold_start(confined: WorktreeBackend) -> None:
    repo = confined.repo
    with prepared(confined) as sb:
        confined.warm(sb)
        warm = sb.state["warm"]
        _at_gate(sb)
        warm.prep.enf.cgroup.kill()  # type: ignore[attr-defined]
        warm.agent.proc.wait(timeout=10)  # type: ignore[attr-defined]
        sb.spec = replace(sb.spec, command="echo cold > out.txt")
        r = confined.execute(sb)
        assert r.status == "succeeded", r.log_tail
        assert repo.git("show", f"{r.commit}:out.txt").out == "cold\n"


# -- sandboxes waiting for their turn ------------------------------------------------------


def test_waiting_sandboxes_follow_the_target_and_start_there(pylib: Repo) -> None:
    backend = WorktreeBackend(pylib, WorktreeConfig(confinement="none", limits="none"))
    maker = SandboxMaker(pylib, backend, "tfollow", confine=False, setup_command=None,
                         copy_files=(), image=None, ahead=2)
    head = pylib.rev_parse("HEAD")
    spec = replace(make_spec(pylib, "cat landed.txt", run_id="tfollow", task_id="a",
                             limits=FAST, confine=False), base=head)
    maker.prefetch(spec, fresh=False)
    tip = _new_tip(pylib)
    maker.advance(tip)
    maker._pool.submit(lambda: None).result()  # the move has run
    sb = maker.take(replace(spec, base=tip), fresh=False)
    try:
        assert sb.state["at"] == tip  # moved while waiting: nothing left to do at start
        assert (sb.worktree / "landed.txt").read_text() == "landed meanwhile\n"
        assert pylib.rev_parse(f"refs/heads/{sb.branch}") == tip
        r = backend.execute(sb)
        assert r.status == "succeeded" and r.log_tail == "landed meanwhile"
    finally:
        backend.cleanup(sb)
        maker.close(keep=False)


def test_sandboxes_are_made_ahead_only_once_the_tasks_starting_are_under_way(
        pylib: Repo) -> None:
    """On two CPUs a sandbox made ahead while the run's first agents start delays them:
    making it waits until every task taken has its agent under way."""
    backend = WorktreeBackend(pylib, WorktreeConfig(confinement="none", limits="none"))
    maker = SandboxMaker(pylib, backend, "tahead", confine=False, setup_command=None,
                         copy_files=(), image=None, ahead=2)
    head = pylib.rev_parse("HEAD")
    first, second = (replace(make_spec(pylib, "true", run_id="tahead", task_id=t,
                                       limits=FAST, confine=False), base=head)
                     for t in ("first", "second"))
    sb = maker.take(first, fresh=False)  # "first" is starting
    try:
        maker.prefetch(second, fresh=False)
        time.sleep(0.4)
        assert not maker._pending["second"][0].done()  # held back while "first" starts
        r = backend.execute(sb, on_start=lambda: maker.starts.started("first"))
        assert r.status == "succeeded"
        maker._pending["second"][0].result(timeout=10)  # then made
    finally:
        backend.cleanup(sb)
        maker.close(keep=False)
