"""The Ray executor on a real local Ray instance (one for the module: Ray is heavy).

The backend contract (tests/sandbox/test_contract.py) runs through the executor as it
runs against the local worktree backend; then a whole run, a killed worker's retry, and
the CLI starting and stopping its own Ray.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forkyard.journal.audit import audit_run
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from sandbox.backends.base import Backend
from sandbox.backends.worktree import WorktreeConfig
from tests.conftest import require
from tests.forkyard.raytools import describe, pids_with_env, ray_home, wait_for
from tests.forkyard.test_run import forkyard, taskfile, write_tasks
from tests.sandbox import test_contract as contract
from tests.sandbox.conftest import has_bwrap, has_cgroups, make_spec, processes_with_arg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Path]:
    """A local Ray instance for this module's tests, stopped (every process) at its end."""
    with ray_home() as base:
        import ray

        ray.init(num_cpus=4, include_dashboard=False, object_store_memory=128 * 2**20,
                 log_to_driver=False)
        try:
            yield base
        finally:
            ray.shutdown()
        from sandbox import overlay

        assert overlay.mounts_under(base) == []  # every run's base checkout was released


@pytest.fixture
def executor(ray_session: Path, pylib: Repo) -> Iterator[Backend]:
    from forkyard.run.executors.ray import RayExecutor

    require(has_cgroups(), "writable cgroups")
    require(has_bwrap(), "bubblewrap")
    ex = RayExecutor(pylib, WorktreeConfig(grace_s=0.3), agents=2)
    yield ex
    ex.close()  # the nodes release the base checkouts of the runs it ran


@pytest.fixture
def unique_marker() -> str:
    return str(90000 + int.from_bytes(os.urandom(2), "big"))


# The local backend's contract, through Ray.  Not test_worktree_is_removed_but_kept_with_keep:
# a Ray sandbox's worktree is on the worker, never on the driver (checked below instead).
CONTRACT = ["test_success_commits_leftovers_with_line_counts",
            "test_failure_and_no_changes_means_no_commit",
            "test_lines_are_streamed_and_tail_kept", "test_environment_names_the_task",
            "test_timeout_kills_the_tree_and_leaves_no_process",
            "test_cancel_stops_the_task", "test_memory_hog_is_oom_killed",
            "test_setup_command_runs_before_the_agent"]


@pytest.mark.parametrize("name", CONTRACT)
def test_backend_contract_through_ray(name: str, executor: Backend, unique_marker: str) -> None:
    test: Any = getattr(contract, name)
    if "unique_marker" in test.__code__.co_varnames[:test.__code__.co_argcount]:
        test(executor, unique_marker)
    else:
        test(executor)


def test_the_sandbox_is_made_on_the_worker_from_the_node_cache(executor: Backend) -> None:
    s = make_spec(executor.repo, 'echo "$FORKYARD_WORKTREE"; pwd; echo hi > hi.txt')
    sandbox = executor.prepare(s)
    assert not sandbox.worktree.exists()  # nothing is made on the driver
    r = executor.execute(sandbox)
    executor.cleanup(sandbox)
    where, pwd = r.log_tail.splitlines()
    assert where == pwd and str(executor.repo.path) not in where
    # The node's own sandbox root (sandbox/places.py, under its cache root), outside .git.
    assert "/sandboxes/" in where and ".git" not in Path(where).parts
    assert Path(where).parts[-3:] == (s.run_id, s.task_id, "worktree")
    assert r.commit == executor.repo.rev_parse(s.branch)
    assert executor.repo.out("show", f"{r.commit}:hi.txt") == "hi"
    assert "ran on Ray node" in r.message


def test_a_killed_worker_s_task_is_retried(executor: Backend, unique_marker: str) -> None:
    """kill -9 the Ray worker while its agent runs: Ray runs the task again on a new
    worker, whose start kills the first attempt's orphaned agent."""
    s = make_spec(executor.repo, f"echo started; sh -c 'sleep 2' {unique_marker}; echo done > out.txt")
    killed: list[int] = []

    def on_line(line: str) -> None:
        if line == "started" and not killed:
            agents = processes_with_arg(unique_marker)
            worker = next(p for p in map(_ray_worker_of, agents) if p is not None)
            os.kill(worker, signal.SIGKILL)
            killed.append(worker)

    r = contract.run(executor, s, on_line=on_line)
    assert killed, "the worker was never killed"
    assert r.status == "succeeded", r
    assert "run 2 there" in r.message
    assert executor.repo.out("show", f"{r.commit}:out.txt") == "done"
    assert processes_with_arg(unique_marker) == []


def _ray_worker_of(pid: int) -> int | None:
    """The Ray worker process above ``pid`` (its title starts with ``ray::``)."""
    while pid > 1:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                return pid
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return None


def test_a_run_through_ray_looks_like_a_local_run(ray_session: Path, webapp: Repo) -> None:
    require(has_cgroups(), "writable cgroups")
    tf = taskfile(
        {"id": "model", "command": "echo 'ROLE = \"admin\"' > src/models/role.py"},
        {"id": "ui", "command": "echo '/* dark */' >> src/ui/styles.css"},
        {"id": "api", "depends_on": ["model"],
         "command": "grep -q admin src/models/role.py && echo 'from src.models.role import ROLE'"
                    " > src/api/roles.py"},
    )
    res = run_workflow(webapp, tf, RunOptions(agents=2, use_history=False, executor="ray"))
    assert res.outcome == "succeeded", res.model_dump_json(indent=1)
    assert all(r.integrated for r in res.results)
    assert webapp.out("show", "main:src/api/roles.py") == "from src.models.role import ROLE"
    assert res.result("api").files_modified[0].path == "src/api/roles.py"
    assert res.result("api").limits.enforced_by != "none"
    assert audit_run(webapp, res.run_id).ok
    import ray

    assert ray.is_initialized()  # a Ray the caller started is left running


def test_cancelled_run_leaves_no_agent_on_the_worker(ray_session: Path, webapp: Repo,
                                                    unique_marker: str) -> None:
    """A whole run stopped by Ctrl-C while its agent runs on a worker: the task is
    cancelled there and none of its processes is left."""
    tf = taskfile({"id": "slow", "command": f"echo go; sleep {unique_marker}"})
    interrupted = threading.Event()

    def interrupt_when_running() -> None:
        if wait_for(lambda: processes_with_arg(unique_marker), 60):
            interrupted.set()
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_running, daemon=True).start()
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False, executor="ray"))
    assert interrupted.is_set() and res.outcome == "cancelled", res.model_dump_json(indent=1)
    assert res.result("slow").status == "cancelled"
    assert processes_with_arg(unique_marker) == []


def test_cli_starts_and_stops_its_own_ray(webapp: Repo, tmp_path: Path) -> None:
    """Without --ray-address the CLI starts a local Ray for the run and stops it after:
    no process with the run's HOME is left."""
    with ray_home() as base:
        tasks = write_tasks(tmp_path / "tasks.yaml",
                            {"id": "a", "command": "echo a > a.txt"},
                            {"id": "b", "command": "echo b > b.txt"})
        out = forkyard("run", str(tasks), "--executor", "ray", "--agents", "2", "--json",
                       cwd=webapp.path, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert webapp.out("show", "main:a.txt") == "a" and webapp.out("show", "main:b.txt") == "b"
        assert (base / "ray").is_dir()  # Ray's files went where the test pointed it
        home = str(base / "home")
        assert wait_for(lambda: not pids_with_env("HOME", home), 90), \
            describe(pids_with_env("HOME", home))


def test_a_killed_driver_resumes_on_ray(webapp: Repo, tmp_path: Path) -> None:
    """kill -9 of `forkyard run --executor ray` while tasks run on its workers; `--resume`
    (which starts Ray again: the executor is one of the run's stored options) lands every
    task exactly once."""
    from tests.forkyard import test_resume as crash

    with ray_home() as base:
        tasks = crash.crash_tasks(tmp_path / "tasks.yaml", n=4, sleep=1.5)
        proc = crash.start_run(webapp, tasks, "--executor", "ray")
        run_id = crash.wait_for(webapp, "task_started", count=3, timeout=240)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        # Ray's own processes follow their driver (its reaper); agents left on the node
        # are killed by the next attempt of their task.
        assert wait_for(lambda: not pids_with_env("HOME", str(base / "home")), 90)
        rc, doc = crash.resume(webapp, run_id)
        assert rc == 0, "\n".join(f"{r['task']} {r['status']} {r.get('reason')} "
                                   f"{r.get('message')} {r.get('log_tail', '')[-600:]}"
                                   for r in doc.get("results", []) if r["status"] != "succeeded")
        assert doc["outcome"] == "succeeded", doc
        audit = audit_run(webapp, run_id)
        assert audit.ok and all(n == 1 for n in audit.integrations.values()), audit
        names = webapp.out("ls-tree", "--name-only", "main", "out/").splitlines()
        assert sorted(names) == sorted(["out/.keep", *(f"out/t{i}.txt" for i in range(4))])


def test_mcp_execute_runs_on_ray(webapp: Repo) -> None:
    """execute_parallel_workflow with executor ray (the official MCP client): the detached
    run stores the option, runs its tasks on Ray workers and lands them."""
    import json

    from forkyard.journal.events import RunPaths, read_events
    from tests.forkyard import test_mcp_server as mcp

    with ray_home():
        ids: list[str] = []

        async def body(client: Any) -> None:
            started = mcp.ok(await client.call_tool("execute_parallel_workflow", {
                "tasks": mcp.TASKS, "maxParallelAgents": 2, "into": "main",
                "executor": "ray"}))
            ids.append(started["runId"])
            pids.append(started["pid"])
            st = await mcp.finished(client, started["runId"])
            assert st["outcome"] == "succeeded", st

        pids: list[int] = []
        mcp.session(webapp, body)
        # The run's process stops the Ray it started once its journal is closed.
        assert wait_for(lambda: not Path(f"/proc/{pids[0]}").exists()
                        or "Z" in Path(f"/proc/{pids[0]}/stat").read_text().split()[2], 60)
        paths = RunPaths.of(webapp, ids[0])
        assert json.loads(paths.manifest.read_text())["options"]["executor"] == "ray"
        finished = [e for e in read_events(paths.events) if e.type == "task_finished"]
        assert finished and all("ran on Ray node" in e.get("message") for e in finished)


@pytest.mark.parametrize("args", [["--executor", "cluster"], ["--ray-resource", "gpu=lots"],
                                  ["--ray-resource", "=1"]])
def test_bad_executor_options_exit_2_and_change_nothing(webapp: Repo, tmp_path: Path,
                                                        args: list[str]) -> None:
    tasks = write_tasks(tmp_path / "tasks.yaml", {"id": "a", "command": "echo a > a.txt"})
    before = webapp.rev_parse("main")
    out = forkyard("run", str(tasks), *args, cwd=webapp.path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert webapp.rev_parse("main") == before and not (webapp.common_dir / "forkyard" / "runs").exists()


def test_a_cancelled_task_s_work_comes_back(executor: Backend, unique_marker: str) -> None:
    """As locally, what the agent wrote before the cancel is committed and reachable on
    its branch: the worker sends it back although the Ray task itself is cancelled."""
    cancel = threading.Event()

    def on_line(line: str) -> None:
        if line == "ready":
            cancel.set()

    s = make_spec(executor.repo, f"echo partial > p.txt; echo ready; sleep {unique_marker}")
    r = contract.run(executor, s, on_line=on_line, cancel=cancel)
    assert r.status == "cancelled" and r.commit == executor.repo.rev_parse(s.branch), r
    assert executor.repo.out("show", f"{r.commit}:p.txt") == "partial"
    assert processes_with_arg(unique_marker) == []


def test_workers_make_overlay_sandboxes_over_one_base_released_at_the_run_s_end(
        ray_session: Path, webapp: Repo) -> None:
    """Each worker's sandbox is an overlay (as locally) whose lower layer is the one base
    checkout of the run on that node, shared by its worker processes; once the run is
    over, that checkout, its mounts and its lock files are gone from the node."""
    from sandbox import overlay

    require(has_cgroups(), "writable cgroups")
    require(overlay.usable(), "root and overlayfs")
    show = ("stat -f -c %T . > fs-{t}.txt; "
            "grep -o 'lowerdir=[^,]*' /proc/self/mountinfo | head -n 1 > lower-{t}.txt")
    tasks = [f"t{i}" for i in range(4)]
    tf = taskfile(*({"id": t, "command": show.format(t=t)} for t in tasks))
    res = run_workflow(webapp, tf, RunOptions(agents=2, use_history=False, executor="ray"))
    assert res.outcome == "succeeded", res.model_dump_json(indent=1)
    assert {webapp.out("show", f"main:fs-{t}.txt") for t in tasks} == {"overlayfs"}
    lowers = {webapp.out("show", f"main:lower-{t}.txt") for t in tasks}
    assert len(lowers) == 1, lowers  # one base checkout for every sandbox of the run
    lower = lowers.pop()
    assert lower.endswith(f"/bases/{res.run_id}/tree") and str(ray_session) in lower, lower
    assert all("ran on Ray node" in r.message for r in res.results)
    cache = Path(lower.removeprefix("lowerdir=")).parents[3]  # <cache>.git/forkyard
    assert wait_for(lambda: not (cache / "bases" / res.run_id).exists(), 60), \
        list((cache / "bases").iterdir())
    assert not [m for m in overlay.mounts_under(ray_session) if res.run_id in str(m)]
    assert not list((cache / "shared-bases").glob(f"{res.run_id}.*[!k]"))  # hold, done
