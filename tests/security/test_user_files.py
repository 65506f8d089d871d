"""The user's own files and screen: the checkout sync, setup.copy, sandbox paths, the
terminal, ``--keep``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from forkyard.journal.events import Event
from forkyard.views.display import LiveDisplay, PlainDisplay
from gitproc.git import Repo
from sandbox import overlay, places
from tests.security.conftest import attack, events, forkyard_cli, tasks

ESC = "\x1b"


@pytest.mark.parametrize("ignored", [True, False])
def test_the_checkout_sync_never_overwrites_the_users_untracked_files(
        pylib: Repo, proof: Path, ignored: bool) -> None:
    name = ".env" if ignored else "notes.txt"
    if ignored:
        (pylib.path / ".gitignore").write_text(".env\n")
        pylib.git("add", ".gitignore")
        pylib.git("commit", "-qm", "ignore .env")
    (pylib.path / name).write_text("SECRET=user\n")
    before = pylib.rev_parse("main")
    script = (f"echo SECRET=agent > {name} && git add -f {name} && "
              f"git -c user.name=a -c user.email=a@b commit -qm env && touch {proof}/committed")
    res = attack(pylib, tasks({"id": "env", "command": script}), proof)
    assert (proof / "committed").exists()
    assert res.result("env").commit is not None
    assert (pylib.path / name).read_text() == "SECRET=user\n"
    assert pylib.rev_parse("main") == before  # refused: nothing landed, reported
    rolled = events(pylib, res.run_id, "batch_rolled_back")
    assert rolled and name in str(rolled[0].get("error"))


def test_setup_copy_never_writes_through_a_symlink_of_the_target_branch(
        pylib: Repo, tmp_path: Path, proof: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    # The user's checkout holds a real cfg/ with an ignored file to copy ...
    (pylib.path / ".gitignore").write_text("cfg/\n")
    pylib.git("add", ".gitignore")
    pylib.git("commit", "-qm", "ignore cfg")
    (pylib.path / "cfg").mkdir()
    (pylib.path / "cfg" / "local.env").write_text("KEY=1\n")
    # ... while the target branch (not checked out) holds cfg as a symlink out of it.
    link = pylib.git("hash-object", "-w", "--stdin", input=str(outside).encode()).out.strip()
    listing = pylib.out("ls-tree", "main") + f"\n120000 blob {link}\tcfg\n"
    tree = pylib.git("mktree", input=listing.encode()).out.strip()
    commit = pylib.out("commit-tree", tree, "-p", "main", "-m", "cfg is a link")
    pylib.git("branch", "target", commit)
    assert (pylib.path / "cfg" / "local.env").exists()
    script = f"test -L cfg && readlink cfg > {proof}/link; echo w > w.txt"
    res = attack(pylib, tasks({"id": "copy", "command": script},
                              setup={"copy": ["cfg/local.env"]}), proof, into="target")
    assert (proof / "link").read_text().strip() == str(outside)  # the sandbox had the link
    assert not (outside / "local.env").exists()
    assert res.result("copy").status == "succeeded"


def test_setup_copy_never_reads_through_a_symlink(pylib: Repo, tmp_path: Path,
                                                  proof: Path) -> None:
    secret = tmp_path / "secret-dir"
    secret.mkdir()
    (secret / "key.env").write_text("PRIVATE\n")
    (pylib.path / ".gitignore").write_text("conf\n")
    pylib.git("add", ".gitignore")
    pylib.git("commit", "-qm", "ignore conf")
    (pylib.path / "conf").symlink_to(secret)
    script = f"ls -la conf/ > {proof}/seen 2>&1; cat conf/key.env >> {proof}/seen 2>&1; true"
    attack(pylib, tasks({"id": "peek", "command": script}, setup={"copy": ["conf/*.env"]}),
           proof)
    assert (proof / "seen").exists()
    assert "PRIVATE" not in (proof / "seen").read_text()


def test_task_ids_never_share_a_sandbox_path(pylib: Repo, proof: Path) -> None:
    ids = ["a", "a.layer", "a.objects", "a.refs", "a.home"]
    script = ('{ test -e "$TMPDIR/mine" && echo shared || echo fresh; } > ' f'{proof}/'
              '"$FORKYARD_TASK_ID.tmp"; '
              'echo "$FORKYARD_TASK_ID" > "$TMPDIR/mine"; sleep 1; '
              'echo "$FORKYARD_TASK_ID" > "out-$FORKYARD_TASK_ID.txt"; '
              'test "$(cat "$TMPDIR/mine")" = "$FORKYARD_TASK_ID"')
    res = attack(pylib, tasks(*({"id": i, "command": script} for i in ids)), proof,
                 agents=4, mode="waves")
    for i in ids:
        assert (proof / f"{i}.tmp").read_text() == "fresh\n"  # no one else's temp dir
        r = res.result(i)
        assert r.status == "succeeded" and r.integrated, r
        assert pylib.out("show", f"main:out-{i}.txt") == i


OSC52 = "\\033]52;c;cHduZWQ=\\007"
PAYLOAD = f"printf 'before{OSC52}\\033[2J\\033]0;title\\007\\233Hafter\\n'; echo done > d.txt"


def test_escape_sequences_never_reach_the_terminal(pylib: Repo) -> None:
    tf = {"defaults": {"limits": {"timeout_s": 60}},
          "tasks": [{"id": "esc", "description": f"d{ESC}]52;c;eA==\a",
                     "command": PAYLOAD}]}
    r = forkyard_cli(pylib, tf)
    shown = r.stdout + r.stderr
    assert r.returncode == 0, shown.decode(errors="replace")
    assert b"\x1b]52" not in shown and b"\x1b[2J" not in shown and b"\x9b" not in shown
    # The agent's output did arrive (its visible part is in the journal), stripped.
    outputs = [e.get("line") for e in _all_events(pylib) if e.type == "task_output"]
    assert any("before" in (line or "") and "after" in (line or "") for line in outputs), (
        outputs)
    assert not any(ESC in (line or "") for line in outputs)
    from forkyard.journal.events import list_runs

    run_id = str(list_runs(pylib)[-1])
    for extra in (["status"], ["report", run_id, "-o", str(pylib.path.parent / "r.html")]):
        out = forkyard_cli_plain(pylib, *extra)
        assert ESC.encode() not in out
    assert ESC not in (pylib.path.parent / "r.html").read_text()


def _all_events(repo: Repo) -> list[Event]:
    from forkyard.journal.events import RunPaths, list_runs, read_events

    return [e for run in list_runs(repo) for e in read_events(RunPaths.of(repo, run).events)]


def forkyard_cli_plain(repo: Repo, *args: str) -> bytes:
    import os
    import subprocess
    import sys

    from tests.security.conftest import ROOT

    r = subprocess.run([sys.executable, "-m", "forkyard.cli", *args], cwd=repo.path,
                       capture_output=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return r.stdout + r.stderr


@pytest.mark.parametrize("live", [False, True])
def test_displays_strip_control_characters(live: bool) -> None:
    """What reaches the displays even if it did not come through a sandbox's pump (a
    journal written by an older forkyard, a validation log, a file name)."""
    from rich.console import Console

    nasty = f"x{ESC}]52;c;cHduZWQ={chr(7)}y{ESC}[2J\u202ez[red]markup[/red]"
    evs = [Event(0.0, "run_started", {"run_id": "r", "agents": 1, "tasks": ["t"]}),
           Event(0.0, "task_started", {"task": "t", "agent": 0, "attempt": 1}),
           Event(0.0, "task_output", {"task": "t", "line": nasty}),
           Event(0.0, "batch_rolled_back",
                 {"index": 0, "tasks": ["t"], "error": nasty, "conflicts": []})]
    buf = io.StringIO()
    if live:
        display = LiveDisplay(1, console=Console(file=buf, force_terminal=True, width=200))
        for ev in evs:
            display(ev)
        display.console.print(display)
    else:
        plain = PlainDisplay(buf)
        for ev in evs:
            plain(ev)
    text = buf.getvalue()
    assert "]52;" not in text and "[2J" not in text and "\u202e" not in text
    if live:
        assert "[red]markup[/red]" in text  # shown as text, not taken as markup
    else:
        assert "xy" in text


def test_keep_with_a_fifo_leaves_no_mount(pylib: Repo, proof: Path) -> None:
    script = f"mkfifo pipe && echo kept > kept.txt && touch {proof}/made"
    res = attack(pylib, tasks({"id": "k", "command": script}), proof, keep=True)
    assert (proof / "made").exists()
    kept = places.worktree_path(pylib.forkyard_dir, res.run_id, "k")
    assert (kept / "kept.txt").read_text() == "kept\n"
    assert (kept / "pipe").is_fifo()
    assert not overlay.has_mounts(places.sandbox_root(pylib.forkyard_dir))
    assert not overlay.has_mounts(pylib.forkyard_dir)
