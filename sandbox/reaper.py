"""The reaper: what a forkyard process started in its sandboxes dies with it, however it dies.

bubblewrap's ``--die-with-parent`` ends a sandbox when forkyard dies, but it arms that
(``PR_SET_PDEATHSIG``) in each of its processes a moment after that process began: in
the pid namespace's init only after it forked the command.  A SIGKILL of forkyard inside
that window -- rare, but a loaded machine widens it -- leaves the command running,
adopted by the host's init.  And without bubblewrap nothing ties a sandbox to forkyard
at all.

So every cgroup a forkyard process makes is also named to its reaper: a small process of
its own, started with the first group, reading group directories from a pipe whose only
writer is that forkyard process (``+DIR`` when made, ``-DIR`` when removed).  When the
pipe ends -- forkyard exited, normally or not -- the reaper kills whatever is still in
any group left: with ``cgroup.kill`` where the kernel has it, else by SIGKILLing every
member until none is left -- and removes the emptied groups.  After a normal exit no
group is left, and it has nothing to do.  What it could not remove (a member that would
not die in time), ``forkyard gc`` and ``--resume`` do, as after any crash.

The reaper runs as ``python -I -S`` on this file: the standard library only, nothing
imported from a repository or the environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

#: Seconds the reaper keeps killing a group that is not empty yet (a member forking).
KILL_FOR_S = 5.0

# -- in forkyard's process ------------------------------------------------------------

_lock = threading.Lock()
_live: dict[bytes, None] = {}   # the groups made and not removed, in order
_reaper: list[subprocess.Popen[bytes]] = []  # this process's reaper, once started


def watch(groups: list[str]) -> None:
    """Have this process's reaper kill what is in ``groups`` (directories) if this
    process ends before :func:`forget` -- starting the reaper on first use."""
    _tell(b"+", [os.fsencode(g) for g in groups])


def forget(groups: list[str]) -> None:
    """``groups`` are removed: nothing of them to kill."""
    _tell(b"-", [os.fsencode(g) for g in groups])


def _tell(sign: bytes, groups: list[bytes]) -> None:
    with _lock:
        for g in groups:
            if sign == b"+":
                _live[g] = None
            else:
                _live.pop(g, None)
        proc = _reaper[0] if _reaper else None
        if proc is None or proc.poll() is not None:
            if sign == b"-":
                return
            # None yet, or killed by someone: a new one, told every group still here.
            proc = _start()
            if proc is None:
                return
            _reaper[:] = [proc]
            sign, groups = b"+", list(_live)
        try:
            assert proc.stdin is not None
            os.write(proc.stdin.fileno(), b"".join(sign + g + b"\n" for g in groups))
        except OSError:  # gone meanwhile, or not reading: bubblewrap's tie and gc remain
            pass


def _start() -> subprocess.Popen[bytes] | None:
    from gitproc.process import spawn

    # At the caller's priority, not at background priority, though it only waits: until
    # it has exec'd, a forked child holds a copy of every descriptor forkyard has open,
    # the run's lock among them, and a niced one on a busy machine takes its time to get
    # there.  It is made with a run's first sandbox: were forkyard killed then, `forkyard
    # status` would call the run running until the child got round to its exec.
    try:
        proc = spawn([sys.executable, "-I", "-S", os.path.abspath(__file__)], cwd="/",
                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    except OSError:
        return None
    assert proc.stdin is not None
    os.set_blocking(proc.stdin.fileno(), False)  # never wait on it
    return proc


# -- in the reaper ----------------------------------------------------------------------


def _members(group: str) -> list[int]:
    try:
        with open(os.path.join(group, "cgroup.procs"), "rb") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def reap(groups: list[str], kill_for_s: float = KILL_FOR_S) -> None:
    """Kill every member of ``groups`` (group directories) until they are empty, then
    remove them: here when forkyard is gone, and by ``forkyard gc`` for a crashed run's
    (``cgroups.remove_dirs``)."""
    for group in groups:
        try:
            with open(os.path.join(group, "cgroup.kill"), "wb") as f:
                f.write(b"1")
        except OSError:
            pass  # a v1 hierarchy, or a group gone: its members get SIGKILL below
    deadline = time.monotonic() + kill_for_s
    while True:
        left = False
        for group in groups:
            for pid in _members(group):
                left = True
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for group in groups:  # emptied: the group goes, and its run's once that is empty
        for d in (group, os.path.dirname(group)):
            try:
                os.rmdir(d)
            except OSError:
                break


def main() -> int:
    groups: dict[str, None] = {}
    for line in sys.stdin.buffer:  # until the writer -- forkyard -- is gone
        sign, group = line[:1], os.fsdecode(line[1:].rstrip(b"\n"))
        if sign == b"+":
            groups[group] = None
        elif sign == b"-":
            groups.pop(group, None)
    reap(list(groups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
