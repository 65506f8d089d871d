"""The one process wrapper: every child process forkyard starts goes through here.

Children start in a new session (their own process group), so a timeout or an
interrupt can kill the whole tree, not just the direct child.  Errors carry the argv,
exit code and both streams.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gitproc.errors import ExecutableNotFoundError, ProcessError  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Completed:
    """A finished process: its argv, exit code and both streams (bytes)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


T = TypeVar("T")


def probed_once(probe: Callable[[], T]) -> Callable[[], T]:
    """``probe`` (a question about this host that starts a process) asked once per
    process, however many threads ask at the same moment: ``functools.cache`` alone lets
    eight agents starting together run eight probes.  Not remembered when it raises."""
    lock = threading.Lock()
    answer: list[T] = []

    def ask() -> T:
        if not answer:
            with lock:
                if not answer:
                    answer.append(probe())
        return answer[0]

    ask.__doc__ = probe.__doc__
    return ask


#: Niceness of work nobody is waiting for: its processes yield the CPU to agents starting.
BACKGROUND_NICE = 10


_background = threading.local()  # .nice: this thread's work is background work


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> None:
    """Make the calling thread's work background work, for good: the processes it starts
    get niceness ``nice`` (:func:`spawn`).

    Where niceness can be taken back (root) only the processes are lowered, at their
    fork; the thread's own Python code keeps the process's priority: a thread the kernel
    holds back while it holds the GIL holds back every other thread of forkyard with it.
    Elsewhere the thread itself is lowered (Linux: niceness is per thread, and inherited
    by what it starts)."""
    if can_raise_priority():
        _background.nice = max(nice, getattr(_background, "nice", nice))
        return
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)


@contextlib.contextmanager
def background_priority(nice: int = BACKGROUND_NICE) -> Iterator[None]:
    """The processes the calling thread starts in the block at lower priority (see
    :func:`lower_thread_priority`) -- which only a privileged process can undo, so for
    anyone else the block runs as it is."""
    if not can_raise_priority():
        yield
        return
    before = getattr(_background, "nice", None)
    _background.nice = nice if before is None else max(nice, before)
    try:
        yield
    finally:
        if before is None:
            del _background.nice
        else:
            _background.nice = before


@contextlib.contextmanager
def _forking_at_our_niceness() -> Iterator[None]:
    """Around a fork: the thread at its background niceness, if it has one (root), so
    that the child inherits it from its first instruction; back right after."""
    nice = getattr(_background, "nice", None)
    tid = threading.get_native_id()
    try:
        old = os.getpriority(os.PRIO_PROCESS, tid) if nice is not None else None
    except OSError:
        old = None
    if nice is None or old is None or old >= nice:
        yield
        return
    os.setpriority(os.PRIO_PROCESS, tid, nice)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, old)


#: The GIL switch interval while forkyard starts and supervises many processes.
RESPONSIVE_SWITCH_S = 0.001
_switch_lock = threading.Lock()
_switch = {"users": 0, "before": 0.0}  # blocks inside responsive_threads; the interval then


@contextlib.contextmanager
def responsive_threads(interval: float = RESPONSIVE_SWITCH_S) -> Iterator[None]:
    """A shorter GIL switch interval (``sys.setswitchinterval``) for the block, and what
    it was before once the last such block ends (runs may overlap in one process).

    A thread starting an agent makes dozens of system calls, each of which gives up the
    GIL; while other threads do Python work (committing the last agents' leftovers,
    removing sandboxes, making the next ones), taking it back waits up to the interval,
    5 ms by default, every time: tens of milliseconds added to a start that needs a few."""
    with _switch_lock:
        if _switch["users"] == 0:
            _switch["before"] = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, _switch["before"]))
        _switch["users"] += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch["users"] -= 1
            if _switch["users"] == 0:
                sys.setswitchinterval(_switch["before"])


def can_raise_priority() -> bool:
    """May this process take niceness back down (root)?  Else lowering is for good."""
    return os.geteuid() == 0


def raise_priority(pids: Callable[[], set[int]], nice: int) -> None:
    """Give every process ``pids()`` lists niceness ``nice`` where it has more (a process
    tree started at background priority, now to run at ours).  Twice over: a process
    forked meanwhile inherits the niceness its parent had.  Needs :func:`can_raise_priority`;
    processes that are gone or not ours are left alone."""
    for _ in range(2):
        for pid in pids():
            with contextlib.suppress(OSError):
                if os.getpriority(os.PRIO_PROCESS, pid) > nice:
                    os.setpriority(os.PRIO_PROCESS, pid, nice)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has); one not ours to
    signal counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return True  # (no /proc: the signal said it exists)
    return state not in ([b"Z"], [b"X"])


def kill_group(pid: int, grace_s: float = 2.0) -> None:
    """SIGTERM the process group led by ``pid``, wait ``grace_s``, then SIGKILL it."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session and return the Popen (the caller owns it)."""
    try:
        with _forking_at_our_niceness():
            return subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                pass_fds=tuple(pass_fds),
            )
    except FileNotFoundError as exc:
        raise ExecutableNotFoundError(argv[0]) from exc


def run(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> Completed:
    """Run ``argv`` to completion; on timeout kill its whole process group.

    Returns a :class:`Completed`; with ``check`` a non-zero exit (or a timeout) raises
    :class:`ProcessError` carrying the argv and both streams.
    """
    proc = spawn(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
    )
    timed_out = False
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc.pid, grace_s=1.0)
        out, err = proc.communicate()
    except BaseException:
        # Ctrl-C or any other interruption: never leave the child's tree running.
        kill_group(proc.pid, grace_s=0.5)
        proc.wait()
        raise
    result = Completed(tuple(argv), proc.returncode, out or b"", err or b"", timed_out)
    if check and (timed_out or proc.returncode != 0):
        raise ProcessError(result)
    return result
