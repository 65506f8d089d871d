"""Per-run set-up: ignored files copied into worktrees, port leases, the factory."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gitproc.git import Repo
from sandbox import places
from sandbox.backends import DummyConfig, WorktreeConfig, get_backend
from sandbox.backends.worktree import WorktreeBackend
from sandbox.errors import SandboxBadInputError
from sandbox.ports import NoFreePortError, lease_port
from sandbox.setup import copy_ignored, include_patterns
from tests.conftest import require
from tests.sandbox.conftest import has_bwrap, has_cgroups, make_spec


def test_ignored_files_are_copied_tracked_ones_untouched(pylib: Repo) -> None:
    root = pylib.path
    (root / ".gitignore").write_text(".env\nsecrets/\n")
    (root / ".env").write_text("TOKEN=1\n")
    (root / "secrets").mkdir()
    (root / "secrets" / "key.pem").write_text("KEY\n")
    (root / ".worktreeinclude").write_text("# comment\nsecrets/**\n../outside\n")
    (root / "README.md").write_text("locally modified\n")  # tracked: must not travel
    backend = WorktreeBackend(pylib, WorktreeConfig(lease_ports=False))
    sb = backend.prepare(make_spec(pylib, "true", copy_files=(".env", "README.md")))
    try:
        assert (sb.worktree / ".env").read_text() == "TOKEN=1\n"
        assert (sb.worktree / "secrets" / "key.pem").read_text() == "KEY\n"
        assert (sb.worktree / "README.md").read_text() != "locally modified\n"
        assert sb.state["copied"] == [".env", "secrets/key.pem"]
    finally:
        backend.cleanup(sb)


def test_patterns_never_leave_the_repository(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "secret").write_text("x")
    assert include_patterns(tmp_path / "repo", ["../secret", "/abs"]) == ["../secret", "/abs"]
    assert copy_ignored(tmp_path / "repo", tmp_path / "wt", ["../secret"]) == []


def test_port_leases_are_distinct_across_threads(tmp_path: Path) -> None:
    leases = []
    lock = threading.Lock()

    def take() -> None:
        lease = lease_port(tmp_path, (43100, 43200))
        with lock:
            leases.append(lease)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({lease.port for lease in leases}) == 8
    first = leases[0].port
    leases[0].release()
    assert lease_port(tmp_path, (first, first + 1)).port == first  # released: reusable


def _lease_in_child(lock_dir: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        out.put(lease_port(Path(lock_dir), (43300, 43301)).port)
    except NoFreePortError:
        out.put(None)


def test_port_lease_is_exclusive_across_processes(tmp_path: Path) -> None:
    held = lease_port(tmp_path, (43300, 43301))
    q: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()  # type: ignore[type-arg]
    p = multiprocessing.get_context("spawn").Process(target=_lease_in_child, args=(str(tmp_path), q))
    p.start()
    p.join(30)
    assert q.get(timeout=5) is None
    held.release()


def test_each_agent_gets_its_port(pylib: Repo) -> None:
    backend = WorktreeBackend(pylib, WorktreeConfig(confinement="none", limits="none"))
    sb1 = backend.prepare(make_spec(pylib, 'echo "$PORT $FORKYARD_PORT"', task_id="a", confine=False))
    sb2 = backend.prepare(make_spec(pylib, 'echo "$PORT"', task_id="b", confine=False))
    try:
        r1, r2 = backend.execute(sb1), backend.execute(sb2)
        p1, p1b = r1.log_tail.split()
        assert p1 == p1b and p1 != r2.log_tail.strip()
    finally:
        backend.cleanup(sb1)
        backend.cleanup(sb2)
    fixed = backend.run(make_spec(pylib, 'echo "$PORT"', task_id="c", port=5555, confine=False))
    assert fixed.log_tail.strip() == "5555"


def test_factory_builds_configured_backends(pylib: Repo) -> None:
    wt = get_backend("worktree", pylib, grace_s=1.5)
    assert isinstance(wt, WorktreeBackend) and wt.config.grace_s == 1.5
    assert get_backend({"type": "dummy"}, None).name == "dummy"
    assert get_backend(DummyConfig(), None).name == "dummy"
    assert get_backend(WorktreeConfig(confinement="bwrap"), pylib).config.confinement == "bwrap"  # type: ignore[attr-defined]
    with pytest.raises(SandboxBadInputError):
        get_backend("worktree", pylib, no_such_option=1)
    with pytest.raises(SandboxBadInputError):
        get_backend("podman", pylib)


def test_factory_imports_docker_lazily() -> None:
    import sys

    from gitproc.process import run

    code = ("import sys; import sandbox.backends as b; "
            "assert 'docker' not in sys.modules and 'sandbox.backends.docker' not in sys.modules")
    assert run([sys.executable, "-c", code], check=False).returncode == 0


def test_parallel_sandboxes_share_one_backend(pylib: Repo) -> None:
    require(has_cgroups(), "writable cgroups")
    require(has_bwrap(), "bubblewrap")
    backend = WorktreeBackend(pylib, WorktreeConfig(grace_s=0.3))
    run_id = "parallel"
    specs = [make_spec(pylib, f'echo "$PORT" > port-{i}.txt; echo "$PORT"', run_id=run_id,
                       task_id=f"t{i}") for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(backend.run, specs))
    assert [r.status for r in results] == ["succeeded"] * 6
    assert len({r.commit for r in results}) == 6
    assert len({r.log_tail.strip() for r in results}) == 6  # distinct ports
    assert [f.path for f in results[3].files_modified] == ["port-3.txt"]
    assert not places.run_dir(pylib.forkyard_dir, run_id).exists()
