"""A run's liveness lock: ``.git/forkyard/locks/<run-id>.lock``.

A backend holds it shared for as long as any sandbox of the run is prepared.  The kernel
drops the lock when the holder dies, so "the lock can be taken exclusively" means "no
live process owns this run".  ``forkyard gc`` takes it exclusively while it cleans a run,
so a sandbox of that run cannot appear meanwhile.
"""

from __future__ import annotations

from pathlib import Path

from gitproc.lock import FileLock


class RunLock:
    """The liveness lock of one run."""

    def __init__(self, forkyard_dir: Path, run_id: str) -> None:
        self._lock = FileLock(forkyard_dir / "locks" / f"{run_id}.lock")
        self.path = self._lock.path

    def acquire_shared(self) -> None:
        """Mark the run live (blocks only while gc is cleaning this very run)."""
        self._lock.acquire(shared=True)

    def try_exclusive(self) -> bool:
        """Take the lock exclusively if nobody holds it: True means the run is not live."""
        return self._lock.acquire(wait=0)

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        self._lock.release()
