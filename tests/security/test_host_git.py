"""Attacks on forkyard's host-side git: what an agent writes into its git state (refs,
reflogs, config, gitlinks, special files) must never steer a git forkyard runs on the
host, nor move any ref but the agent's own branch, to the commit recorded for it."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from forkyard.gc import gc
from gitproc.git import Repo
from tests.security.conftest import attack, events, refs, tasks

# The agent's own branch file, as its git sees it (a private one under bubblewrap).
BRANCH_FILE = '"$(git rev-parse --git-common-dir)/refs/heads/$FORKYARD_BRANCH"'
REFLOG = '"$(git rev-parse --git-common-dir)/logs/refs/heads/$FORKYARD_BRANCH"'


@pytest.mark.parametrize("victim,exit_code", [("main", 1), ("main", 0), ("victim", 1)])
def test_a_symbolic_branch_ref_moves_no_other_ref(pylib: Repo, proof: Path, victim: str,
                                                  exit_code: int) -> None:
    pylib.git("branch", "victim")
    before = refs(pylib)
    script = (f"printf 'ref: refs/heads/{victim}\\n' > {BRANCH_FILE} && "
              f"cat {BRANCH_FILE} > {proof}/wrote && echo pwned > pwned.txt; exit {exit_code}")
    res = attack(pylib, tasks({"id": "evil", "command": script}), proof)
    assert (proof / "wrote").read_text() == f"ref: refs/heads/{victim}\n"  # the attack ran
    assert refs(pylib) == before  # main, victim and every other ref where they were
    r = res.result("evil")
    assert r.status == "failed" and not r.integrated and r.commit is None
    assert "not a commit" in events(pylib, res.run_id, "task_finished")[0].get("message")
    # gc afterwards deletes forkyard's branches by name, never through a symbolic ref.
    gc(pylib, prune_unmerged=True)
    assert refs(pylib) == before


def test_gc_deletes_a_symbolic_sandbox_branch_itself(pylib: Repo) -> None:
    """What Landlock alone (no private ref dir) or a crash could leave: gc must delete
    the symbolic ref, not the branch it names."""
    main = pylib.rev_parse("main")
    link = pylib.common_dir / "refs/heads/forkyard/deadrun/t"
    link.parent.mkdir(parents=True)
    link.write_text("ref: refs/heads/main\n")
    # The attack is real: git itself follows it (the ref reads as main's commit).
    assert pylib.rev_parse("forkyard/deadrun/t") == main
    gc(pylib, prune_unmerged=True)
    assert pylib.rev_parse("main") == main
    assert not link.exists()


FSMON = """#!/bin/sh
echo ran >> {host}/fsmonitor-ran
echo ran >> {proof}/fsmonitor-ran
exit 1
"""


def _fsmonitor(tmp_path: Path, proof: Path) -> tuple[Path, Path]:
    host = tmp_path / "host-only"  # outside every sandbox (its /tmp is private)
    host.mkdir()
    prog = proof / "fsmon.sh"
    prog.write_text(FSMON.format(host=host, proof=proof))
    prog.chmod(0o755)
    return prog, host / "fsmonitor-ran"


def test_a_gitlink_to_a_repository_with_fsmonitor_runs_nothing_on_the_host(
        pylib: Repo, proof: Path, tmp_path: Path) -> None:
    prog, host_marker = _fsmonitor(tmp_path, proof)
    script = f"""
        git init -q nested && cd nested && git config core.fsmonitor {prog}
        echo x > f && git add f && git -c user.name=a -c user.email=a@b commit -qm n
        touch f && git status >/dev/null 2>&1; cd ..
        git add nested && echo more > more.txt
    """
    res = attack(pylib, tasks({"id": "sub", "command": script}), proof)
    assert (proof / "fsmonitor-ran").exists()  # the program runs (confined, as the agent)
    assert not host_marker.exists()  # ... and never as root on the host
    assert res.result("sub").status == "succeeded"


def test_an_agents_worktree_config_runs_nothing_on_the_host(
        pylib: Repo, proof: Path, tmp_path: Path) -> None:
    pylib.git("config", "extensions.worktreeConfig", "true")  # what sparse-checkout sets
    prog, host_marker = _fsmonitor(tmp_path, proof)
    script = (f"git config --worktree core.fsmonitor {prog} && git status >/dev/null 2>&1; "
              "echo left > leftover.txt")
    res = attack(pylib, tasks({"id": "wtc", "command": script}), proof)
    assert (proof / "fsmonitor-ran").exists()
    assert not host_marker.exists()
    r = res.result("wtc")
    assert r.integrated and pylib.out("show", "main:leftover.txt") == "left"


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_reflog_replaced_by_a_symlink_writes_no_host_file(
        pylib: Repo, proof: Path, tmp_path: Path, target_exists: bool) -> None:
    victim = tmp_path / "victim" / "file"
    victim.parent.mkdir()
    if target_exists:
        victim.write_text("precious\n")
    script = (f"mkdir -p $(dirname {REFLOG}) && rm -f {REFLOG} && ln -s {victim} {REFLOG} && "
              f"readlink {REFLOG} > {proof}/linked; echo work > work.txt")
    res = attack(pylib, tasks({"id": "log", "command": script}), proof)
    assert (proof / "linked").read_text().strip() == str(victim)
    assert (victim.read_text() == "precious\n") if target_exists else not victim.exists()
    assert res.result("log").integrated  # the work itself still lands


def test_a_branch_file_replaced_by_a_symlink_is_not_followed(
        pylib: Repo, proof: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim-ref"
    victim.write_text(pylib.rev_parse("main") + "\n")
    script = f"rm -f {BRANCH_FILE} && ln -s {victim} {BRANCH_FILE} && touch {proof}/linked"
    res = attack(pylib, tasks({"id": "lnk", "command": script}), proof)
    assert (proof / "linked").exists()
    r = res.result("lnk")
    # Whatever the sandbox's git then made of the link (its commit step rewrites the ref
    # file), the host never read or wrote through it.
    assert victim.read_text() == res.target_sha_before + "\n"
    # (Its git, finding no branch, may commit a new root: held back as unrelated.)
    assert not r.integrated and pylib.rev_parse("main") == res.target_sha_before


@pytest.mark.parametrize("where", ["objects", "index", "branch"])
def test_a_fifo_where_forkyard_reads_hangs_nothing(pylib: Repo, proof: Path,
                                                   where: str) -> None:
    plant = {
        "objects": 'mkdir -p "$GIT_OBJECT_DIRECTORY/ab" && '
                   'mkfifo "$GIT_OBJECT_DIRECTORY/ab/' + "c" * 38 + '" && '
                   'mkdir -p "$GIT_OBJECT_DIRECTORY/pack" && '
                   'mkfifo "$GIT_OBJECT_DIRECTORY/pack/pack-' + "d" * 40 + '.idx"',
        "index": 'rm -f "$(git rev-parse --git-dir)/index" && '
                 'mkfifo "$(git rev-parse --git-dir)/index"',
        "branch": f"rm -f {BRANCH_FILE} && mkfifo {BRANCH_FILE}",
    }[where]
    tf = tasks({"id": "fifo", "command": f"echo x > x.txt && {plant} && touch {proof}/ok"})
    done: list[object] = []
    # A hang fails the test (the run never comes back), it is never waited for forever.
    worker = threading.Thread(target=lambda: done.append(attack(
        pylib, tf, proof, backend_options={"commit_timeout_s": 20})), daemon=True)
    worker.start()
    worker.join(240)
    assert done, "forkyard hung on a planted FIFO"
    assert (proof / "ok").exists()
    res = done[0]
    assert res.result("fifo").status in ("succeeded", "failed")  # type: ignore[attr-defined]
    assert pylib.rev_parse("main") == res.target_sha_after  # type: ignore[attr-defined]


def test_integration_merges_the_recorded_commit_not_the_branch_name(
        pylib: Repo, proof: Path) -> None:
    """Another agent of the run rewrites a finished task's branch before its batch runs."""
    before = pylib.rev_parse("main")
    evil = pylib.out("commit-tree", pylib.out("rev-parse", "main^{tree}"), "-p", before, "-m", "evil",
                     env={"GIT_AUTHOR_NAME": "e", "GIT_AUTHOR_EMAIL": "e@e",
                          "GIT_COMMITTER_NAME": "e", "GIT_COMMITTER_EMAIL": "e@e"})
    swap = (f"sleep 1; printf '{evil}\\n' > \"$(git rev-parse --git-common-dir)/refs/heads/"
            f"forkyard/$FORKYARD_RUN_ID/good\" && touch {proof}/swapped; echo b > b.txt")
    tf = tasks({"id": "good", "command": "echo good > good.txt"},
               {"id": "swapper", "command": swap}, )
    res = attack(pylib, tf, proof, agents=2, mode="waves")
    assert (proof / "swapped").exists()  # the write went through (into its own refs)
    good = res.result("good")
    assert good.integrated and pylib.out("show", "main:good.txt") == "good"
    log = pylib.out("log", "--format=%s", f"{before}..main")
    assert "evil" not in log


def test_the_host_swapping_a_branch_after_finish_changes_nothing(pylib: Repo) -> None:
    """The same attack with the sandbox out of the way: the branch is moved on the host
    between the task's finish and its batch; the recorded commit lands."""
    from forkyard.run.options import RunOptions
    from forkyard.run.workflow import run_workflow

    base = pylib.rev_parse("main")
    evil = pylib.out("commit-tree", pylib.out("rev-parse", "main^{tree}"), "-p", base, "-m", "evil",
                     env={"GIT_AUTHOR_NAME": "e", "GIT_AUTHOR_EMAIL": "e@e",
                          "GIT_COMMITTER_NAME": "e", "GIT_COMMITTER_EMAIL": "e@e"})
    swapped: list[str] = []

    def swap(ev: object) -> None:
        if getattr(ev, "type", "") == "task_finished" and ev.get("commit"):  # type: ignore[attr-defined]
            branch = "refs/heads/" + ev.get("branch")  # type: ignore[attr-defined]
            pylib.git("update-ref", branch, evil)
            swapped.append(branch)

    tf = tasks({"id": "t", "command": "echo t > t.txt"})
    res = run_workflow(pylib, tf, RunOptions(use_history=False), listeners=(swap,))
    assert swapped
    assert res.result("t").integrated and pylib.out("show", "main:t.txt") == "t"
    assert "evil" not in pylib.out("log", "--format=%s", f"{base}..main")


def test_an_unrelated_history_fails_alone(pylib: Repo, proof: Path) -> None:
    orphan = ('c=$(git -c user.name=a -c user.email=a@b commit-tree "$(git write-tree)" -m root)'
              f' && git reset -q --hard "$c" && echo "$c" > {proof}/orphan')
    tf = tasks({"id": "orphan", "command": orphan},
               {"id": "mate1", "command": "echo 1 > mate1.txt"},
               {"id": "mate2", "command": "echo 2 > mate2.txt"})
    for strategy in ("conservative", "aggressive"):
        if strategy == "aggressive":
            pylib.git("reset", "-q", "--hard", "HEAD")
        res = attack(pylib, tf, proof, agents=3, mode="waves", strategy=strategy)
        assert (proof / "orphan").exists()
        assert not res.result("orphan").integrated
        assert res.result("mate1").integrated and res.result("mate2").integrated, strategy
        kinds = [c["kind"] for b in res.batches for c in b.conflicts]
        assert "unrelated" in kinds
        # Its own reason says so (the batch-mates landed: no one else is blamed).
        assert "screened out (unrelated)" in str(res.result("orphan").reason)
        assert subprocess.run(["git", "merge-base", "--is-ancestor",
                               res.target_sha_before, "main"], cwd=pylib.path).returncode == 0


def test_nothing_of_the_agent_runs_while_its_leftovers_are_committed(
        pylib: Repo, proof: Path) -> None:
    """The command exits leaving a process that keeps appending to a file of the
    worktree (and, as proof, to one outside).  Its tree is killed before the commit
    step: what was committed is all it ever wrote, nothing came after the snapshot."""
    writer = (f"(i=0; while :; do i=$((i+1)); echo $i >> bg.txt; echo $i >> {proof}/bg.txt; "
              f"sleep 0.01; done) & sleep 0.3; echo done > fg.txt")
    res = attack(pylib, tasks({"id": "bg", "command": writer}), proof)
    written = (proof / "bg.txt").read_text().split()
    assert len(written) > 5  # the background writer ran
    r = res.result("bg")
    assert r.integrated
    committed = pylib.out("show", "main:bg.txt").split()
    assert committed == written
