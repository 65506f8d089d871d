"""A run's base checkout shared by several processes (a Ray node's worker processes).

Two :class:`SharedBases` of one run in this process hold their own ``flock`` file
descriptions, so they behave towards each other as two processes would; a killed
holder is a real subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gitproc.git import Repo
from sandbox import overlay, shared_bases
from sandbox.shared_bases import SharedBases
from tests.conftest import require


def _usable() -> None:
    require(overlay.usable(), "overlay mounts (root and overlayfs)")


def test_made_once_kept_between_uses_removed_after_the_run_s_end(pylib: Repo) -> None:
    _usable()
    head = pylib.rev_parse("HEAD")
    a, b = SharedBases(pylib, "run1"), SharedBases(pylib, "run1")
    base = a.get(head)
    (base.tree / "made-once").write_text("x")  # a second checkout would not have it
    assert b.get(head).tree == base.tree and (base.tree / "made-once").exists()
    a.close()
    b.close()
    assert base.tree.is_dir()  # nobody holds it, but the run is not over: the next task's
    c = SharedBases(pylib, "run1")
    assert (c.get(head).tree / "made-once").exists()
    assert shared_bases.finish_run(pylib, "run1") is False  # c still holds it
    assert base.tree.is_dir()
    c.close()  # the last holder of a finished run removes it
    assert not (pylib.forkyard_dir / "bases" / "run1").exists()
    assert overlay.mounts_under(pylib.forkyard_dir) == []


def test_a_killed_holder_does_not_keep_it(pylib: Repo, tmp_path: Path) -> None:
    _usable()
    head = pylib.rev_parse("HEAD")
    ready = tmp_path / "ready"
    code = ("import sys, time; from gitproc.git import Repo; "
            "from sandbox.shared_bases import SharedBases; "
            f"SharedBases(Repo({str(pylib.path)!r}), 'run2').get({head!r}); "
            f"open({str(ready)!r}, 'w').close(); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), "the holder never got the checkout"
        assert shared_bases.finish_run(pylib, "run2") is False  # held: it stays
        assert (pylib.forkyard_dir / "bases" / "run2" / "tree").is_dir()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert shared_bases.collect(pylib) == ["run2"]  # over, and nobody holds it now
        assert not (pylib.forkyard_dir / "bases" / "run2").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert overlay.mounts_under(pylib.forkyard_dir) == []


def test_collect_leaves_a_live_run_alone(pylib: Repo) -> None:
    _usable()
    head = pylib.rev_parse("HEAD")
    live = SharedBases(pylib, "run3")
    live.get(head)
    idle = SharedBases(pylib, "run4")
    idle.get(head)
    idle.close()
    try:
        # Idle "for long" (0 s here): collected unless held; the run in use stays.
        assert shared_bases.collect(pylib, idle_s=0) == ["run4"]
        assert (pylib.forkyard_dir / "bases" / "run3" / "tree").is_dir()
    finally:
        live.close()
        shared_bases.finish_run(pylib, "run3")
    assert overlay.mounts_under(pylib.forkyard_dir) == []
