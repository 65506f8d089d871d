"""Helpers for the sandbox tests: specs with unique run ids, process scans, backends."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gitproc.git import Repo
from planner.tasks import Limits
from sandbox import cgroups, confine
from sandbox.backends.base import Backend, Sandbox, SandboxSpec
from sandbox.backends.worktree import WorktreeBackend, WorktreeConfig
from tests.conftest import require

# Small limits everywhere: the suite must stay fast.
FAST = Limits(memory_mb=256, cpus=1.0, pids=128, timeout_s=30, network=False)

SpecFactory = Callable[..., SandboxSpec]


def make_spec(repo: Repo, command: str, **kw: Any) -> SandboxSpec:
    """A spec at HEAD with a fresh run id (so parallel tests never collide)."""
    kw.setdefault("limits", FAST)
    return SandboxSpec(run_id=kw.pop("run_id", f"t{uuid.uuid4().hex[:8]}"),
                       task_id=kw.pop("task_id", "task"), base=repo.rev_parse("HEAD"),
                       command=command, **kw)


@contextlib.contextmanager
def prepared(backend: Backend, command: str = "true", **kw: Any) -> Iterator[Sandbox]:
    """A sandbox of ``backend`` for ``make_spec(repo, command, **kw)``, cleaned up after."""
    sb = backend.prepare(make_spec(backend.repo, command, **kw))  # type: ignore[attr-defined]
    try:
        yield sb
    finally:
        backend.cleanup(sb)


def processes_with_arg(arg: str) -> list[int]:
    """Pids of processes (anywhere on the host) with ``arg`` as one of their argv words."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in argv:
            found.append(int(entry.name))
    return found


def has_cgroups() -> bool:
    return cgroups.detect().layout != "none"


def has_bwrap() -> bool:
    return shutil.which("bwrap") is not None and confine.bwrap_flags() is not None


def has_landlock() -> bool:
    return confine.landlock_abi() >= 1


def require_confinement(mode: str) -> None:
    if "bwrap" in mode:
        require(has_bwrap(), "bubblewrap")
    if "landlock" in mode:
        require(has_landlock(), "Landlock")


@pytest.fixture
def worktree_backend(pylib: Repo) -> WorktreeBackend:
    """The worktree backend with a short grace period (timeouts in tests are short)."""
    return WorktreeBackend(pylib, WorktreeConfig(grace_s=0.3))


@pytest.fixture
def unique_marker() -> str:
    """A number nobody else passes to sleep: find our processes by it."""
    return str(90000 + int.from_bytes(os.urandom(2), "big"))
