"""``RunOptions``: everything a run is asked to do besides its tasks.

One frozen model that ``run_workflow`` takes, that the run's manifest (``run.json``)
stores whole, and that the CLI, the MCP server and ``resume_run`` build, so a run resumed
from anywhere runs on exactly the options it started with (backend options included).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["conservative", "aggressive"]
Mode = Literal["stream", "waves"]
Goal = Literal["minimize-time", "minimize-conflicts", "balance-load"]
BackendName = Literal["worktree", "docker", "dummy"]
ExecutorName = Literal["local", "ray"]


class RunOptions(BaseModel):
    """How to run a task file: agents, backend, strategy, target, validation."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    agents: int = Field(4, ge=1)
    """How many agents run at once."""
    backend: BackendName = "worktree"
    """Where agents run: git worktrees on this machine (default), Docker containers, or
    the dummy backend (tests of scheduling logic only)."""
    backend_options: dict[str, Any] = Field(default_factory=dict)
    """Options of the chosen backend's configuration model (e.g. ``{"extra_rw": [...]}``
    for the worktree backend); checked by that model when the backend is made."""
    image: str | None = None
    """Docker image for the docker backend."""
    executor: ExecutorName = "local"
    """Where sandboxes are made: on this machine (default), or on the workers of a Ray
    cluster (the ``ray`` extra; see docs/ray.md), each from a git bundle of the base."""
    ray_address: str | None = None
    """The Ray cluster to use with ``executor="ray"`` (e.g. ``10.0.0.5:6379``, or
    ``auto``); None starts a local Ray instance for the run and stops it after."""
    ray_resources: dict[str, float] = Field(default_factory=dict)
    """Ray resources every task asks for besides its CPUs and memory (e.g.
    ``{"agent:claude": 1}``): tasks go only to nodes that declare them."""
    strategy: Strategy = "aggressive"
    """aggressive (default): keep independent work going, bisect a bad batch, land the
    rest and skip what depends on a failure -- what failed never lands;
    conservative: stop at the first failure (running agents are cancelled)."""
    mode: Mode = "stream"
    """stream: integrate finished work as it comes; waves: one batch per planned wave."""
    goal: Goal = "minimize-time"
    """What the planner optimises."""
    into: str | None = None
    """The branch work lands on (default: the checked-out branch)."""
    validate_command: str | None = None
    """A command run on each merged batch before it lands (``--validate``)."""
    keep: bool = False
    """Keep the sandboxes after the run."""
    confine: bool = True
    """Confine agents (bubblewrap, Landlock); False is the explicit opt-out."""
    agent: str | None = None
    """A preset name or command template replacing the task file's default agent."""
    use_history: bool = True
    """Plan with durations measured by earlier runs where a task matches."""
    retry_backoff_s: float = Field(1.0, ge=0)
    """Seconds before a task's first retry; each later retry waits twice as long."""
    max_file_mb: float | None = Field(100.0, gt=0)
    """A task whose commit adds a file larger than this (MiB) is held back (None: no
    limit)."""
    max_delete_share: float | None = Field(0.5, ge=0, le=1)
    """A task whose commit deletes more than this share of the files is held back unless
    the task says ``allow_deletes: true`` (None: no limit)."""
