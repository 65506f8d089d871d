"""The run loop's thread pools: their threads made before the first job, not during one.

A ``ThreadPoolExecutor`` makes a thread when a job finds none idle, and ``submit`` waits
until the new thread has run its first instruction.  At a wave's end -- eight agents
exiting at once, their work being brought home on eight threads, eight more starting --
that first instruction waits for the GIL behind all of them: tens of milliseconds per
thread, on the dispatch loop, before the next agent may start.  Made up front, while the
run is still quiet, a thread costs a fraction of a millisecond.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from gitproc.process import lower_thread_priority


def background_thread() -> None:
    """Thread-pool initializer: the pool's threads do work nobody waits for (removing
    worktrees after their task, preparing the next ones), at lower priority."""
    lower_thread_priority()


def ready_pool(workers: int, prefix: str,
               initializer: Callable[[], None] | None = None) -> ThreadPoolExecutor:
    """A thread pool of ``workers`` threads, every one of them started (and through
    ``initializer``) when this returns."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix,
                              initializer=initializer)
    # Each job holds its thread until all are running: ``workers`` jobs, ``workers`` threads.
    everyone = threading.Barrier(workers + 1)
    for _ in range(workers):
        pool.submit(everyone.wait)
    everyone.wait()
    return pool
