"""Process supervision for the worktree backend: an agent's process tree started with its
output pumped, waited for until it exits, times out or is cancelled, and then killed
whole (its cgroup, else its process group and the processes carrying its token)."""

from __future__ import annotations

import collections
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from gitproc.hostile import printable
from gitproc.process import raise_priority, spawn
from sandbox import confine, limits, shim
from sandbox.backends.base import LineCallback
from sandbox.backends.worktree.config import BWRAP_ATTEMPTS
from sandbox.network import NetworkPolicy

# The longest output line kept: whatever an agent prints, forkyard's memory stays
# bounded (a longer line is cut here, the rest of it read and dropped).
MAX_LINE_BYTES = 16 * 1024
# The longest line a stream reader (``sandbox/streams.py``) is given whole: a CLI's JSON
# event (a whole file written, a long final message) can be longer than a display line,
# and cut it is no longer JSON.  Still a bound: the rest of a longer one is dropped.
MAX_EVENT_BYTES = 1024 * 1024


def _pump(proc: subprocess.Popen[bytes], lines: _Lines) -> None:
    assert proc.stdout is not None
    cut = False  # inside the dropped rest of an over-long line
    for raw in iter(lambda: proc.stdout.readline(lines.read_bytes()), b""):  # type: ignore[union-attr]
        whole = raw.endswith(b"\n")
        if not cut:
            lines.take(raw, whole)
        cut = not whole
    proc.stdout.close()


def _text(raw: bytes, limit: int, whole: bool,
          mask: Callable[[str], str] | None = None) -> str:
    # No terminal control sequence goes further (display, journal, report); secrets are
    # masked before the cut, so a cut cannot leave the start of one showing.
    text = printable(raw.decode("utf-8", "replace").rstrip("\r\n"))
    if mask is not None:
        text = mask(text)
    cut = len(raw) > limit or len(text) > limit
    return text[:limit] + " [line cut]" if cut or not whole else text


def clip(line: str) -> str:
    """``line`` as a display line: at most :data:`MAX_LINE_BYTES` characters."""
    return line if len(line) <= MAX_LINE_BYTES else line[:MAX_LINE_BYTES] + " [line cut]"


class _Lines:
    """An agent's output: the trailing lines kept, and where each line goes as it comes
    (set when the task starts: a warm start's chain is pumped before it has a task).
    ``on_line`` gets display lines (cut at :data:`MAX_LINE_BYTES`); ``on_whole``, when
    set, gets each line instead, whole up to :data:`MAX_EVENT_BYTES` (a stream reader)."""

    def __init__(self, keep: int, mask: Callable[[str], str] | None = None) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self.on_line: LineCallback | None = None
        self.mask = mask  # secrets out, before anything keeps the line (sandbox/secrets.py)
        self.on_whole: LineCallback | None = None

    def read_bytes(self) -> int:
        """How much of one line is read at most."""
        return MAX_LINE_BYTES if self.on_whole is None else MAX_EVENT_BYTES

    def take(self, raw: bytes, whole: bool) -> None:
        """One line as read (``whole``: it ended with a newline)."""
        short = _text(raw, MAX_LINE_BYTES, whole, self.mask)
        self.tail.append(short)
        try:
            if self.on_whole is not None:
                self.on_whole(_text(raw, MAX_EVENT_BYTES, whole, self.mask))
            elif self.on_line is not None:
                self.on_line(short)
        except Exception:  # a broken display must not kill the agent's pump
            pass


@dataclass
class _Agent:
    """A started process tree: its process, output pump, and (warm start) gate pipe and
    (bubblewrap) status pipe."""

    proc: subprocess.Popen[bytes]
    pump: threading.Thread
    lines: _Lines
    gate: int = -1
    status: int = -1

    def go(self, argv: list[str], env: dict[str, str]) -> bool:
        """Give a waiting chain its command and environment; False if it is gone."""
        try:
            if self.proc.poll() is not None:
                return False
            payload = memoryview(shim.gate_payload(argv, env))
            while payload:
                payload = payload[os.write(self.gate, payload):]
            return True
        except OSError:  # EPIPE: the chain died meanwhile
            return False
        finally:
            self._close("gate")

    def started(self) -> bool:
        """Did bubblewrap start its child (its ``--json-status-fd``)?  True without one."""
        if self.status < 0:
            return True
        os.set_blocking(self.status, False)
        try:
            ok = b"child-pid" in os.read(self.status, 65536)
        except BlockingIOError:
            ok = False
        self._close("status")
        return ok

    def finish(self) -> None:
        """After the tree was killed: reap, drain the output, close the gate."""
        self.proc.wait()
        self.pump.join(timeout=5)
        self._close("gate")

    def discard(self) -> None:
        self.finish()
        self._close("status")

    def _close(self, which: str) -> None:
        fd = getattr(self, which)
        if fd >= 0:
            setattr(self, which, -1)
            os.close(fd)


@dataclass(frozen=True)
class _Prepared:
    """What :meth:`WorktreeBackend._prepare_run` set up for one sandbox's agent."""

    conf: confine.Confinement
    tmpdir: Path
    objects: Path
    gitpaths: confine.GitPaths
    pinned: dict[Path, bytes]
    enf: limits.Enforcement
    cpu_fd: int | None
    token: str
    network: NetworkPolicy = NetworkPolicy("none")
    proxy_dir: Path | None = None        # ``allow``: this sandbox's proxy socket's directory
    deny: tuple[Path, ...] = ()          # hidden from the agent (bubblewrap)


@dataclass(frozen=True)
class _Warm:
    """A warm start: the set-up and the chain waiting at its gate."""

    prep: _Prepared
    agent: _Agent


def for_commit(prep: _Prepared) -> _Prepared:
    """The set-up of the confined step committing an agent's leftovers: the agent's, but
    with no network at all (git has no use for it: no proxy, no forwarder), no CPU quota
    to write again, and under bubblewrap without the Landlock layer: with no network and
    a pid namespace of its own, what Landlock adds there (socket, signal and write
    scoping) bubblewrap's namespaces and read-only binds already give
    (docs/security.md)."""
    conf = replace(prep.conf, landlock=prep.conf.landlock and not prep.conf.bwrap)
    return replace(prep, cpu_fd=None, network=NetworkPolicy("none"), proxy_dir=None,
                   conf=conf)


class _ExitWaiter:
    """``waiter(timeout)``: True once the process has exited, waiting up to ``timeout``.

    With a pidfd the wait ends the moment the process exits; ``Popen.wait(timeout)``
    polls with growing sleeps instead (up to tens of milliseconds late).
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        try:
            self.pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel): poll
            self.pidfd = None

    def __call__(self, timeout: float) -> bool:
        if self.pidfd is None or self.proc.returncode is not None:
            try:
                self.proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        ready, _, _ = select.select([self.pidfd], [], [], timeout)
        if ready:
            self.proc.wait()
        return bool(ready)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _members(pid: int, enf: limits.Enforcement, token: str, one: bool = False) -> set[int]:
    """The process tree from ``pid``: its cgroup's members (``one``: as one hierarchy
    lists them), else the processes carrying the sandbox's token."""
    found = enf.cgroup.pids(one) if enf.cgroup is not None else limits.pids_with_token(token)
    return found | {pid}


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def launch(argv: list[str], pass_fds: tuple[int, ...], cwd: Path, env: dict[str, str],
           lines: _Lines) -> _Agent:
    """Start ``argv`` in the sandbox (``cwd``: its worktree), its output pumped into
    ``lines``."""
    proc = spawn(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT, pass_fds=pass_fds)
    pump = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
    pump.start()
    return _Agent(proc, pump, lines)


def wait(agent: _Agent, enf: limits.Enforcement, token: str, deadline: float | None,
         cancel: threading.Event | None, grace_s: float, settle: bool = True,
         ) -> tuple[int | None, str | None]:
    """Wait for the agent to exit, time out or be cancelled (then :func:`stop` it with
    ``grace_s``); then kill its tree (``settle``: and wait for all of it to be gone; see
    :func:`kill_tree`)."""
    proc = agent.proc
    reason: str | None = None
    exited = _ExitWaiter(proc)
    try:
        while True:
            # Wakes the moment the agent exits (a pidfd); cancel and timeout are
            # checked every 50 ms.
            if exited(0.05):
                break
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
            elif deadline is not None and time.monotonic() >= deadline:
                reason = "timed_out"
            if reason:
                stop(proc, enf, token, grace_s)
                break
    finally:
        exited.close()
    # Whatever the agent left behind (daemons, double forks) dies with it: no orphans.
    kill_tree(proc, enf, token, settle)
    agent.finish()
    rc = proc.returncode
    return (128 - rc if rc < 0 else rc), reason


def stop(proc: subprocess.Popen[bytes], enf: limits.Enforcement, token: str,
         grace_s: float) -> None:
    """SIGTERM the tree, wait ``grace_s`` for it to go, then kill it."""
    if enf.cgroup is not None:
        enf.cgroup.signal(signal.SIGTERM)
    else:
        _killpg(proc.pid, signal.SIGTERM)
        limits.signal_token(token, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        alive = enf.cgroup.pids() if enf.cgroup is not None else limits.pids_with_token(token)
        if proc.poll() is not None and not alive:
            return
        time.sleep(0.05)
    kill_tree(proc, enf, token)


def kill_tree(proc: subprocess.Popen[bytes], enf: limits.Enforcement, token: str,
              settle: bool = True) -> None:
    """SIGKILL the agent's whole tree; ``settle``: and wait until it is gone (else
    the caller waits with ``Cgroup.wait_empty`` before touching the sandbox)."""
    _killpg(proc.pid, signal.SIGKILL)
    if enf.cgroup is not None:
        # cgroup.kill / freezer: nothing in the group can escape
        enf.cgroup.kill(wait_s=5.0 if settle else 0.0)
        return
    # Without a cgroup, descendants that left the process group are found by token.
    for _ in range(50):
        if limits.signal_token(token) == 0:
            break
        time.sleep(0.02)


def run_phase(
    build: Callable[[int | None], list[str]], command: str, uses_bwrap: bool,
    worktree: Path, env: dict[str, str], prep: _Prepared, deadline: float | None,
    cancel: threading.Event | None, lines: _Lines, grace_s: float,
    fds: tuple[int, ...] = (), ready: _Agent | None = None, settle: bool = True,
    on_start: Callable[[], None] | None = None,
) -> tuple[int | None, str | None]:
    """Run one process tree in ``worktree`` to the end, a timeout or a cancel; (exit
    code, reason).  ``build``: the argv given bubblewrap's status fd; ``fds``: more file
    descriptors the process inherits; ``ready``: a warm start's waiting chain
    (``WorktreeBackend.warm``), given ``command`` here, else a cold start; ``settle``:
    see :func:`wait`; ``on_start``: called once the process tree is under way.

    bubblewrap's own set-up can fail transiently: it remounts every mount under ``/``
    read-only, and a mount that vanishes meanwhile (a container engine tearing one
    down) makes that fail.  Its ``--json-status-fd`` says whether the child started;
    if not, the phase is retried (the command never ran, so this is safe).  A warm
    chain that did not survive until its turn is just such a failed attempt.
    """
    enf, token = prep.enf, prep.token
    if ready is not None:
        # Warmed on a background thread: the agent runs at our priority.
        if enf.cgroup is not None:
            enf.cgroup.in_background(False)
        raise_priority(lambda: _members(ready.proc.pid, enf, token, one=True),
                       os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        if ready.go(["/bin/sh", "-c", command], env):
            if on_start is not None:
                on_start()
            rc, reason = wait(ready, enf, token, deadline, cancel, grace_s, settle)
            if ready.started() or reason is not None:
                return rc, reason
        else:
            kill_tree(ready.proc, enf, token)
            ready.discard()
    for attempt in range(BWRAP_ATTEMPTS):
        status_r, status_w = os.pipe() if uses_bwrap else (-1, -1)
        try:
            agent = launch(build(status_w if uses_bwrap else None),
                           ((status_w,) if uses_bwrap else ()) + fds, worktree, env, lines)
        finally:
            if uses_bwrap:
                os.close(status_w)
        if on_start is not None:
            on_start()
        agent.status = status_r
        rc, reason = wait(agent, enf, token, deadline, cancel, grace_s, settle)
        if agent.started() or reason is not None or attempt == BWRAP_ATTEMPTS - 1:
            return rc, reason
        time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover
