"""What the run loop holds about a run and each of its tasks: its configuration, the
static spec of a task, and a task's state (owned by the loop thread)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from planner.tasks import Agent, Limits, Task
from sandbox.backends.base import ExecResult


@dataclass(frozen=True)
class RunnerConfig:
    run_id: str
    agents: int
    strategy: str = "conservative"          # conservative | aggressive
    mode: str = "stream"                    # stream | waves
    keep: bool = False
    confine: bool = True
    image: str | None = None
    retry_backoff_s: float = 1.0            # first retry waits this, then doubles
    setup_command: str | None = None
    copy_files: tuple[str, ...] = ()
    prefetch: bool = True                   # prepare the next tasks' sandboxes ahead


@dataclass(frozen=True)
class TaskSpec:
    """What the loop needs to know about one task (static for the whole run)."""

    task: Task
    agent: Agent
    limits: Limits
    deps: tuple[str, ...]


@dataclass
class TaskRecord:
    """One task's state in the loop (mutable; owned by the loop thread)."""

    id: str
    state: str = "pending"      # pending | running | retry_wait | done
    status: str | None = None   # final: succeeded failed timed_out oom_killed cancelled skipped
    attempts: int = 0
    agent: int | None = None
    slot_free: bool = True      # the agent slot was given back (its agent has exited)
    base: str | None = None
    started: float | None = None
    finished: float | None = None
    result: ExecResult | None = None
    integrated: bool = False
    rejected: bool = False      # its batch would not take it (conflict, validation)
    needs_fresh_branch: bool = False  # a previous attempt (or crashed run) left the branch
    attempt_offset: int = 0     # attempts an earlier session of the run made (resume)
    cancel: threading.Event = field(default_factory=threading.Event)
