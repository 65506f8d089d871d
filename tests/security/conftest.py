"""The attack suite: each attack is a real agent command run by a real ``forkyard run``
(the default worktree backend: bubblewrap + Landlock + cgroups, as root; more helpers in
``harness.py``).  The validation tests use the merge tests' repository fixture too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from forkyard.journal.events import Event, RunPaths, read_events
from forkyard.journal.models import RunResult
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile
from sandbox import confine
from tests.conftest import require
from tests.merge import conftest as merge_conftest
from tests.security.harness import Server

LIMITS = {"memory_mb": 512, "cpus": 1.0, "pids": 128, "timeout_s": 120, "network": False}
ROOT = Path(__file__).parents[2]
repo = merge_conftest.repo  # the validation tests' fixture (an assignment: helpers' own
                            # ``repo`` parameters do not shadow an import)


@pytest.fixture(autouse=True)
def default_confinement() -> None:
    """The attacks are against the defaults: both confinements must be here."""
    require(confine.bwrap_flags() is not None, "bubblewrap")
    require(confine.landlock_abi() >= 1, "Landlock")
    require(os.geteuid() == 0, "root (the tester's setting)")


@pytest.fixture
def server() -> Iterator[Server]:
    """An HTTP server on the host's loopback that records who reached it."""
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def curl() -> str:
    path = shutil.which("curl")
    require(path is not None, "curl")
    assert path is not None
    return path


@pytest.fixture
def proof(tmp_path: Path) -> Path:
    """A directory the agents may write (``extra_rw``): where a payload proves it ran."""
    d = tmp_path / "proof"
    d.mkdir()
    return d


def tasks(*items: dict[str, Any], setup: dict[str, Any] | None = None) -> TaskFile:
    return TaskFile.model_validate({"defaults": {"limits": LIMITS}, "tasks": list(items),
                                    **({"setup": setup} if setup else {})})


def attack(repo: Repo, tf: TaskFile, proof: Path | None = None, **options: Any) -> RunResult:
    """Run ``tf`` with the default backend and confinement; check they were the defaults."""
    backend_options = dict(options.pop("backend_options", {}))
    if proof is not None:
        backend_options["extra_rw"] = [str(proof)]
    result = run_workflow(repo, tf, RunOptions(use_history=False, backend_options=backend_options,
                                               **options))
    for ev in read_events(RunPaths.of(repo, result.run_id).events):
        if ev.type == "task_finished":
            assert ev.get("confinement") == "bwrap+landlock", ev
            assert str(ev.get("enforced_by")).startswith("cgroup"), ev
    return result


def events(repo: Repo, run_id: str, kind: str) -> list[Event]:
    return [e for e in read_events(RunPaths.of(repo, run_id).events) if e.type == kind]


def forkyard_cli(repo: Repo, tf: dict[str, Any], *args: str, timeout: float = 240
                 ) -> subprocess.CompletedProcess[bytes]:
    """``forkyard run`` as a user runs it (a hang fails the test through ``timeout``)."""
    path = repo.path.parent / f"{repo.path.name}-tasks.yaml"
    path.write_text(yaml.safe_dump(tf))
    return subprocess.run([sys.executable, "-m", "forkyard.cli", "run", str(path), *args],
                          cwd=repo.path, capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def refs(repo: Repo) -> dict[str, str]:
    """Every ref but forkyard's own sandbox branches -> sha (symbolic ones unresolved)."""
    out = repo.out("for-each-ref", "--format=%(refname) %(objectname) %(symref)")
    return {line.split(" ")[0]: line for line in out.splitlines()
            if not line.startswith("refs/heads/forkyard/")}
