"""A forkyard process's sandboxes die with it, however it dies (sandbox/reaper.py).

The owner here is a small Python process that makes a sandbox's cgroup the way the
worktree backend does (``Cgroup.create``) and puts a process into it that nothing else
ties to its owner: a ``sleep`` in a session of its own, with no parent-death signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gitproc.process import pid_alive
from sandbox import cgroups
from tests.conftest import require
from tests.sandbox.conftest import has_cgroups, processes_with_arg

ROOT = Path(__file__).parents[2]

OWNER = """
import json, os, subprocess, sys
from planner.tasks import Limits
from sandbox import cgroups, reaper
group = cgroups.Cgroup.create(cgroups.detect(), "reaper-" + sys.argv[1], "t", Limits(pids=16))
sleep = subprocess.Popen(["sleep", sys.argv[1]], start_new_session=True)
for procs in group.procs_files():
    open(procs, "w").write(str(sleep.pid))
if sys.argv[2] == "remove":  # a normal end: the sandbox removed, then the process exits
    group.remove()
print(json.dumps({"sleep": sleep.pid, "reaper": reaper._reaper[0].pid,
                  "dirs": [str(d) for d in group.dirs.values()]}), flush=True)
if sys.argv[2] == "wait":
    sys.stdin.read()
"""


def _owner(marker: str, how: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER, marker, how], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_sandboxs_processes_die_when_forkyard_is_killed(unique_marker: str) -> None:
    require(has_cgroups(), "writable cgroups")
    owner, info = _owner(unique_marker, "wait")
    dirs = [Path(d) for d in info["dirs"]]  # type: ignore[union-attr]
    try:
        # The attack's set-up holds: the sleep runs, inside the group, in its own session.
        assert info["sleep"] in processes_with_arg(unique_marker)
        assert all(info["sleep"] in cgroups._read_pids(d) for d in dirs)
        assert os.getsid(info["sleep"]) != os.getsid(owner.pid)  # type: ignore[arg-type]
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert _gone(info["sleep"], 10), "the sandbox's process outlived its forkyard"  # type: ignore[arg-type]
        assert _gone(info["reaper"], 10)  # type: ignore[arg-type]
        assert not any(d.exists() for d in dirs)  # the emptied groups are removed too
    finally:
        for pid in processes_with_arg(unique_marker):
            os.kill(pid, signal.SIGKILL)
        cgroups.remove_dirs(dirs)


def test_after_a_normal_end_the_reaper_goes_and_kills_nothing(unique_marker: str) -> None:
    require(has_cgroups(), "writable cgroups")
    owner, info = _owner(unique_marker, "remove")
    assert owner.wait(10) == 0
    assert _gone(info["reaper"], 10)  # type: ignore[arg-type]
    assert not any(Path(d).exists() for d in info["dirs"])  # type: ignore[union-attr]
