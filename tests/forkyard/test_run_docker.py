"""The run loop on the docker backend: same loop, agents in containers over /work."""

from __future__ import annotations

import pytest

from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile
from sandbox.errors import ImageNotFoundError

pytestmark = pytest.mark.docker

LIMITS = {"memory_mb": 128, "cpus": 0.5, "pids": 64, "timeout_s": 60, "network": False}


def test_run_in_containers(webapp: Repo, docker_image: str) -> None:
    tf = TaskFile.model_validate({"defaults": {"limits": LIMITS}, "tasks": [
        {"id": "a", "command": "echo a > a.txt"},
        {"id": "b", "depends_on": ["a"], "command": "cat a.txt > b.txt",
         "agent": {"command": "sh -c {command} && echo {worktree} > w.txt"}},
    ]})
    res = run_workflow(webapp, tf, RunOptions(agents=2, backend="docker", image=docker_image, use_history=False))
    assert res.outcome == "succeeded", res.model_dump_json(indent=1)
    assert webapp.out("show", "main:b.txt") == "a"
    assert webapp.out("show", "main:w.txt") == "/work"
    assert res.result("a").limits.enforced_by == "docker"


def test_missing_image_is_bad_input_before_anything_runs(webapp: Repo, docker_image: str) -> None:
    tf = TaskFile.model_validate({"tasks": [{"id": "a", "command": "true"}]})
    with pytest.raises(ImageNotFoundError) as info:
        run_workflow(webapp, tf, RunOptions(backend="docker", image="forkyard-no-such-image:0"))
    assert info.value.exit_code == 2
    assert not webapp.branches("forkyard/*")
