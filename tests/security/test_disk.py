"""Disk attacks: an agent filling the host's disk.  With ``limits.disk_mb`` a sandbox's
changes, temp dir, private home and git objects live on a file system of that size (``sandbox/disk.py``):
writes beyond it fail with ENOSPC inside the agent and the result says so."""

from __future__ import annotations

import os

import pytest

from forkyard.journal.events import RunPaths, read_events
from gitproc.git import Repo
from sandbox import places
from tests.conftest import require
from tests.security.harness import run_tasks

# 48 MiB, written in 1 MiB blocks; prints dd's verdict.
FILL = "dd if=/dev/zero of={where} bs=1M count=48 2>&1"
WHERE = {
    "worktree": "big.bin",                              # the overlay's upper layer
    "tmpdir": "$TMPDIR/big.bin",
    "tmp": "/tmp/big.bin",                              # bubblewrap's /tmp is the temp dir
    "home": "$HOME/big.bin",                            # the agent's private home
}


def message(repo: Repo, run_id: str, task: str) -> str:
    finished = [e for e in read_events(RunPaths.of(repo, run_id).events)
                if e.type == "task_finished" and e.task == task]
    return str(finished[-1].get("message", ""))


@pytest.fixture(autouse=True)
def _root() -> None:
    require(os.geteuid() == 0, "root (loop-mounted disk limits)")


@pytest.mark.parametrize("where", ["worktree", "tmpdir", "tmp", "home"])
def test_writes_beyond_disk_mb_fail_with_enospc(pylib: Repo, where: str) -> None:
    cmd = FILL.format(where=WHERE[where])
    # Control: without a disk limit the same write completes.
    cmd += "; rm -f big.bin $TMPDIR/big.bin $HOME/big.bin"
    ctl = run_tasks(pylib, {"id": "a", "command": cmd})
    assert "50331648 bytes" in ctl.result("a").log_tail
    res = run_tasks(pylib, {"id": "a", "command": cmd},
                    limits={"disk_mb": 24})
    tail = res.result("a").log_tail
    assert "No space left on device" in tail, tail
    assert "50331648 bytes" not in tail


def test_git_objects_count_against_the_limit(pylib: Repo) -> None:
    cmd = ("head -c 40000000 /dev/urandom > $TMPDIR/r.bin 2>/dev/null; "
           "git hash-object -w $TMPDIR/r.bin >/dev/null 2>$TMPDIR/err; echo rc=$?; cat $TMPDIR/err | tail -1")
    res = run_tasks(pylib, {"id": "a", "command": cmd}, limits={"disk_mb": 48})
    tail = res.result("a").log_tail
    assert "rc=0" not in tail, tail  # file + object (random data: no compression) > 48 MiB


def test_the_result_says_the_limit_was_reached_and_keeps_the_work(pylib: Repo) -> None:
    res = run_tasks(pylib, {"id": "a", "command": "echo kept > kept.txt; "
                                                 "dd if=/dev/zero of=big.bin bs=1M count=64"},
                    limits={"disk_mb": 24})
    assert res.result("a").status == "failed"
    # forkyard still committed what the full sandbox left (its reserve): on its branch.
    commit = res.result("a").commit
    assert commit is not None and pylib.out("show", f"{commit}:kept.txt") == "kept"
    msg = message(pylib, res.run_id, "a")
    assert "No space left on device" in res.result("a").log_tail
    assert "wrote up to the 24 MiB disk limit" in msg


def test_no_disk_is_left_behind(pylib: Repo) -> None:
    res = run_tasks(pylib, {"id": "a", "command": "echo hi > a.txt"}, limits={"disk_mb": 32})
    assert res.result("a").status == "succeeded" and pylib.out("show", "main:a.txt") == "hi"
    tmp = pylib.forkyard_dir / "tmp" / res.run_id
    assert not tmp.exists() or not any(tmp.iterdir())
    # The image and its mounts were in the sandbox's own directory (sandbox/disk.py).
    own = places.place(pylib.forkyard_dir, res.run_id, "a")
    assert not own.root.exists()
    with open("/proc/self/mountinfo") as f:
        table = f.read()
    assert str(pylib.forkyard_dir / "tmp") + f"/{res.run_id}" not in table
    assert str(places.run_dir(pylib.forkyard_dir, res.run_id)) not in table

