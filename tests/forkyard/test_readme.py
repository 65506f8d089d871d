"""The README's examples work as printed: its Python block, run in a repository that has
what it names (a task file, branches feature-a and feature-b), and its tour's plan
commands."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures.repos import commit_files
from gitproc.git import Repo

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _block(after: str, lang: str) -> str:
    start = README.index(after)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    assert m is not None
    return m.group(1)


def test_the_python_api_example_runs_as_printed(webapp: Repo,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = {"tasks": [
        {"id": "a", "command": "echo a > a.txt", "estimated_minutes": 2},
        {"id": "b", "command": "echo b > b.txt", "estimated_minutes": 3},
    ]}
    commit_files(webapp, "main", {"tasks.yaml": yaml.safe_dump(tasks)}, "tasks")
    webapp.git("reset", "-q", "--hard", "main")
    for name, path in (("feature-a", "fa.txt"), ("feature-b", "fb.txt")):
        commit_files(webapp, name, {path: name}, name, base="main")
    monkeypatch.chdir(webapp.path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_block("### From Python", "python"), "README.md", "exec"), {})
    printed = out.getvalue()
    assert printed.splitlines()[0] == "3.0"          # two tasks on two agents
    assert printed.splitlines()[1] == "succeeded"
    assert '"outcome": "dry_run"' in printed
    assert (webapp.path / "a.txt").read_text() == "a\n"  # the run landed on main


def test_the_tours_plan_commands_run_as_printed() -> None:
    tour = [line.split("#")[0].strip() for line in _block("## A short tour", "sh").splitlines()]
    plans = [line for line in tour if line.startswith("forkyard plan")]
    assert len(plans) == 2
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for line in plans:
        argv = [sys.executable, "-m", "forkyard", *line.split()[1:]]
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
