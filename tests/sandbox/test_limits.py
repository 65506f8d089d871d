"""Limits: cgroup layout detection (from text), and real enforcement on this host."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gitproc.git import Repo
from planner.tasks import Limits
from sandbox import cgroups, limits
from sandbox.backends.worktree import WorktreeBackend, WorktreeConfig
from tests.conftest import require
from tests.sandbox.conftest import (
    FAST,
    has_bwrap,
    has_cgroups,
    has_landlock,
    make_spec,
    processes_with_arg,
)

V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTS = textwrap.dedent("""\
    32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
    35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
    37 31 0:34 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
    39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
""")
HYBRID_MOUNTS = V1_MOUNTS + "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"


def test_mounts_parse_v1_v2_and_hybrid() -> None:
    v1, v2 = cgroups._mounts(HYBRID_MOUNTS)
    assert v1["cpu"][0] == v1["cpuacct"][0] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert set(v1) == {"cpu", "cpuacct", "memory", "freezer", "pids"}
    assert v2 == (Path("/sys/fs/cgroup/unified"), "/")
    assert cgroups._mounts(V2_MOUNTS) == ({}, (Path("/sys/fs/cgroup"), "/"))
    own1, own2 = cgroups._own_paths("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/user.slice/x.scope\n")
    assert own1 == {"memory": "/a/b", "cpu": "/", "cpuacct": "/"} and own2 == "/user.slice/x.scope"


def test_no_cgroup_mounts_is_none() -> None:
    hier = cgroups.detect(mountinfo="22 1 0:21 / /proc rw - proc proc rw\n", proc_cgroup="0::/\n")
    assert hier.layout == "none" and hier.enforced_by == "none"


def test_this_host_layout_is_detected() -> None:
    require(has_cgroups(), "writable cgroups")
    hier = cgroups.detect()
    assert hier.enforced_by in ("cgroup-v2", "cgroup-v1", "cgroup-hybrid")
    if hier.layout == "hybrid":
        assert hier.unified is not None and {"memory", "cpu", "pids"} <= hier.v1.keys()


def test_cgroup_created_limited_and_removed() -> None:
    require(has_cgroups(), "writable cgroups")
    hier = cgroups.detect()
    group = cgroups.Cgroup.create(hier, "tlimits", "g1", Limits(memory_mb=64, cpus=0.5, pids=20))
    try:
        if hier.layout == "v2":
            d = group.dirs["unified"]
            assert (d / "memory.max").read_text().strip() == str(64 << 20)
            assert (d / "cpu.max").read_text().split() == ["50000", "100000"]
            assert (d / "pids.max").read_text().strip() == "20"
        else:
            assert (group.dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
            assert (group.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert (group.dirs["pids"] / "pids.max").read_text().strip() == "20"
    finally:
        group.remove()
    assert not any(d.exists() for d in group.dirs.values())


@pytest.fixture
def limited(pylib: Repo) -> WorktreeBackend:
    require(has_cgroups(), "writable cgroups")
    require(has_bwrap(), "bubblewrap")
    return WorktreeBackend(pylib, WorktreeConfig(grace_s=0.3))


def test_fork_bomb_is_held_by_pids(limited: WorktreeBackend) -> None:
    # Forks sleepers until fork fails; prints how many it got.
    bomb = ("python3 -c \"import os, time\nn = 0\ntry:\n    while n < 500:\n"
            "        if os.fork() == 0:\n            time.sleep(30); os._exit(0)\n        n += 1\n"
            "except OSError:\n    pass\nprint('forked', n)\"")
    r = limited.run(make_spec(limited.repo, bomb, limits=FAST.model_copy(update={"pids": 32})))
    forked = int(r.log_tail.split("forked")[-1].split()[0])
    assert forked < 32, r.log_tail
    assert r.enforced_by.startswith("cgroup")


def test_cpu_spin_is_held_to_its_quota(limited: WorktreeBackend) -> None:
    # Spin for 2 s of wall time; with 0.2 CPUs the process gets about 0.4 s of CPU.
    spin = ("python3 -c \"import os, time\nend = time.monotonic() + 2\n"
            "while time.monotonic() < end: pass\nt = os.times()\nprint('cpu', t.user + t.system)\"")
    r = limited.run(make_spec(limited.repo, spin, limits=FAST.model_copy(update={"cpus": 0.2})))
    cpu = float(r.log_tail.split("cpu")[-1].split()[0])
    assert cpu < 0.8, f"used {cpu:.2f}s of CPU in 2s wall at a 0.2 CPU quota"


def test_everything_left_running_dies_with_the_agent(limited: WorktreeBackend, unique_marker: str) -> None:
    # The agent exits at once but leaves a daemon behind: no orphans either way.
    r = limited.run(make_spec(limited.repo, f"(setsid sleep {unique_marker} &); echo bye"))
    assert r.status == "succeeded"
    assert processes_with_arg(unique_marker) == []


def test_rlimit_fallback_is_recorded_and_kills_by_token(pylib: Repo, unique_marker: str) -> None:
    backend = WorktreeBackend(pylib, WorktreeConfig(limits="rlimit", confinement="none",
                                                    grace_s=0.3))
    cmd = f"(setsid sleep {unique_marker} &); sleep {unique_marker}"
    s = make_spec(pylib, cmd, limits=FAST.model_copy(update={"timeout_s": 1.0}), confine=False)
    r = backend.run(s)
    assert (r.status, r.enforced_by, r.confinement) == ("timed_out", "rlimit", "none")
    assert "rlimits only" in r.message
    assert processes_with_arg(unique_marker) == []


def test_rlimit_args() -> None:
    args = limits.rlimit_args(Limits(memory_mb=100, cpus=0.5, pids=10, timeout_s=60))
    assert args == ("--rlimit", f"as={100 << 20}", "--rlimit", "nproc=10", "--rlimit", "cpu=30",
                    "--rlimit", "core=0")


def test_cgroups_are_gone_after_cleanup(limited: WorktreeBackend) -> None:
    s = make_spec(limited.repo, "true")
    r = limited.run(s)
    assert r.status == "succeeded"
    hier = cgroups.detect()
    assert [g for g in cgroups.walk_groups(hier) if g[0].endswith(s.run_id)] == []


def test_v1_layout_freezer_kill_end_to_end(pylib: Repo, unique_marker: str) -> None:
    # This host may be hybrid or v2; drive the pure-v1 path (freezer + SIGKILL, no
    # cgroup.kill) on the v1 controllers it has, when it has them.
    require(has_cgroups(), "writable cgroups")
    hier = cgroups.detect()
    require(hier.layout in ("v1", "hybrid") and "freezer" in hier.v1, "cgroup v1 with freezer")
    # Landlock only: no pid namespace whose end would kill the tree for us.
    require(has_landlock(), "Landlock")
    backend = WorktreeBackend(pylib, WorktreeConfig(grace_s=0.2, confinement="landlock"))
    backend._hier = cgroups.Hierarchies("v1", hier.v1)
    cmd = f"(setsid sleep {unique_marker} &); (sleep {unique_marker} &); sleep {unique_marker}"
    r = backend.run(make_spec(pylib, cmd, limits=FAST.model_copy(update={"timeout_s": 1.0})))
    assert (r.status, r.enforced_by) == ("timed_out", "cgroup-v1")
    assert processes_with_arg(unique_marker) == []
    oom = backend.run(make_spec(pylib, "dd if=/dev/zero of=/dev/null bs=256M count=2",
                                limits=FAST.model_copy(update={"memory_mb": 64})))
    assert (oom.status, oom.enforced_by) == ("oom_killed", "cgroup-v1")


def test_agent_cannot_leave_its_cgroup(limited: WorktreeBackend) -> None:
    # /sys/fs/cgroup is read-only inside the sandbox: writing cgroup.procs fails.
    cmd = ("for f in /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/cgroup.procs; do "
           "echo $$ > $f 2>/dev/null && echo ESCAPED $f; done; exit 0")
    r = limited.run(make_spec(limited.repo, cmd))
    assert "ESCAPED" not in r.log_tail
