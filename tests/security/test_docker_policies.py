"""The docker backend's part of the policies: the environment by allowlist with passed
values masked, network ``none`` and ``full``, and ``allow`` refused as bad input (the
proxy is not wired into containers)."""

from __future__ import annotations

from typing import Any

import pytest

from forkyard.journal.models import RunResult
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile
from sandbox.agents import AgentConfigError

pytestmark = pytest.mark.docker

SECRET = "sk-docker-5e8d2a71c9b3"
LIMITS = {"memory_mb": 128, "cpus": 0.5, "pids": 64, "timeout_s": 60}


def run(repo: Repo, image: str, task: dict[str, Any], **limits: Any) -> RunResult:
    tf = TaskFile.model_validate({"defaults": {"limits": {**LIMITS, **limits}}, "tasks": [task]})
    return run_workflow(repo, tf, RunOptions(agents=1, backend="docker", image=image,
                                             use_history=False))


def test_environment_by_allowlist_and_masked(webapp: Repo, docker_image: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_TOKEN", SECRET + "x")
    monkeypatch.setenv("MY_TOKEN", SECRET)
    res = run(webapp, docker_image, {"id": "a", "pass_env": ["MY_TOKEN"],
                                     "command": 'env > env.txt; echo "token=$MY_TOKEN"'},
              network="none")
    env = webapp.out("show", "main:env.txt")
    assert "FORKYARD_TASK_ID=a" in env and f"MY_TOKEN={SECRET}" in env  # it had the passed one
    assert "CLOUD_TOKEN" not in env
    assert "token=***" in res.result("a").log_tail and SECRET not in res.model_dump_json()


@pytest.mark.parametrize(("policy", "has_eth"), [("none", False), ("full", True)])
def test_network_none_and_full(webapp: Repo, docker_image: str, policy: str, has_eth: bool) -> None:
    res = run(webapp, docker_image, {"id": "a", "command": "cat /proc/net/dev"}, network=policy)
    tail = res.result("a").log_tail
    assert "lo:" in tail  # the agent listed its interfaces
    assert ("eth0" in tail) == has_eth, tail


def test_allow_is_bad_input_on_docker(webapp: Repo, docker_image: str) -> None:
    with pytest.raises(AgentConfigError, match="docker backend cannot enforce"):
        run(webapp, docker_image, {"id": "a", "command": "true"}, network={"allow": ["x.com"]})
    assert not webapp.branches("forkyard/*")
