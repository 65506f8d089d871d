"""Port leases: a distinct ``PORT`` / ``FORKYARD_PORT`` for each concurrent agent.

A lease is an exclusive ``flock`` on ``.git/forkyard/ports/<port>.lock``.  flock locks
belong to an open file description, so leases are exclusive across processes *and*
across threads of one process, and the kernel drops them when a crashed holder dies:
there is nothing to clean up and no stale lease can block a port.  A port is only
leased when it can also be bound right now, so a port some other program holds is
skipped.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from gitproc.lock import FileLock

DEFAULT_RANGE = (41000, 42000)


class NoFreePortError(OSError):
    """Every port of the range is leased or in use."""


@dataclass
class PortLease:
    """A leased port; hold it for the agent's life, then :meth:`release` it."""

    port: int
    _lock: FileLock

    def release(self) -> None:
        """Give the port back (idempotent)."""
        self._lock.release()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def lease_port(lock_dir: Path, port_range: tuple[int, int] = DEFAULT_RANGE) -> PortLease:
    """Lease the first free port in ``[lo, hi)``."""
    lo, hi = port_range
    for port in range(lo, hi):
        lock = FileLock(lock_dir / f"{port}.lock")
        if not lock.acquire(wait=0):
            continue
        if _bindable(port):
            return PortLease(port, lock)
        lock.release()
    raise NoFreePortError(f"no free port in {lo}-{hi - 1}")
