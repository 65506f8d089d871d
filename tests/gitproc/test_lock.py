"""The file lock as a block: held exclusively inside it, released after it, even when
the block raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitproc.lock import FileLock, held_elsewhere


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
