"""Real agent CLIs in forkyard's sandboxes, against the fake model server.

1. One run of 8 real agents -- two each of Claude Code, Codex, Gemini CLI and aider --
   on 4 slots (worktree backend: bubblewrap + Landlock + cgroups): every file must land.
2. For each CLI, the time from ``forkyard run`` (the command, started as a process) to
   the CLI's first model request, against the same CLI started directly with the same
   argv, environment and a private home of its own, in a plain checkout: the ratio is
   what forkyard's planning, sandbox and confinement add before the agent gets going.
   Medians of 3 each.

Needs the pinned CLIs (``make agents``; ``FORKYARD_AGENTS_BIN`` to point elsewhere).

    .venv/bin/python -m bench.agents
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.repos import build
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from planner import TaskFile
from sandbox import presets
from sandbox.agents import expand_env
from sandbox.backends.worktree.home import home_env
from tests.agents.conftest import AGENTS_BIN, CLIS, agent_setup
from tests.agents.fake_model import FakeModel

ROUNDS = 3
LIMITS = {"memory_mb": 2048, "cpus": 1.0, "pids": 512, "timeout_s": 300, "network": True}
ROOT = Path(__file__).resolve().parent.parent


def _repo(root: Path) -> Repo:
    for k, v in (("GIT_AUTHOR_NAME", "bench"), ("GIT_AUTHOR_EMAIL", "bench@localhost"),
                 ("GIT_COMMITTER_NAME", "bench"), ("GIT_COMMITTER_EMAIL", "bench@localhost")):
        os.environ.setdefault(k, v)
    return build("webapp", root)


def _task(preset: str, fm: FakeModel, mp: pytest.MonkeyPatch, tid: str) -> dict[str, Any]:
    return {"id": tid, "description": f"Create the file.\nWRITE out/{tid}.txt: {tid}",
            **agent_setup(preset, fm, mp)}


def eight_agents(work: Path, fm: FakeModel, mp: pytest.MonkeyPatch) -> None:
    repo = _repo(work / "eight")
    tasks = [_task(p, fm, mp, f"{p}-{n}") for p in CLIS for n in (1, 2)]
    start = time.perf_counter()
    res = run_workflow(repo, TaskFile.model_validate(
        {"defaults": {"limits": LIMITS}, "tasks": tasks}), RunOptions(agents=4, use_history=False))
    wall = time.perf_counter() - start
    landed = sum(1 for t in tasks if repo.git("cat-file", "-e", f"main:out/{t['id']}.txt",
                                               check=False).returncode == 0)
    print(f"8 real agents (2 x {', '.join(CLIS)}) on 4 slots: outcome {res.outcome}, "
          f"{landed}/8 files landed, wall {wall:.1f}s, task time {res.metrics.total_task_s:.1f}s, "
          f"speedup {res.metrics.actual_speedup:.2f}x")
    if landed != 8:
        raise SystemExit("not every file landed")


def _first_call(fm: FakeModel, after: float, deadline_s: float = 120) -> float:
    end = time.time() + deadline_s
    while time.time() < end:
        calls = [r["t"] for r in fm.model_calls() if r["t"] >= after]
        if calls:
            return min(calls) - after
        time.sleep(0.01)
    raise SystemExit("no model request")


def through_forkyard(repo: Repo, preset: str, fm: FakeModel, mp: pytest.MonkeyPatch,
                     n: int) -> float:
    tasks = repo.path.parent / f"{preset}-{n}.yaml"
    tasks.write_text(yaml.safe_dump({"defaults": {"limits": LIMITS},
                                     "tasks": [_task(preset, fm, mp, f"{preset}-in-{n}")]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "forkyard.cli", "run", str(tasks), "-n", "1",
                             "--json"], cwd=repo.path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = _first_call(fm, start)
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"forkyard run {preset}: {err.decode()[-500:]}")
    return first


def directly(repo: Repo, preset: str, fm: FakeModel, mp: pytest.MonkeyPatch, n: int,
             work: Path) -> float:
    """The same CLI, argv and environment, with a private home, no forkyard, no sandbox."""
    spec = _task(preset, fm, mp, f"{preset}-direct-{n}")
    checkout = work / f"direct-{preset}-{n}"
    repo.git("worktree", "add", "-q", "-b", f"direct-{preset}-{n}", str(checkout), "main")
    home = work / f"home-{preset}-{n}"
    home.mkdir()
    presets.seed_home(home, preset, Path.home(), {**os.environ, **expand_env("t", spec["env"])},
                      ("bench", "bench@localhost"))
    argv = presets.PRESETS[preset].argv(spec["description"], None, tuple(spec["agent"].get("args", ())))
    env = {**os.environ, **expand_env("t", spec["env"]), **home_env(home, preset)}
    start = time.time()
    proc = subprocess.Popen(["/bin/sh", "-c", shlex.join(argv)], cwd=checkout, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = _first_call(fm, start)
    proc.wait(timeout=300)
    return first


def main() -> None:
    os.environ["PATH"] = f"{AGENTS_BIN}:{os.environ['PATH']}"
    missing = [p for p in CLIS if presets.find_cli(p)[0] is None]
    if missing:
        raise SystemExit(f"missing agent CLIs: {missing} (make agents)")
    mp = pytest.MonkeyPatch()
    with tempfile.TemporaryDirectory(prefix="forkyard-bench-agents-", dir="/var/tmp") as tmp, \
            FakeModel() as fm:
        work = Path(tmp)
        # Benchmarks run outside the tests' hermetic HOME: the CLIs' config comes from a
        # throw-away home (aider's model metadata is written there by agent_setup).
        mp.setenv("HOME", str(work / "user-home"))
        (work / "user-home").mkdir()
        mp.setenv("XDG_CACHE_HOME", str(work / "cache"))
        eight_agents(work, fm, mp)
        repo = _repo(work / "timing")
        print()
        print("| CLI | forkyard run -> first model request (median) | started directly (median) | ratio |")
        print("|---|---|---|---|")
        for preset in CLIS:
            inside, direct = [], []
            for n in range(ROUNDS):
                direct.append(directly(repo, preset, fm, mp, n, work))
                inside.append(through_forkyard(repo, preset, fm, mp, n))
            i, d = statistics.median(inside), statistics.median(direct)
            print(f"| {preset} | {i:.2f}s | {d:.2f}s | {i / d:.2f}x |", flush=True)
    mp.undo()


if __name__ == "__main__":
    main()
