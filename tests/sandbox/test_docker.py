"""The docker backend against a real Docker engine and the busybox test image.

Each test runs a real container (``make test`` starts the engine and builds the image;
the ``docker_image`` fixture builds the image when missing).  Without an engine these
skip locally and fail under CI=true.  The cross-backend behaviour (commit on exit, log
tail, statuses) is in test_contract.py; here is what only a container does: limits the
engine enforces, the network namespace, the read-only root, capabilities, no container
left behind, a forged ``/work/.git``; and ``forkyard run --backend docker`` end to end.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gitproc.git import Repo
from planner.tasks import Limits
from sandbox.backends.base import ExecResult, SandboxSpec
from sandbox.backends.docker import EXIT_SIGKILL, DockerBackend, DockerConfig
from sandbox.backends.docker_spec import agent_env, worktree_path
from sandbox.errors import BackendUnavailableError, ImageNotFoundError
from tests.conftest import require

pytestmark = pytest.mark.docker

FAST = Limits(memory_mb=256, cpus=1.0, pids=64, timeout_s=60, network=False)


def make_spec(repo: Repo, command: str, image: str | None, **kw: Any) -> SandboxSpec:
    kw.setdefault("limits", FAST)
    return SandboxSpec(
        run_id=f"t{uuid.uuid4().hex[:8]}", task_id=kw.pop("task_id", "task"),
        base=repo.rev_parse("HEAD"), command=command, image=image, **kw,
    )


@pytest.fixture
def backend(pylib: Repo, docker_image: str) -> DockerBackend:
    return DockerBackend(pylib, DockerConfig(image=docker_image))


def containers_of(backend: DockerBackend, spec: SandboxSpec) -> list[Any]:
    labels = [f"forkyard.run={spec.run_id}", f"forkyard.task={spec.task_id}"]
    return list(backend.client.containers.list(all=True, filters={"label": labels}))


def run(backend: DockerBackend, spec: SandboxSpec, **kw: Any) -> ExecResult:
    result = backend.run(spec, **kw)
    # Whatever happened, the container is gone and the branch stays.
    assert containers_of(backend, spec) == []
    assert backend.repo.try_rev_parse(spec.branch) is not None
    return result


def test_runs_command_and_commits_its_work(backend: DockerBackend) -> None:
    repo = backend.repo
    lines: list[str] = []
    spec = make_spec(
        repo,
        'echo "cwd=$(pwd) task=$FORKYARD_TASK_ID wt=$FORKYARD_WORKTREE home=$HOME"\n'
        "echo new > hello.txt\n"
        "printf 'extra\\n' >> README.md\n"
        "printf 'no newline at the end'",
        None, task_id="greet", description="say hello", env={"EXTRA": "1"},
    )
    result = run(backend, spec, on_line=lines.append)

    assert result.status == "succeeded", result
    assert result.exit_code == 0
    assert lines == ["cwd=/work task=greet wt=/work home=/tmp", "no newline at the end"]
    assert "no newline at the end" in result.log_tail
    assert result.enforced_by == "docker" and result.confinement == "docker"
    assert result.commit == repo.rev_parse(spec.branch)
    assert repo.out("log", "-1", "--format=%an <%ae>|%s", result.commit) == \
        "forkyard <forkyard@localhost>|forkyard: greet"
    assert {(f.path, f.added, f.removed) for f in result.files_modified} == \
        {("hello.txt", 1, 0), ("README.md", 1, 0)}
    # The worktree is removed (keep=False) and the main worktree untouched.
    assert not worktree_path(repo, spec).exists()
    assert not (repo.path / "hello.txt").exists()


def test_failure_without_changes_has_no_commit(backend: DockerBackend) -> None:
    result = run(backend, make_spec(backend.repo, "echo oops >&2; exit 3", None))
    assert (result.status, result.exit_code, result.commit) == ("failed", 3, None)
    assert result.files_modified == ()
    assert "oops" in result.log_tail


def test_memory_hog_is_oom_killed(backend: DockerBackend) -> None:
    # tail keeps its input's last "line"; /dev/zero never ends one.
    limits = FAST.model_copy(update={"memory_mb": 32, "timeout_s": 60})
    result = run(backend, make_spec(backend.repo, "cat /dev/zero | tail", None, limits=limits))
    assert result.status == "oom_killed", result
    assert result.exit_code == 137
    assert result.duration_s < 30


def test_oom_of_a_child_is_not_the_tasks_oom(backend: DockerBackend) -> None:
    # The engine flags the container OOMKilled, but the agent survived and exited 0:
    # the cross-check with exit 137 keeps this a success (with a note).
    limits = FAST.model_copy(update={"memory_mb": 32})
    spec = make_spec(backend.repo, "cat /dev/zero | tail; echo carried on", None, limits=limits)
    result = run(backend, spec)
    assert result.status == "succeeded", result
    assert "OOM" in result.message
    assert "carried on" in result.log_tail


def test_timeout_kills_and_leaves_no_container(backend: DockerBackend) -> None:
    limits = FAST.model_copy(update={"timeout_s": 1.0})
    spec = make_spec(backend.repo, "echo started; echo partial > part.txt; sleep 60", None,
                     limits=limits)
    start = time.monotonic()
    result = run(backend, spec)  # run() asserts the container is gone
    assert result.status == "timed_out", result
    assert time.monotonic() - start < 15
    assert 1.0 <= result.duration_s < 10
    assert "started" in result.log_tail
    # Work done before the deadline is still committed: nothing is lost.
    assert result.commit is not None
    assert [f.path for f in result.files_modified] == ["part.txt"]


def test_cancel_kills_the_container(backend: DockerBackend) -> None:
    cancel = threading.Event()

    def on_line(line: str) -> None:
        if line == "ready":
            cancel.set()

    result = run(backend, make_spec(backend.repo, "echo ready; sleep 60", None),
                 on_line=on_line, cancel=cancel)
    assert result.status == "cancelled", result
    assert result.duration_s < 10


def test_pids_limit_holds_a_fork_bomb(backend: DockerBackend) -> None:
    # A subshell forks until the kernel refuses; the agent counts the processes without
    # forking (a glob over /proc), then kills them all.
    limits = FAST.model_copy(update={"pids": 20, "timeout_s": 30})
    command = (
        "( while :; do sleep 30 & done ) 2>/dev/null\n"
        'set -- /proc/[0-9]*; echo "procs $#"\n'
        "kill -9 -1\n"
    )
    result = run(backend, make_spec(backend.repo, command, None, limits=limits))
    assert result.status == "succeeded", result
    procs = int(result.log_tail.split("procs ")[1].split()[0])
    assert 15 <= procs <= 20, result.log_tail


def test_network_is_off_unless_allowed(backend: DockerBackend) -> None:
    command = "ls /sys/class/net"
    off = run(backend, make_spec(backend.repo, command, None))
    assert off.status == "succeeded" and off.log_tail.split() == ["lo"]

    # Fails under CI=true when docker-up had to fall back to --bridge=none.
    require(bool(backend.client.networks.list(names=["bridge"])), "a Docker bridge network")
    on = run(backend, make_spec(backend.repo, command, None,
                                limits=FAST.model_copy(update={"network": True})))
    assert on.status == "succeeded" and "eth0" in on.log_tail.split()


def test_confinement_read_only_root_writable_work(backend: DockerBackend) -> None:
    command = (
        "touch /etc/x 2>/dev/null && echo etc-writable || echo etc-ro\n"
        "touch /x 2>/dev/null && echo root-writable || echo root-ro\n"
        "touch /tmp/x && echo tmp-ok\n"
        "touch /work/made && echo work-ok\n"
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -s '\\t ' ' '\n"
        "echo pid1=$(cat /proc/1/comm)\n"
        "echo id=$(id -u):$(id -g)\n"
    )
    result = run(backend, make_spec(backend.repo, command, None))
    lines = result.log_tail.splitlines()
    assert result.status == "succeeded", result
    assert {"etc-ro", "root-ro", "tmp-ok", "work-ok"} <= set(lines)
    assert "CapEff: 0000000000000000" in lines
    assert "NoNewPrivs: 1" in lines
    assert "pid1=docker-init" in lines or "pid1=tini" in lines or "pid1=tini-static" in lines
    st = os.stat(backend.repo.path)
    assert f"id={st.st_uid}:{st.st_gid}" in lines
    assert [f.path for f in result.files_modified] == ["made"]


def test_engine_applies_the_limits(backend: DockerBackend) -> None:
    # Inspect the running container: what the engine was asked for is what it holds.
    limits = Limits(memory_mb=64, cpus=0.5, pids=32, timeout_s=60, network=False)
    seen: dict[str, Any] = {}
    cancel = threading.Event()
    spec = make_spec(backend.repo, "echo ready; sleep 60", None, limits=limits)

    def on_line(line: str) -> None:
        if line == "ready":
            (container,) = containers_of(backend, spec)
            seen.update(container.attrs["HostConfig"])
            seen["User"] = container.attrs["Config"]["User"]
            cancel.set()

    result = run(backend, spec, on_line=on_line, cancel=cancel)
    assert result.status == "cancelled"
    assert seen["Memory"] == seen["MemorySwap"] == 64 * 1024 * 1024
    assert seen["NanoCpus"] == 500_000_000
    assert seen["PidsLimit"] == 32
    assert seen["NetworkMode"] == "none"
    assert seen["ReadonlyRootfs"] is True and seen["Init"] is True
    assert seen["CapDrop"] == ["ALL"]
    assert seen["SecurityOpt"] == ["no-new-privileges"]
    assert "/tmp" in seen["Tmpfs"]
    assert seen["Mounts"][0]["Target"] == "/work"


def test_setup_command_runs_first_and_can_fail_the_task(backend: DockerBackend) -> None:
    ok = run(backend, make_spec(backend.repo, "cat ready.txt", None,
                                setup_command="echo prepared > ready.txt"))
    assert ok.status == "succeeded" and "prepared" in ok.log_tail
    bad = run(backend, make_spec(backend.repo, "echo agent-ran", None, setup_command="exit 4"))
    assert (bad.status, bad.exit_code) == ("failed", 4)
    assert "agent-ran" not in bad.log_tail


def test_keep_leaves_the_worktree(backend: DockerBackend) -> None:
    spec = make_spec(backend.repo, "echo kept > kept.txt", None)
    result = backend.run(spec, keep=True)
    path = worktree_path(backend.repo, spec)
    assert result.status == "succeeded"
    assert (path / "kept.txt").read_text() == "kept\n"
    backend.repo.worktree_remove(path)


@pytest.mark.parametrize("image", ["forkyard-no-such-image:latest", "Not A Valid:Reference"])
def test_missing_image_is_bad_input_before_anything_is_created(
    backend: DockerBackend, image: str
) -> None:
    repo = backend.repo
    spec = make_spec(repo, "true", image)
    branches_before = repo.branches("**")
    with pytest.raises(ImageNotFoundError) as info:
        backend.prepare(spec)
    assert info.value.exit_code == 2 and info.value.image == image
    assert image in str(info.value)
    assert repo.branches("**") == branches_before
    assert not worktree_path(repo, spec).exists()
    assert len(repo.worktrees()) == 1


def test_no_engine_is_backend_unavailable(pylib: Repo, tmp_path: Path) -> None:
    backend = DockerBackend(pylib, DockerConfig(base_url=f"unix://{tmp_path}/no.sock"))
    spec = make_spec(pylib, "true", "forkyard-test:latest")
    with pytest.raises(BackendUnavailableError, match="no Docker engine"):
        backend.prepare(spec)
    assert pylib.try_rev_parse(spec.branch) is None


def test_agent_env_names_the_task() -> None:
    spec = SandboxSpec(run_id="r1", task_id="t1", base="abc", command="make", port=4100,
                       env={"HOME": "/work"})
    env = agent_env(spec)
    assert env["FORKYARD_BRANCH"] == "forkyard/r1/t1"
    assert env["PORT"] == env["FORKYARD_PORT"] == "4100"
    assert env["HOME"] == "/work"  # the task's own env wins



@pytest.mark.parametrize("forge", [
    "printf 'gitdir: /work/evil\\n' > .git",   # aim our host-side git elsewhere
    "rm .git && mkdir .git && echo junk > .git/config",
    "rm .git && ln -s /etc .git",
])
def test_a_forged_dot_git_cannot_redirect_our_commit(backend: DockerBackend, forge: str) -> None:
    spec = make_spec(backend.repo, f"echo data > f.txt\n{forge}", None)
    result = run(backend, spec)
    assert result.status == "succeeded", result
    assert result.commit == backend.repo.rev_parse(spec.branch)
    assert [f.path for f in result.files_modified] == ["f.txt"]


def test_parallel_tasks_share_one_backend(backend: DockerBackend) -> None:
    # forkyard runs many agents at once through one backend (one docker client).
    from concurrent.futures import ThreadPoolExecutor

    run_id = f"t{uuid.uuid4().hex[:8]}"
    base = backend.repo.rev_parse("HEAD")
    specs = [SandboxSpec(run_id=run_id, task_id=f"t{i}", base=base, limits=FAST,
                         command=f'echo "$PORT" > port.txt; echo {i} > mine.txt; sleep 1')
             for i in range(4)]
    with ThreadPoolExecutor(len(specs)) as pool:
        results = list(pool.map(lambda s: run(backend, s), specs))
    assert [r.status for r in results] == ["succeeded"] * 4
    ports = {backend.repo.out("show", f"{r.commit}:port.txt") for r in results}
    assert len(ports) == 4 and "" not in ports  # a distinct leased port each
    assert all(r.duration_s < 10 for r in results)


def test_factory_builds_it_and_rejects_unknown_options(pylib: Repo, docker_image: str) -> None:
    from sandbox.backends import get_backend
    from sandbox.errors import SandboxBadInputError

    backend = get_backend("docker", pylib, image=docker_image)
    assert isinstance(backend, DockerBackend) and backend.config.image == docker_image
    with pytest.raises(SandboxBadInputError):
        get_backend("docker", pylib, imag=docker_image)


def test_gc_helper_removes_containers_a_crash_left(backend: DockerBackend) -> None:
    from sandbox.backends.docker import remove_containers

    spec = make_spec(backend.repo, "sleep 60", None)
    sandbox = backend.prepare(spec)
    backend._create(sandbox).start()  # ...and the run "crashes" here
    try:
        assert remove_containers(backend.repo, "some-other-run") == []
        assert remove_containers(backend.repo, spec.run_id) == [f"forkyard-{spec.run_id}-task"]
        assert containers_of(backend, spec) == []
    finally:
        backend.cleanup(sandbox)


def test_gc_removes_the_container_of_a_dead_run(backend: DockerBackend) -> None:
    from forkyard.gc import gc

    spec = make_spec(backend.repo, "sleep 60", None)
    sandbox = backend.prepare(spec)
    backend._create(sandbox).start()
    try:
        assert gc(backend.repo).containers_removed == []  # the run is live: left alone
        assert containers_of(backend, spec) != []
        for lock, _ in backend._worktrees._locks.values():  # the run's process "dies"
            lock.release()
        report = gc(backend.repo)
        assert report.containers_removed == [f"forkyard-{spec.run_id}-task"]
        assert containers_of(backend, spec) == []
    finally:
        backend.cleanup(sandbox)


def test_an_agent_ignoring_sigterm_is_killed_after_the_grace(pylib: Repo, docker_image: str) -> None:
    backend = DockerBackend(pylib, DockerConfig(image=docker_image, kill_grace_s=0.5))
    limits = FAST.model_copy(update={"timeout_s": 0.5})
    spec = make_spec(pylib, "trap '' TERM; echo armored; while :; do sleep 1; done", None,
                     limits=limits)
    result = run(backend, spec)
    assert result.status == "timed_out", result
    assert result.exit_code == EXIT_SIGKILL
    assert result.duration_s < 5


# -- the command line ---------------------------------------------------------------

TASKS = """\
defaults:
  limits: {memory_mb: 64, cpus: 1.0, pids: 64, timeout_s: 60, network: false}
tasks:
  - id: alpha
    command: "echo alpha > alpha.txt && test ! -e /sys/class/net/eth0"
  - id: beta
    command: "echo beta > beta.txt"
"""


def forkyard(*args: str, cwd: Path) -> tuple[int, str, str]:
    import sys

    from gitproc.process import run as run_process

    exe = Path(sys.executable).with_name("forkyard")
    r = run_process([str(exe), *args], cwd=cwd, check=False, timeout=180)
    return r.returncode, r.out, r.err


def test_cli_run_with_the_docker_backend(pylib: Repo, docker_image: str, tmp_path: Path) -> None:
    import json

    # The default agent is `bash -c {command}`: the test image's bash is busybox sh.
    (tmp_path / "tasks.yaml").write_text(TASKS)
    before = pylib.rev_parse("main")
    code, out, err = forkyard("run", str(tmp_path / "tasks.yaml"), "--backend", "docker",
                              "--image", docker_image, "--repo", str(pylib.path), "--json",
                              cwd=pylib.path)
    assert code == 0, err
    report = json.loads(out)
    assert report["outcome"] == "succeeded"
    assert {r["task"]: r["status"] for r in report["results"]} == \
        {"alpha": "succeeded", "beta": "succeeded"}
    assert {r["limits"]["enforced_by"] for r in report["results"]} == {"docker"}
    after = pylib.rev_parse("main")
    assert after != before and report["target_sha_after"] == after
    assert pylib.out("show", "main:alpha.txt") == "alpha"
    assert pylib.out("show", "main:beta.txt") == "beta"


def test_cli_missing_image_is_exit_2_and_changes_nothing(pylib: Repo, docker_image: str,
                                                        tmp_path: Path) -> None:
    (tmp_path / "tasks.yaml").write_text(TASKS)
    before = pylib.rev_parse("main")
    code, _, err = forkyard("run", str(tmp_path / "tasks.yaml"), "--backend", "docker",
                            "--image", "forkyard-no-such-image:latest",
                            "--repo", str(pylib.path), cwd=pylib.path)
    assert code == 2
    assert "forkyard-no-such-image:latest" in err
    assert pylib.rev_parse("main") == before
    assert pylib.branches("forkyard/**") == {}
