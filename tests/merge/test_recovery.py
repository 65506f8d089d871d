"""Crash safety: kill a batch at every step, recover, and find the target whole; and two
integrators at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fixtures.repos import commit_files
from gitproc.git import Repo
from gitproc.lock import LockTimeoutError, integration_lock
from merge import recover
from merge.journal import FAULT_STEPS, pending
from merge.transaction import Transaction

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, sys
    from merge import merge_sources
    report = merge_sources(sys.argv[1], "main", sys.argv[2:])
    print(json.dumps(report.model_dump(mode="json")))
""")


def run_batch(repo: Repo, sources: list[str], fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FORKYARD_FAULT", None)
    if fault:
        env["FORKYARD_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", SCRIPT, str(repo.path), *sources],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def setup_sources(repo: Repo) -> None:
    commit_files(repo, "a", {"a.txt": "a\n"}, "a", base="main")
    commit_files(repo, "b", {"b.txt": "b\n", "base.txt": "b edits base\n"}, "b", base="main")


@pytest.mark.parametrize("step", FAULT_STEPS)
def test_crash_at_each_step_then_recover(repo: Repo, step: str) -> None:
    setup_sources(repo)
    old = repo.rev_parse("main")
    proc = run_batch(repo, ["a", "b"], fault=step)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    now = repo.rev_parse("main")
    landed_before_recover = now != old
    actions = recover(repo)
    assert pending(repo) == []
    assert repo.out("for-each-ref", "refs/forkyard") == ""
    tip = repo.rev_parse("main")
    assert tip == now  # recovery never moves the ref half-way
    if landed_before_recover:
        # The full result: both sources, never one of them.
        assert sorted(repo.out("ls-tree", "--name-only", "main").split()) == [
            "a.txt", "b.txt", "base.txt"]
        assert repo.out("rev-parse", "main^2") == repo.rev_parse("b")
        assert repo.out("rev-parse", "main~1^2") == repo.rev_parse("a")
    else:
        assert tip == old
    # Either way the checkout matches its branch: nothing looks dirty.
    assert repo.out("status", "--porcelain", "--untracked-files=no") == ""
    expected_actions = {"after-journal": ["rolled_back"], "after-ref": ["completed"],
                        "after-worktree": ["completed"]}
    assert [a.action for a in actions] == expected_actions.get(step, [])
    # The next batch runs normally after recovery.
    commit_files(repo, "c", {"c.txt": "c\n"}, "c", base="main")
    assert Transaction(repo, "main", ["c"]).run().outcome == "committed"


def test_next_transaction_recovers_first(repo: Repo) -> None:
    setup_sources(repo)
    assert run_batch(repo, ["a", "b"], fault="after-ref").returncode == -signal.SIGKILL
    assert len(pending(repo)) == 1
    commit_files(repo, "c", {"c.txt": "c\n"}, "c", base="main")
    assert Transaction(repo, "main", ["c"]).run().outcome == "committed"
    assert pending(repo) == []
    assert repo.out("status", "--porcelain", "--untracked-files=no") == ""


def test_two_processes_at_once(repo: Repo) -> None:
    names = [f"s{i}" for i in range(6)]
    for n in names:
        commit_files(repo, n, {f"{n}.txt": f"{n}\n"}, n, base="main")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(repo.path), *group],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for group in (names[:3], names[3:])]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    files = set(repo.out("ls-tree", "--name-only", "main").split())
    assert {f"{n}.txt" for n in names} <= files
    assert repo.out("rev-list", "--count", "main") == "13"  # base + 6 sources + 6 merges
    repo.git("fsck", "--no-dangling")
    assert repo.out("status", "--porcelain", "--untracked-files=no") == ""


def test_lock_wait_gives_up_with_a_clear_message(repo: Repo) -> None:
    setup_sources(repo)
    with integration_lock(repo.forkyard_dir):
        with pytest.raises(LockTimeoutError) as exc:
            Transaction(repo, "main", ["a"], lock_timeout=0.2).run()
    assert "another forkyard process" in str(exc.value)
    assert str(os.getpid()) in str(exc.value)
