"""Runs in the background: started detached, watched and stopped through their journal.

An orchestrating agent (the MCP server) must get a run's id at once and must not take
the run down with it when it goes away: the MCP stdio client kills the server's whole
process group on exit.  :func:`start_detached_run` therefore starts ``python -m
forkyard.detached DIR`` in a session of its own, with the task file and the
:class:`~forkyard.run.options.RunOptions` written to ``DIR`` (under
``.git/forkyard/detached/<run-id>/``) and the run id chosen in advance.  The run's state
is its journal (``.git/forkyard/runs/<run-id>/``), so anyone can follow it with
:func:`forkyard.views.status.run_status`; :func:`cancel_run` sends the run's process the
SIGTERM that ``forkyard run`` turns into a clean stop (outcome ``cancelled``).

Bad input is still reported to the caller: :func:`start_detached_run` waits until the
run has written its manifest (every bad-input check passed) or the process has failed,
and raises the process's own one-line error then.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from forkyard.journal.events import Event, RunPaths, new_run_id, resolve_run
from forkyard.run.options import RunOptions
from forkyard.run.workflow import check_new_run_id
from gitproc.errors import BadInputError, ForkyardError
from gitproc.git import Repo
from gitproc.lock import held_elsewhere
from gitproc.process import spawn
from planner import TaskFile

#: How long :func:`start_detached_run` waits for the run to pass its input checks.
START_TIMEOUT_S = 60.0

# Processes this one started: polled so that finished ones do not linger as zombies.
_children: dict[str, subprocess.Popen[bytes]] = {}


class RunNotRunningError(BadInputError):
    """The run is not running (finished, stopped, or crashed): nothing to cancel."""


@dataclass(frozen=True)
class DetachedRun:
    """A run started in the background."""

    run_id: str
    pid: int
    dir: Path
    """Where its task file, options, output and start-up error live."""


def detached_dir(repo: Repo, run_id: str) -> Path:
    return repo.forkyard_dir / "detached" / run_id


def reap_finished() -> None:
    """Collect the exit status of finished runs this process started (no zombies)."""
    for run_id, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[run_id]


def start_detached_run(repo: Repo | str | os.PathLike[str], tasks: TaskFile,
                       options: RunOptions, *, run_id: str | None = None,
                       timeout_s: float = START_TIMEOUT_S) -> DetachedRun:
    """Start ``tasks`` as a run that outlives this process; return once it has started.

    Raises the run's own bad-input error (exit code 2, nothing changed) when it fails its
    checks.  After ``timeout_s`` without either outcome the run is returned as started.
    """
    r = repo if isinstance(repo, Repo) else Repo(repo)
    reap_finished()
    rid = run_id or new_run_id()
    check_new_run_id(r, rid)
    d = detached_dir(r, rid)
    d.mkdir(parents=True, exist_ok=False)
    (d / "tasks.json").write_text(json.dumps(tasks.model_dump(mode="json", by_alias=True)))
    (d / "options.json").write_text(options.model_dump_json())
    (d / "repo").write_text(str(r.path))
    with open(d / "output.log", "wb") as log:
        proc = spawn([sys.executable, "-m", "forkyard.detached", str(d)],
                     cwd=r.path, stdout=log.fileno(), stderr=subprocess.STDOUT)
    _children[rid] = proc
    (d / "pid").write_text(str(proc.pid))
    manifest = RunPaths.of(r, rid).manifest
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not manifest.exists():
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if not manifest.exists() and proc.poll() is not None:
        _children.pop(rid, None)
        err = start_error(d)
        if err is not None:
            shutil.rmtree(d, ignore_errors=True)  # bad input leaves nothing behind
            raise err
        raise ForkyardError(f"the run exited with status {proc.returncode} before it "
                            f"started; see {d / 'output.log'}")
    return DetachedRun(rid, proc.pid, d)


def start_error(d: Path) -> ForkyardError | None:
    """The error a detached run ended with, as the exception it was (None: none)."""
    try:
        doc = json.loads((d / "error.json").read_text())
    except (OSError, ValueError):
        return None
    err = BadInputError(doc["error"]) if doc.get("exit_code") == 2 else ForkyardError(doc["error"])
    return err


def run_pid(paths: RunPaths) -> int | None:
    """The process that runs (or last ran) a run, from its journal's start events."""
    pid = None
    try:
        with open(paths.events) as fh:
            for line in fh:
                if '"run_started"' in line or '"run_resumed"' in line:
                    ev = Event.from_json(line)
                    if isinstance(ev.get("pid"), int):
                        pid = ev.get("pid")
    except OSError:
        return None
    return pid


def cancel_run(repo: Repo | str | os.PathLike[str], run_id: str, *,
               wait_s: float = 60.0) -> bool:
    """Stop a running run cleanly (SIGTERM to its process) and wait up to ``wait_s`` for it
    to finish stopping.  True when it has stopped.  Raises :class:`RunNotRunningError` for a
    run that is not running."""
    r = repo if isinstance(repo, Repo) else Repo(repo)
    paths = resolve_run(r, run_id)
    pid = run_pid(paths)
    # The run's lock is held exactly while a process runs it: no lock, nothing to stop,
    # and a pid recorded by a dead run may belong to someone else by now.
    if pid is None or not held_elsewhere(paths.lock):
        raise RunNotRunningError(f"run {paths.run_id} is not running")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        reap_finished()
        if not held_elsewhere(paths.lock):
            return True
        time.sleep(0.1)
    return False


def _main(d: Path) -> int:
    """The detached process: run the task file with the options, as ``forkyard run`` would."""
    from forkyard.commands.run import run_command

    repo = Path((d / "repo").read_text())
    options = RunOptions.model_validate_json((d / "options.json").read_text())
    try:
        with open(d / "result.json", "w") as out:
            sys.stdout = out
            return run_command(repo, d / "tasks.json", options, as_json=True, run_id=d.name)
    except ForkyardError as exc:
        (d / "error.json").write_text(json.dumps({"error": str(exc), "exit_code": exc.exit_code}))
        print(f"forkyard: error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        sys.stdout = sys.__stdout__


if __name__ == "__main__":  # pragma: no cover - the detached process itself
    sys.exit(_main(Path(sys.argv[1])))
