"""The dummy backend: scripted outcomes for unit tests of the run loop.  No git, no processes.

Each task's outcome (status, duration, output lines, files) comes from the config's
``outcomes`` (by task id) or ``default``.  It honours ``timeout_s`` (a scripted duration
longer than the timeout ends ``timed_out``) and ``cancel``, and records every call in
:attr:`DummyBackend.calls` so tests can assert on order and concurrency.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gitproc.git import NumStat, Repo
from sandbox.backends.base import (
    Backend,
    ExecResult,
    ExitCallback,
    LineCallback,
    Sandbox,
    SandboxSpec,
    Status,
)


class DummyOutcome(BaseModel):
    """What one scripted task does."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    status: Status = "succeeded"
    """The status reported (unless the duration exceeds the timeout, or it is cancelled)."""
    duration_s: float = Field(0.0, ge=0)
    """How long execute takes (slept, in small steps so cancel is prompt)."""
    exit_code: int | None = None
    """Reported exit code; default 0 for succeeded, 1 otherwise."""
    lines: list[str] = Field(default_factory=list)
    """Output lines passed to on_line."""
    commit: str | None = None
    """Commit sha reported."""
    files: dict[str, tuple[int, int]] = Field(default_factory=dict)
    """Files modified: path -> (added, removed)."""


class DummyConfig(BaseModel):
    """Configuration of the dummy backend."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    type: Literal["dummy"] = "dummy"
    """Backend discriminator."""
    outcomes: dict[str, DummyOutcome] = Field(default_factory=dict)
    """Scripted outcome per task id."""
    default: DummyOutcome = Field(default_factory=DummyOutcome)
    """Outcome of tasks not listed in ``outcomes``."""


class DummyBackend(Backend):
    """Scripted sandboxes (see the module docstring)."""

    name = "dummy"

    def __init__(self, repo: Repo | None = None, config: DummyConfig | None = None,
                 **options: object) -> None:
        super().__init__(repo)  # type: ignore[arg-type]  # no repository needed
        self.config = config or DummyConfig.model_validate(options)
        self.calls: list[tuple[str, str]] = []   # (method, task id), in call order
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def _record(self, method: str, task: str) -> None:
        with self._lock:
            self.calls.append((method, task))

    def prepare(self, spec: SandboxSpec) -> Sandbox:
        """A handle with a made-up worktree path (nothing is created)."""
        self._record("prepare", spec.task_id)
        return Sandbox(spec, Path("/nonexistent/forkyard-dummy") / spec.run_id / spec.task_id,
                       spec.branch)

    def execute(self, sandbox: Sandbox, on_line: LineCallback | None = None,
                cancel: threading.Event | None = None,
                on_exit: ExitCallback | None = None,
                on_start: ExitCallback | None = None) -> ExecResult:
        """Play the task's scripted outcome."""
        if on_start is not None:
            on_start()
        spec = sandbox.spec
        out = self.config.outcomes.get(spec.task_id, self.config.default)
        self._record("execute", spec.task_id)
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        started = time.monotonic()
        status: Status = out.status
        try:
            for line in out.lines:
                if on_line is not None:
                    on_line(line)
            limit = spec.limits.timeout_s
            wait = min(out.duration_s, limit) if limit is not None else out.duration_s
            end = started + wait
            while time.monotonic() < end:
                if cancel is not None and cancel.wait(min(0.01, max(0.0, end - time.monotonic()))):
                    status = "cancelled"
                    break
            else:
                if limit is not None and out.duration_s > limit:
                    status = "timed_out"
        finally:
            with self._lock:
                self.running -= 1
        if on_exit is not None:
            on_exit()
        code = out.exit_code if out.exit_code is not None else (0 if status == "succeeded" else 1)
        files = tuple(NumStat(p, a, r) for p, (a, r) in out.files.items())
        return ExecResult(status=status, exit_code=code,
                          duration_s=round(time.monotonic() - started, 3),
                          log_tail="\n".join(out.lines[-200:]),
                          commit=out.commit if status == "succeeded" else None,
                          files_modified=files, enforced_by="none", confinement="none",
                          message="dummy backend")

    def cleanup(self, sandbox: Sandbox, keep: bool = False) -> None:
        """Record the call; there is nothing to release."""
        self._record("cleanup", sandbox.spec.task_id)
