"""The run loop's thread pools are whole before their first job."""

from __future__ import annotations

import threading

from forkyard.run.threads import ready_pool


def test_a_ready_pool_has_every_thread_running_before_its_first_job() -> None:
    inits: list[str] = []
    pool = ready_pool(5, "fy-ready-test", lambda: inits.append(threading.current_thread().name))
    try:
        names = {t.name for t in threading.enumerate() if t.name.startswith("fy-ready-test")}
        assert len(names) == 5
        assert sorted(inits) == sorted(names)  # each ran the initializer, once
        # Jobs reuse those threads: no new one is made for them.
        done = [pool.submit(threading.current_thread) for _ in range(20)]
        assert {f.result().name for f in done} <= names
    finally:
        pool.shutdown(wait=True)
