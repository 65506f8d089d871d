"""Sandbox overhead: worktree-sandbox create+destroy vs plain ``git worktree add/remove``.

On a 5,000-file repository, one sandbox's ``prepare`` + ``cleanup`` (the worktree
backend with its defaults: confinement and limits on, port leasing on) is timed against
``git worktree add -b`` + ``git worktree remove --force`` of the same tree; target ratio
<= 1.2.  Creation is lean by design: cgroups and confinement are set up when the agent
starts, so their per-agent cost is reported separately:

- limits: cgroup create (with limits written) + remove, for this host's layout;
- confinement: starting ``true`` under bubblewrap, under the Landlock shim, and under
  both, minus starting ``true`` directly;
- end to end: ``execute`` of ``true`` (shim, cgroup, bwrap, Landlock, commit check).

Run: ``.venv/bin/python -m bench.sandbox_overhead``.  Prints a markdown table;
:func:`main` returns its rows.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fixtures.repos import build_synthetic
from gitproc.git import Repo
from gitproc.process import run
from planner.tasks import Limits
from sandbox import cgroups, confine
from sandbox.backends.base import SandboxSpec
from sandbox.backends.worktree import SHIM_ARGV, WorktreeBackend, WorktreeConfig

FILES = 5_000
ROUNDS = 7
TARGET_RATIO = 1.2


def _run_retrying(argv: list[str]) -> None:
    # bubblewrap's set-up can fail when mounts change under it (a container engine at
    # work); the backend retries the same way.
    for attempt in range(3):
        if run(argv, check=False).returncode == 0 or attempt == 2:
            return
        time.sleep(0.05)


def _median(fn: Callable[[int], object], rounds: int = ROUNDS) -> float:
    times = []
    for i in range(rounds):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _bench_worktrees(repo: Repo, base: str, rounds: int) -> tuple[float, float]:
    root = Path(tempfile.mkdtemp(prefix="plain-", dir=repo.common_dir))
    backend = WorktreeBackend(repo, WorktreeConfig())

    def plain(i: int) -> None:
        path = root / f"w{i}"
        repo.git("worktree", "add", "--quiet", "-b", f"plain/{root.name}/{i}", str(path), base)
        repo.git("worktree", "remove", "--force", "--force", str(path))

    def sandbox(i: int) -> None:
        sb = backend.prepare(SandboxSpec(run_id=f"bench{root.name[-6:]}", task_id=f"t{i}",
                                         base=base, command="true"))
        backend.cleanup(sb)

    # Interleave so disk cache and CPU frequency drift hit both sides alike.
    plain_t, sandbox_t = [], []
    for i in range(rounds):
        t0 = time.perf_counter()
        plain(i)
        t1 = time.perf_counter()
        sandbox(i)
        plain_t.append(t1 - t0)
        sandbox_t.append(time.perf_counter() - t1)
    return statistics.median(plain_t), statistics.median(sandbox_t)


def _bench_cgroup(rounds: int) -> tuple[str, float | None]:
    hier = cgroups.detect()
    if hier.layout == "none":
        return "none", None
    limits = Limits(memory_mb=512, cpus=1.0, pids=256)

    def once(i: int) -> None:
        cgroups.Cgroup.create(hier, "bench", f"g{i}", limits).remove()

    return hier.enforced_by, _median(once, rounds)


def _bench_confinement(tmp: Path, repo: Repo, base: str, rounds: int) -> dict[str, float | None]:
    wt = tmp / "wt"
    repo.git("worktree", "add", "--quiet", "-b", "bench/confine", str(wt), base)
    git_paths = confine.GitPaths.of(repo.common_dir, wt, "bench/confine")
    tmpdir = tmp / "t"
    tmpdir.mkdir()
    plain = _median(lambda _: run(["true"]), rounds)
    out: dict[str, float | None] = {"plain": plain}
    bw = confine.bwrap_argv(worktree=wt, tmpdir=tmpdir, git=git_paths, network=False)
    ll = [*SHIM_ARGV, *confine.landlock_shim_args(confine.landlock_spec(
              worktree=wt, tmpdir=tmpdir, git=git_paths, network=False, inside_bwrap=False)), "--"]
    have_bw = confine.bwrap_flags() is not None
    have_ll = confine.landlock_abi() >= 1
    out["bwrap"] = _median(lambda _: _run_retrying([*bw, "true"]), rounds) - plain if have_bw else None
    out["landlock"] = _median(lambda _: _run_retrying([*ll, "true"]), rounds) - plain if have_ll else None
    out["bwrap+landlock"] = (_median(lambda _: _run_retrying([*bw, *ll, "true"]), rounds) - plain
                             if have_bw and have_ll else None)
    repo.git("worktree", "remove", "--force", str(wt))
    return out


def _bench_execute(repo: Repo, base: str, rounds: int) -> tuple[float, str, str]:
    backend = WorktreeBackend(repo, WorktreeConfig())
    times: list[float] = []
    names = ("none", "none")
    for i in range(rounds):
        sb = backend.prepare(SandboxSpec(run_id="benchexec", task_id=f"e{i}", base=base,
                                         command="true"))
        t0 = time.perf_counter()
        result = backend.execute(sb)
        times.append(time.perf_counter() - t0)
        names = (result.enforced_by, result.confinement)
        backend.cleanup(sb)
    return statistics.median(times), *names


def main(rounds: int = ROUNDS, files: int = FILES) -> list[dict[str, Any]]:
    """Run the benchmark; print and return the table rows."""
    with tempfile.TemporaryDirectory(prefix="forkyard-bench-") as d:
        tmp = Path(d)
        repo = build_synthetic(tmp / "repo", files)
        base = repo.rev_parse("HEAD")
        plain, sandbox = _bench_worktrees(repo, base, rounds)
        layout, cg = _bench_cgroup(rounds)
        conf = _bench_confinement(tmp, repo, base, rounds)
        exec_t, enforced_by, confinement = _bench_execute(repo, base, max(3, rounds // 2))
    ratio = sandbox / plain
    ms = lambda v: "n/a" if v is None else f"{v * 1000:.1f} ms"  # noqa: E731
    rows: list[dict[str, Any]] = [
        {"figure": f"git worktree add + remove ({files} files)", "measured": ms(plain),
         "seconds": plain, "target": "", "pass": None},
        {"figure": "sandbox prepare + cleanup", "measured": ms(sandbox), "seconds": sandbox,
         "target": "", "pass": None},
        {"figure": "ratio sandbox / plain", "measured": f"{ratio:.2f}", "seconds": ratio,
         "target": f"<= {TARGET_RATIO}", "pass": ratio <= TARGET_RATIO},
        {"figure": f"limits: cgroup setup + teardown ({layout})", "measured": ms(cg),
         "seconds": cg, "target": "per agent", "pass": None},
    ]
    for name in ("bwrap", "landlock", "bwrap+landlock"):
        rows.append({"figure": f"confinement: {name} start", "measured": ms(conf[name]),
                     "seconds": conf[name], "target": "per agent", "pass": None})
    rows.append({"figure": f"execute `true` end to end ({enforced_by}, {confinement})",
                 "measured": ms(exec_t), "seconds": exec_t, "target": "per agent", "pass": None})
    print("| figure | target | measured | pass |")
    print("|---|---|---|---|")
    for r in rows:
        verdict = "" if r["pass"] is None else ("yes" if r["pass"] else "NO")
        print(f"| {r['figure']} | {r['target']} | {r['measured']} | {verdict} |")
    return rows


if __name__ == "__main__":
    main()
