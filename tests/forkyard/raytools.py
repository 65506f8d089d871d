"""Helpers for the Ray executor's tests: a private place for everything Ray writes, and a
check that no Ray process the tests started is left.

Every Ray process inherits ``HOME=<dir>/home`` (set before Ray starts), so "none left" is
checked exactly: no process but this one has that HOME.  The directory is short on
purpose: Ray puts Unix sockets under its temp dir, and their paths are limited to 107
bytes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def pids_with_env(name: str, value: str) -> set[int]:
    """Processes (other than this one) whose environment has ``name=value``."""
    needle = f"{name}={value}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(pred: object, timeout: float, step: float = 0.1) -> object:
    end = time.monotonic() + timeout
    while True:
        value = pred()  # type: ignore[operator]
        if value or time.monotonic() > end:
            return value
        time.sleep(step)


@contextlib.contextmanager
def ray_home() -> Iterator[Path]:
    """HOME, Ray's temp dir and its usage stats pointed into a fresh directory for as long
    as the block runs; afterwards no process may still have that HOME."""
    require(ray_available(), "Ray (pip install 'forkyard[ray]')")
    base = Path(tempfile.mkdtemp(prefix="fyray-"))
    home = base / "home"
    home.mkdir()
    names = ("HOME", "RAY_TMPDIR", "RAY_USAGE_STATS_ENABLED", "RAY_gcs_server_port_wait_time_s",
             "RAY_AUTH_MODE")
    saved = {k: os.environ.get(k) for k in names}
    # A loaded CI machine can take longer than Ray's default 30 s to bring its GCS up.  No
    # token authentication: the test clusters listen on loopback only, and a token made
    # under one test's HOME is remembered by this process's Ray while the next test's
    # GCS looks for it under another HOME (and aborts).
    os.environ.update(HOME=str(home), RAY_TMPDIR=str(base), RAY_USAGE_STATS_ENABLED="0",
                      RAY_gcs_server_port_wait_time_s="120", RAY_AUTH_MODE="disabled")
    try:
        yield base
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        # Ray's dashboard and runtime-env agents notice their raylet's end by polling:
        # on a loaded machine that takes a while.
        left = wait_for(lambda: not pids_with_env("HOME", str(home)), 90)
        if not os.environ.get("FORKYARD_KEEP_RAY_DIRS"):  # to read Ray's logs after a failure
            shutil.rmtree(base, ignore_errors=True)
        if not left:
            pytest.fail(f"Ray processes left behind: {describe(pids_with_env('HOME', str(home)))}")


def describe(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd[:200]}")
    return out
