"""The Ray executor against the ideal, beside the local executor in the same run.

16 agents that each sleep 2 s (and write one file), 4 at a time, into a 500-file
repository: the ideal wall time is 4 waves x 2 s = 8 s.  The same task file runs through
the local executor, then through the Ray executor on a local Ray instance started for the
run.  Ray's own start (``ray.init`` and warming its workers) is reported apart.  Goals:
within 2x of the ideal including Ray's start, within 1.3x excluding it.

    .venv/bin/python -m bench.ray_executor
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.run_overhead import _repo
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from planner import TaskFile

TASKS, AGENTS, FILES, SLEEP_S = 16, 4, 500, 2.0
IDEAL_S = TASKS / AGENTS * SLEEP_S
LIMITS = {"memory_mb": 256, "cpus": 1.0, "pids": 64, "timeout_s": 120, "network": False}


def _tasks(tag: str) -> TaskFile:
    return TaskFile.model_validate({
        "defaults": {"limits": LIMITS},
        "tasks": [{"id": f"{tag}{i:02d}", "estimated_minutes": SLEEP_S / 60,
                   "command": f"sleep {SLEEP_S:g}; echo {i} > {tag}-{i:02d}.txt"}
                  for i in range(TASKS)],
    })


def main() -> None:
    from forkyard.run.executors.ray import RayExecutor
    from sandbox.backends import WorktreeConfig

    with tempfile.TemporaryDirectory(prefix="fy-bench-ray-") as tmp:
        os.environ["RAY_TMPDIR"] = tmp  # Ray's session files, not /tmp/ray
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        repo = _repo(Path(tmp) / "repo", FILES)
        opts = RunOptions(agents=AGENTS, use_history=False)

        t0 = time.monotonic()
        local = run_workflow(repo, _tasks("local"), opts)
        local_s = time.monotonic() - t0
        assert local.outcome == "succeeded", local.outcome

        executor = RayExecutor(repo, WorktreeConfig(), agents=AGENTS)
        try:
            executor.connect()
            start_s = executor.startup_s
            t0 = time.monotonic()
            res = run_workflow(repo, _tasks("ray"), opts.model_copy(update={"executor": "ray"}),
                               backend=executor)
            ray_s = time.monotonic() - t0
        finally:
            executor.close()
        assert res.outcome == "succeeded", res.model_dump_json(indent=1)
        assert all(r.integrated for r in res.results)

    print(f"{TASKS} agents x {SLEEP_S:g} s, {AGENTS} at a time, {FILES} files: "
          f"ideal {IDEAL_S:.1f} s")
    print("| executor | Ray start | run | ratio to ideal (run) | ratio incl. start | goal |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| local | - | {local_s:.2f} s | {local_s / IDEAL_S:.2f}x | - | baseline |")
    print(f"| ray (local instance) | {start_s:.2f} s | {ray_s:.2f} s | "
          f"{ray_s / IDEAL_S:.2f}x | {(ray_s + start_s) / IDEAL_S:.2f}x | "
          f"<= 1.3x / <= 2x |")
    steps = sorted({k for t in executor.timings for k in t})
    means = {k: sum(t.get(k, 0.0) for t in executor.timings) / len(executor.timings)
             for k in steps}
    print("per task, mean s: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))


if __name__ == "__main__":
    main()
