"""The process wrapper's helpers for many threads: one probe however many ask, the GIL
switch interval a run lowers and gives back, and background work's niceness."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from gitproc.process import (
    BACKGROUND_NICE,
    RESPONSIVE_SWITCH_S,
    background_priority,
    can_raise_priority,
    lower_thread_priority,
    probed_once,
    responsive_threads,
    run,
)


def test_a_probe_asked_by_many_threads_at_once_runs_once() -> None:
    runs: list[int] = []

    def probe() -> str:
        runs.append(1)
        time.sleep(0.05)  # long enough for every thread to be asking meanwhile
        return run(["git", "--version"]).out

    ask = probed_once(probe)
    barrier = threading.Barrier(8)
    answers: list[str] = []

    def asker() -> None:
        barrier.wait()
        answers.append(ask())

    threads = [threading.Thread(target=asker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs) == 1
    assert len(answers) == 8 and len(set(answers)) == 1 and answers[0].startswith("git version")


def test_a_probe_that_raised_is_asked_again() -> None:
    calls: list[int] = []

    def probe() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("not yet")
        return 42

    ask = probed_once(probe)
    with pytest.raises(OSError):
        ask()
    assert ask() == 42 and ask() == 42
    assert len(calls) == 2


def test_overlapping_responsive_blocks_give_the_interval_back_after_the_last() -> None:
    before = sys.getswitchinterval()
    assert before > RESPONSIVE_SWITCH_S  # (the interpreter's default, 5 ms)
    first = responsive_threads()
    second = responsive_threads()
    first.__enter__()
    assert sys.getswitchinterval() == pytest.approx(RESPONSIVE_SWITCH_S)
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second still runs
    assert sys.getswitchinterval() == pytest.approx(RESPONSIVE_SWITCH_S)
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(before)


def test_a_responsive_block_gives_the_interval_back_when_it_raises() -> None:
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), responsive_threads():
        raise RuntimeError("the run failed")
    assert sys.getswitchinterval() == pytest.approx(before)


def test_background_work_lowers_the_processes_it_starts_not_the_thread() -> None:
    """A thread doing background work keeps the process's priority for its own Python
    code (held back by the kernel while holding the GIL, it would hold every other thread
    back); what it starts runs at the background niceness from its first instruction.
    Where niceness cannot be taken back (not root), the thread itself is lowered."""
    seen: dict[str, int] = {}

    def work() -> None:
        lower_thread_priority()
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen["child"] = int(run(["sh", "-c", "cut -d' ' -f19 /proc/$$/stat"]).out)
        with background_priority(BACKGROUND_NICE + 2):
            seen["deeper"] = int(run(["sh", "-c", "cut -d' ' -f19 /proc/$$/stat"]).out)
        seen["after"] = int(run(["sh", "-c", "cut -d' ' -f19 /proc/$$/stat"]).out)

    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["child"] == seen["after"] == BACKGROUND_NICE
    assert seen["deeper"] == (BACKGROUND_NICE + 2 if can_raise_priority() else BACKGROUND_NICE)
    assert seen["thread"] == (ours if can_raise_priority() else BACKGROUND_NICE)
