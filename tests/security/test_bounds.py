"""Unbounded agents: forkyard's own memory whatever an agent prints, and what a small
object may become in the user's checkout (a maximum file size at integration) or how
much of the tree one task may delete."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gitproc.git import Repo
from tests.security.conftest import LIMITS, ROOT, attack, events, tasks

PEAK_SCRIPT = """
import json, resource, sys
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from planner import load_tasks
res = run_workflow(sys.argv[1], load_tasks(sys.argv[2]), RunOptions(use_history=False))
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "tail": res.results[0].log_tail[-300:], "status": res.results[0].status}))
"""


def _peak(repo: Repo, command: str) -> dict:
    """Run one task in a fresh forkyard process; its own peak memory (agents excluded:
    they are its grandchildren, in their cgroup) and the task's log tail."""
    path = repo.path.parent / "tasks.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"limits": LIMITS},
                                    "tasks": [{"id": "loud", "command": command}]}))
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(repo.path), str(path)],
                         capture_output=True, text=True, timeout=300, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("shape", ["one-line", "no-newline", "many-lines"])
def test_forkyard_memory_stays_bounded_whatever_an_agent_prints(pylib: Repo,
                                                                shape: str) -> None:
    mib = 128
    command = {
        "one-line": f"head -c {mib << 20} /dev/zero | tr '\\0' a; echo; echo after",
        "no-newline": f"head -c {mib << 20} /dev/zero | tr '\\0' b",
        "many-lines": f"for i in $(seq {mib}); do head -c 1048576 /dev/zero | tr '\\0' c; "
                      "echo; done; echo after",
    }[shape]
    quiet = _peak(pylib, "echo quiet")
    loud = _peak(pylib, command)
    assert loud["status"] == "succeeded"
    assert "[line cut]" in loud["tail"]  # the attack reached forkyard: its lines were cut
    if shape != "no-newline":
        assert loud["tail"].endswith("after")
    # 128 MiB printed; forkyard grows by far less than one copy of it.
    grown_mib = (loud["peak_kib"] - quiet["peak_kib"]) / 1024
    assert grown_mib < 48, (quiet, loud["peak_kib"])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0


@pytest.mark.parametrize("size_mib,limit_mib,lands", [(32, 8, False), (4, 8, True)])
def test_a_file_over_the_size_limit_is_held_back(pylib: Repo, proof: Path, size_mib: int,
                                                 limit_mib: int, lands: bool) -> None:
    # Zeros: a tiny object (it compresses ~1000:1) that becomes a big file on checkout.
    script = (f"head -c {size_mib << 20} /dev/zero > big.bin && ls -l big.bin > {proof}/made; "
              "echo small > small.txt")
    tf = tasks({"id": "big", "command": script}, {"id": "mate", "command": "echo m > m.txt"})
    res = attack(pylib, tf, proof, agents=2, mode="waves", max_file_mb=limit_mib,
                 strategy="aggressive")
    assert (proof / "made").exists()
    assert res.result("big").commit is not None  # the commit was made and recorded
    assert res.result("big").integrated is lands
    assert res.result("mate").integrated  # its batch-mate lands either way
    assert (pylib.path / "big.bin").exists() is lands
    if not lands:
        held = [c for b in res.batches for c in b.conflicts if c["kind"] == "file_too_large"]
        assert held and held[0]["task"] == "big" and held[0]["path"] == "big.bin"
        assert "screened out (file_too_large): big.bin" in str(res.result("big").reason)


@pytest.mark.parametrize("allow", [False, True])
def test_a_commit_deleting_the_tree_is_held_back_unless_allowed(pylib: Repo, proof: Path,
                                                                allow: bool) -> None:
    files = pylib.out("ls-files").splitlines()
    script = f"git rm -rq . && git ls-files | wc -l > {proof}/left"
    res = attack(pylib, tasks({"id": "wipe", "command": script, "allow_deletes": allow}), proof)
    assert (proof / "left").read_text().strip() == "0"
    assert res.result("wipe").integrated is allow
    assert (len(pylib.out("ls-files").splitlines()) == 0) is allow
    if not allow:
        assert pylib.out("ls-files").splitlines() == files
        held = [c for b in res.batches for c in b.conflicts]
        assert held[0]["kind"] == "mass_delete" and "allow_deletes" in held[0]["message"]
        assert "screened out (mass_delete)" in str(res.result("wipe").reason)
        batch = events(pylib, res.run_id, "batch_rolled_back")
        assert batch and batch[0].get("conflicts")[0]["kind"] == "mass_delete"


def test_deleting_a_few_files_is_not_held_back(pylib: Repo) -> None:
    first = pylib.out("ls-files").splitlines()[0]
    res = attack(pylib, tasks({"id": "tidy", "command": f"git rm -q {first}"}))
    assert res.result("tidy").integrated
