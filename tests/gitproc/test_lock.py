"""The file lock as a block: held exclusively inside it, released after it, even when
the block raises; a lock believed held only while the process that took it lives."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitproc.lock import FileLock, held_by_its_writer, held_elsewhere


def test_a_lock_used_as_a_block_is_held_inside_and_released_after(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "x.lock"
    lock = FileLock(path)
    with lock:
        assert lock.held
        assert not FileLock(path).acquire(wait=0)  # another holder is refused
    assert not lock.held
    assert not held_elsewhere(path)


def test_a_lock_used_as_a_block_is_released_when_the_block_raises(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "x.lock")
    with pytest.raises(RuntimeError), lock:
        raise RuntimeError("inside")
    assert not lock.held
    assert FileLock(tmp_path / "x.lock").acquire(wait=0)


def _holder_then_child(path: Path, child_holds_s: float) -> int:
    """A process that takes ``path`` (its pid written in), forks a child sharing the lock
    that keeps it ``child_holds_s`` without exec'ing, and dies: its pid."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder
        try:
            FileLock(path).acquire(write_pid=True)
            if os.fork() == 0:  # its child, as one not yet at its exec
                time.sleep(child_holds_s)
                os._exit(0)
            os.write(ready_w, b"x")
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    os.waitpid(pid, 0)  # the holder is gone, its child still holds the lock
    return pid


def test_a_lock_outliving_its_holder_in_a_child_is_not_believed_once_released(
        tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    _holder_then_child(path, child_holds_s=0.3)
    assert held_elsewhere(path)  # the dead holder's child does hold it
    assert not held_by_its_writer(path, settle_s=5.0)


def test_a_lock_held_on_past_the_settle_time_is_believed(tmp_path: Path) -> None:
    # A holder whose pid this process cannot see (another pid namespace) looks dead too.
    path = tmp_path / "run.lock"
    _holder_then_child(path, child_holds_s=3.0)
    assert held_by_its_writer(path, settle_s=0.3)
    with FileLock(path):  # (waits for the child to end)
        pass


def test_a_live_holder_is_believed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    proc = subprocess.Popen([sys.executable, "-c", (
        f"import sys, time; sys.path.insert(0, {str(Path(__file__).parents[2])!r}); "
        "from gitproc.lock import FileLock; "
        f"FileLock(__import__('pathlib').Path({str(path)!r})).acquire(write_pid=True); "
        "print('held', flush=True); time.sleep(30)")], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
        assert held_by_its_writer(path, settle_s=0.0)
    finally:
        proc.kill()
        proc.wait()
    assert not held_by_its_writer(path)
