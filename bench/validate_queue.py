"""Validation queue figures: 8 good branches and 1 bad one, a validation of T seconds.

    .venv/bin/python -m bench.validate_queue

Time to land the 8 good branches as one bisect-mode transaction, the command running in
the sandboxed validator forkyard uses (worktree backend, confined), reported as a ratio
to T.  Baseline, measured in the same run: one validation at a time (``validate_slots=1``,
the serial bisect: the full batch, then a binary search over prefixes, then the batch
without the culprit).  Goal (issue 14): at most 2T on 4 slots; the serial search costs
about 4-6T.  The bad branch is put at each of three positions (early, middle, last).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from fixtures.repos import commit_files
from forkyard.run.validation import command_validator
from gitproc.git import Repo, git
from merge.transaction import Transaction

T = float(os.environ.get("FORKYARD_BENCH_T", "2"))
"""Seconds one validation sleeps (``FORKYARD_BENCH_T``); the sandbox's own start and
clean-up come on top of it, so small values overstate the ratio."""
N_GOOD = 8
SLOTS = 4


def _repo(where: Path, bad_at: int) -> tuple[Repo, list[str]]:
    git("init", "-q", "-b", "main", str(where), cwd=where.parent)
    repo = Repo(where)
    commit_files(repo, "main", {"README": "bench\n"}, "base")
    git("checkout", "-q", "main", cwd=where)
    names = []
    for i in range(N_GOOD + 1):
        files = {f"f{i}.txt": f"{i}\n"}
        if i == bad_at:
            files["BROKEN"] = "x\n"
        commit_files(repo, f"b{i}", files, f"branch {i}", base="main")
        names.append(f"b{i}")
    return repo, names


def land(slots: int, bad_at: int, root: Path) -> tuple[float, int]:
    repo, names = _repo(root / f"s{slots}-{bad_at}", bad_at)
    command = f"sleep {T}; test ! -f BROKEN"
    tx = Transaction(repo, "main", names, mode="bisect", validate=command,
                     validator=command_validator(repo, command), validate_slots=slots)
    start = time.perf_counter()
    report = tx.run()
    took = time.perf_counter() - start
    assert report.culprits == [f"b{bad_at}"] and len(report.landed) == N_GOOD, report
    return took, tx.validation_rounds


def main() -> None:
    print(f"T = {T:g} s, {N_GOOD} good + 1 bad branch, bisect mode, sandboxed validator\n")
    print(f"{'bad at':>7} {'serial (1 slot)':>18} {f'parallel ({SLOTS} slots)':>20} {'speed-up':>9}")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="fy-bench-vq-") as tmp:
        for bad_at in (1, 4, 8):
            serial, sr = land(1, bad_at, Path(tmp))
            parallel, pr = land(SLOTS, bad_at, Path(tmp))
            ratios.append(parallel / T)
            print(f"{bad_at:>7} {serial / T:>9.2f}T ({sr} rounds) {parallel / T:>11.2f}T "
                  f"({pr} rounds) {serial / parallel:>8.2f}x")
    print(f"\nparallel, median over positions: {statistics.median(ratios):.2f}T "
          f"(goal <= 2T)")


if __name__ == "__main__":
    main()
