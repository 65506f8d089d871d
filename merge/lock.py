"""One integrator at a time per repository: an ``fcntl`` lock under ``.git/forkyard``.

``flock`` locks die with their process, so a crashed integrator never leaves a stale
lock behind; the holder's pid is written into the file only to make the wait message
useful.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from merge.errors import MergeError

DEFAULT_TIMEOUT_S = float(os.environ.get("FORKYARD_LOCK_TIMEOUT", "120"))


class LockTimeoutError(MergeError, TimeoutError):
    """Another process held the integration lock for longer than we were willing to wait."""

    exit_code = 2

    def __init__(self, path: Path, timeout: float, holder: str) -> None:
        who = f" (held by pid {holder})" if holder else ""
        super().__init__(
            f"another forkyard process is integrating into this repository{who}; "
            f"gave up after {timeout:g}s waiting for {path}"
        )
        self.path = path
        self.timeout = timeout
        self.holder = holder


@contextmanager
def integration_lock(forkyard_dir: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold ``.git/forkyard/merge.lock`` exclusively; wait up to ``timeout`` seconds."""
    wait = DEFAULT_TIMEOUT_S if timeout is None else timeout
    forkyard_dir.mkdir(parents=True, exist_ok=True)
    path = forkyard_dir / "merge.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    raise LockTimeoutError(path, wait, holder) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
