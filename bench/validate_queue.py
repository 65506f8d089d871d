"""Validation queue figures: 8 good branches and 1 bad one, a validation of T seconds.

    .venv/bin/python -m bench.validate_queue

Time to land the 8 good branches as one bisect-mode transaction, the command running in
the sandboxed validator forkyard uses (worktree backend, confined), reported as a ratio
to T.  Baseline, measured in the same run: one validation at a time (``validate_slots=1``,
the serial bisect: the full batch, then a binary search over prefixes, then the batch
without the culprit).  Goal (issue 14): at most 2T on 4 slots; the serial search costs
about 4-6T.  The bad branch is put at each of the nine positions in turn: the figure
is the mean over them (a user does not choose where the bad branch is), the worst
position beside it.
Two times are given for the parallel queue: when the target landed (what a user waits
for) and when ``run()`` returned, once every validation sandbox was removed.
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
COMMAND = f"sleep {T}; test ! -f BROKEN"  # fails on the bad branch's tree


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


def land(slots: int, bad_at: int, root: Path) -> tuple[float, float, int]:
    """(seconds until the target moved, until ``run()`` returned, validation rounds)."""
    repo, names = _repo(root / f"s{slots}-{bad_at}", bad_at)
    tx = Transaction(repo, "main", names, mode="bisect", validate=COMMAND,
                     validator=command_validator(repo, COMMAND), validate_slots=slots)
    start = time.monotonic()
    report = tx.run()
    returned = time.monotonic() - start
    assert report.culprits == [f"b{bad_at}"] and len(report.landed) == N_GOOD, report
    assert tx.landed_at is not None
    # Nothing of the validations is left once run() returned (their clean-up is drained).
    assert "validate-" not in repo.out("for-each-ref", "refs/heads/")
    return tx.landed_at - start, returned, tx.validation_rounds


def one_validation(root: Path) -> float:
    """Seconds one validation takes alone through the same sandboxed validator (its
    sandbox made, the command run, the sandbox removed): the unit the issue's "delay by
    about one validation" counts in."""
    repo, _ = _repo(root / "one", bad_at=-1)
    validator = command_validator(repo, COMMAND)
    start = time.monotonic()
    result = validator(repo.rev_parse("b0"))
    took = time.monotonic() - start
    validator.drain()
    assert result.passed, result
    return took


def main() -> None:
    print(f"T = {T:g} s, {N_GOOD} good + 1 bad branch, bisect mode, sandboxed validator")
    print("landed: the target ref moved; returned: run() returned, every validation "
          "sandbox removed\n")
    print(f"{'bad at':>6} {'serial (1 slot)':>18} {f'parallel ({SLOTS} slots)':>20} "
          f"{'returned':>9} {'speed-up':>9}")
    ratios, back, serials = [], [], []
    with tempfile.TemporaryDirectory(prefix="fy-bench-vq-") as tmp:
        for bad_at in range(N_GOOD + 1):
            serial, _, sr = land(1, bad_at, Path(tmp))
            parallel, returned, pr = land(SLOTS, bad_at, Path(tmp))
            ratios.append(parallel / T)
            back.append(returned / T)
            serials.append(serial / T)
            print(f"{bad_at + 1:>4}/{N_GOOD + 1} {serial / T:>9.2f}T ({sr} rounds) "
                  f"{parallel / T:>11.3f}T ({pr} rounds) {returned / T:>8.3f}T "
                  f"{serial / parallel:>8.2f}x")
        one = one_validation(Path(tmp))
    mean = statistics.mean(ratios)
    print(f"\nparallel, the bad branch equally likely anywhere (mean over the {N_GOOD + 1} "
          f"positions): landed {mean:.3f}T, returned {statistics.mean(back):.3f}T "
          f"(goal <= 2T); worst position {max(ratios):.3f}T; serial mean "
          f"{statistics.mean(serials):.2f}T ({statistics.mean(serials) / mean:.2f}x slower)")
    print(f"one validation alone through the same validator: {one:.3f} s ({one / T:.3f}T); "
          f"landed = {mean * T / one:.3f} x one validation on average, "
          f"{max(ratios) * T / one:.3f} at worst")


if __name__ == "__main__":
    main()
