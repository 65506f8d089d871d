"""The backend contract, run against every real backend (worktree, docker).

Commands are POSIX sh that busybox understands, so the same test runs in the docker
test image.  The dummy backend's share of the contract is in test_dummy.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from gitproc.git import Repo
from planner.tasks import Limits
from sandbox.backends import get_backend
from sandbox.backends.base import Backend, ExecResult, SandboxSpec
from tests.conftest import require
from tests.sandbox.conftest import FAST, has_bwrap, has_cgroups, make_spec, processes_with_arg


@pytest.fixture(params=["worktree", "docker"])
def backend(request: pytest.FixtureRequest, pylib: Repo) -> Backend:
    if request.param == "docker":
        image = request.getfixturevalue("docker_image")  # requires an engine (fails in CI)
        return get_backend({"type": "docker", "image": image}, pylib)
    require(has_cgroups(), "writable cgroups")
    require(has_bwrap(), "bubblewrap")
    return get_backend("worktree", pylib, grace_s=0.3)


def spec(backend: Backend, command: str, **kw: Any) -> SandboxSpec:
    if backend.name == "docker":
        kw.setdefault("image", None)
    return make_spec(backend.repo, command, **kw)


def run(backend: Backend, s: SandboxSpec, **kw: Any) -> ExecResult:
    result = backend.run(s, **kw)
    assert backend.repo.try_rev_parse(s.branch) is not None, "the branch always stays"
    return result


def test_success_commits_leftovers_with_line_counts(backend: Backend) -> None:
    s = spec(backend, "printf 'a\\nb\\n' > new.txt && echo more >> README.md && echo done",
             task_id="write", description="Write two files")
    r = run(backend, s)
    assert r.status == "succeeded" and r.exit_code == 0
    assert r.commit == backend.repo.rev_parse(s.branch)
    counts = {f.path: (f.added, f.removed) for f in r.files_modified}
    assert counts == {"new.txt": (2, 0), "README.md": (1, 0)}
    msg = backend.repo.out("log", "-1", "--format=%an <%ae>%n%B", r.commit)
    assert "forkyard <forkyard@localhost>" in msg and "write" in msg
    assert "done" in r.log_tail
    assert r.enforced_by != "none" and r.confinement != "none"


def test_worktree_is_removed_but_kept_with_keep(backend: Backend) -> None:
    s1 = spec(backend, "true", task_id="gone")
    sb = backend.prepare(s1)
    assert sb.worktree.is_dir() and sb.branch == f"forkyard/{s1.run_id}/gone"
    backend.execute(sb)
    backend.cleanup(sb)
    assert not sb.worktree.exists()
    s2 = spec(backend, "echo x > kept.txt", task_id="kept")
    sb2 = backend.prepare(s2)
    backend.execute(sb2)
    backend.cleanup(sb2, keep=True)
    assert (sb2.worktree / "kept.txt").is_file()


def test_failure_and_no_changes_means_no_commit(backend: Backend) -> None:
    r = run(backend, spec(backend, "echo oops >&2; exit 3"))
    assert (r.status, r.exit_code, r.commit, r.files_modified) == ("failed", 3, None, ())
    assert "oops" in r.log_tail  # stderr is in the log too


def test_lines_are_streamed_and_tail_kept(backend: Backend) -> None:
    seen: list[str] = []
    r = run(backend, spec(backend, "i=0; while [ $i -lt 300 ]; do echo line$i; i=$((i+1)); done"),
            on_line=seen.append)
    assert seen[0] == "line0" and seen[-1] == "line299" and len(seen) == 300
    assert r.log_tail.splitlines()[-1] == "line299"


def test_environment_names_the_task(backend: Backend) -> None:
    s = spec(backend, 'echo "$FORKYARD_TASK_ID|$FORKYARD_RUN_ID|$FORKYARD_BRANCH|'
                      '$FORKYARD_BASE|$FORKYARD_DESCRIPTION|$EXTRA"',
             task_id="envy", description="desc", env={"EXTRA": "yes"})
    r = run(backend, s)
    assert r.log_tail.strip() == f"envy|{s.run_id}|{s.branch}|{s.base}|desc|yes"


def test_timeout_kills_the_tree_and_leaves_no_process(backend: Backend, unique_marker: str) -> None:
    cmd = (f"(sleep {unique_marker} &) ; setsid sleep {unique_marker} & "
           f"echo started; sleep {unique_marker}")
    s = spec(backend, cmd, limits=FAST.model_copy(update={"timeout_s": 1.5}))
    t0 = time.monotonic()
    r = run(backend, s)
    assert r.status == "timed_out" and "started" in r.log_tail
    assert time.monotonic() - t0 < 20
    assert processes_with_arg(unique_marker) == []


def test_cancel_stops_the_task(backend: Backend, unique_marker: str) -> None:
    cancel = threading.Event()

    def on_line(line: str) -> None:
        if line == "ready":
            cancel.set()

    r = run(backend, spec(backend, f"echo ready; sleep {unique_marker}"), on_line=on_line,
            cancel=cancel)
    assert r.status == "cancelled"
    assert processes_with_arg(unique_marker) == []


def test_memory_hog_is_oom_killed(backend: Backend) -> None:
    # dd allocates (and, reading /dev/zero, touches) one 256 MiB block: over 64 MiB.
    s = spec(backend, "dd if=/dev/zero of=/dev/null bs=256M count=4",
             limits=Limits(memory_mb=64, cpus=1.0, pids=64, timeout_s=30, network=False))
    r = run(backend, s)
    assert r.status == "oom_killed", r


def test_setup_command_runs_before_the_agent(backend: Backend) -> None:
    s = spec(backend, "cat prepared.txt", setup_command="echo prepared > prepared.txt")
    r = run(backend, s)
    assert r.status == "succeeded" and "prepared" in r.log_tail
    failing = run(backend, spec(backend, "echo agent-ran", setup_command="exit 4"))
    assert failing.status == "failed" and "agent-ran" not in failing.log_tail
