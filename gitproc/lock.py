"""The one file-lock helper: ``flock`` on a file, shared or exclusive.

``flock`` locks die with their process, so a crashed holder never leaves a stale lock:
"the lock can be taken" means "no live process holds it", with no pid files or clocks.
The holder's pid may be written into the file to make a wait message useful, and so that
a status check can tell a dead holder from its children (:func:`held_by_its_writer`: a
child forked just before the holder died shares the lock until its ``exec``).

Users: the integration lock (one integrator per repository, below), a run's own lock
(one process runs or resumes a run), a run's liveness lock (``sandbox.liveness``: gc
leaves live runs alone) and port leases (``sandbox.ports``).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gitproc.errors import EXIT_BAD_INPUT, ForkyardError
from gitproc.process import pid_alive

DEFAULT_TIMEOUT_S = float(os.environ.get("FORKYARD_LOCK_TIMEOUT", "120"))


class LockTimeoutError(ForkyardError, TimeoutError):
    """Another process held a lock for longer than we were willing to wait."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, path: Path, timeout: float, holder: str, what: str = "") -> None:
        who = f" (held by pid {holder})" if holder else ""
        doing = what or "another forkyard process holds this lock"
        super().__init__(f"{doing}{who}; gave up after {timeout:g}s waiting for {path}")
        self.path = path
        self.timeout = timeout
        self.holder = holder


class FileLock:
    """An ``flock`` on ``path`` (created, with its directory, on first use).

    ``acquire`` blocks, tries once (``wait=0``) or waits up to ``wait`` seconds; it returns
    whether the lock is now held.  ``release`` is idempotent; closing the file drops the
    lock, so a lock is also released when its holder dies.  ``with lock:`` holds it
    exclusively for the block (waiting as long as it takes).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self, *, shared: bool = False, wait: float | None = None,
                write_pid: bool = False) -> bool:
        """Take the lock; ``wait=None`` blocks until it is free."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            if wait is None:
                fcntl.flock(fd, mode)
            elif not _try(fd, mode, wait):
                os.close(fd)
                return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if write_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return True

    def holder(self) -> str:
        """The pid a holder wrote into the file ('' when none or unreadable)."""
        try:
            return self.path.read_bytes()[:32].decode(errors="replace").strip()
        except OSError:
            return ""

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def fileno(self) -> int:
        return self._fd

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try(fd: int, mode: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def held_by_its_writer(path: Path, settle_s: float = 1.0) -> bool:
    """Whether the process that took ``path`` with ``write_pid`` still holds it.

    A lock is held by an open file, and a child the holder forks shares it until the
    child's ``exec`` closes it: killed while a child was being started, the holder leaves
    the lock held a moment longer.  So when the pid written in the file is no live
    process, the lock is given ``settle_s`` to be released before it is believed (a holder
    whose pid this process cannot see -- another pid namespace -- stays believed)."""
    if not held_elsewhere(path):
        return False
    pid = FileLock(path).holder()
    if not pid.isdigit() or pid_alive(int(pid)):
        return True
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        time.sleep(0.02)
        if not held_elsewhere(path):
            return False
    return True


def held_elsewhere(path: Path) -> bool:
    """Whether some live process holds ``path`` exclusively (without creating it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        return False
    finally:
        os.close(fd)  # also drops the shared lock we may have taken


@contextmanager
def integration_lock(forkyard_dir: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold ``.git/forkyard/merge.lock`` exclusively: one integrator per repository at a
    time; wait up to ``timeout`` seconds."""
    wait = DEFAULT_TIMEOUT_S if timeout is None else timeout
    lock = FileLock(forkyard_dir / "merge.lock")
    if not lock.acquire(wait=wait, write_pid=True):
        raise LockTimeoutError(lock.path, wait, lock.holder(),
                               "another forkyard process is integrating into this repository")
    try:
        yield
    finally:
        os.ftruncate(lock.fileno(), 0)
        lock.release()
