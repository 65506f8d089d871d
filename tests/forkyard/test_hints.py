"""A task whose script lies under the host's /tmp fails in the sandbox (its /tmp is
private): the failure says so, instead of a bare "can't open file"."""

from __future__ import annotations

import sys
from pathlib import Path

from forkyard.run.hints import private_tmp_hint
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile
from sandbox import confine
from tests.conftest import require


def test_script_under_host_tmp_names_the_private_tmp(webapp: Repo, tmp_path: Path) -> None:
    require(confine.resolve("auto", True).bwrap, "bubblewrap (private /tmp)")
    script = tmp_path / "agent.py"
    script.write_text("open('done.txt', 'w').write('ok')\n")
    assert str(script).startswith("/tmp/")
    tf = TaskFile.model_validate({"tasks": [
        {"id": "script", "command": f"{sys.executable} {script}"}]})
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False))
    r = res.result("script")
    assert r.status == "failed"
    assert "can't open file" in r.log_tail  # what the agent said: the premise
    assert f"{script} exists on this host but not in the sandbox" in r.reason
    assert "/tmp is private" in r.reason


def test_no_hint_for_paths_that_do_not_exist_or_are_elsewhere(tmp_path: Path) -> None:
    assert private_tmp_hint("python /tmp/does-not-exist-xyz.py") == ""
    assert private_tmp_hint(f"python {Path(__file__)}") == ""
